"""What an OpenAI-compatible server's answers mean (SGLang's real shapes)."""

import io
import json

import pytest

from bwfleet_api import (
    MAX_RESPONSE_BYTES,
    MAX_STREAM_EVENTS,
    ApiError,
    StreamBudget,
    StreamState,
    chat_request,
    health_verdict,
    judge_completion,
    parse_completion,
    parse_models,
    parse_sse_event,
    pick_model,
    read_bounded,
)

SGLANG_MODELS = json.dumps({"object": "list", "data": [{"id": "Qwen/Qwen3-32B-AWQ", "object": "model", "created": 1758000000,
                                                        "owned_by": "sglang", "root": "Qwen/Qwen3-32B-AWQ", "max_model_len": 2048}]})
# Recorded from `transformers serve` 5.24.0 in this project's lab.
TRANSFORMERS_MODELS = '{"object":"list","data":[{"owned_by":"local","id":"/models/tiny-qwen3","object":"model","created":0,"status":{"value":"loaded"}}]}'
TRANSFORMERS_COMPLETION = ('{"id":"2049d701","choices":[{"finish_reason":"length","index":0,"message":{"content":"\\u00e9ee lee=Ms?wsFjut",'
                           '"role":"assistant"}}],"created":1795697194,"model":"/tmp/tinyq","object":"chat.completion",'
                           '"usage":{"completion_tokens":16,"prompt_tokens":20,"total_tokens":36}}')


@pytest.mark.parametrize("status,verdict", [(200, "ready"), (503, "wait"), (502, "wait"), (504, "wait"), (500, "wait")])
def test_health_verdicts(status, verdict):
    assert health_verdict(status) == verdict


def test_health_auth_and_missing_path_fail_at_once():
    with pytest.raises(ApiError, match="set sglang_api_key"):
        health_verdict(401)
    with pytest.raises(ApiError, match="set health_path"):
        health_verdict(404, health_path="/healthz")


def test_models_sglang_and_transformers_shapes():
    assert parse_models(SGLANG_MODELS) == ["Qwen/Qwen3-32B-AWQ"]
    assert parse_models(TRANSFORMERS_MODELS) == ["/models/tiny-qwen3"]


@pytest.mark.parametrize("body,match", [("<html>502</html>", "did not answer JSON"), ('{"data": []}', "lists no model"),
                                        ('{"object": "list"}', "no 'data' list"), ("", "empty body")])
def test_models_bad_answers(body, match):
    with pytest.raises(ApiError, match=match):
        parse_models(body)


def test_pick_model():
    assert pick_model(["a", "b"]) == "a"
    assert pick_model(["a", "b"], "b") == "b"
    with pytest.raises(ApiError) as info:
        pick_model(["Qwen/Qwen3-8B"], "Qwen/Qwen3-32B-AWQ")
    assert str(info.value) == "model mismatch: served: Qwen/Qwen3-8B; expected: Qwen/Qwen3-32B-AWQ"


def test_completion_transformers_shape():
    parsed = parse_completion(TRANSFORMERS_COMPLETION)
    assert parsed["completion_tokens"] == 16 and parsed["finish_reason"] == "length"
    out = judge_completion(parsed, 0.5)
    assert out["tokens_per_second"] == 32.0 and out["latency_seconds"] == 0.5


def test_reasoning_only_counts_as_text():
    body = json.dumps({"choices": [{"message": {"content": None, "reasoning_content": "thinking..."}, "finish_reason": "length"}],
                       "usage": {"completion_tokens": 5, "prompt_tokens": 3}})
    assert judge_completion(parse_completion(body), 1.0)["completion"] == "thinking..."


def test_empty_completion_fails():
    body = json.dumps({"choices": [{"message": {"content": "  "}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})
    with pytest.raises(ApiError, match="empty completion"):
        judge_completion(parse_completion(body), 1.0)


def test_zero_tokens_fails():
    body = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 0}})
    with pytest.raises(ApiError, match="no completion tokens"):
        judge_completion(parse_completion(body), 1.0)


def test_rate_floor():
    parsed = {"completion": "x", "completion_tokens": 10}
    with pytest.raises(ApiError, match="below min_tokens_per_second 50"):
        judge_completion(parsed, 1.0, min_tokens_per_second=50)
    assert judge_completion(parsed, 0.1, min_tokens_per_second=50)["tokens_per_second"] == 100.0


def test_completion_is_truncated_to_200_characters():
    assert len(judge_completion({"completion": "y" * 500, "completion_tokens": 3}, 1)["completion"]) == 200


def test_sse_stream_with_and_without_usage():
    # As transformers serve 5.24 streams it (recorded): role chunk, content chunk, final chunk with usage, no [DONE].
    lines = [
        'data: {"choices":[{"delta":{"role":"assistant"},"index":0}],"object":"chat.completion.chunk"}',
        "",
        'data: {"choices":[{"delta":{"content":"ee"},"index":0}],"object":"chat.completion.chunk"}',
        'data: {"choices":[{"delta":{},"index":0,"finish_reason":"length"}],"usage":{"completion_tokens":4,"prompt_tokens":20}}',
        ": keep-alive",
    ]
    state = StreamState()
    for t, line in enumerate(lines):
        state.feed(parse_sse_event(line), now=float(t))
    assert state.first_token_at == 2.0
    assert state.result() == {"completion": "ee", "finish_reason": "length", "prompt_tokens": 20, "completion_tokens": 4}
    assert parse_sse_event("data: [DONE]") == "done"
    with pytest.raises(ApiError, match="not JSON"):
        parse_sse_event("data: {broken")


def test_chat_request_asks_for_usage_when_streaming():
    assert chat_request("m", "hi", 8, True)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in chat_request("m", "hi", 8, False)


# --- bounds: a broken or hostile server cannot make the gate buffer or loop without end
def test_read_bounded():
    body = io.BytesIO(b"x" * 100)
    assert read_bounded(body.read, 100, "/v1/models") == b"x" * 100
    with pytest.raises(ApiError, match=r"/v1/models answered more than 99 bytes \(max_response_bytes\)"):
        read_bounded(io.BytesIO(b"x" * 100).read, 99, "/v1/models", "max_response_bytes")
    # Without an option name (sglang_load_check's fixed bound) the message names none.
    with pytest.raises(ApiError, match=r"^/v1/models answered more than 99 bytes: "):
        read_bounded(io.BytesIO(b"x" * 100).read, 99, "/v1/models")
    assert read_bounded(io.BytesIO(b"").read, 10, "/health") == b""


OPTIONS = {"events": "max_stream_events", "bytes": "max_response_bytes", "deadline": "request_timeout"}


def test_stream_budget_events_bytes_and_time():
    budget = StreamBudget(max_events=3, max_bytes=10000, deadline_seconds=60, started=0.0, options=OPTIONS)
    for _ in range(3):
        budget.take(b"data: {}\n", 1.0)
        budget.take(b"\n", 1.0)  # blank separators are not events
    with pytest.raises(ApiError, match=r"more than 3 events \(max_stream_events\)"):
        budget.take(b"data: {}\n", 1.0)

    budget = StreamBudget(max_events=1000, max_bytes=20, deadline_seconds=60, started=0.0, options=OPTIONS)
    assert budget.line_limit() == 21
    budget.take(b"data: 0123456789\n", 1.0)
    assert budget.line_limit() == 4
    with pytest.raises(ApiError, match=r"more than 20 bytes \(max_response_bytes\) without finishing"):
        budget.take(b"data: x\n", 1.0)

    budget = StreamBudget(max_events=1000, max_bytes=10000, deadline_seconds=5, started=100.0, options=OPTIONS)
    budget.take(b"data: {}\n", 104.0)
    with pytest.raises(ApiError, match=r"did not finish within 5 s \(request_timeout\)"):
        budget.take(b"data: {}\n", 105.5)


def test_stream_budget_without_option_names_or_with_unchecked_bounds():
    # sglang_load_check's use: a fixed byte bound, no event bound, no deadline (its runner bounds time).
    budget = StreamBudget(max_events=None, max_bytes=30, deadline_seconds=None, started=0.0)
    for _ in range(20):
        budget.take(b"\n", 1e9)  # neither the event count nor the time is checked
    budget.take(b"data: x\n", 1e9)
    with pytest.raises(ApiError) as info:
        budget.take(b"data: x\n", 1e9)
    assert str(info.value) == "the stream carried more than 30 bytes without finishing"
    budget = StreamBudget(max_events=1, max_bytes=1000, deadline_seconds=2, started=0.0)
    budget.take(b"data: {}\n", 1.0)
    with pytest.raises(ApiError) as info:
        budget.take(b"data: {}\n", 1.0)
    assert str(info.value) == "the stream carried more than 1 events without [DONE]"
    budget = StreamBudget(max_events=10, max_bytes=1000, deadline_seconds=2, started=0.0)
    with pytest.raises(ApiError) as info:
        budget.take(b"data: {}\n", 3.0)
    assert str(info.value) == "the stream did not finish within 2 s"


def test_defaults_are_sane():
    assert MAX_RESPONSE_BYTES == 1024 * 1024 and MAX_STREAM_EVENTS >= 1000
