"""sglang_image's prune on a real Docker engine: beyond sglang_image_keep, old serving images go,
but never the current one, one a deployment record names (rollback needs it) or one a container
uses (running or stopped)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
BASE = "bwfleet-lab/ubuntu2204:latest"  # the lab base image, built by `make test` before the tests
NAME = "bwfleet-prunetest/sglang"


def docker(*args, check=True):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=check).stdout


def tags():
    return sorted(docker("image", "ls", "--format", "{{.Tag}}", NAME).split())


@pytest.fixture()
def images(tmp_path):
    assert subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode == 0, "run lab/labctl image"
    for tag in ("recorded", "stopped", "old1", "old2", "current"):
        docker("tag", BASE, "%s:%s" % (NAME, tag))
    docker("create", "--name", "bwfleet-prunetest-stopped", "%s:stopped" % NAME, "true")
    records = tmp_path / "records"
    records.mkdir()
    (records / "main.json").write_text(json.dumps({"image": "%s:recorded" % NAME}))
    yield records
    docker("rm", "-f", "bwfleet-prunetest-stopped", check=False)
    for tag in tags():
        docker("rmi", "%s:%s" % (NAME, tag), check=False)


def prune(records, keep):
    cmd = [PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
           "-e", json.dumps({"sglang_image_name": NAME, "sglang_image_tag": "current", "sglang_image_keep": keep,
                             "sglang_service_state_dir": str(records)}),
           os.path.join(ROOT, "tests", "playbooks", "prune_images.yml")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    return proc.returncode, proc.stdout + proc.stderr


def test_keep_one_still_keeps_what_rollback_and_containers_need(images):
    rc, out = prune(images, keep=1)
    assert rc == 0, out[-3000:]
    assert tags() == ["current", "recorded", "stopped"]


def test_keep_counts_the_protected_ones_first(images):
    # keep 4: current, recorded and stopped are protected (3), one more of the others may stay.
    rc, out = prune(images, keep=4)
    assert rc == 0, out[-3000:]
    left = tags()
    assert {"current", "recorded", "stopped"} < set(left) and len(left) == 4, left


def test_an_unreadable_record_stops_the_prune(images):
    (images / "broken.json").write_text("{not json")
    rc, out = prune(images, keep=1)
    assert rc != 0 and "unreadable deployment record" in out
    assert len(tags()) == 5  # nothing removed
