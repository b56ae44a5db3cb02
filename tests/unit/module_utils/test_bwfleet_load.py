"""sglang_load_check's decisions (percentiles, aggregation, what one answer under load means),
and its runner's promise: nothing left running after it returns, even against a server that hangs."""

import importlib.util
import os
import socket
import threading
import time

import pytest

from ansible.module_utils.bwfleet_load import (
    DEFAULT_PROMPTS,
    ApiError,
    LineSplitter,
    StreamReader,
    aggregate,
    describe_exception,
    distribution,
    judge_body,
    outcome,
    payloads,
    percentile,
    validate,
    verdict,
)
from helpers import ROOT
from servers.control import fake

# Recorded from `transformers serve` 5.24.0 (the lab engine), stream_options include_usage, max_tokens 5:
# chunked, a role chunk first, usage on the chunk with the finish_reason, no [DONE].
TRANSFORMERS_STREAM = [
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{"role":"assistant"},"index":0}],"created":1795729179,'
    b'"model":"/m/tiny-qwen3","object":"chat.completion.chunk","system_fingerprint":""}\n',
    b"\n",
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{"content":"\\ufffdZ"},"index":0}],"created":1795729179,'
    b'"model":"/m/tiny-qwen3","object":"chat.completion.chunk","system_fingerprint":""}\n',
    b"\n",
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{"content":"j"},"index":0}],"object":"chat.completion.chunk"}\n',
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{"content":"ut"},"index":0}],"object":"chat.completion.chunk"}\n',
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{"content":"\\u0015"},"index":0}],"object":"chat.completion.chunk"}\n',
    b'data: {"id":"b3ff4e9e","choices":[{"delta":{},"index":0,"finish_reason":"length"}],"created":1795729179,'
    b'"object":"chat.completion.chunk","usage":{"completion_tokens":5,"prompt_tokens":18,"total_tokens":23}}\n',
]
# SGLang 0.5's serving_chat: an exception inside a started stream is one error event, then [DONE].
SGLANG_STREAM_ERROR = (b'data: {"error": {"object": "error", "message": "Internal server error: CUDA error: an illegal memory '
                       b'access was encountered", "type": "InternalServerError", "param": null, "code": 500}}\n')


def params(**over):
    base = dict(url="http://127.0.0.1:8000", requests=16, concurrency=4, max_tokens=64, warmup_requests=1,
                total_timeout=60.0, request_timeout=10.0, max_error_rate=0.0, min_tokens_per_second=None, prompts=None)
    base.update(over)
    return base


# --- percentiles ---------------------------------------------------------------------------------

def test_percentile_matches_numpy_linear():
    values = [float(v) for v in range(1, 11)]  # numpy.percentile(range(1, 11), q): 5.5, 9.55, 9.91
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(list(reversed(values)), 50) == pytest.approx(5.5)  # order of arrival does not matter
    assert percentile([0.25], 99) == 0.25
    assert percentile([], 50) is None


def test_distribution_keys_rounding_and_empty():
    assert distribution([0.1, 0.2, 0.3, 0.4]) == {"p50": 0.25, "p95": 0.385, "p99": 0.397, "max": 0.4}
    assert distribution([]) == {"p50": None, "p95": None, "p99": None, "max": None}


# --- input validation --------------------------------------------------------------------------

def test_good_options_pass():
    assert validate(params()) == []
    assert validate(params(requests=1, concurrency=1, max_error_rate=1.0, prompts=["hi"])) == []


@pytest.mark.parametrize("over,expected", [
    ({"requests": 0}, "requests must be at least 1, got 0"),
    ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
    ({"concurrency": 17}, "concurrency (17) must not exceed requests (16)"),
    ({"requests": 1000, "concurrency": 300}, "concurrency must be at most 256, got 300"),
    ({"total_timeout": 0.0}, "total_timeout must be a number of seconds > 0, got 0.0"),
    ({"request_timeout": -1.0}, "request_timeout must be a number of seconds > 0, got -1.0"),
    ({"request_timeout": float("nan")}, "request_timeout must be a number of seconds > 0"),
    ({"max_error_rate": 1.5}, "max_error_rate must be between 0 and 1"),
    ({"max_error_rate": -0.1}, "max_error_rate must be between 0 and 1"),
    ({"min_tokens_per_second": 0.0}, "min_tokens_per_second must be > 0 when set"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"warmup_requests": -1}, "warmup_requests must be 0 or more"),
    ({"prompts": []}, "prompts must not be empty"),
    ({"prompts": ["ok", " "]}, "every entry of prompts must be a non-empty string"),
    ({"url": "127.0.0.1:8000"}, "url must start with http:// or https://"),
])
def test_bad_options_are_named(over, expected):
    problems = validate(params(**over))
    assert any(expected in p for p in problems), problems


def test_every_problem_is_listed_at_once():
    assert len(validate(params(requests=0, total_timeout=0.0, max_error_rate=2.0))) == 3


# --- the workload --------------------------------------------------------------------------------

def test_payloads_take_prompts_in_turn_and_ask_for_usage():
    batch = payloads("m", ["a", "b", "c"], 5, 32, True, offset=1)
    assert [p["messages"][0]["content"] for p in batch] == ["b", "c", "a", "b", "c"]
    assert all(p["max_tokens"] == 32 and p["stream"] and p["stream_options"] == {"include_usage": True} for p in batch)
    plain = payloads("m", None, 9, 8, False)
    assert [p["messages"][0]["content"] for p in plain][:8] == DEFAULT_PROMPTS and "stream_options" not in plain[0]
    assert len(set(DEFAULT_PROMPTS)) == len(DEFAULT_PROMPTS) >= 4


# --- one answer ----------------------------------------------------------------------------------

def read(lines):
    reader = StreamReader()
    for t, raw in enumerate(lines):
        if not reader.feed_line(raw, float(t)):
            break
    return reader


def test_transformers_stream_counts_usage():
    reader = read(TRANSFORMERS_STREAM)
    assert reader.outcome() == (5, "usage", None)
    assert reader.state.first_token_at == 2.0  # the role chunk carries no token


def test_stream_without_usage_counts_content_chunks():
    lines = [raw for raw in TRANSFORMERS_STREAM if b"usage" not in raw]
    lines.append(b'data: {"choices":[{"delta":{},"index":0,"finish_reason":"length"}]}\n')
    assert read(lines).outcome() == (4, "content_chunks", None)


def test_stream_cut_before_finish_reason_is_a_failure():
    tokens, _, error = read(TRANSFORMERS_STREAM[:5]).outcome()
    assert tokens == 0
    assert error == "the stream ended after 2 chunks without a finish_reason (the server dropped it mid-answer)"


def test_sglang_error_event_mid_stream():
    reader = read(TRANSFORMERS_STREAM[:4] + [b"\n", SGLANG_STREAM_ERROR, b"data: [DONE]\n"])
    assert reader.outcome()[2] == ("the server reported an error mid-stream: Internal server error: "
                                   "CUDA error: an illegal memory access was encountered")


def test_stream_of_whitespace_is_empty():
    lines = [b'data: {"choices":[{"delta":{"content":" "},"index":0,"finish_reason":"stop"}],"usage":{"completion_tokens":1}}\n']
    assert read(lines).outcome() == (0, "usage", "empty completion (finish_reason stop)")


def test_lines_are_split_as_bytes_arrive():
    lines = LineSplitter()
    assert lines.feed(b'data: {"a"') == []
    assert lines.feed(b': 1}\n\ndata: [DO') == [b'data: {"a": 1}\n', b"\n"]
    assert lines.feed(b"NE]") == [] and lines.tail() == [b"data: [DONE]"] and lines.tail() == []
    # the recorded stream, cut at arbitrary byte boundaries, reads the same as line by line
    blob = b"".join(TRANSFORMERS_STREAM)
    reader, lines = StreamReader(), LineSplitter()
    for i in range(0, len(blob), 7):
        for raw in lines.feed(blob[i:i + 7]):
            reader.feed_line(raw, 0.0)
    assert reader.outcome() == (5, "usage", None)


def test_stream_line_bounds():
    with pytest.raises(ApiError, match="a stream line exceeded 1024 KiB"):
        LineSplitter().feed(b"data: " + b"x" * (1024 * 1024))
    with pytest.raises(ApiError, match="not JSON"):
        StreamReader().feed_line(b"data: {broken\n", 0.0)


def test_stream_byte_bound_is_bwfleet_apis(monkeypatch):
    # The whole-stream bound is bwfleet_api's StreamBudget (shared with sglang_api_check), with no
    # event bound, no deadline of its own and no other module's option named in its message.
    import ansible.module_utils.bwfleet_load as load

    monkeypatch.setattr(load, "MAX_STREAM_BYTES", 40)
    reader = StreamReader()
    for _ in range(30):
        assert reader.feed_line(b"\n", 1e9)  # blank lines: many events' worth, long past any deadline
    with pytest.raises(ApiError) as info:
        reader.feed_line(b'data: {"choices": []}\n', 1e9)
    assert str(info.value) == "the stream carried more than 40 bytes without finishing"


def test_plain_answers():
    body = ('{"choices":[{"finish_reason":"length","index":0,"message":{"content":"ee lee","role":"assistant"}}],'
            '"usage":{"completion_tokens":16,"prompt_tokens":20,"total_tokens":36}}')  # transformers serve 5.24, recorded
    assert judge_body(body) == (16, "usage", None)
    assert judge_body('{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}') == (0, "none", None)
    assert judge_body('{"choices":[{"message":{"content":""},"finish_reason":"stop"}],"usage":{"completion_tokens":0}}')[2] \
        == "empty completion (finish_reason stop)"


@pytest.mark.parametrize("exc,expected", [
    (socket.timeout("timed out"), "timed out after 2.0 s"),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
    (__import__("http.client").client.RemoteDisconnected("Remote end closed connection without response"),
     "the server closed the connection without answering after 2.0 s"),
    (__import__("http.client").client.IncompleteRead(b""), "the server dropped the connection mid-answer after 2.0 s (IncompleteRead)"),
])
def test_describe_exception(exc, expected):
    assert describe_exception(exc, 2.0) == expected


# --- aggregation and verdict --------------------------------------------------------------------

def run_of(n_ok=8, n_failed=0, not_sent=0, tokens=10, source="usage"):
    outs = [outcome(i, True, 1.0 + i * 0.1, 0.1 + i * 0.01, tokens, source) for i in range(n_ok)]
    outs += [outcome(n_ok + i, False, 0.5, error="HTTP 500: boom") for i in range(n_failed)]
    outs += [None] * not_sent
    return outs


def test_aggregate_figures():
    fig = aggregate(run_of(8), 8, 2.0)
    assert fig["requests_ok"] == 8 and fig["requests_failed"] == 0 and fig["requests_not_sent"] == 0
    assert fig["output_tokens"] == 80 and fig["tokens_per_second"] == 40.0 and fig["requests_per_second"] == 4.0
    assert fig["token_count"] == "usage" and fig["error_rate"] == 0.0 and fig["errors"] == []
    assert fig["latency_seconds"]["max"] == 1.7 and fig["latency_seconds"]["p50"] == 1.35
    assert fig["ttft_seconds"]["p50"] == 0.135
    assert verdict(fig) is None


def test_aggregate_failures_are_few_and_short():
    fig = aggregate(run_of(4, 8), 12, 1.0)
    assert fig["error_rate"] == round(8 / 12.0, 4) and len(fig["errors"]) == 5
    assert fig["errors"][0] == "request 5: HTTP 500: boom"
    assert fig["output_tokens"] == 40  # failed requests bring no output


def test_mixed_token_sources_are_said():
    outs = run_of(2) + [outcome(2, True, 1.0, 0.1, 5, "content_chunks")]
    assert aggregate(outs, 3, 1.0)["token_count"] == "mixed (content_chunks, usage)"
    assert aggregate([None, None], 2, 0.0)["token_count"] == "none"


def test_verdicts():
    fig = aggregate(run_of(9, 1), 10, 1.0)
    assert verdict(fig, max_error_rate=0.1) is None
    assert verdict(fig).startswith("error rate 0.1 (1 of 10 requests failed) is above max_error_rate 0.0; first: request 10: HTTP 500")
    slow = aggregate(run_of(4, tokens=10), 4, 4.0)
    assert verdict(slow, min_tokens_per_second=11).startswith("10.00 output tokens/s is below min_tokens_per_second 11")
    assert verdict(slow, min_tokens_per_second=10) is None
    unknown = aggregate(run_of(4, source="none", tokens=0), 4, 1.0)
    assert "reported no token counts" in verdict(unknown, min_tokens_per_second=1)
    cut = aggregate(run_of(2, 1, not_sent=5), 8, 30.0)
    assert verdict(cut, timed_out=30) == ("the run exceeded total_timeout (30 s): 3 of 8 requests finished (2 ok), 5 not sent; "
                                          "raise total_timeout or lower requests or max_tokens")


# --- the runner: nothing outlives it ----------------------------------------------------------------

def load_module():
    spec = importlib.util.spec_from_file_location("sglang_load_check", os.path.join(ROOT, "library", "sglang_load_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def open_sockets():
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("socket:"):
                found.add(fd)
        except OSError:
            pass
    return found


def measure_against(srv, **over):
    mod = load_module()
    p = params(url=srv.url, api_key=None, model=None, validate_certs=True, stream=True, requests=8, concurrency=4,
               warmup_requests=0)
    p.update(over)
    before_threads, before_sockets = set(threading.enumerate()), open_sockets()
    start = time.monotonic()
    result, failure = mod.measure(p)
    took = time.monotonic() - start
    left = [t.name for t in threading.enumerate() if t not in before_threads]
    return result, failure, took, left, open_sockets() - before_sockets


@pytest.fixture
def server():
    started = []

    def start(*args, lifetime=60):
        srv = fake(*args, lifetime=lifetime)
        started.append(srv)
        srv.wait_health(20)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.mark.parametrize("mode", ["hang", "stall-mid-stream"])
def test_runner_cuts_a_hung_server_at_total_timeout_and_leaves_nothing(server, mode):
    srv = server("--mode", mode, "--chunked")
    result, failure, took, threads_left, sockets_left = measure_against(srv, total_timeout=2.0, request_timeout=30.0)
    assert took < 2.0 + 3, took  # the deadline, plus the time to shut sockets and join workers
    assert threads_left == [] and sockets_left == set()
    assert failure.startswith("the run exceeded total_timeout (2.0 s): 4 of 8 requests finished (0 ok), 4 not sent")
    assert result["errors"][0].startswith("request 1: cut at total_timeout after")


def test_runner_request_timeout_frees_workers_for_the_rest(server):
    # every second request stalls mid-stream: each is cut at request_timeout, the others complete
    srv = server("--mode", "stall-mid-stream", "--fail-every", "2", "--chunk-delay", "0.01")
    result, failure, took, threads_left, sockets_left = measure_against(srv, request_timeout=1.0, total_timeout=20.0,
                                                                       max_error_rate=0.5)
    assert failure is None, failure
    assert result["requests_ok"] == 4 and result["requests_failed"] == 4
    assert all("timed out after 1.0 s" in e for e in result["errors"])
    assert took < 6 and threads_left == [] and sockets_left == set()


def test_runner_healthy_run_leaves_nothing(server):
    srv = server("--chunked", "--chunk-delay", "0.01")
    result, failure, _, threads_left, sockets_left = measure_against(srv)
    assert failure is None and result["requests_ok"] == 8 and result["output_tokens"] == 48
    assert threads_left == [] and sockets_left == set()
