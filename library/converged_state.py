#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: converged_state
short_description: Whether a host is exactly as the last run that passed every stage left it
description:
  - Reads, in one call, the state bw-fleet manages on a host (the digests of files, dpkg's
    packages and holds, systemd units, containers and images, the output of bounded commands
    such as C(nvidia-smi), the kernel), and compares it and the run's inputs with a stamp that the
    last run which passed every stage wrote.
  - With O(state=check) it only reads and answers RV(current) and RV(reasons); site.yml skips the
    stages on a current host (the fast path) after O(urls) answered.
  - With O(state=record) it writes the stamp (0600) when it differs, reporting C(changed) then.
version_added: "0.3.0"
author: bw-fleet contributors
options:
  path:
    description: The stamp.
    type: path
    default: /var/lib/bw-fleet/converged.json
  state:
    description: C(check) compares, C(record) writes the stamp for the state read now.
    type: str
    choices: [check, record]
    default: check
  inputs:
    description:
      - A digest of what the run brings (the project's code and the host's variables), computed on
        the controller. A different digest is a difference.
    type: str
    required: true
  files:
    description: Files to digest; glob patterns; a directory stands for every file under it.
    type: list
    elements: path
    default: []
  packages:
    description: dpkg-query patterns whose installed packages, versions and holds are state.
    type: list
    elements: str
    default: []
  units:
    description: systemd units whose active state and invocation are state (a restart is a difference).
    type: list
    elements: str
    default: []
  containers:
    description: Name patterns (glob) of Docker containers whose image, status and start time are state.
    type: list
    elements: str
    default: []
  images:
    description: Image repositories whose tags and image ids are state.
    type: list
    elements: str
    default: []
  commands:
    description: Commands (argv lists) whose exit status and output are state, each bounded by O(command_timeout).
    type: list
    elements: list
    default: []
  command_timeout:
    description: Seconds each command may take; one that takes longer is a difference, not a hang.
    type: int
    default: 30
  urls:
    description: URLs that must answer 2xx (within O(url_timeout)) for the host to be current.
    type: list
    elements: str
    default: []
  url_timeout:
    description: Seconds for each URL.
    type: int
    default: 10
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: O(state=record) reports whether it would write the stamp, and does not.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
    details: RV(reasons) names what differs.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: debian
notes:
  - The stamp holds digests of files, never their content (the API key file is one of them).
seealso:
  - module: nvidia_gpu_verify
  - module: sglang_api_check
"""

EXAMPLES = r"""
- name: Is the host as the last verified run left it
  converged_state:
    inputs: "{{ site_inputs_digest }}"
    files: [/etc/docker/daemon.json, /etc/apt/sources.list.d]
    packages: ["nvidia-*", "docker*"]
    units: [docker.service, sglang-main.service]
    containers: ["sglang-*"]
    images: [bwfleet/sglang]
    commands: [[nvidia-smi, "--query-gpu=index,driver_version,persistence_mode", "--format=csv,noheader"]]
    urls: ["http://127.0.0.1:8000/health_generate"]
  register: converged

- name: After every stage passed, remember the state
  converged_state:
    state: record
    inputs: "{{ site_inputs_digest }}"
    files: [/etc/docker/daemon.json, /etc/apt/sources.list.d]
"""

RETURN = r"""
current:
  description: The stamp exists, the inputs are the same, the state is the same and every URL answered.
  returned: always
  type: bool
reasons:
  description: What differs or failed (at most 20, then a count).
  returned: always
  type: list
  elements: str
  sample: ["files /etc/docker/daemon.json: 3f2a9c01b7d4 -> 9b1e22c0aa51", "units sglang-main.service: active/running/1 -> failed/failed/1"]
fingerprint:
  description: sha256 of the state read now.
  returned: always
  type: str
files_present:
  description: The files of O(files) that exist (paths only).
  returned: always
  type: list
  elements: str
recorded_at:
  description: When the stamp compared against (or written) was recorded, UTC, ISO 8601; empty when there is none.
  returned: always
  type: str
"""

import datetime
import fnmatch
import json
import os
import subprocess
import urllib.request

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bwfleet_dpkg import QUERY_FORMAT
from ansible.module_utils.bwfleet_state import (
    compare, file_digests, fingerprint, parse_lines, parse_packages, parse_units)


def run(argv, timeout):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout
    except subprocess.TimeoutExpired:
        return "timeout", ""
    except OSError as err:
        return "error", str(err)


def read_state(params):
    timeout = params["command_timeout"]
    state = {"files": file_digests(params["files"]), "kernel": os.uname().release}
    if params["packages"]:
        _rc, out = run(["dpkg-query", "-W", "-f", QUERY_FORMAT] + params["packages"], timeout)
        state["packages"] = parse_packages(out)
    if params["units"]:
        _rc, out = run(["systemctl", "show", "-p", "Id", "-p", "ActiveState", "-p", "SubState", "-p", "InvocationID"]
                       + params["units"], timeout)
        state["units"] = parse_units(out)
    if params["containers"]:
        _rc, ids = run(["docker", "ps", "-aq", "--no-trunc"], timeout)
        containers = {}
        if ids.split():
            _rc, out = run(["docker", "inspect", "--format",
                            "{{.Name}}|{{.Image}} {{.State.Status}} {{.State.StartedAt}}"] + ids.split(), timeout)
            containers = {name.lstrip("/"): value for name, value in parse_lines(out).items()
                          if any(fnmatch.fnmatch(name.lstrip("/"), p) for p in params["containers"])}
        state["containers"] = containers
    if params["images"]:
        images = {}
        for repository in params["images"]:
            _rc, out = run(["docker", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}}|{{.ID}}", repository], timeout)
            images.update(parse_lines(out))
        state["images"] = images
    state["commands"] = {" ".join(argv): "%s %s" % run(argv, timeout) for argv in params["commands"]}
    return state


def unhealthy(urls, timeout):
    found = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                answer.read(4096)
                if not 200 <= answer.status < 300:
                    found.append("%s answered %s" % (url, answer.status))
        except Exception as err:  # noqa: BLE001 - any failure means: not healthy, take the full path
            found.append("%s: %s" % (url, str(err)[:200]))
    return found


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/var/lib/bw-fleet/converged.json"),
            state=dict(type="str", choices=["check", "record"], default="check"),
            inputs=dict(type="str", required=True),
            files=dict(type="list", elements="path", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            units=dict(type="list", elements="str", default=[]),
            containers=dict(type="list", elements="str", default=[]),
            images=dict(type="list", elements="str", default=[]),
            commands=dict(type="list", elements="list", default=[]),
            command_timeout=dict(type="int", default=30),
            urls=dict(type="list", elements="str", default=[]),
            url_timeout=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for name in ("command_timeout", "url_timeout"):
        if params[name] < 1:
            module.fail_json(msg="%s must be at least 1 second, got %d" % (name, params[name]))
    try:
        with open(params["path"]) as handle:
            stamp = json.load(handle)
    except (IOError, OSError, ValueError):
        stamp = None
    state = read_state(params)
    result = dict(changed=False, fingerprint=fingerprint(state), recorded_at=(stamp or {}).get("recorded_at", ""),
                  files_present=sorted(p for p, digest in state["files"].items() if digest != "missing"))
    if params["state"] == "check":
        result["current"], result["reasons"] = compare(stamp, params["inputs"], state, unhealthy(params["urls"], params["url_timeout"]))
        module.exit_json(**result)

    result["current"], result["reasons"] = compare(stamp, params["inputs"], state, [])
    if not result["current"]:
        result["changed"] = True
        if not module.check_mode:
            result["recorded_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            folder = os.path.dirname(params["path"])
            os.makedirs(folder, mode=0o700, exist_ok=True)
            temp = params["path"] + ".tmp"
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                json.dump({"inputs": params["inputs"], "state": state, "recorded_at": result["recorded_at"]}, handle,
                          indent=1, sort_keys=True)
            os.rename(temp, params["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
