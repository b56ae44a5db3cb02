# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What driver and container toolkit a host has installed, from dpkg's own records.

Plain functions without Ansible imports, so unit tests call them directly.
"""

from __future__ import annotations

import re

# One line per package: the abbreviated status ("ii " installed, "hi " held and installed,
# "rc " removed with its configuration left), the name and the version.
QUERY_FORMAT = "${db:Status-Abbrev}|${Package}|${Version}\\n"
QUERY_PATTERNS = ["nvidia-*", "libnvidia-*", "linux-modules-nvidia-*"]


def installed_packages(text):
    """{name: version} of the installed packages in dpkg-query -W -f QUERY_FORMAT output."""
    packages = {}
    for line in (text or "").splitlines():
        fields = line.split("|")
        if len(fields) == 3 and fields[0][:2] in ("ii", "hi"):
            packages[fields[1]] = fields[2]
    return packages


def held_packages(text):
    return sorted(f[1] for f in (line.split("|") for line in (text or "").splitlines())
                  if len(f) == 3 and f[0][:2] == "hi")


def owner_of(text):
    """'nvidia-utils-580: /usr/bin/nvidia-smi' (dpkg-query -S) -> 'nvidia-utils-580'; '' when none."""
    for line in (text or "").splitlines():
        # Diversions are printed before the owner ('diversion by X from: /path').
        if ":" in line and not line.startswith("diversion by "):
            # Several owners print as 'a, b: /path'; a driver's nvidia-smi has one.
            return line.split(":", 1)[0].split(",")[0].strip()
    return ""


def branch_of(version):
    """'580' for 580.105.08-0ubuntu1 or 580.178.04-0ubuntu0.22.04.1; '' for anything else."""
    match = re.match(r"^(?:\d+:)?(\d{3})\.\d+", version or "")
    return match.group(1) if match else ""


def host_stack(dpkg_text, smi_owner_text, toolkit_package="nvidia-container-toolkit"):
    """The driver (from the package that brought nvidia-smi: right on every packaging scheme, the
    versioned names up to 580 and 590's nvidia-open alike) and the toolkit, as
    {driver: {package, version, branch}, toolkit: {package, version}, packages, held}."""
    packages = installed_packages(dpkg_text)
    owner = owner_of(smi_owner_text)
    version = packages.get(owner, "")
    return {
        "driver": {"package": owner if version else "", "version": version, "branch": branch_of(version)},
        "toolkit": {"package": toolkit_package if toolkit_package in packages else "",
                    "version": packages.get(toolkit_package, "")},
        "packages": packages,
        "held": held_packages(dpkg_text),
    }
