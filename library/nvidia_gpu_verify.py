#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_gpu_verify
short_description: Verify NVIDIA GPUs, driver, kernel module and an image's CUDA stack
description:
  - Reads C(nvidia-smi) (CSV query and C(-q -x)), C(/proc/driver/nvidia/version) and sysfs,
    and fails with the cause and the fix when the GPU, the driver or the kernel module does not
    fit the stack (by default the RTX 5090 / Blackwell stack of the bw-fleet recipe).
  - Optionally runs the in-image probe (torch version, CUDA build, arch list, C(sgl_kernel)
    import, libnuma, a small CUDA op) inside a container image with the GPUs attached, or with a
    local Python interpreter.
  - Read-only. Never reports C(changed).
version_added: "0.1.0"
author: bw-fleet contributors
options:
  nvidia_smi_path:
    description: The C(nvidia-smi) binary; a bare name is looked up on C(PATH).
    type: str
    default: nvidia-smi
  min_compute_capability:
    description: Lowest acceptable compute capability, compared as numbers (C(9.0) < C(12.0)).
    type: str
    default: "12.0"
  min_driver_version:
    description:
      - Lowest acceptable driver version, compared as dotted numbers.
      - C(570.26) is the floor for CUDA 12.8 and Blackwell.
    type: str
    default: "570.26"
  require_open_kernel_module:
    description: Fail unless NVIDIA's open kernel module is loaded (Blackwell GPUs need it).
    type: bool
    default: true
  driver_version_file:
    description: Where the loaded kernel module describes itself.
    type: path
    default: /proc/driver/nvidia/version
  sysfs_pci_path:
    description: The sysfs folder of PCI devices, scanned for vendor C(0x10de).
    type: path
    default: /sys/bus/pci/devices
  expected_gpu_count:
    description: Fail unless exactly this many GPUs are listed.
    type: int
  min_memory_mib:
    description: Fail when a GPU has less memory than this (an RTX 5090 reports 32607 MiB).
    type: int
  pci_only:
    description:
      - Only look for NVIDIA GPUs on the PCI bus (sysfs); needs no driver.
      - Fails when none is found. Used by preflight, before a driver is installed.
    type: bool
    default: false
  image:
    description:
      - Run the in-image probe inside this image (Docker SDK), with the GPUs attached.
      - The image must already be on the host; it is never pulled.
      - Mutually exclusive with O(probe_python).
    type: str
  image_python:
    description:
      - The interpreter the probe runs with inside O(image) (the stack recipe's C(image.python)).
    type: str
    default: python3
  probe_python:
    description:
      - Run the in-image probe with this Python interpreter on the host instead of in an image.
      - Mutually exclusive with O(image).
    type: path
  probe_runtime:
    description: Container runtime for the probe container; empty for the engine default.
    type: str
    default: nvidia
  probe_gpus:
    description:
      - V(all), a comma-separated list of GPU indexes, or V(none) to attach no GPU.
      - With V(none) the probe container gets C(NVIDIA_VISIBLE_DEVICES=void), so the image's own
        C(NVIDIA_VISIBLE_DEVICES=all) cannot make the nvidia runtime attach every GPU anyway.
    type: str
    default: all
  probe_require_cuda:
    description:
      - The probe fails unless torch is a CUDA build that sees the GPUs and has kernels for them.
    type: bool
    default: true
  require_sgl_kernel:
    description: The probe fails unless C(import sgl_kernel) works.
    type: bool
    default: true
  probe_capability:
    description:
      - Also require torch kernels for this compute capability (for example V(12.0)), even when
        no GPU is attached.
      - Checks an image on a build host without an RTX 5090.
    type: str
  probe_timeout:
    description:
      - Seconds the probe may take; the probe process or container is killed after that.
      - At least 1.
    type: int
    default: 300
  smi_timeout:
    description:
      - Seconds each C(nvidia-smi) call may take before it is killed and the module fails.
      - A GPU that fell off the bus (Xid 79) leaves C(nvidia-smi) blocked in the kernel; without
        a bound it would hang the whole play. The failure message says so.
      - At least 1.
    type: int
    default: 60
  docker_host:
    description: Docker engine address for the image probe.
    type: str
    default: unix:///var/run/docker.sock
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; check mode runs every check for real and gives the same answer.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
    details: Changes nothing, so there is no diff.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details: Linux with sysfs and C(/proc); the image probe needs a Docker engine.
requirements:
  - nvidia-smi on the managed host (not for O(pci_only=true))
  - the C(docker) Python SDK when O(image) is set
notes:
  - Garbage or partial C(nvidia-smi) output fails with the raw line quoted.
  - Set O(min_compute_capability=9.0) to accept Hopper (H100) GPUs.
"""

EXAMPLES = r"""
- name: Verify an RTX 5090 box (the defaults ask for CC >= 12.0, driver >= 570.26, open modules)
  nvidia_gpu_verify:
    expected_gpu_count: 1
    min_memory_mib: 32000

- name: Verify the serving image sees the GPU with sm_120 kernels, sgl_kernel and libnuma
  nvidia_gpu_verify:
    image: "sglang:{{ sglang_image_tag }}"

- name: Accept an H100 and probe the host's own torch
  nvidia_gpu_verify:
    min_compute_capability: "9.0"
    probe_python: /usr/bin/python3
    require_sgl_kernel: false

- name: Before any driver is installed, only look for the GPU on the PCI bus
  nvidia_gpu_verify:
    pci_only: true
"""

RETURN = r"""
pci_devices:
  description: NVIDIA display/3D controllers found in sysfs, with the bound driver.
  returned: always
  type: list
  elements: dict
  sample:
    - address: "0000:01:00.0"
      vendor: "0x10de"
      device: "0x2b85"
      class: "0x030000"
      driver: nvidia
      name: GeForce RTX 5090
      blackwell: true
kernel_module:
  description: V(open), V(proprietary) or V(unknown) (no module loaded or an unknown banner).
  returned: unless O(pci_only=true)
  type: str
  sample: open
kernel_module_version:
  description: Version of the loaded kernel module; null when none is loaded.
  returned: unless O(pci_only=true)
  type: str
  sample: "570.172.08"
gpus:
  description: One entry per GPU from the CSV query.
  returned: when nvidia-smi answered
  type: list
  elements: dict
  sample:
    - index: 0
      name: NVIDIA GeForce RTX 5090
      uuid: GPU-0b1e3c4d-0000-0000-0000-000000000000
      pci_bus_id: "00000000:01:00.0"
      compute_capability: "12.0"
      memory_total_mib: 32607
      driver_version: "570.172.08"
gpu_count:
  description: Number of GPUs listed.
  returned: when nvidia-smi answered
  type: int
  sample: 1
driver_version:
  description: Driver version nvidia-smi reports.
  returned: when nvidia-smi answered
  type: str
  sample: "570.172.08"
cuda_driver_version:
  description: Highest CUDA version the driver supports (C(cuda_version) of C(nvidia-smi -q -x)).
  returned: when nvidia-smi answered
  type: str
  sample: "12.8"
probe:
  description:
    - The in-image probe's report (python, torch_version, torch_cuda, arch_list, devices,
      sgl_kernel, libnuma, errors).
  returned: when O(image) or O(probe_python) is set and the probe ran
  type: dict
failures:
  description: Every failed check, one sentence each (also joined into RV(msg)).
  returned: when a check failed
  type: list
  elements: str
  sample:
    - "driver 535.247.01 is older than 570.26 (CUDA 12.8 / Blackwell): raise nvidia_driver_branch"
rc:
  description: Exit status of the C(nvidia-smi) call that failed.
  returned: when nvidia-smi exited non-zero
  type: int
  sample: 9
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bwfleet_nvidia import (
    NvidiaParseError,
    csv_query_args,
    evaluate,
    explain_smi_failure,
    explain_smi_timeout,
    parse_gpu_csv,
    parse_proc_version,
    parse_smi_xml,
    run_bounded,
    scan_pci,
)
from ansible.module_utils.bwfleet_probe import diagnose
from ansible.module_utils.bwfleet_versions import parse_dotted
from ansible.module_utils.common.text.converters import to_text

import ansible.module_utils.bwfleet_probe as probe_source_module


def probe_source():
    """The probe script's text, shipped as `python3 -c` into the image."""
    loader = getattr(probe_source_module, "__loader__", None)
    source = loader.get_source(probe_source_module.__name__) if loader else None
    if not source:
        path = getattr(probe_source_module, "__file__", None)
        with open(path) as handle:
            source = handle.read()
    return source


def last_json_line(text):
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON report in the probe output: %r" % (text or "")[-300:])


def run_probe_in_image(module, params):
    try:
        import docker
        from docker.errors import APIError, DockerException, ImageNotFound
        from requests.exceptions import RequestException
    except ImportError:
        module.fail_json(msg="the image probe needs the Python 'docker' SDK on the managed host (pip/apt: python3-docker)")
    timeout = params["probe_timeout"]
    container = None
    try:
        client = docker.DockerClient(base_url=params["docker_host"], timeout=timeout)
        client.images.get(params["image"])  # never pull: verify what is on this host
        kwargs = {
            "image": params["image"],
            "entrypoint": [params["image_python"], "-c", probe_source()],
            "detach": True,
            "labels": {"io.bwfleet.probe": "1"},
        }
        if params["probe_runtime"]:
            kwargs["runtime"] = params["probe_runtime"]
        gpus = (params["probe_gpus"] or "none").strip()
        if gpus != "none":
            if gpus == "all":
                request = docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
            else:
                request = docker.types.DeviceRequest(device_ids=[g.strip() for g in gpus.split(",")], capabilities=[["gpu"]])
            kwargs["device_requests"] = [request]
        else:
            # The image's NVIDIA_VISIBLE_DEVICES=all would otherwise hand the nvidia runtime every GPU.
            kwargs["environment"] = {"NVIDIA_VISIBLE_DEVICES": "void"}
        # Detached, then a bounded wait: containers.run() waits without a limit.
        container = client.containers.run(**kwargs)
        try:
            status = container.wait(timeout=timeout)
        except RequestException:
            module.fail_json(
                msg="probe: the container of %s did not finish within %d s (probe_timeout): it was killed; "
                "a CUDA call that hangs points at the GPU or driver (nvidia-smi, dmesg)" % (params["image"], timeout)
            )
        output = container.logs(stdout=True, stderr=False)
        if status.get("StatusCode") != 0:
            err = container.logs(stdout=False, stderr=True)
            module.fail_json(msg="probe: the container exited %s: %s" % (status.get("StatusCode"), to_text(err)[-500:]))
    except ImageNotFound:
        module.fail_json(msg="probe: image %s not found on this host: build or load it first (sglang_image role)" % params["image"])
    except (DockerException, RequestException) as exc:
        module.fail_json(msg="probe: cannot run a container of %s: %s" % (params["image"], to_text(exc)))
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except (APIError, DockerException, RequestException):
                pass
    return to_text(output)


def run_probe_with_python(module, params):
    argv = [params["probe_python"], "-c", probe_source()]
    rc, out, err, timed_out = run_bounded(argv, params["probe_timeout"])
    if timed_out:
        module.fail_json(msg="probe: %s did not finish within %d s (probe_timeout) and was killed" % (params["probe_python"], params["probe_timeout"]))
    if rc != 0:
        module.fail_json(msg="probe: %s exited %s: %s" % (params["probe_python"], rc, (err or out)[-500:]))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="str", default="nvidia-smi"),
            min_compute_capability=dict(type="str", default="12.0"),
            min_driver_version=dict(type="str", default="570.26"),
            require_open_kernel_module=dict(type="bool", default=True),
            driver_version_file=dict(type="path", default="/proc/driver/nvidia/version"),
            sysfs_pci_path=dict(type="path", default="/sys/bus/pci/devices"),
            expected_gpu_count=dict(type="int"),
            min_memory_mib=dict(type="int"),
            pci_only=dict(type="bool", default=False),
            image=dict(type="str"),
            image_python=dict(type="str", default="python3"),
            probe_python=dict(type="path"),
            probe_runtime=dict(type="str", default="nvidia"),
            probe_gpus=dict(type="str", default="all"),
            probe_require_cuda=dict(type="bool", default=True),
            require_sgl_kernel=dict(type="bool", default=True),
            probe_capability=dict(type="str"),
            probe_timeout=dict(type="int", default=300),
            smi_timeout=dict(type="int", default=60),
            docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
        ),
        mutually_exclusive=[("image", "probe_python")],
        supports_check_mode=True,
    )
    params = module.params

    for name in ("min_compute_capability", "min_driver_version", "probe_capability"):
        if params[name] is None:
            continue
        try:
            parse_dotted(params[name])
        except ValueError:
            module.fail_json(msg="%s must be a dotted number such as '12.0' or '570.26', got %r" % (name, params[name]))
    for name in ("expected_gpu_count", "min_memory_mib"):
        if params[name] is not None and params[name] < 0:
            module.fail_json(msg="%s must not be negative, got %d" % (name, params[name]))
    for name in ("smi_timeout", "probe_timeout"):
        if params[name] < 1:
            module.fail_json(msg="%s must be at least 1 second, got %d" % (name, params[name]))

    result = dict(changed=False)
    result["pci_devices"] = scan_pci(params["sysfs_pci_path"])
    if params["pci_only"]:
        if not result["pci_devices"]:
            module.fail_json(
                msg="no NVIDIA GPU on PCI (no vendor 0x10de display/3D device under %s): this box has no GPU "
                "the driver could use; check the card is seated and powered" % params["sysfs_pci_path"],
                **result
            )
        module.exit_json(**result)

    try:
        with open(params["driver_version_file"]) as handle:
            proc_text = handle.read()
    except (IOError, OSError):
        proc_text = ""
    result["kernel_module"], result["kernel_module_version"] = parse_proc_version(proc_text)

    smi = params["nvidia_smi_path"]
    if os.sep not in smi:
        smi = module.get_bin_path(smi)
    elif not os.access(smi, os.X_OK):
        smi = None
    if not smi:
        module.fail_json(msg=explain_smi_failure(None, "", "", result["pci_devices"]), **result)

    def smi_run(args):
        # Bounded: a GPU off the bus hangs nvidia-smi in the kernel, and with it the whole play.
        argv = [smi] + args
        rc, out, err, timed_out = run_bounded(argv, params["smi_timeout"])
        if timed_out:
            module.fail_json(msg=explain_smi_timeout(argv, params["smi_timeout"]), **result)
        return rc, out, err

    rc, out, err = smi_run(csv_query_args())
    if rc != 0:
        module.fail_json(msg=explain_smi_failure(rc, out, err, result["pci_devices"]), rc=rc, **result)
    try:
        result["gpus"] = parse_gpu_csv(out)
    except NvidiaParseError as exc:
        module.fail_json(msg="nvidia-smi printed something unexpected: %s" % exc, **result)
    result["gpu_count"] = len(result["gpus"])
    result["driver_version"] = result["gpus"][0]["driver_version"]

    rc, out, err = smi_run(["-q", "-x"])
    if rc != 0:
        module.fail_json(msg=explain_smi_failure(rc, out, err, result["pci_devices"]), rc=rc, **result)
    try:
        xml_facts = parse_smi_xml(out)
    except NvidiaParseError as exc:
        module.fail_json(msg="nvidia-smi printed something unexpected: %s" % exc, **result)
    result["cuda_driver_version"] = xml_facts["cuda_version"]

    requirements = dict(
        (k, params[k])
        for k in (
            "min_compute_capability",
            "min_driver_version",
            "require_open_kernel_module",
            "expected_gpu_count",
            "min_memory_mib",
            "driver_version_file",
        )
    )
    failures = evaluate(result, requirements)

    if params["image"] or params["probe_python"]:
        raw = run_probe_in_image(module, params) if params["image"] else run_probe_with_python(module, params)
        try:
            result["probe"] = last_json_line(raw)
        except ValueError as exc:
            module.fail_json(msg="probe: %s" % exc, **result)
        failures += [
            "image %s: %s" % (params["image"], f) if params["image"] else "probe: %s" % f
            for f in diagnose(
                result["probe"],
                require_cuda=params["probe_require_cuda"],
                require_sgl_kernel=params["require_sgl_kernel"],
                required_capability=params["probe_capability"],
            )
        ]

    if failures:
        module.fail_json(msg="; ".join(failures), failures=failures, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
