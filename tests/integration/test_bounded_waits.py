"""Every wait bounded, every body bounded: the two modules against things that hang or never stop talking."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_run import run_module
from servers.control import Server, free_port
from servers.front import ECHO
from test_nvidia_gpu_verify_module import Box

BASE_IMAGE = "bwfleet-lab/ubuntu2204:latest"
HANG_IMAGE = "bwfleet-authtest/hang:python3-sleeps"


def echo(*args):
    port = free_port()
    srv = Server([sys.executable, ECHO, "--port", str(port), "--lifetime", "120"] + list(args), port)
    srv.wait_health(20)
    return srv


def check(url, **args):
    base = {"url": url, "wait_timeout": 20, "poll_interval": 0.5, "request_timeout": 30}
    base.update(args)
    return run_module("sglang_api_check", base)


def test_a_huge_answer_is_refused_not_buffered():
    srv = echo("--mode", "huge")
    try:
        rc, res = check(srv.url)
        assert rc != 0 and "/v1/models answered more than 1048576 bytes (max_response_bytes)" in res["msg"], res
        rc, res = check(srv.url, max_response_bytes=8 * 1024 * 1024, model="echo-model")
        assert "max_response_bytes" not in res.get("msg", ""), res  # a larger bound lets it through
    finally:
        srv.stop()


def test_an_endless_stream_is_cut():
    srv = echo("--mode", "endless")
    try:
        start = time.monotonic()
        rc, res = check(srv.url, stream=True, max_stream_events=200)
        assert rc != 0 and "more than 200 events (max_stream_events) without [DONE]" in res["msg"], res
        rc, res = check(srv.url, stream=True, request_timeout=3, max_stream_events=10 ** 8, max_response_bytes=10 ** 9)
        assert rc != 0 and "did not finish within 3.0 s (request_timeout)" in res["msg"], res
        assert time.monotonic() - start < 60
    finally:
        srv.stop()


def test_a_finite_stream_still_passes():
    srv = echo("--gap", "0.05")
    try:
        rc, res = check(srv.url, stream=True, model="echo-model")
        assert rc == 0 and res["completion"].startswith("t0 t1"), res
    finally:
        srv.stop()


def test_a_hung_nvidia_smi_fails_in_time(tmp_path):
    # What a GPU off the bus does to nvidia-smi: it never answers.
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexec sleep 120\n")
    smi.chmod(0o755)
    start = time.monotonic()
    rc, res = Box(tmp_path).verify(nvidia_smi_path=str(smi), smi_timeout=3)
    assert rc != 0
    assert time.monotonic() - start < 60
    assert res["msg"].startswith("%s --query-gpu=" % smi) and "did not answer within 3 s" in res["msg"], res
    assert "fallen off the bus" in res["msg"]


def _docker_ok():
    return shutil.which("docker") and subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0


@pytest.mark.lab
def test_a_hung_probe_container_is_killed_in_time(tmp_path):
    if not _docker_ok():
        pytest.skip("needs the Docker engine and the lab base image")
    # An image whose python3 never returns, like a CUDA call stuck on a wedged GPU.
    (tmp_path / "Dockerfile").write_text(
        "FROM %s\nRUN printf '#!/bin/sh\\nexec sleep 600\\n' > /usr/local/bin/python3 && chmod 755 /usr/local/bin/python3\n" % BASE_IMAGE)
    subprocess.run(["docker", "build", "-q", "-t", HANG_IMAGE, str(tmp_path)], check=True, capture_output=True, timeout=300)
    start = time.monotonic()
    rc, res = Box(tmp_path).verify(image=HANG_IMAGE, probe_runtime="", probe_gpus="none", probe_timeout=5)
    assert rc != 0 and "did not finish within 5 s (probe_timeout)" in res["msg"], res
    assert time.monotonic() - start < 90
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "ancestor=" + HANG_IMAGE], capture_output=True, text=True).stdout
    assert left.strip() == "", "the probe container was left behind"
