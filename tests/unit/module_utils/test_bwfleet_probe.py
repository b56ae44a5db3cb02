"""The in-image probe's diagnosis, on the real report recorded on an H100 and on the seed's failures."""

import json
import subprocess
import sys

from bwfleet_probe import diagnose
from helpers import ROOT, fixture_text

H100_REPORT = json.loads(fixture_text("h100-580", "probe-host-python.json"))


def test_recorded_h100_report_passes_without_sgl_kernel():
    assert diagnose(H100_REPORT, require_sgl_kernel=False) == []


def test_recorded_h100_report_names_missing_sgl_kernel():
    (failure,) = diagnose(H100_REPORT)
    assert failure.startswith("sgl_kernel is not installed in the image")


def test_arch_required_for_the_5090_even_without_a_gpu():
    report = dict(H100_REPORT, arch_list=["sm_75", "sm_80", "sm_86", "sm_90"])
    failures = diagnose(report, require_sgl_kernel=False, required_capability="12.0")
    assert failures == [
        "torch build has no sm_120 kernels (torch 2.11.0+cu130, arch list: sm_75 sm_80 sm_86 sm_90): install a torch "
        "built for a CUDA that supports sm_120 (for sm_120: CUDA >= 12.8, e.g. torch 2.8.0+cu128)"
    ]


def test_seed_try5_libnuma_missing():
    report = dict(H100_REPORT, errors={"sgl_kernel": "ImportError: libnuma.so.1: cannot open shared object file: No such file or directory"})
    assert diagnose(report) == ["libnuma.so.1 missing: add libnuma1 to the image (sglang_image_apt_packages); sgl_kernel links it"]


def test_seed_try1_abi_mismatch():
    report = dict(H100_REPORT, errors={"sgl_kernel": "ImportError: /usr/local/lib/python3.10/dist-packages/sgl_kernel/common_ops.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"})
    (failure,) = diagnose(report)
    assert failure.startswith("sgl_kernel ABI does not match torch 2.11.0+cu130")


def test_cpu_only_torch_and_no_gpu():
    report = {"torch_version": "2.13.0+cpu", "torch_cuda": None, "arch_list": [], "cuda_available": False, "devices": [], "errors": {}}
    assert diagnose(report, require_sgl_kernel=False) == ["torch 2.13.0+cpu is a CPU-only build: install a CUDA build (e.g. +cu128)"]
    assert diagnose(report, require_cuda=False, require_sgl_kernel=False) == []


def test_cuda_torch_without_runtime():
    report = {"torch_version": "2.8.0+cu128", "torch_cuda": "12.8", "arch_list": ["sm_120"], "cuda_available": False, "devices": [], "errors": {}}
    (failure,) = diagnose(report, require_sgl_kernel=False)
    assert "sees no GPU in the container" in failure


def test_no_kernel_image():
    report = dict(H100_REPORT, cuda_op=False, errors={"cuda_op": "RuntimeError: CUDA error: no kernel image is available for execution on the device"})
    (failure,) = diagnose(report, require_sgl_kernel=False)
    assert "no kernel image is available" in failure


def test_torch_missing():
    assert diagnose({"errors": {"torch": "ModuleNotFoundError: No module named 'torch'"}}) == [
        "torch does not import in the image: ModuleNotFoundError: No module named 'torch'"
    ]


def test_probe_script_runs_standalone_and_never_raises():
    # Whatever this interpreter has (torch or not), the probe prints one JSON report.
    out = subprocess.run([sys.executable, ROOT + "/module_utils/bwfleet_probe.py"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["python"] == sys.version.split()[0]
    assert "libnuma" in report and isinstance(report["errors"], dict)
