# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsing and decisions behind the nvidia_gpu_verify module.

Everything here is a plain function on text or dicts: the module feeds it
what nvidia-smi, /proc and sysfs said; unit tests feed it recorded outputs
from real machines (tests/fixtures/).
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET

try:  # inside Ansible (AnsiballZ) the sibling util is a module_utils import
    from ansible.module_utils.bwfleet_versions import at_least, parse_dotted, sm_name
except ImportError:  # unit tests put module_utils/ on sys.path
    from bwfleet_versions import at_least, parse_dotted, sm_name  # type: ignore

NVIDIA_VENDOR = "0x10de"

# The order matters: parse_gpu_csv maps columns by position.
CSV_FIELDS = ("index", "name", "uuid", "pci.bus_id", "compute_cap", "driver_version", "memory.total")

# Devices the project knows by name; others are still reported by id.
KNOWN_DEVICES = {
    "0x2b85": "GeForce RTX 5090",
    "0x2b87": "GeForce RTX 5090 D",
    "0x2330": "H100 80GB HBM3",
}

BLACKWELL_CONSUMER_IDS = ("0x2b85", "0x2b87")

RESIZABLE_BAR_HINT = (
    "on RTX 5090 boxes 'No devices were found' with 'RmInitAdapter failed' in the kernel log "
    "is fixed by enabling Resizable BAR and Above 4G decoding in the BIOS"
)


class NvidiaParseError(ValueError):
    """Output that does not look like what nvidia-smi prints."""


def run_bounded(argv, timeout, kill_grace=5):
    """Run a command for at most `timeout` seconds -> (rc, stdout, stderr, timed_out).

    rc is None when it could not be started or had to be killed. A GPU that fell off the bus
    leaves nvidia-smi blocked in the kernel, where even SIGKILL takes effect only when the call
    returns: after the kill, this waits `kill_grace` seconds more and then gives up on the process
    instead of hanging the play.
    """
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        return None, "", str(exc), False
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, _text(out), _text(err), False
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            out, err = proc.communicate(timeout=kill_grace)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        return None, _text(out), _text(err), True


def _text(data):
    return (data or b"").decode("utf-8", "replace")


def explain_smi_timeout(argv, timeout):
    return (
        "%s did not answer within %s s and was killed: the GPU or the driver is hung. A GPU that fell "
        "off the bus does this (kernel log: 'GPU has fallen off the bus', Xid 79; see `dmesg`); "
        "the host needs a power cycle, and its GPU a check (seating, power, PCIe riser)"
        % (" ".join(argv[:2]), timeout)
    )


def _int_or_none(text):
    """nvidia-smi prints [N/A] (or 'N/A') where a value is not available."""
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def csv_query_args(fields=CSV_FIELDS):
    return ["--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]


def _quote(line, limit=200):
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "...")


def parse_gpu_csv(text):
    """Rows of the CSV query -> list of GPU dicts.

    Raises NvidiaParseError quoting the offending raw line, so a garbled or
    truncated answer is reported as such instead of as a traceback.
    """
    gpus = []
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        raise NvidiaParseError("nvidia-smi printed no GPU rows")
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(CSV_FIELDS):
            raise NvidiaParseError(
                "expected %d comma-separated fields (%s), got %d in line %s"
                % (len(CSV_FIELDS), ",".join(CSV_FIELDS), len(cells), _quote(line))
            )
        row = dict(zip(CSV_FIELDS, cells))
        try:
            index = int(row["index"])
            capability = ".".join(str(p) for p in parse_dotted(row["compute_cap"]))
            parse_dotted(row["driver_version"])
        except ValueError:
            raise NvidiaParseError("unexpected values in nvidia-smi line %s" % _quote(line))
        # Memory may be [N/A] (a GPU in a bad state, some vGPU profiles): None, judged by evaluate().
        memory = _int_or_none(row["memory.total"])
        if memory is None and row["memory.total"].strip("[] ").upper() != "N/A":
            raise NvidiaParseError("unexpected values in nvidia-smi line %s" % _quote(line))
        gpus.append(
            {
                "index": index,
                "name": row["name"],
                "uuid": row["uuid"],
                "pci_bus_id": row["pci.bus_id"],
                "compute_capability": capability,
                "memory_total_mib": memory,
                "driver_version": row["driver_version"],
            }
        )
    return gpus


def parse_smi_xml(text):
    """`nvidia-smi -q -x` -> {driver_version, cuda_version, attached_gpus, products}."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        first = (text or "").strip().splitlines()[:1]
        raise NvidiaParseError("nvidia-smi -q -x is not XML (%s): %s" % (exc, _quote(first[0] if first else "")))
    if root.tag != "nvidia_smi_log":
        raise NvidiaParseError("nvidia-smi -q -x: unexpected root element <%s>" % root.tag)

    def text_of(node, tag):
        found = node.find(tag)
        return found.text.strip() if found is not None and found.text else None

    return {
        "driver_version": text_of(root, "driver_version"),
        "cuda_version": text_of(root, "cuda_version"),
        # [N/A] happens (a GPU dropping off the bus, NVML half up): None, not a traceback.
        "attached_gpus": _int_or_none(text_of(root, "attached_gpus")),
        "products": [text_of(gpu, "product_name") for gpu in root.findall("gpu")],
    }


_PROC_VERSION = re.compile(r"NVRM version:\s*(?P<desc>.*?)\s+(?P<version>\d+\.\d+(?:\.\d+)?)\s")


def parse_proc_version(text):
    """/proc/driver/nvidia/version -> (kernel_module, version or None).

    The open modules say 'NVIDIA UNIX Open Kernel Module for x86_64  580.159.04';
    the proprietary ones 'NVIDIA UNIX x86_64 Kernel Module  535.247.01'.
    """
    if not text:
        return "unknown", None
    match = _PROC_VERSION.search(text + " ")
    if not match:
        return "unknown", None
    flavour = "open" if "open kernel module" in match.group("desc").lower() else "proprietary"
    return flavour, match.group("version")


def scan_pci(sysfs_pci_path):
    """NVIDIA display/3D controllers under a sysfs PCI devices folder.

    Reading sysfs needs no lspci, and tells 'no GPU in the box' apart from
    'driver not loaded' (the device is there, no driver is bound).
    """
    devices = []
    try:
        entries = sorted(os.listdir(sysfs_pci_path))
    except OSError:
        return devices

    def read(dev, name):
        try:
            with open(os.path.join(sysfs_pci_path, dev, name)) as handle:
                return handle.read().strip().lower()
        except OSError:
            return None

    for dev in entries:
        if read(dev, "vendor") != NVIDIA_VENDOR:
            continue
        klass = read(dev, "class") or ""
        if not klass.startswith("0x03"):  # 0x0300 VGA, 0x0302 3D; skip the HDMI audio function
            continue
        device_id = read(dev, "device")
        driver_link = os.path.join(sysfs_pci_path, dev, "driver")
        driver = os.path.basename(os.path.realpath(driver_link)) if os.path.islink(driver_link) else None
        devices.append(
            {
                "address": dev,
                "vendor": NVIDIA_VENDOR,
                "device": device_id,
                "class": klass,
                "name": KNOWN_DEVICES.get(device_id, "NVIDIA device %s" % device_id),
                "driver": driver,
                # The one place that knows which ids are Blackwell (open modules, branch >= 570 only).
                "blackwell": device_id in BLACKWELL_CONSUMER_IDS,
            }
        )
    return devices


def has_blackwell_consumer(pci_devices):
    return any(d.get("device") in BLACKWELL_CONSUMER_IDS for d in pci_devices)


def explain_smi_failure(rc, stdout, stderr, pci_devices):
    """One sentence for a failed or missing nvidia-smi, naming the likely cause."""
    said = " ".join(part.strip() for part in (stdout or "", stderr or "") if part and part.strip())
    count = len(pci_devices)
    seen = "%d NVIDIA device%s on PCI" % (count, "" if count == 1 else "s")
    if rc is None:
        return "nvidia-smi not found: driver not installed (%s)" % seen
    if "version mismatch" in said.lower():
        return (
            "nvidia-smi: driver/library version mismatch: the userspace driver was upgraded but the old "
            "kernel module is still loaded; reboot the host (or reload the nvidia modules) (%s)" % seen
        )
    if "no devices were found" in said.lower():
        hint = "; " + RESIZABLE_BAR_HINT if has_blackwell_consumer(pci_devices) else ""
        return "nvidia-smi found no devices although the driver answered (%s)%s" % (seen, hint)
    if count == 0:
        return "nvidia-smi failed (rc=%s) and there is no NVIDIA GPU on PCI: %s" % (rc, _quote(said))
    return "nvidia-smi not found or failed: driver not installed or not loaded (%s): rc=%s %s" % (seen, rc, _quote(said))


def evaluate(facts, requirements):
    """Checks on the parsed facts. Returns a list of failure sentences (empty = pass).

    facts: gpus, driver_version, kernel_module, pci_devices.
    requirements: min_compute_capability, min_driver_version,
    require_open_kernel_module, expected_gpu_count, min_memory_mib.
    """
    failures = []
    gpus = facts.get("gpus") or []
    floor_cc = requirements.get("min_compute_capability")
    floor_driver = requirements.get("min_driver_version")

    expected = requirements.get("expected_gpu_count")
    if expected is not None and len(gpus) != expected:
        failures.append(
            "found %d GPU%s, expected %d (expected_gpu_count)" % (len(gpus), "" if len(gpus) == 1 else "s", expected)
        )
    if not gpus:
        failures.append("nvidia-smi lists no GPUs (%d NVIDIA devices on PCI)" % len(facts.get("pci_devices") or []))

    for gpu in gpus:
        label = "GPU %s (%s)" % (gpu["index"], gpu["name"])
        if floor_cc and not at_least(gpu["compute_capability"], floor_cc):
            failures.append(
                "%s has compute capability %s; this stack requires >= %s (%s)"
                % (label, gpu["compute_capability"], floor_cc, sm_name(floor_cc))
            )
        floor_mem = requirements.get("min_memory_mib")
        if floor_mem is not None and gpu["memory_total_mib"] is None:
            failures.append("%s does not report its memory ([N/A]); at least %d MiB required (min_memory_mib)" % (label, floor_mem))
        elif floor_mem is not None and gpu["memory_total_mib"] < floor_mem:
            failures.append("%s has %d MiB; at least %d MiB required (min_memory_mib)" % (label, gpu["memory_total_mib"], floor_mem))

    driver = facts.get("driver_version")
    if driver and floor_driver and not at_least(driver, floor_driver):
        failures.append(
            "driver %s is older than %s (CUDA 12.8 / Blackwell): raise nvidia_driver_branch" % (driver, floor_driver)
        )

    module = facts.get("kernel_module")
    if requirements.get("require_open_kernel_module"):
        if module == "proprietary":
            failures.append(
                "the proprietary kernel module is loaded; RTX 50xx needs the open kernel modules "
                "(nvidia_driver_flavour: open)"
            )
        elif module != "open":
            failures.append(
                "cannot tell which NVIDIA kernel module is loaded (%s unreadable); "
                "set require_open_kernel_module: false to skip this check" % requirements.get("driver_version_file")
            )
    return failures
