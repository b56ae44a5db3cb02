"""State of a lab host after site.yml (testinfra, through `docker exec`)."""

import json


def test_systemd_is_running(host):
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_simulated_gpu_is_on_the_pci_bus(host):
    vendor = host.file("/srv/bwlab/sys/bus/pci/devices/0000:01:00.0/vendor")
    assert vendor.content_string.strip() == "0x10de"
    profile = json.loads(host.file("/etc/bwlab/gpu-profile.json").content_string)
    assert profile["compute_cap"] == "12.0" and profile["memory_total_mib"] == 32607
