"""A bad inventory fails with a clear error, before anything changes.

The preflight stage is read-only, so these runs use this machine itself (a local connection)
as the one host of gpu_servers."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT

PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def run(inventory_text, *extra, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(inventory_text)
    proc = subprocess.run([PLAYBOOK, "-i", str(inventory), "site.yml", "--tags", "preflight"] + list(extra),
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


LOCAL = """
gpu_servers:
  hosts:
    controller:
      ansible_connection: local
      ansible_python_interpreter: %s
""" % sys.executable


@pytest.mark.parametrize(
    "extra,expected",
    [
        ('{"preflight_min_memory_mb": "lots"}', "preflight_min_memory_mb"),
        ('{"nvidia_driver_source": "ppa"}', "value of nvidia_driver_source must be one of: cuda_repo, distro, got: ppa"),
        ('{"sglang_service_instances": ["main"]}', "sglang_service_instances"),
        ('{"sglang_image_build_strategy": "sometimes"}', "value of sglang_image_build_strategy must be one of: once, each"),
    ],
)
def test_wrong_types_and_choices_fail_in_preflight(tmp_path, extra, expected):
    rc, out = run(LOCAL, "-e", extra, tmp_path=tmp_path)
    assert rc != 0
    assert expected in out, out[-2000:]
    assert "changed=0" in out


def test_no_gpu_on_the_pci_bus_is_named(tmp_path):
    # This machine has no NVIDIA GPU: preflight says so, with the fix, and still checks the rest.
    rc, out = run(LOCAL, "-e", '{"preflight_check_kernel_headers": false, "preflight_min_memory_mb": 100}',
                  tmp_path=tmp_path)
    assert rc != 0
    assert "no NVIDIA GPU on PCI (no vendor 0x10de display/3D device under /sys/bus/pci/devices)" in out


def fake_pci(root, device):
    # A sysfs PCI tree with one NVIDIA display device, as the kernel lays it out.
    dev = root / "0000:01:00.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text(device + "\n")
    (dev / "class").write_text("0x030200\n")
    return str(root)


def test_a_gpu_off_the_recipes_known_good_list_is_named(tmp_path):
    # An H100 (10de:2330) under the RTX 5090 recipe: preflight names the recipe, its list and the fix.
    pci = fake_pci(tmp_path / "pci", "0x2330")
    rc, out = run(LOCAL, "-e", json.dumps({"preflight_sysfs_pci_path": pci, "preflight_check_kernel_headers": False,
                                           "preflight_min_memory_mb": 100}), tmp_path=tmp_path)
    assert rc != 0
    assert ("(0x2330) is not on the known-good list of stack recipe sglang-0.5.2-cu128-sm120 "
            "(stacks/sglang-0.5.2-cu128-sm120.yml: 0x2b85, 0x2b87)") in out, out[-2000:]
    assert "changed=0" in out


def test_a_known_good_gpu_passes_that_check(tmp_path):
    pci = fake_pci(tmp_path / "pci", "0x2b85")
    rc, out = run(LOCAL, "-e", json.dumps({"preflight_sysfs_pci_path": pci, "preflight_check_kernel_headers": False,
                                           "preflight_min_memory_mb": 100}), tmp_path=tmp_path)
    assert "known-good list" not in out, out[-2000:]


@pytest.mark.skipif(not shutil.which("docker"), reason="needs the docker CLI")
def test_unreachable_host_over_ssh(tmp_path):
    # Nothing listens on port 1 of loopback: SSH cannot connect, and Ansible says UNREACHABLE.
    rc, out = run("gpu_servers:\n  hosts:\n    gpu-unreachable:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n"
                  "      ansible_connection: ssh\n      ansible_ssh_common_args: -o ConnectTimeout=5\n", tmp_path=tmp_path)
    assert rc == 4
    assert "UNREACHABLE" in out and "gpu-unreachable" in out
    assert "unreachable=1" in out


def test_missing_lab_host(tmp_path):
    # With pipelining (ansible.cfg), the docker connection reports a container that is not there as a
    # failed module carrying Docker's own words, not as UNREACHABLE: the run still stops, naming both.
    rc, out = run("gpu_servers:\n  hosts:\n    bwlab-does-not-exist:\n      ansible_connection: community.docker.docker\n",
                  tmp_path=tmp_path)
    assert rc in (2, 4)
    assert "No such container: bwlab-does-not-exist" in out
    assert "ok=0" in out and "changed=0" in out
