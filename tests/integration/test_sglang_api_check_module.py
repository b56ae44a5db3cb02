"""sglang_api_check through real Ansible against real HTTP servers on loopback:
a server with SGLang's shapes and failure modes, and a real CPU engine."""

import json
import time

import pytest

from ansible_run import run_module
from servers.control import fake, free_port

KEY = "sk-test-7d1c0ffee"


@pytest.fixture
def server(request):
    started = []

    def start(*args, lifetime=90):
        srv = fake(*args, lifetime=lifetime)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def check(url, **args):
    base = {"url": url, "wait_timeout": 20, "poll_interval": 0.5, "request_timeout": 10}
    base.update(args)
    return run_module("sglang_api_check", base)


def test_ready_models_completion(server):
    srv = server()
    rc, res = check(srv.url, model="Qwen/Qwen3-32B-AWQ")
    assert rc == 0, res
    assert res["changed"] is False
    assert res["models"] == ["Qwen/Qwen3-32B-AWQ"]
    assert res["completion"] == "Hello! I am a test server."
    assert res["completion_tokens"] == 8 and res["prompt_tokens"] == 12
    assert res["finish_reason"] == "length"
    assert res["tokens_per_second"] > 0 and res["latency_seconds"] > 0


def test_slow_start_refused_then_503_then_ready(server):
    srv = server("--refuse-for", "2", "--warmup", "2")
    rc, res = check(srv.url)
    assert rc == 0, res
    # the server became healthy 4 s after launch; Ansible itself takes a moment to start the module
    assert 2 <= res["ready_seconds"] < 15


def test_never_ready_names_the_last_error(server):
    srv = server("--mode", "health-down")
    start = time.monotonic()
    rc, res = check(srv.url, wait_timeout=3)
    assert rc != 0
    assert time.monotonic() - start < 30
    assert "not ready after 3 s (last: HTTP 503" in res["msg"]


def test_unreachable_server(server):
    url = "http://127.0.0.1:%d" % free_port()
    rc, res = check(url, wait_timeout=2)
    assert rc != 0 and "not ready after 2 s (last: connection refused)" in res["msg"]


def test_api_key_right_wrong_and_never_shown(server):
    srv = server("--api-key", KEY)
    rc, res = check(srv.url, api_key=KEY)
    assert rc == 0, res
    rc, res = check(srv.url, api_key="sk-wrong-key")
    assert rc != 0
    assert "rejected the API key on /v1/models (HTTP 401): set sglang_api_key" in res["msg"]
    assert KEY not in json.dumps(res) and "sk-wrong-key" not in json.dumps(res)


def test_key_is_masked_in_verbose_output(server):
    import os
    import subprocess
    import sys

    from helpers import ROOT

    srv = server("--api-key", KEY)
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-vvv",
         "-e", "ansible_python_interpreter=" + sys.executable, "-m", "sglang_api_check",
         "-a", json.dumps({"url": srv.url, "api_key": KEY, "wait_timeout": 10, "poll_interval": 0.5})],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert KEY not in proc.stdout + proc.stderr


def test_model_mismatch(server):
    srv = server("--model", "Qwen/Qwen3-8B")
    rc, res = check(srv.url, model="Qwen/Qwen3-32B-AWQ")
    assert rc != 0 and "model mismatch: served: Qwen/Qwen3-8B; expected: Qwen/Qwen3-32B-AWQ" in res["msg"]


def test_reasoning_content_counts(server):
    srv = server("--mode", "reasoning")
    rc, res = check(srv.url)
    assert rc == 0 and res["completion"] == "The user wants a greeting."


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("empty", "empty completion: the model answered with no text"),
        ("non-json", "/v1/models did not answer JSON: <html>Bad Gateway</html>"),
        ("error500", "answered HTTP 500: {\"object\": \"error\", \"message\": \"CUDA error: an illegal memory access"),
        ("die", "the server closed the connection mid-request"),
    ],
)
def test_failure_modes(server, mode, expected):
    srv = server("--mode", mode)
    rc, res = check(srv.url)
    assert rc != 0
    assert expected in res["msg"], res["msg"]


def test_request_timeout_is_bounded(server):
    srv = server("--mode", "slow", "--slow", "8")
    start = time.monotonic()
    rc, res = check(srv.url, request_timeout=2)
    assert rc != 0 and "timed out" in res["msg"]
    assert time.monotonic() - start < 20


def test_stream_measures_ttft(server):
    srv = server()
    rc, res = check(srv.url, stream=True)
    assert rc == 0, res
    assert res["completion"] == "Hello! I am streaming."
    assert res["completion_tokens"] == 6 and res["finish_reason"] == "stop"
    assert 0 < res["ttft_seconds"] < res["latency_seconds"]


def test_stream_without_usage_counts_chunks(server):
    srv = server("--mode", "no-usage-stream")
    rc, res = check(srv.url, stream=True)
    assert rc == 0 and res["completion_tokens"] == 6


def test_min_rate(server):
    srv = server("--mode", "slow", "--slow", "1")
    rc, res = check(srv.url, min_tokens_per_second=1000)
    assert rc != 0 and "below min_tokens_per_second 1000" in res["msg"]


@pytest.mark.parametrize(
    "args,expected",
    [({"url": "127.0.0.1:8000"}, "url must start with http:// or https://"),
     ({"health_path": "health"}, "health_path must start with '/'"),
     ({"max_tokens": 0}, "max_tokens must be at least 1"),
     ({"wait_timeout": "soon"}, "wait_timeout")],
)
def test_bad_input(args, expected):
    base = {"url": "http://127.0.0.1:9"}
    base.update(args)
    rc, res = run_module("sglang_api_check", base)
    assert rc != 0 and expected in res["msg"]


def test_check_mode_runs_the_same_checks(server):
    srv = server()
    rc, res = run_module("sglang_api_check", {"url": srv.url, "wait_timeout": 10, "poll_interval": 0.5}, check=True)
    assert rc == 0 and res["changed"] is False and res["completion_tokens"] == 8


# --- a real OpenAI-compatible engine: `transformers serve` on the CPU with a tiny random Qwen3 ---

@pytest.mark.slow
def test_real_engine_transformers_serve(engine):
    rc, res = check(engine.url, model=engine.model, wait_timeout=120, request_timeout=60, max_tokens=12)
    assert rc == 0, res
    assert res["models"] == [engine.model]
    assert res["completion"].strip() and res["completion_tokens"] == 12
    assert res["finish_reason"] == "length"
    rc, res = check(engine.url, model=engine.model, stream=True, wait_timeout=60, request_timeout=60, max_tokens=6)
    assert rc == 0, res
    assert res["ttft_seconds"] is not None and res["completion"].strip()
    rc, res = check(engine.url, model="Qwen/Qwen3-32B-AWQ", wait_timeout=30)
    assert rc != 0 and "model mismatch: served: %s; expected: Qwen/Qwen3-32B-AWQ" % engine.model in res["msg"]
