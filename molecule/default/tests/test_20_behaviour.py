"""Behaviour on the converged host: check mode, refused input, restarts, upgrades."""

import hashlib
import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from lab_run import playbook, recap  # noqa: E402

HOST = "bwmol-default-1"


def snapshot(host):
    """What a refused run must leave as it was."""
    files = ["/etc/docker/daemon.json", "/etc/systemd/system/sglang-main.service", "/etc/modprobe.d/blacklist-nouveau.conf"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(host.file(path).content)
    return (
        digest.hexdigest(),
        host.check_output("dpkg --get-selections | grep -i nvidia"),
        host.check_output("ls /etc/apt/sources.list.d"),
        host.check_output("systemctl show -p InvocationID --value sglang-main"),
    )


def test_check_mode_on_a_converged_host_changes_nothing(host):
    rc, out = playbook("site.yml", "--check")
    assert rc == 0, out[-3000:]
    assert recap(out, HOST)["changed"] == 0


def test_fast_path_when_nothing_changed_full_path_on_drift(host):
    # Molecule's converge ran every stage and stamped the host (its --skip-tags name tags no task
    # carries), and its idempotence run took the fast path: the full path must be idempotent on its own.
    start = time.monotonic()
    rc, out = playbook("site.yml")
    fast = time.monotonic() - start
    assert rc == 0, out[-3000:]
    assert "fast path: as the run of " in out and "API answered" in out, out[-3000:]
    assert recap(out, HOST)["changed"] == 0
    assert "TASK [Verify | " not in out and "TASK [docker : " not in out  # no stage ran
    start = time.monotonic()
    rc, out = playbook("site.yml", extra={"site_fast_path": False})
    full = time.monotonic() - start
    assert rc == 0, out[-3000:]
    assert "full path: site_fast_path is off" in out and "TASK [Verify | The API serves a real completion]" in out
    assert recap(out, HOST)["changed"] == 0
    assert fast < full  # the figures themselves: bench/run, docs/BENCHMARKS.md

    # Drift: the aux instance stopped by hand. The full path names it, starts it (gated again), and
    # the next run is fast again.
    host.check_output("systemctl stop sglang-aux")
    rc, out = playbook("site.yml")
    assert rc == 0, out[-3000:]
    text = " ".join(out.split())
    assert "full path: " in text and "units sglang-aux.service: active/running/" in text, out[-3000:]
    assert host.service("sglang-aux").is_running
    rc, out = playbook("site.yml")
    assert rc == 0 and "fast path: as the run of " in out, out[-3000:]


@pytest.mark.parametrize(
    "extra,expected",
    [
        ({"nvidia_driver_branch": "550"}, "needs driver branch >= 570 with the open kernel modules"),
        ({"nvidia_driver_flavour": "proprietary"}, "needs driver branch >= 570 with the open kernel modules"),
        ({"nvidia_driver_branch": "latest"}, 'nvidia_driver_branch must be a three-digit branch such as "570"'),
        ({"preflight_min_memory_mb": "lots"}, "preflight_min_memory_mb"),
        ({"nvidia_driver_source": "ppa"}, "nvidia_driver_source"),
        ({"nvidia_driver_server": True}, "the -server and signed variants are Ubuntu's builds (nvidia_driver_source: distro)"),
        ({"nvidia_driver_kernel_modules": "signed"}, "the -server and signed variants are Ubuntu's builds"),
        ({"sglang_service_instances": [{"name": "Main GPU", "port": 8000}]}, "unique lower-case names"),
        ({"preflight_disk_requirements": [{"path": "/var/lib/docker", "min_free_gb": 100000, "why": "the image"}]},
         "the image needs 100000 GB: free space or move it to a larger disk"),
    ],
)
def test_refused_input_fails_clearly_and_changes_nothing(host, extra, expected):
    before = snapshot(host)
    rc, out = playbook("site.yml", extra=extra)
    assert rc != 0
    assert expected in " ".join(out.split()), out[-3000:]
    assert snapshot(host) == before


def invocation(host):
    return host.check_output("systemctl show -p InvocationID --value sglang-main")


def wait_api(host, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if host.run("curl -sf --max-time 5 http://127.0.0.1:8000/health").rc == 0:
            return True
        time.sleep(2)
    return False


def unit_and_container(host, name):
    return (host.check_output("systemctl show -p InvocationID --value sglang-%s" % name),
            host.check_output("docker inspect -f '{{.Id}} {{.State.StartedAt}}' sglang-%s" % name))


def test_trap5_changing_one_instance_leaves_the_other_running(host):
    # A unit change means a daemon-reload: with Docker's cgroupfs driver (test_10) it cannot take the
    # GPUs from running containers, and the role restarts only the instance whose unit changed.
    # (The lab has no real device cgroup to lose: what is tested is the choice and the isolation.)
    # Runs on the converged state: before test_changing_one_argument, whose arguments apply to both.
    instances = [{"name": "main", "gpus": "0", "port": 8002}, {"name": "aux", "gpus": "1", "port": 8001}]
    main, aux = unit_and_container(host, "main"), unit_and_container(host, "aux")
    try:
        rc, out = playbook("site.yml", "--tags", "sglang_service", extra={"sglang_service_instances": instances})
        assert rc == 0, out[-3000:]
        assert unit_and_container(host, "main")[0] != main[0], "main's unit changed but main was not restarted"
        assert unit_and_container(host, "aux") == aux, "aux was restarted or its container replaced"
        assert "ExecStart=" in host.check_output("systemctl cat sglang-main") and ":8002:" in host.check_output(
            "systemctl show -p ExecStart --value sglang-main")
        assert host.run("curl -sf --max-time 10 http://127.0.0.1:8001/health").rc == 0, "aux stopped answering"
    finally:
        rc, out = playbook("site.yml", "--tags", "sglang_service")
        assert rc == 0, out[-3000:]
    assert unit_and_container(host, "aux") == aux


def test_changing_one_argument_restarts_exactly_once(host):
    args = ["/models/tiny-qwen3", "--device", "cpu", "--log-level", "info"]
    first = invocation(host)
    rc, out = playbook("site.yml", "--tags", "sglang_service", extra={"sglang_service_args": args})
    assert rc == 0, out[-3000:]
    second = invocation(host)
    assert second != first
    assert json.loads(host.check_output("docker inspect sglang-main"))[0]["Config"]["Cmd"][3:5] == ["--log-level", "info"]
    rc, out = playbook("site.yml", "--tags", "sglang_service", extra={"sglang_service_args": args})
    assert rc == 0 and recap(out, HOST)["changed"] == 0
    assert invocation(host) == second


def test_killed_container_comes_back(host):
    old = host.check_output("docker inspect -f '{{.Id}}' sglang-main")
    host.run("docker kill sglang-main")
    deadline = time.time() + 90
    new = old
    while time.time() < deadline and new in (old, ""):
        time.sleep(2)
        new = host.run("docker inspect -f '{{.Id}}' sglang-main").stdout.strip()
    assert new and new != old, "systemd did not bring the container back"
    assert wait_api(host), "the API did not answer again"


def test_driver_branch_upgrade_570_to_580(host):
    # NVIDIA's newest 580 (the lab's stand-in repository), which the pin prefers over Ubuntu's 580.
    policy = host.check_output("apt-cache policy nvidia-driver-580-open")
    new = next(l.split()[-1] for l in policy.splitlines() if "Candidate:" in l).split("-")[0]
    # 1. The host serves: site.yml refuses to move its driver (a reboot) and names the rollout;
    #    nothing changes, the 570 module stays loaded.
    before = snapshot(host)
    rc, out = playbook("site.yml", "--tags", "nvidia_driver", extra={"nvidia_driver_branch": "580"})
    assert rc != 0
    text = " ".join(out.split())
    assert ("serves (deployment records /etc/sglang/aux.json, /etc/sglang/main.json) and this run would change its host "
            "stack: driver packages (branch 580; installed now: 570.") in text, out[-3000:]
    assert "playbooks/rollout.yml" in text
    assert snapshot(host) == before
    assert host.package("nvidia-driver-570-open").is_installed

    # 2. The rollout moves it: the holds on 570 released, 580 installed and held, the reboot, the
    #    new module loaded, persistence on, the CDI spec following the driver, the service gated again.
    rc, out = playbook("playbooks/rollout.yml", extra={"nvidia_driver_branch": "580", "rollout_load_check": False})
    assert rc == 0, out[-4000:]
    assert "Reboot (the loaded kernel module (570." in out
    assert new in host.file("/run/bwlab/nvidia/version").content_string
    assert host.package("nvidia-driver-580-open").is_installed
    assert not host.package("nvidia-driver-570-open").is_installed  # the hold on 570 was released, not "held broken"
    assert host.service("nvidia-persistenced").is_running
    assert "Enabled" in host.check_output("nvidia-smi --query-gpu=persistence_mode --format=csv,noheader")
    held = [p for p in host.check_output("apt-mark showhold").split() if "nvidia-container" not in p]
    assert "nvidia-utils-580" in held and not [p for p in held if "570" in p]
    assert "libcuda.so.%s" % new in host.file("/etc/cdi/nvidia.yaml").content_string
    assert wait_api(host, 180), "the service did not come back after the reboot"
