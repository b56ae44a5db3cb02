#!/usr/bin/env bash
# Runs on the device machine (a real NVIDIA GPU, no Docker, no internet).
# 1. Records real nvidia-smi / procfs / sysfs outputs as fixtures.
# 2. Runs library/nvidia_gpu_verify through ansible for real: it must pass
#    with min_compute_capability=9.0 (an H100) and fail at the 12.0 default.
# Everything lands in $OUT: fixtures.tar.gz and verify.log.
set -u
OUT=${OUT:?}
FIX=$(mktemp -d)/fixtures
mkdir -p "$FIX"
FIELDS=index,name,uuid,pci.bus_id,compute_cap,driver_version,memory.total
WIDE=index,name,uuid,pci.bus_id,pci.device_id,compute_cap,driver_version,memory.total,memory.used,memory.free,persistence_mode,vbios_version,pstate,temperature.gpu,power.draw,clocks.sm,utilization.gpu

nvidia-smi -q -x > "$FIX/smi-q-x.xml"; echo "rc=$?" > "$FIX/smi-q-x.rc"
nvidia-smi -q > "$FIX/smi-q.txt"
nvidia-smi > "$FIX/smi.txt"
nvidia-smi --query-gpu=$FIELDS --format=csv,noheader,nounits > "$FIX/smi-query.csv"
nvidia-smi --query-gpu=$WIDE --format=csv > "$FIX/smi-query-wide.csv"
nvidia-smi --query-gpu=$WIDE --format=csv,noheader,nounits > "$FIX/smi-query-wide-nounits.csv"
nvidia-smi --query-gpu=bogus --format=csv > "$FIX/smi-bogus.out" 2> "$FIX/smi-bogus.err"; echo "rc=$?" > "$FIX/smi-bogus.rc"
nvidia-smi --version > "$FIX/smi-version.txt" 2>&1
cat /proc/driver/nvidia/version > "$FIX/proc-driver-nvidia-version.txt"
# sysfs: the NVIDIA functions (vendor/device/class/driver) to build a test tree from
for d in /sys/bus/pci/devices/*; do
  v=$(cat "$d/vendor" 2>/dev/null)
  [ "$v" = 0x10de ] || continue
  printf '%s vendor=%s device=%s class=%s driver=%s\n' "$(basename "$d")" "$v" "$(cat "$d/device")" "$(cat "$d/class")" \
    "$(basename "$(readlink -f "$d/driver" 2>/dev/null)" 2>/dev/null)" >> "$FIX/sysfs-nvidia.txt"
done
python3 module_utils/bwfleet_probe.py > "$FIX/probe-host-python.json" 2> "$FIX/probe-host-python.err"
uname -r > "$FIX/uname-r.txt"; cat /etc/os-release > "$FIX/os-release.txt"

{
  echo "== ansible setup"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH ANSIBLE_FACT_CACHING=memory
  PY=$(command -v python3)
  A="python3 /tmp/site/bin/ansible"
  run() { echo; echo "== \$ ansible localhost -m nvidia_gpu_verify -a '$1'"; $A localhost -i localhost, -c local -e ansible_python_interpreter=$PY -m nvidia_gpu_verify -a "$1"; echo "== rc=$?"; }
  run "min_compute_capability=9.0"
  run "min_compute_capability=9.0 probe_python=$PY require_sgl_kernel=false expected_gpu_count=1 min_memory_mib=80000"
  run ""
  run "min_compute_capability=9.0 probe_python=$PY"
  run "min_compute_capability=9.0 probe_python=$PY require_sgl_kernel=false probe_capability=12.0"
  run "min_compute_capability=9.0 expected_gpu_count=2 min_driver_version=590.1"
  # nvidia-smi under its bound (smi_timeout): a real, answering GPU passes well inside it.
  run "min_compute_capability=9.0 smi_timeout=5"
  # pci_only, as preflight uses it: the sysfs scan with the blackwell mark (false for an H100).
  run "pci_only=true"
} > "$OUT/verify.log" 2>&1
tar -C "$(dirname "$FIX")" -czf "$OUT/fixtures.tar.gz" fixtures
tail -c 6000 "$OUT/verify.log"
