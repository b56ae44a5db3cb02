"""sglang_load_check through real Ansible against real HTTP servers on loopback: the fake server with
SGLang's shapes and failure modes (slow, erroring, dropping connections, failing mid-stream, hanging),
and the real CPU engine (`transformers serve` with a tiny random Qwen3)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from ansible_run import run_module
from helpers import ROOT
from servers.control import fake, free_port

KEY = "sk-load-5e1f00d"
KEYS = ("requests_ok", "requests_failed", "error_rate", "errors", "output_tokens", "duration_seconds", "tokens_per_second",
        "requests_per_second", "ttft_seconds", "latency_seconds")


@pytest.fixture
def server(request):
    started = []

    def start(*args, lifetime=90):
        srv = fake(*args, lifetime=lifetime)
        started.append(srv)
        srv.wait_health(20)
        return srv

    yield start
    for srv in started:
        srv.stop()


def load(url, check=False, **args):
    base = {"url": url, "requests": 8, "concurrency": 4, "request_timeout": 10, "total_timeout": 60}
    base.update(args)
    return run_module("sglang_load_check", base, check=check)


def stats(srv):
    with urllib.request.urlopen(srv.url + "/fake/stats", timeout=5) as resp:
        return json.load(resp)


def test_healthy_run_returns_every_figure(server):
    srv = server("--chunked")  # uvicorn (SGLang) streams chunked
    rc, res = load(srv.url, requests=16, concurrency=4)
    assert rc == 0, res
    assert res["changed"] is False
    for key in KEYS:
        assert key in res, key
    assert res["requests_ok"] == 16 and res["requests_failed"] == 0 and res["error_rate"] == 0 and res["errors"] == []
    assert res["output_tokens"] == 16 * 6 and res["token_count"] == "usage"
    # 6 chunks 50 ms apart: about 0.3 s a request, 4 at a time
    assert 0.25 < res["latency_seconds"]["p50"] < 2 and res["latency_seconds"]["max"] >= res["latency_seconds"]["p95"]
    assert 0 < res["ttft_seconds"]["p50"] < res["latency_seconds"]["p50"]
    assert res["tokens_per_second"] == pytest.approx(res["output_tokens"] / res["duration_seconds"], rel=0.01)
    assert res["requests_per_second"] == pytest.approx(16 / res["duration_seconds"], rel=0.01)
    assert res["warmup_requests_ok"] == 1 and res["model"] == "Qwen/Qwen3-32B-AWQ"
    seen = stats(srv)
    assert seen["chat_requests"] == 17  # 1 warm-up + 16 measured
    assert seen["max_in_flight"] == 4 and seen["in_flight"] == 0  # the concurrency asked, and nothing left open


def test_stream_without_usage_counts_chunks(server):
    srv = server("--mode", "no-usage-stream")
    rc, res = load(srv.url)
    assert rc == 0, res
    assert res["token_count"] == "content_chunks" and res["output_tokens"] == 8 * 6


def test_not_streamed_measures_latency_only(server):
    srv = server()
    rc, res = load(srv.url, stream=False, warmup_requests=0)
    assert rc == 0, res
    assert res["ttft_seconds"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert res["output_tokens"] == 8 * 8 and res["token_count"] == "usage" and res["latency_seconds"]["p50"] > 0
    assert stats(srv)["chat_requests"] == 8


def test_slow_server_misses_the_throughput_floor(server):
    fast = server("--chunked", "--chunk-delay", "0.02")
    slow = server("--chunked", "--chunk-delay", "0.3")
    rc, quick = load(fast.url)
    assert rc == 0, quick
    rc, res = load(slow.url, min_tokens_per_second=30)
    assert rc != 0
    assert res["tokens_per_second"] < quick["tokens_per_second"] / 3
    assert "output tokens/s is below min_tokens_per_second 30" in res["msg"]
    assert res["requests_ok"] == 8 and res["latency_seconds"]["p50"] > 1.5  # the figures come back with the failure


def test_erroring_server_and_max_error_rate(server):
    # every 4th chat completion is an HTTP 500: 2 of the 8 measured (the warm-up is the 1st)
    srv = server("--mode", "error500", "--fail-every", "4")
    rc, res = load(srv.url)
    assert rc != 0
    assert res["requests_failed"] == 2 and res["requests_ok"] == 6 and res["error_rate"] == 0.25
    assert "error rate 0.25 (2 of 8 requests failed) is above max_error_rate 0.0" in res["msg"]
    # which request numbers fail depends on the order 4 concurrent requests reach the server
    assert re.match(r'request \d: HTTP 500: \{"object": "error", "message": "CUDA error: an illegal memory', res["errors"][0])
    srv = server("--mode", "error500", "--fail-every", "4")
    rc, res = load(srv.url, max_error_rate=0.25)
    assert rc == 0 and res["requests_failed"] == 2


def test_dropped_connections(server):
    srv = server("--mode", "drop", "--fail-every", "3")
    rc, res = load(srv.url, max_error_rate=0.5)
    assert rc == 0, res
    assert res["requests_failed"] == 3 and res["requests_ok"] == 5
    assert all("the server closed the connection without answering" in e for e in res["errors"])


@pytest.mark.parametrize("framing,expected", [
    (["--chunked"], "the server dropped the connection mid-answer"),  # uvicorn: chunked framing is cut -> IncompleteRead
    ([], "the stream ended after 2 chunks without a finish_reason"),  # body ends at close: EOF, no finish_reason
])
def test_mid_stream_failure(server, framing, expected):
    srv = server("--mode", "die-mid-stream", "--fail-every", "2", *framing)
    rc, res = load(srv.url, max_error_rate=0.5)
    assert rc == 0, res
    assert res["requests_failed"] == 4 and res["requests_ok"] == 4
    assert all(expected in e for e in res["errors"]), res["errors"]
    rc, res = load(srv.url, warmup_requests=0)
    assert rc != 0 and "is above max_error_rate 0.0" in res["msg"]


def test_error_event_mid_stream(server):
    srv = server("--mode", "error-mid-stream", "--fail-every", "2", "--chunked")
    rc, res = load(srv.url)
    assert rc != 0
    assert "the server reported an error mid-stream: Internal server error: CUDA error" in res["errors"][0]
    assert res["requests_failed"] == 4


def test_every_warmup_failing_stops_before_the_run(server):
    srv = server("--mode", "error500")
    rc, res = load(srv.url, warmup_requests=2)
    assert rc != 0
    assert "every warm-up request failed (2); first: HTTP 500" in res["msg"]
    assert stats(srv)["chat_requests"] == 2 and res["requests_not_sent"] == 8


def test_wrong_key_refused_right_key_works_key_never_shown(server):
    srv = server("--api-key", KEY)
    rc, res = load(srv.url, api_key=KEY, requests=4, concurrency=2)
    assert rc == 0, res
    rc, res = load(srv.url, api_key="sk-wrong-key")
    assert rc != 0
    assert "rejected the API key on /v1/models (HTTP 401): set sglang_api_key" in res["msg"]
    assert KEY not in json.dumps(res) and "sk-wrong-key" not in json.dumps(res)
    assert stats(srv)["chat_requests"] == 5  # the refused run sent no completion


def test_key_is_masked_in_verbose_output(server):
    srv = server("--api-key", KEY)
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-vvv",
         "-e", "ansible_python_interpreter=" + sys.executable, "-m", "sglang_load_check",
         "-a", json.dumps({"url": srv.url, "api_key": KEY, "requests": 2, "concurrency": 1})],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert KEY not in proc.stdout + proc.stderr


def test_unreachable_server_is_refused_at_once():
    start = time.monotonic()
    rc, res = load("http://127.0.0.1:%d" % free_port())
    assert rc != 0 and time.monotonic() - start < 30
    assert "cannot reach http://127.0.0.1:" in res["msg"] and "/v1/models: connection refused" in res["msg"]


def test_model_mismatch(server):
    srv = server("--model", "Qwen/Qwen3-8B")
    rc, res = load(srv.url, model="Qwen/Qwen3-32B-AWQ")
    assert rc != 0 and "model mismatch: served: Qwen/Qwen3-8B; expected: Qwen/Qwen3-32B-AWQ" in res["msg"]


def test_total_timeout_on_a_hung_server_is_bounded(server):
    srv = server("--mode", "hang")
    start = time.monotonic()
    rc, res = load(srv.url, total_timeout=3, request_timeout=60, warmup_requests=0)
    took = time.monotonic() - start
    assert rc != 0
    assert took < 3 + 15, took  # the deadline, plus Ansible's own start and the workers' join
    assert "the run exceeded total_timeout (3.0 s): 4 of 8 requests finished (0 ok), 4 not sent" in res["msg"]
    assert res["requests_failed"] == 4 and res["requests_not_sent"] == 4


def test_request_timeout_on_a_stalled_stream(server):
    srv = server("--mode", "stall-mid-stream", "--fail-every", "2", "--chunked")
    rc, res = load(srv.url, request_timeout=1, max_error_rate=0.5)
    assert rc == 0, res
    assert res["requests_failed"] == 4 and all("timed out after 1.0 s" in e for e in res["errors"])


@pytest.mark.parametrize("args,expected", [
    ({"requests": 0}, "requests must be at least 1"),
    ({"requests": 4, "concurrency": 8}, "concurrency (8) must not exceed requests (4)"),
    ({"concurrency": 0}, "concurrency must be at least 1"),
    ({"total_timeout": 0}, "total_timeout must be a number of seconds > 0"),
    ({"request_timeout": -5}, "request_timeout must be a number of seconds > 0"),
    ({"max_error_rate": 5}, "max_error_rate must be between 0 and 1"),
    ({"prompts": []}, "prompts must not be empty"),
    ({"url": "127.0.0.1:8000"}, "url must start with http:// or https://"),
    ({"requests": "many"}, "requests"),
])
def test_bad_input_fails_before_any_traffic(args, expected):
    base = {"url": "http://127.0.0.1:9"}
    base.update(args)
    rc, res = run_module("sglang_load_check", base)
    assert rc != 0 and expected in res["msg"], res["msg"]


def test_check_mode_runs_the_same_measurement(server):
    srv = server()
    rc, res = load(srv.url, check=True, requests=4, concurrency=2)
    assert rc == 0 and res["changed"] is False and res["requests_ok"] == 4
    assert stats(srv)["chat_requests"] == 5


# --- the real engine: `transformers serve` on the CPU with a tiny random Qwen3 -------------------------

@pytest.mark.slow
def test_real_engine_transformers_serve(engine):
    # the acceptance: requests=16 concurrency=4, every key with sane values
    rc, res = load(engine.url, requests=16, concurrency=4, max_tokens=32, request_timeout=60, total_timeout=300)
    assert rc == 0, res
    assert res["model"] == engine.model and res["requests_ok"] == 16 and res["error_rate"] == 0
    assert res["token_count"] == "usage" and res["output_tokens"] == 16 * 32  # the tiny model never stops early
    assert res["tokens_per_second"] > 0 and res["requests_per_second"] > 0
    for dist in (res["ttft_seconds"], res["latency_seconds"]):
        assert 0 < dist["p50"] <= dist["p95"] <= dist["p99"] <= dist["max"]
    assert res["ttft_seconds"]["p50"] < res["latency_seconds"]["p50"]
    rc, res = load(engine.url, requests=4, concurrency=2, max_tokens=8, stream=False, request_timeout=60)
    assert rc == 0, res
    assert res["output_tokens"] == 32 and res["ttft_seconds"]["p50"] is None
    rc, res = load(engine.url, requests=4, concurrency=2, max_tokens=8, min_tokens_per_second=1e6)
    assert rc != 0 and "below min_tokens_per_second 1000000" in res["msg"]
