#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_host_stack
short_description: Read which NVIDIA driver and container toolkit a host has installed
description:
  - Asks dpkg which package owns C(nvidia-smi), its version and driver branch, and the installed
    version of the NVIDIA Container Toolkit. The owner of C(nvidia-smi) is the driver on every
    packaging scheme, the versioned names up to branch 580 and the unversioned C(nvidia-open) from 590.
  - The rollout records this with every deployment that passes its gate, and a rollback puts a
    host back on exactly it (playbooks/rollout/rollback.yml).
  - Read-only. Never reports C(changed). Says nothing about the loaded kernel module; that is
    M(nvidia_gpu_verify).
version_added: "0.3.0"
author: bw-fleet contributors
options:
  smi_path:
    description: The file whose package is the driver.
    type: path
    default: /usr/bin/nvidia-smi
  toolkit_package:
    description: The package whose version is the toolkit's.
    type: str
    default: nvidia-container-toolkit
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; check mode reads the same.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
    details: Changes nothing, so there is no diff.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: debian
notes:
  - A host without a driver package returns empty strings, not an error (a new host).
seealso:
  - module: nvidia_gpu_verify
"""

EXAMPLES = r"""
- name: What driver and toolkit this host has
  nvidia_host_stack: {}
  register: host_stack

- name: The same, with the files and packages spelled out
  nvidia_host_stack:
    smi_path: /usr/bin/nvidia-smi
    toolkit_package: nvidia-container-toolkit
  register: host_stack
"""

RETURN = r"""
driver:
  description: The package that installed O(smi_path), its version and driver branch; empty strings when none.
  returned: always
  type: dict
  sample: {package: nvidia-utils-580, version: 580.105.08-0ubuntu1, branch: "580"}
toolkit:
  description: O(toolkit_package) and its installed version; empty strings when not installed.
  returned: always
  type: dict
  sample: {package: nvidia-container-toolkit, version: 1.17.8-1}
packages:
  description: Every installed C(nvidia-*), C(libnvidia-*) and C(linux-modules-nvidia-*) package and its version.
  returned: always
  type: dict
  sample: {nvidia-driver-580-open: 580.105.08-0ubuntu1, nvidia-utils-580: 580.105.08-0ubuntu1}
held:
  description: Those of them on hold (C(apt-mark hold)).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bwfleet_dpkg import QUERY_FORMAT, QUERY_PATTERNS, host_stack


def main():
    module = AnsibleModule(
        argument_spec=dict(
            smi_path=dict(type="path", default="/usr/bin/nvidia-smi"),
            toolkit_package=dict(type="str", default="nvidia-container-toolkit"),
        ),
        supports_check_mode=True,
    )
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    # rc 1 means one of the patterns matched nothing (no toolkit yet): the rest is printed.
    rc, listing, err = module.run_command([dpkg_query, "-W", "-f", QUERY_FORMAT] + QUERY_PATTERNS)
    if rc not in (0, 1):
        module.fail_json(msg="dpkg-query -W failed (rc %d): %s" % (rc, err.strip()))
    # rc 1: no package owns the file (no driver yet).
    rc, owner, err = module.run_command([dpkg_query, "-S", module.params["smi_path"]])
    result = host_stack(listing, owner if rc == 0 else "", module.params["toolkit_package"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
