"""nvidia-smi / procfs / sysfs parsing and the decisions, on recorded real outputs."""

import os
import sys
import time

import pytest

from bwfleet_nvidia import (
    NvidiaParseError,
    evaluate,
    explain_smi_failure,
    explain_smi_timeout,
    parse_gpu_csv,
    parse_proc_version,
    parse_smi_xml,
    run_bounded,
    scan_pci,
)
from helpers import fixture_text

H100 = "h100-580"
R5090 = "rtx5090-derived"

DEFAULTS = dict(
    min_compute_capability="12.0",
    min_driver_version="570.26",
    require_open_kernel_module=True,
    expected_gpu_count=None,
    min_memory_mib=None,
    driver_version_file="/proc/driver/nvidia/version",
)


def facts_from(folder, proc="proc-driver-nvidia-version.txt", csv="smi-query.csv"):
    gpus = parse_gpu_csv(fixture_text(folder, csv))
    module, version = parse_proc_version(fixture_text(folder, proc))
    return dict(gpus=gpus, driver_version=gpus[0]["driver_version"], kernel_module=module, pci_devices=[])


def test_recorded_h100_csv():
    (gpu,) = parse_gpu_csv(fixture_text(H100, "smi-query.csv"))
    assert gpu == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-9e69fcbc-962a-e3ab-6d85-0e453726a4e8",
        "pci_bus_id": "00000000:00:06.0",
        "compute_capability": "9.0",
        "memory_total_mib": 81559,
        "driver_version": "580.159.04",
    }


def test_recorded_h100_xml():
    xml = parse_smi_xml(fixture_text(H100, "smi-q-x.xml"))
    assert xml["driver_version"] == "580.159.04"
    assert xml["cuda_version"] == "13.0"
    assert xml["attached_gpus"] == 1
    assert xml["products"] == ["NVIDIA H100 80GB HBM3"]


def test_recorded_open_module():
    assert parse_proc_version(fixture_text(H100, "proc-driver-nvidia-version.txt")) == ("open", "580.159.04")


def test_proprietary_module():
    text = fixture_text(R5090, "proc-driver-nvidia-version-proprietary-535.txt")
    assert parse_proc_version(text) == ("proprietary", "535.247.01")


def test_missing_proc_is_unknown():
    assert parse_proc_version("") == ("unknown", None)
    assert parse_proc_version("something else entirely") == ("unknown", None)


def test_h100_fails_the_blackwell_default_with_a_clear_message():
    failures = evaluate(facts_from(H100), DEFAULTS)
    assert failures == ["GPU 0 (NVIDIA H100 80GB HBM3) has compute capability 9.0; this stack requires >= 12.0 (sm_120)"]


def test_h100_passes_with_hopper_floor():
    assert evaluate(facts_from(H100), dict(DEFAULTS, min_compute_capability="9.0")) == []


def test_rtx5090_passes_defaults():
    facts = facts_from(R5090, proc="proc-driver-nvidia-version-open-570.txt")
    assert facts["gpus"][0]["compute_capability"] == "12.0"
    assert facts["gpus"][0]["memory_total_mib"] == 32607
    assert evaluate(facts, dict(DEFAULTS, expected_gpu_count=1, min_memory_mib=32000)) == []


def test_old_driver_names_the_fix():
    facts = facts_from(R5090, proc="proc-driver-nvidia-version-proprietary-535.txt")
    facts["driver_version"] = "535.247.01"
    failures = evaluate(facts, DEFAULTS)
    assert "driver 535.247.01 is older than 570.26 (CUDA 12.8 / Blackwell): raise nvidia_driver_branch" in failures
    assert any("proprietary kernel module is loaded; RTX 50xx needs the open kernel modules" in f for f in failures)


def test_unknown_module_fails_only_when_required():
    facts = facts_from(R5090, proc="proc-driver-nvidia-version-open-570.txt")
    facts["kernel_module"] = "unknown"
    assert any("cannot tell which NVIDIA kernel module" in f for f in evaluate(facts, DEFAULTS))
    assert evaluate(facts, dict(DEFAULTS, require_open_kernel_module=False)) == []


def test_count_and_memory():
    facts = facts_from(R5090, proc="proc-driver-nvidia-version-open-570.txt", csv="smi-query-2gpu.csv")
    assert len(facts["gpus"]) == 2
    failures = evaluate(facts, dict(DEFAULTS, expected_gpu_count=1, min_memory_mib=40000))
    assert "found 2 GPUs, expected 1 (expected_gpu_count)" in failures
    assert sum("at least 40000 MiB required" in f for f in failures) == 2


@pytest.mark.parametrize(
    "text",
    [
        "0, NVIDIA H100 80GB HBM3, GPU-x, 00000000:00:06.0, 9.0, 580.159.04",  # a field short
        "0, NVIDIA H100, GPU-x, 0000:00:06.0, [N/A], 580.159.04, 81559",  # not a capability
        "Field \"bogus\" is not a valid field to query.",  # real error text (recorded)
        "",
    ],
)
def test_garbage_csv_is_quoted_not_a_traceback(text):
    with pytest.raises(NvidiaParseError) as info:
        parse_gpu_csv(text)
    if text:
        assert repr(text.strip())[:40] in str(info.value)


def test_truncated_xml_is_quoted():
    text = fixture_text(H100, "smi-q-x.xml")[:500]
    with pytest.raises(NvidiaParseError, match="not XML"):
        parse_smi_xml(text)


def test_smi_failure_messages():
    pci = [{"device": "0x2b85", "name": "GeForce RTX 5090"}]
    assert explain_smi_failure(None, "", "", pci) == "nvidia-smi not found: driver not installed (1 NVIDIA device on PCI)"
    msg = explain_smi_failure(18, "Failed to initialize NVML: Driver/library version mismatch", "", pci)
    assert "driver/library version mismatch" in msg and "reboot" in msg
    msg = explain_smi_failure(6, "No devices were found", "", pci)
    assert "Resizable BAR" in msg
    msg = explain_smi_failure(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", "", pci)
    assert msg.startswith("nvidia-smi not found or failed: driver not installed or not loaded (1 NVIDIA device on PCI)")
    assert "no NVIDIA GPU on PCI" in explain_smi_failure(9, "x", "", [])


def write_device(root, name, vendor, device, klass, driver=None):
    path = root / name
    path.mkdir()
    (path / "vendor").write_text(vendor + "\n")
    (path / "device").write_text(device + "\n")
    (path / "class").write_text(klass + "\n")
    if driver:
        target = root.parent / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path / "driver")


def test_scan_pci_tree_from_recorded_sysfs(tmp_path):
    # sysfs-nvidia.txt: "0000:00:06.0 vendor=0x10de device=0x2330 class=0x030200 driver=nvidia"
    line = fixture_text(H100, "sysfs-nvidia.txt").split()
    fields = dict(item.split("=") for item in line[1:])
    root = tmp_path / "devices"
    root.mkdir()
    write_device(root, line[0], fields["vendor"], fields["device"], fields["class"], fields["driver"])
    write_device(root, "0000:00:06.1", "0x10de", "0x22e8", "0x040300")  # the HDMI audio function
    write_device(root, "0000:00:01.0", "0x8086", "0x1237", "0x060000")  # a host bridge
    (device,) = scan_pci(str(root))
    assert device == {
        "address": "0000:00:06.0",
        "vendor": "0x10de",
        "device": "0x2330",
        "class": "0x030200",
        "name": "H100 80GB HBM3",
        "driver": "nvidia",
        "blackwell": False,
    }


def test_scan_pci_marks_the_blackwell_cards(tmp_path):
    root = tmp_path / "devices"
    root.mkdir()
    write_device(root, "0000:01:00.0", "0x10de", "0x2b85", "0x030000")
    write_device(root, "0000:02:00.0", "0x10de", "0x2b87", "0x030000")
    assert [(d["name"], d["blackwell"]) for d in scan_pci(str(root))] == [
        ("GeForce RTX 5090", True), ("GeForce RTX 5090 D", True)]


def test_scan_pci_missing_folder_is_empty(tmp_path):
    assert scan_pci(str(tmp_path / "nope")) == []


# --- [N/A] where nvidia-smi has no value, and bounded runs
def test_attached_gpus_not_available_is_unknown_not_a_traceback():
    xml = parse_smi_xml(fixture_text(R5090, "smi-q-x-attached-na.xml"))
    assert xml["attached_gpus"] is None
    assert xml["driver_version"] == parse_smi_xml(fixture_text(R5090, "smi-q-x.xml"))["driver_version"]


def test_memory_not_available_is_judged_not_a_traceback():
    gpus = parse_gpu_csv(fixture_text(R5090, "smi-query-memory-na.csv"))
    assert gpus[0]["memory_total_mib"] is None and gpus[0]["compute_capability"] == "12.0"
    facts = {"gpus": gpus, "driver_version": "570.172.08", "kernel_module": "open", "pci_devices": []}
    assert evaluate(facts, DEFAULTS) == []  # no memory floor asked: nothing to judge
    failures = evaluate(facts, dict(DEFAULTS, min_memory_mib=32000))
    assert failures == ["GPU 0 (NVIDIA GeForce RTX 5090) does not report its memory ([N/A]); at least 32000 MiB required (min_memory_mib)"]


def test_memory_garbage_is_still_quoted():
    with pytest.raises(NvidiaParseError, match="unexpected values"):
        parse_gpu_csv("0, NVIDIA GeForce RTX 5090, GPU-x, 00000000:01:00.0, 12.0, 570.172.08, lots")


def test_run_bounded_answers():
    rc, out, err, timed_out = run_bounded([sys.executable, "-c", "import sys; print('ok'); sys.stderr.write('e'); sys.exit(3)"], 30)
    assert (rc, out.strip(), err, timed_out) == (3, "ok", "e", False)
    rc, out, err, timed_out = run_bounded(["/nonexistent/nvidia-smi"], 5)
    assert rc is None and not timed_out and "No such file" in err


def test_run_bounded_kills_a_hung_command():
    # Ignores SIGTERM and sleeps: only the timeout's SIGKILL ends it, and the caller is back in time.
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('started', flush=True); time.sleep(60)"
    start = time.monotonic()
    rc, out, _, timed_out = run_bounded([sys.executable, "-c", script], 2)
    assert timed_out and rc is None
    assert time.monotonic() - start < 10
    msg = explain_smi_timeout(["nvidia-smi", "-q"], 2)
    assert msg.startswith("nvidia-smi -q did not answer within 2 s") and "fallen off the bus" in msg
