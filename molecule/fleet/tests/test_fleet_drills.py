"""Drills on the fleet, after test_fleet.py (bwmol-fleet-1 on v3, -2 and -3 on v2).

Each drill breaks something the way it breaks on a real fleet and checks that the rollout
stops, reports it, and leaves every host either on what it ran or on the new stack, answering:
  - a slower stack is rolled back by the throughput gate (issue 15);
  - the image a host runs was pruned by hand: the host is refused before it is changed;
  - the controller is interrupted during a gate, then the rollout is run again: it rolls back to
    the record (the last deployment that passed a gate), not to the unit left on disk;
  - a host is unreachable mid-rollout: the rollout stops there, reports it, and the host after
    it is untouched;
  - the driver branch moves (580 -> 570) one host per batch, each with a reboot; one host fails its
    GPU verify after the reboot and goes back to 580 (reboot again); the rollout stops there and
    the host after it is untouched (not rebooted, Docker and SGLang not restarted).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from lab_run import INVENTORY, ROOT, playbook  # noqa: E402

REPORTS = os.path.join(ROOT, ".cache", "fleet-drill-reports")
V2 = os.path.join("molecule", "fleet", "vars", "stack-v2.yml")
V3 = os.path.join("molecule", "fleet", "vars", "stack-v3-broken.yml")
HOSTS = ["bwmol-fleet-1", "bwmol-fleet-2", "bwmol-fleet-3"]
V2_ARGS = ["/models/tiny-qwen3", "--device", "cpu", "--log-level", "info"]


def host(name):
    return testinfra.get_host("docker://" + name)


def container(name):
    return json.loads(host(name).check_output("docker inspect sglang-main"))[0]


def invocation(name):
    return host(name).check_output("systemctl show -p InvocationID --value sglang-main")


def report():
    with open(os.path.join(REPORTS, "rollout.json")) as handle:
        doc = json.load(handle)
    return doc, {row["host"]: row for row in doc["hosts"]}


def answers(name, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if host(name).run("curl -sf --max-time 5 http://127.0.0.1:8000/health").rc == 0:
            return True
        time.sleep(2)
    return False


def rollout(*extra, timeout=900):
    return playbook("playbooks/rollout.yml", "-e", "rollout_report_dir=" + REPORTS, *extra, timeout=timeout)


def test_a_slower_stack_is_rolled_back_by_the_throughput_gate():
    # The lab engine held to a tenth of a CPU (the same image and arguments): far below 0.6 of before.
    before = container("bwmol-fleet-3")
    rc, out = rollout("-e", "@" + V2, "-e", "rollout_hosts=bwmol-fleet-3", "-e", "rollout_min_throughput_ratio=0.6",
                      "-e", '{"sglang_service_extra_docker_args": ["--cpus", "0.1"], "rollout_load_requests": 8, '
                            '"rollout_load_max_tokens": 16}')
    doc, rows = report()
    row = rows["bwmol-fleet-3"]
    assert rc != 0 and doc["status"] == "failed"
    assert row["result"] == "rolled_back", row
    assert "throughput" in row["reason"].lower()
    assert row["load_after"]["tokens_per_second"] < 0.6 * row["load_before"]["tokens_per_second"]
    after = container("bwmol-fleet-3")
    assert after["HostConfig"]["NanoCpus"] == 0 and before["HostConfig"]["NanoCpus"] == 0
    assert after["Config"]["Image"] == before["Config"]["Image"] and after["Config"]["Cmd"][:5] == V2_ARGS
    assert answers("bwmol-fleet-3")
    markdown = open(os.path.join(REPORTS, "rollout.md")).read()
    assert "tok/s before" in markdown and "throughput gate: 0.6" in markdown


def test_a_host_whose_image_was_pruned_is_refused_before_any_change():
    h = host("bwmol-fleet-3")
    image = container("bwmol-fleet-3")["Config"]["Image"]
    image_id = h.check_output("docker image inspect -f '{{.Id}}' %s" % image)
    started = invocation("bwmol-fleet-3")
    h.check_output("docker rmi -f %s" % image)  # untags it; the running container keeps its layers
    try:
        rc, _out = rollout("-e", "@" + V3, "-e", "rollout_hosts=bwmol-fleet-3", "-e", "rollout_load_check=false")
        doc, rows = report()
        assert rc != 0 and doc["status"] == "failed"
        assert rows["bwmol-fleet-3"]["result"] == "failed"
        assert "no longer on the host" in rows["bwmol-fleet-3"]["reason"]
        assert invocation("bwmol-fleet-3") == started  # not restarted, not changed
        assert "failed before any change" in " ".join(_out.split())
    finally:
        h.check_output("docker tag %s %s" % (image_id, image))


def test_an_interrupted_rollout_rolls_back_to_the_record_when_run_again():
    # v3 breaks bwmol-fleet-2. Interrupt the controller while it waits on the gate: the unit on
    # disk is then v3's, which never passed a gate, while the record still says v2.
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "playbooks/rollout.yml",
           "-e", "@" + V3, "-e", "rollout_hosts=bwmol-fleet-2", "-e", "rollout_load_check=false",
           "-e", "sglang_service_check_wait_timeout=120", "-e", "rollout_report_dir=" + REPORTS]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), BWLAB_ROOT=ROOT, ANSIBLE_NOCOLOR="1")
    log = open(os.path.join(REPORTS, "interrupted.log"), "w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        log.seek(0)
        if "Each instance serves a real completion" in log.read():
            break
        time.sleep(1)
    time.sleep(5)
    proc.send_signal(signal.SIGINT)
    time.sleep(2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Ansible asks to confirm with a second Ctrl-C
    proc.wait(timeout=120)
    h = host("bwmol-fleet-2")
    assert "/models/absent" in h.file("/etc/systemd/system/sglang-main.service").content_string
    record = json.loads(h.check_output("cat /etc/sglang/main.json"))
    assert record["args"][:5] == V2_ARGS
    interrupted_doc, _ = report()
    assert interrupted_doc["status"] == "running"  # the truth: it never finished

    rc, _out = rollout("-e", "@" + V3, "-e", "rollout_hosts=bwmol-fleet-2", "-e", "rollout_load_check=false")
    doc, rows = report()
    assert rc != 0 and rows["bwmol-fleet-2"]["result"] == "rolled_back"
    assert doc["run"]["interrupted_run"] == interrupted_doc["run"]["id"]
    assert "/models/absent" not in h.file("/etc/systemd/system/sglang-main.service").content_string
    assert container("bwmol-fleet-2")["Config"]["Cmd"][:5] == V2_ARGS
    assert answers("bwmol-fleet-2")


def test_an_unreachable_host_stops_the_rollout_and_is_reported():
    # One host per batch; bwmol-fleet-2 stops answering (its container is frozen) before its turn.
    third = invocation("bwmol-fleet-3")
    subprocess.run(["docker", "pause", "bwmol-fleet-2"], check=True)
    try:
        rc, out = rollout("-e", "@" + V2, "-e", "rollout_serial=1", "-e", "rollout_load_check=false")
    finally:
        subprocess.run(["docker", "unpause", "bwmol-fleet-2"], check=True)
    doc, rows = report()
    assert rc != 0 and doc["status"] == "failed" and doc["finished_at"]
    assert rows["bwmol-fleet-1"]["result"] == "upgraded"
    assert rows["bwmol-fleet-2"]["result"] == "unreachable"
    assert rows["bwmol-fleet-3"]["result"] == "not_reached"
    assert invocation("bwmol-fleet-3") == third
    assert "bwmol-fleet-2 is unreachable" in " ".join(out.split())
    assert answers("bwmol-fleet-1") and answers("bwmol-fleet-2")


def loaded_driver(name):
    """The driver version the (stand-in) kernel module loaded at boot."""
    return re.search(r"\s(\d+\.\d+\.\d+)\s", host(name).file("/run/bwlab/nvidia/version").content_string).group(1)


def watch_starts():
    """Container starts (a lab reboot restarts the container), streamed while the rollout runs: the
    daemon keeps only its last events, and a busy one drops the early ones before a later query."""
    return subprocess.Popen(["docker", "events", "--filter", "event=start", "--format", "{{.TimeNano}} {{.Actor.Attributes.name}}"],
                            stdout=subprocess.PIPE, text=True)


def starts(watcher):
    watcher.terminate()
    out, _ = watcher.communicate(timeout=30)
    events = [(int(t) / 1e9, n) for t, n in (line.split() for line in out.splitlines() if line.strip())]
    return sorted(e for e in events if e[1] in HOSTS)


def test_a_driver_branch_change_rolls_one_host_at_a_time_and_a_failed_verify_goes_back():
    assert {loaded_driver(h).split(".")[0] for h in HOSTS} == {"580"}
    third = host("bwmol-fleet-3")
    third_before = (invocation("bwmol-fleet-3"), third.check_output("systemctl show -p ActiveEnterTimestamp --value docker"),
                    third.check_output("stat -c %Z /proc/1"))
    watcher = watch_starts()
    rc, out = playbook("molecule/fleet/driver-drill.yml", "-e", "rollout_report_dir=" + REPORTS, "-e", "rollout_serial=1",
                       "-e", "rollout_load_check=false", timeout=1800)
    events = starts(watcher)
    doc, rows = report()
    text = " ".join(out.split())
    assert rc != 0 and doc["status"] == "failed", out[-3000:]
    # The canary moved to 570, rebooted, passed its gates.
    assert rows["bwmol-fleet-1"]["result"] == "upgraded" and rows["bwmol-fleet-1"]["driver"].startswith("570.")
    assert loaded_driver("bwmol-fleet-1").startswith("570.") and host("bwmol-fleet-1").package("nvidia-driver-570-open").is_installed
    # The second failed its verify on 570 after the reboot and is back on 580, answering.
    row = rows["bwmol-fleet-2"]
    assert row["result"] == "rolled_back", row
    assert "Verify GPUs" in row["reason"] and "575" in row["reason"], row["reason"]
    assert row["driver"].startswith("580.") and loaded_driver("bwmol-fleet-2").startswith("580.")
    assert host("bwmol-fleet-2").package("nvidia-driver-580-open").is_installed
    assert "hold" in host("bwmol-fleet-2").check_output("dpkg --get-selections nvidia-driver-580-open")
    assert answers("bwmol-fleet-2") and answers("bwmol-fleet-1")
    assert "bwmol-fleet-2 failed on the new stack and was rolled back" in text
    # Reboots one batch at a time: 1, then 2 (to 570), then 2 again (back to 580); never 3. The
    # canary had passed its gate (its record is written at gate pass) before the second host rebooted.
    assert [n for _, n in events] == ["bwmol-fleet-1", "bwmol-fleet-2", "bwmol-fleet-2"], events
    record = json.loads(host("bwmol-fleet-1").check_output("cat /etc/sglang/main.json"))
    driver = record["host_stack"]["driver"]
    assert driver["branch"] == "570" and driver["version"].startswith("570.") and driver["package"] == "nvidia-utils-570", driver
    assert record["host_stack"]["toolkit"]["version"], record["host_stack"]
    gate_passed = int(host("bwmol-fleet-1").check_output("stat -c %Y /etc/sglang/main.json"))
    assert events[0][0] < gate_passed <= events[1][0] + 1
    # The host after it: not reached, not rebooted, Docker and SGLang not restarted, still on 580.
    assert rows["bwmol-fleet-3"]["result"] == "not_reached"
    assert (invocation("bwmol-fleet-3"), third.check_output("systemctl show -p ActiveEnterTimestamp --value docker"),
            third.check_output("stat -c %Z /proc/1")) == third_before
    assert loaded_driver("bwmol-fleet-3").startswith("580.")
    # Put the canary back on the recipe's driver for whatever runs next (a rollout, one host).
    rc, out = rollout("-e", "@" + V2, "-e", "rollout_hosts=bwmol-fleet-1", "-e", "rollout_load_check=false", timeout=900)
    assert rc == 0 and loaded_driver("bwmol-fleet-1").startswith("580."), out[-3000:]


@pytest.fixture(scope="module", autouse=True)
def reports_folder():
    os.makedirs(REPORTS, exist_ok=True)
