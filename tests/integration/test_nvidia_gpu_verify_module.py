"""nvidia_gpu_verify through real Ansible, against the lab's stand-in nvidia-smi
(which replays the H100 capture recorded on the device machine)."""

import json
import os
import shutil
import subprocess

import pytest

from ansible_run import run_module
from helpers import FIXTURES, ROOT

STANDIN = os.path.join(ROOT, "lab", "standin", "nvidia-smi")
PROFILES = {
    "rtx5090": {"name": "NVIDIA GeForce RTX 5090", "pci_device_id": "0x2b85", "compute_cap": "12.0",
                "memory_total_mib": 32607, "architecture": "Blackwell", "count": 1},
    "h100": {"name": "NVIDIA H100 80GB HBM3", "pci_device_id": "0x2330", "compute_cap": "9.0",
             "memory_total_mib": 81559, "architecture": "Hopper", "count": 1},
}
OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {v}  Release Build  (lab)  Thu Jul 10 2025\n"
PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Tue Jun 24 20:29:39 UTC 2025\n"


class Box:
    """A simulated GPU box in a temp folder: profile, driver files, sysfs."""

    def __init__(self, root, profile="rtx5090", driver="570.172.08", loaded=OPEN, loaded_version=None):
        self.root = root
        (root / "capture").mkdir()
        for name in ("smi-q-x.xml", "smi-query-wide-nounits.csv"):
            shutil.copy(os.path.join(FIXTURES, "h100-580", name), root / "capture" / name)
        (root / "profile.json").write_text(json.dumps(PROFILES[profile]) if profile else "{}")
        (root / "driver-version").write_text(driver + "\n")
        self.proc = root / "proc-version"
        if loaded:
            self.proc.write_text(loaded.format(v=loaded_version or driver))
        dev = root / "sys" / "0000:01:00.0"
        dev.mkdir(parents=True)
        (dev / "vendor").write_text("0x10de\n")
        (dev / "device").write_text((PROFILES[profile] if profile else PROFILES["rtx5090"])["pci_device_id"] + "\n")
        (dev / "class").write_text("0x030000\n")
        self.env = {
            "BWLAB_CAPTURE_DIR": str(root / "capture"),
            "BWLAB_GPU_PROFILE": str(root / "profile.json"),
            "BWLAB_DRIVER_VERSION_FILE": str(root / "driver-version"),
            "BWLAB_LOADED_MODULE": str(self.proc),
        }

    def verify(self, check=False, **args):
        base = {"nvidia_smi_path": STANDIN, "driver_version_file": str(self.proc), "sysfs_pci_path": str(self.root / "sys")}
        base.update(args)
        return run_module("nvidia_gpu_verify", base, env=self.env, check=check)


def test_rtx5090_passes_defaults(tmp_path):
    rc, res = Box(tmp_path).verify(expected_gpu_count=1, min_memory_mib=32000)
    assert rc == 0, res
    assert res["changed"] is False
    assert res["gpu_count"] == 1
    gpu = res["gpus"][0]
    assert (gpu["name"], gpu["compute_capability"], gpu["memory_total_mib"]) == ("NVIDIA GeForce RTX 5090", "12.0", 32607)
    assert res["driver_version"] == "570.172.08"
    assert res["cuda_driver_version"] == "12.8"
    assert res["kernel_module"] == "open"
    assert res["pci_devices"][0]["name"] == "GeForce RTX 5090"


def test_check_mode_same_answer(tmp_path):
    rc, res = Box(tmp_path).verify(check=True)
    assert rc == 0 and res["changed"] is False and res["gpu_count"] == 1


def test_h100_fails_default_and_passes_hopper_floor(tmp_path):
    box = Box(tmp_path, profile="h100", driver="580.159.04")
    rc, res = box.verify()
    assert rc != 0
    assert res["msg"] == "GPU 0 (NVIDIA H100 80GB HBM3) has compute capability 9.0; this stack requires >= 12.0 (sm_120)"
    rc, res = box.verify(min_compute_capability="9.0")
    assert rc == 0 and res["cuda_driver_version"] == "13.0"


def test_old_proprietary_driver(tmp_path):
    rc, res = Box(tmp_path, driver="535.247.01", loaded=PROPRIETARY).verify()
    assert rc != 0
    assert "driver 535.247.01 is older than 570.26 (CUDA 12.8 / Blackwell): raise nvidia_driver_branch" in res["failures"]
    assert any("proprietary kernel module is loaded" in f for f in res["failures"])


def test_driver_not_loaded(tmp_path):
    rc, res = Box(tmp_path, loaded=None).verify()
    assert rc != 0
    assert res["msg"].startswith("nvidia-smi not found or failed: driver not installed or not loaded (1 NVIDIA device on PCI)")


def test_version_mismatch_after_upgrade_without_reboot(tmp_path):
    rc, res = Box(tmp_path, driver="580.95.05", loaded_version="570.172.08").verify()
    assert rc != 0
    assert "driver/library version mismatch" in res["msg"] and "reboot" in res["msg"]


def test_no_nvidia_smi(tmp_path):
    box = Box(tmp_path)
    rc, res = box.verify(nvidia_smi_path=str(tmp_path / "absent" / "nvidia-smi"))
    assert rc != 0
    assert res["msg"] == "nvidia-smi not found: driver not installed (1 NVIDIA device on PCI)"


def test_garbage_output_is_quoted(tmp_path):
    fake = tmp_path / "garbage-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: ??? <truncated'\n")
    fake.chmod(0o755)
    rc, res = Box(tmp_path).verify(nvidia_smi_path=str(fake))
    assert rc != 0
    assert "nvidia-smi printed something unexpected" in res["msg"]
    assert "'GPU 0: ??? <truncated'" in res["msg"]
    assert "Traceback" not in json.dumps(res)


@pytest.mark.parametrize(
    "args,expected",
    [
        ({"min_compute_capability": "twelve"}, "min_compute_capability must be a dotted number"),
        ({"min_driver_version": "570.x"}, "min_driver_version must be a dotted number"),
        ({"expected_gpu_count": "two"}, "expected_gpu_count"),
        ({"image": "x", "probe_python": "/usr/bin/python3"}, "mutually exclusive"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, expected):
    rc, res = Box(tmp_path).verify(**args)
    assert rc != 0
    assert expected in res["msg"]


def test_pci_only_needs_no_driver(tmp_path):
    box = Box(tmp_path, loaded=None)
    rc, res = box.verify(pci_only=True, nvidia_smi_path="/nonexistent")
    assert rc == 0 and res["pci_devices"][0]["device"] == "0x2b85"
    rc, res = box.verify(pci_only=True, sysfs_pci_path=str(tmp_path / "empty"))
    assert rc != 0 and res["msg"].startswith("no NVIDIA GPU on PCI")


def test_probe_with_local_python(tmp_path):
    rc, res = Box(tmp_path).verify(probe_python="/usr/bin/python3", probe_require_cuda=False, require_sgl_kernel=False)
    # /usr/bin/python3 here has no torch: the probe says so, with the cause.
    assert rc != 0
    assert res["probe"]["errors"]["torch"].startswith("ModuleNotFoundError")
    assert res["msg"].startswith("probe: torch does not import in the image")


def _lab_image():
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return None
    out = subprocess.run(["docker", "image", "inspect", "bwfleet-lab/ubuntu2204:latest"], capture_output=True)
    return "bwfleet-lab/ubuntu2204:latest" if out.returncode == 0 else None


@pytest.mark.lab
def test_probe_in_image_through_docker(tmp_path):
    image = _lab_image()
    if not image:
        pytest.skip("needs the Docker engine and the lab base image (make lab / scripts/bootstrap)")
    box = Box(tmp_path)
    rc, res = box.verify(image=image, probe_runtime="", probe_gpus="none", require_sgl_kernel=False)
    assert rc != 0
    assert res["probe"]["python"].startswith("3.10")  # jammy's python3
    assert res["probe"]["libnuma"] is False  # the base image has no libnuma1: what try 5 of the seed hit
    assert res["msg"] == "image %s: torch does not import in the image: ModuleNotFoundError: No module named 'torch'" % image
    rc, res = box.verify(image="bwfleet-lab/absent:none", probe_runtime="", probe_gpus="none")
    assert rc != 0 and "not found on this host" in res["msg"]
