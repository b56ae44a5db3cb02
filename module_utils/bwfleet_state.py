# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state bw-fleet manages on a host, as one comparable document, and what differs from the
last run that passed every stage (the stamp).

Plain functions without Ansible imports, so unit tests call them directly.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os


def file_digests(patterns):
    """{path: sha256 or 'missing'} for every file the patterns name; a directory stands for the
    files under it. A pattern that matches nothing is recorded as missing (a file that appears
    later is a difference too)."""
    found = {}
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in paths:
            if os.path.isdir(path):
                for folder, dirs, files in os.walk(path):
                    dirs.sort()
                    for name in sorted(files):
                        full = os.path.join(folder, name)
                        found[full] = _digest(full)
            else:
                found[path] = _digest(path)
    return found


def _digest(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (IOError, OSError):
        return "missing"


def parse_packages(text):
    """dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}\\n' -> {name: 'ii 1.2'}; packages
    dpkg knows but that are not installed are left out (removing one shows as a difference)."""
    packages = {}
    for line in (text or "").splitlines():
        fields = line.split("|")
        # The second letter is the status: i = installed (the first, the wish: i install, h hold).
        if len(fields) == 3 and fields[0][1:2] == "i":
            packages[fields[1]] = "%s %s" % (fields[0].strip(), fields[2])
    return packages


def parse_units(text, properties=("ActiveState", "SubState", "InvocationID")):
    """systemctl show -p Id -p ActiveState ... (blocks separated by empty lines) -> {unit: 'a/b/c'}."""
    units = {}
    for block in (text or "").strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if values.get("Id"):
            units[values["Id"]] = "/".join(values.get(p, "") for p in properties)
    return units


def parse_lines(text, separator="|"):
    """'key|value' lines -> {key: value}."""
    pairs = {}
    for line in (text or "").splitlines():
        if separator in line:
            key, value = line.split(separator, 1)
            pairs[key.strip()] = value.strip()
    return pairs


def fingerprint(state):
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def differences(old, new, limit=20):
    """What differs between two state documents, by section and key. File digests are not shown
    (one of the files is the API key): a file is "changed", "new" or "gone"."""
    found = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if not (isinstance(a, dict) or isinstance(b, dict)):
            found.append("%s: %s -> %s" % (section, _short(a), _short(b)))
            continue
        a, b = a or {}, b or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            if section == "files":
                found.append("file %s %s" % (key, "new" if a.get(key) in (None, "missing") else
                                             "gone" if b.get(key) in (None, "missing") else "changed"))
            else:
                found.append("%s %s: %s -> %s" % (section, key, _short(a.get(key)), _short(b.get(key))))
    return found[:limit] + (["... and %d more" % (len(found) - limit)] if len(found) > limit else [])


def _short(value):
    return "absent" if value is None else str(value)[:80]


def compare(stamp, inputs, state, unhealthy):
    """Whether the host is as the last verified run left it: (current, reasons)."""
    if not stamp:
        return False, ["no record of a run that passed every stage"]
    reasons = []
    if stamp.get("inputs") != inputs:
        reasons.append("this run brings other inputs (variables or the project's code changed)")
    reasons += differences(stamp.get("state") or {}, state)
    reasons += unhealthy
    return not reasons, reasons
