"""After a successful rollout to v2 (converge), roll out v3, which bwmol-fleet-2 fails:
the rollout stops, bwmol-fleet-2 is back on v2 and answers, bwmol-fleet-3 is untouched,
and the report says so."""

import json
import os
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from lab_run import ROOT, playbook, recipe  # noqa: E402

HOSTS = ["bwmol-fleet-1", "bwmol-fleet-2", "bwmol-fleet-3"]
REPORTS = os.path.join(ROOT, ".cache", "fleet-test-reports")
V2_ARGS = ["/models/tiny-qwen3", "--device", "cpu", "--log-level", "info"]
STACK = recipe("lab-cpu-engine")


def host(name):
    return testinfra.get_host("docker://" + name)


def running_image(name):
    return json.loads(host(name).check_output("docker inspect sglang-main"))[0]["Config"]["Image"]


def answers(name, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if host(name).run("curl -sf --max-time 5 http://127.0.0.1:8000/health").rc == 0:
            return True
        time.sleep(2)
    return False


@pytest.fixture(scope="module")
def v3():
    before = {h: running_image(h) for h in HOSTS}
    invocations = {h: host(h).check_output("systemctl show -p InvocationID --value sglang-main") for h in HOSTS}
    for h in HOSTS:
        host(h).check_output("rm -f /run/bwfleet-lb-state")
    lb = os.path.join(ROOT, "molecule", "fleet", "lb")
    rc, out = playbook("playbooks/rollout.yml", "-e", "@molecule/fleet/vars/stack-v3-broken.yml",
                       "-e", "rollout_report_dir=" + REPORTS, "-e", "rollout_drain_tasks=" + os.path.join(lb, "drain.yml"),
                       "-e", "rollout_undrain_tasks=" + os.path.join(lb, "undrain.yml"), timeout=1500)
    with open(os.path.join(REPORTS, "rollout.json")) as handle:
        report = {row["host"]: row for row in json.load(handle)["hosts"]}
    return {"rc": rc, "out": out, "before": before, "invocations": invocations, "report": report}


def test_v2_rollout_reached_every_host():
    images = {running_image(h) for h in HOSTS}
    assert len(images) == 1, images
    for h in HOSTS:
        args = json.loads(host(h).check_output("docker inspect sglang-main"))[0]["Config"]["Cmd"]
        assert args[:5] == V2_ARGS


def test_v3_rollout_stops_with_the_cause(v3):
    assert v3["rc"] != 0
    assert "bwmol-fleet-2 failed on the new stack and was rolled back" in " ".join(v3["out"].split())


def test_canary_is_upgraded(v3):
    assert v3["report"]["bwmol-fleet-1"]["result"] == "upgraded"
    assert running_image("bwmol-fleet-1") != v3["before"]["bwmol-fleet-1"]
    assert json.loads(host("bwmol-fleet-1").check_output("docker inspect sglang-main"))[0]["Config"]["Cmd"][3:5] == ["--log-level", "warning"]
    assert answers("bwmol-fleet-1")


def test_failed_host_is_restored_and_answers(v3):
    assert v3["report"]["bwmol-fleet-2"]["result"] == "rolled_back"
    assert running_image("bwmol-fleet-2") == v3["before"]["bwmol-fleet-2"]
    args = json.loads(host("bwmol-fleet-2").check_output("docker inspect sglang-main"))[0]["Config"]["Cmd"]
    assert args[:5] == V2_ARGS  # v2's arguments again
    assert answers("bwmol-fleet-2")
    record = json.loads(host("bwmol-fleet-2").file("/etc/sglang/main.json").content_string)
    assert record["image"] == v3["before"]["bwmol-fleet-2"]


def test_a_failed_host_is_never_undrained(v3):
    # The stand-in load balancer (molecule/fleet/lb): the canary went back into service, the host
    # that failed (and was rolled back) stays out, the host after it was never drained.
    state = {h: host(h).run("cat /run/bwfleet-lb-state").stdout.strip() for h in HOSTS}
    assert state == {"bwmol-fleet-1": "in service", "bwmol-fleet-2": "drained", "bwmol-fleet-3": ""}, state


def test_hosts_after_it_are_untouched(v3):
    h = host("bwmol-fleet-3")
    assert running_image("bwmol-fleet-3") == v3["before"]["bwmol-fleet-3"]
    assert h.check_output("systemctl show -p InvocationID --value sglang-main") == v3["invocations"]["bwmol-fleet-3"]
    assert v3["report"]["bwmol-fleet-3"]["result"] == "not_reached"


def test_report_has_a_row_per_host_with_the_facts(v3):
    rows = v3["report"]
    for name in ("bwmol-fleet-1", "bwmol-fleet-2"):
        assert rows[name]["gpu"] == "NVIDIA GeForce RTX 5090"
        assert rows[name]["compute_capability"] == "12.0"
        assert rows[name]["driver"].startswith(STACK["driver"]["branch"] + ".")
        assert rows[name]["service"] == "active"
        assert rows[name]["tokens_per_second"] > 0
    assert "/models/absent" in rows["bwmol-fleet-2"]["reason"] or "not ready" in rows["bwmol-fleet-2"]["reason"]
    markdown = open(os.path.join(REPORTS, "rollout.md")).read()
    assert "| bwmol-fleet-2 | NVIDIA GeForce RTX 5090 | 12.0 |" in markdown and "rolled_back" in markdown
