# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The in-image probe: what the serving image's Python really has.

This file is two things:
- a script (`python3 bwfleet_probe.py`) that runs inside the serving image,
  or with any Python that has torch, and prints one JSON report. It needs the
  standard library only, so it works in any image;
- the diagnosis of such a report (`diagnose`), used by nvidia_gpu_verify.

The seed lost hours to an image whose torch had no sm_120 kernels, whose
sgl_kernel did not match torch's ABI, and which lacked libnuma.so.1; each of
those is one line of this report.
"""

from __future__ import annotations

import ctypes
import json
import sys


def _error(exc):
    return "%s: %s" % (type(exc).__name__, exc)


def _dist_version(name):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return metadata.version(name)
    except Exception:
        return None


def probe():
    """Collect the report. Never raises: every failure lands in report['errors']."""
    report = {
        "python": sys.version.split()[0],
        "errors": {},
        "packages": {n: _dist_version(n) for n in ("torch", "sglang", "sgl-kernel", "flashinfer-python", "transformers")},
    }
    try:
        ctypes.CDLL("libnuma.so.1")
        report["libnuma"] = True
    except OSError as exc:
        report["libnuma"] = False
        report["errors"]["libnuma"] = str(exc)

    try:
        import torch  # noqa: F401  (only present inside the image)
    except Exception as exc:  # ImportError, or an OSError from a missing .so
        report["errors"]["torch"] = _error(exc)
        return report

    report["torch_version"] = torch.__version__
    report["torch_cuda"] = torch.version.cuda
    try:
        report["arch_list"] = list(torch.cuda.get_arch_list())
    except Exception as exc:
        report["arch_list"] = []
        report["errors"]["arch_list"] = _error(exc)
    report["cuda_available"] = bool(torch.cuda.is_available())
    report["devices"] = []
    if report["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            sm = "sm_%d%d" % (major, minor)
            report["devices"].append(
                {
                    "index": index,
                    "name": torch.cuda.get_device_name(index),
                    "capability": "%d.%d" % (major, minor),
                    "sm": sm,
                    "sm_in_arch_list": sm in report["arch_list"],
                }
            )
        try:
            # A small matmul checked against the CPU: "no kernel image is
            # available for execution on the device" shows up here.
            a = torch.arange(64, dtype=torch.float32).reshape(8, 8) / 64
            want = a @ a
            got = (a.cuda() @ a.cuda()).cpu()
            torch.cuda.synchronize()
            report["cuda_op"] = bool(torch.allclose(want, got, atol=1e-3))
            if not report["cuda_op"]:
                report["errors"]["cuda_op"] = "matmul on the GPU differs from the CPU result"
        except Exception as exc:
            report["cuda_op"] = False
            report["errors"]["cuda_op"] = _error(exc)

    try:
        import sgl_kernel  # noqa: F401

        report["sgl_kernel"] = getattr(sgl_kernel, "__version__", None) or report["packages"].get("sgl-kernel") or "unknown"
    except Exception as exc:
        report["sgl_kernel"] = None
        report["errors"]["sgl_kernel"] = _error(exc)
    return report


# bwfleet_versions.sm_name's twin on purpose: this file runs alone inside the image
# (`python3 -c`), where no other module_utils can be imported.
def _sm(capability):
    major, _, minor = str(capability).partition(".")
    return "sm_%d%d" % (int(major), int(minor or 0))


def diagnose(report, require_cuda=True, require_sgl_kernel=True, required_capability=None):
    """A probe report -> list of failure sentences naming the cause and the fix."""
    failures = []
    errors = report.get("errors") or {}
    if "torch" in errors:
        return ["torch does not import in the image: %s" % errors["torch"]]
    torch_version = report.get("torch_version")
    arch_list = report.get("arch_list") or []
    arch_text = " ".join(arch_list) or "none"

    wanted = set()
    if required_capability:
        wanted.add(_sm(required_capability))
    for device in report.get("devices") or []:
        wanted.add(device["sm"])
    for sm in sorted(wanted):
        if require_cuda and sm not in arch_list:
            failures.append(
                "torch build has no %s kernels (torch %s, arch list: %s): install a torch built for a CUDA that "
                "supports %s (for sm_120: CUDA >= 12.8, e.g. torch 2.8.0+cu128)" % (sm, torch_version, arch_text, sm)
            )

    if require_cuda:
        if not report.get("torch_cuda"):
            failures.append("torch %s is a CPU-only build: install a CUDA build (e.g. +cu128)" % torch_version)
        elif not report.get("cuda_available"):
            failures.append(
                "torch %s (CUDA %s) sees no GPU in the container: run it with the NVIDIA runtime and GPUs attached "
                "(--runtime nvidia --gpus all; see the nvidia_container_toolkit role)" % (torch_version, report.get("torch_cuda"))
            )
        elif report.get("cuda_op") is False:
            detail = errors.get("cuda_op", "")
            if "no kernel image" in detail:
                failures.append("a CUDA op failed with 'no kernel image is available': torch %s lacks kernels for this GPU" % torch_version)
            else:
                failures.append("a small CUDA op failed: %s" % detail)

    if require_sgl_kernel:
        detail = errors.get("sgl_kernel")
        if detail:
            if "libnuma.so.1" in detail:
                failures.append("libnuma.so.1 missing: add libnuma1 to the image (sglang_image_apt_packages); sgl_kernel links it")
            elif "undefined symbol" in detail or "ABI" in detail:
                failures.append(
                    "sgl_kernel ABI does not match torch %s (%s): install the sgl-kernel build made for this torch "
                    "(sglang_image_sgl_kernel_version)" % (torch_version, detail)
                )
            elif "No module named" in detail:
                failures.append("sgl_kernel is not installed in the image (%s)" % detail)
            else:
                failures.append("import sgl_kernel failed: %s" % detail)
    return failures


def main():
    json.dump(probe(), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
