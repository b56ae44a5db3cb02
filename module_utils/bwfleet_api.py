# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions behind sglang_api_check: what an OpenAI-compatible server's
answers mean. No I/O here; the module does the HTTP and calls these."""

from __future__ import annotations

import json

# Answers that mean "still starting": SGLang's /health says 503 until the
# model is loaded; proxies in front of it say 502/504.
NOT_YET = (502, 503, 504)


# Bounds on what the gate reads: a broken or hostile server must not make it buffer or loop forever.
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_STREAM_EVENTS = 10000


class ApiError(Exception):
    """A definite failure: the message says what was seen and what to do."""


def _named(option):
    """' (option)' when the caller names the option that sets a bound, so the message says what to raise."""
    return " (%s)" % option if option else ""


def read_bounded(read, limit, what, option=None):
    """Read a body through read(n) (a file-like's read), at most `limit` bytes, else ApiError.

    `option` names the caller's option behind `limit`, if it has one (messages never name
    another module's options)."""
    body = read(limit + 1)
    if body is not None and len(body) > limit:
        raise ApiError("%s answered more than %d bytes%s: not an answer this check expects" % (what, limit, _named(option)))
    return body or b""


class StreamBudget:
    """Bounds one streamed answer: events, bytes and wall time. A bound of None is not checked
    (a caller with its own overall deadline passes deadline_seconds=None). `options` maps
    'events', 'bytes' and 'deadline' to the caller's option names, for the messages."""

    def __init__(self, max_events, max_bytes, deadline_seconds, started, options=None):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.deadline_seconds = deadline_seconds
        self.deadline = None if deadline_seconds is None else started + deadline_seconds
        self.options = options or {}
        self.events = 0
        self.bytes = 0

    def line_limit(self):
        """The most one readline() may return without overrunning the byte budget (+1 to detect it)."""
        return max(1, self.max_bytes - self.bytes + 1)

    def take(self, line, now):
        self.bytes += len(line)
        if self.bytes > self.max_bytes:
            raise ApiError("the stream carried more than %d bytes%s without finishing" % (self.max_bytes, _named(self.options.get("bytes"))))
        if line.strip():
            self.events += 1
        if self.max_events is not None and self.events > self.max_events:
            raise ApiError("the stream carried more than %d events%s without [DONE]" % (self.max_events, _named(self.options.get("events"))))
        if self.deadline is not None and now > self.deadline:
            raise ApiError("the stream did not finish within %s s%s" % (self.deadline_seconds, _named(self.options.get("deadline"))))


def excerpt(body, limit=300):
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = " ".join((body or "").split())
    return body if len(body) <= limit else body[:limit] + "..."


def health_verdict(status, body="", health_path="/health"):
    """HTTP status of the health path -> 'ready', 'wait', or raises ApiError."""
    if status == 200:
        return "ready"
    if status in NOT_YET:
        return "wait"
    if status in (401, 403):
        raise ApiError(
            "the server rejected the request to %s (HTTP %d): set sglang_api_key (api_key) to the server's --api-key"
            % (health_path, status)
        )
    if status == 404:
        raise ApiError("%s does not exist on this server (HTTP 404): set health_path (SGLang: /health or /health_generate)" % health_path)
    if 500 <= status < 600:
        return "wait"  # a crash-looping server may come back before the deadline; the last error is reported
    raise ApiError("unexpected HTTP %d from %s: %s" % (status, health_path, excerpt(body)))


def auth_failure(status, what):
    if status in (401, 403):
        return ApiError(
            "the server rejected the API key on %s (HTTP %d): set sglang_api_key (api_key) to the server's --api-key"
            % (what, status)
        )
    return None


def parse_json(body, what):
    try:
        return json.loads(body)
    except (TypeError, ValueError):
        raise ApiError("%s did not answer JSON: %s" % (what, excerpt(body) or "(empty body)"))


def parse_models(body):
    """/v1/models -> list of model ids (SGLang, vLLM and other OpenAI-compatible servers)."""
    doc = parse_json(body, "/v1/models")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ApiError("/v1/models has no 'data' list: %s" % excerpt(body))
    ids = [entry.get("id") for entry in data if isinstance(entry, dict) and entry.get("id")]
    if not ids:
        raise ApiError("/v1/models lists no model: the server has nothing loaded")
    return ids


def pick_model(ids, expected=None):
    if expected is None:
        return ids[0]
    if expected not in ids:
        raise ApiError("model mismatch: served: %s; expected: %s" % (", ".join(ids), expected))
    return expected


def chat_request(model, prompt, max_tokens, stream):
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": bool(stream),
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


def _message_text(message):
    # Qwen3 is a thinking model: SGLang puts the thinking in reasoning_content.
    return (message.get("content") or "") + (message.get("reasoning_content") or "")


def parse_completion(body):
    """A non-streamed chat completion -> dict(completion, finish_reason, prompt_tokens, completion_tokens)."""
    doc = parse_json(body, "/v1/chat/completions")
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ApiError("/v1/chat/completions answered without choices: %s" % excerpt(body))
    message = choices[0].get("message") or {}
    usage = doc.get("usage") or {}
    return {
        "completion": _message_text(message),
        "finish_reason": choices[0].get("finish_reason"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }


def parse_sse_event(line):
    """One line of a streamed answer -> dict, 'done', or None (keep-alive, comments, blank)."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    data = line[len("data:"):].strip()
    if data == "[DONE]":
        return "done"
    try:
        return json.loads(data)
    except ValueError:
        raise ApiError("the stream carried a line that is not JSON: %s" % excerpt(data))


class StreamState:
    """Accumulates a streamed chat completion chunk by chunk."""

    def __init__(self):
        self.text = ""
        self.finish_reason = None
        self.usage = {}
        self.chunks = 0
        self.first_token_at = None

    def feed(self, event, now):
        if not isinstance(event, dict):
            return
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = _message_text(delta)
            if piece:
                self.chunks += 1
                self.text += piece
                if self.first_token_at is None:
                    self.first_token_at = now
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def result(self):
        return {
            "completion": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.usage.get("prompt_tokens"),
            # Without usage in the stream, each content chunk is about one token.
            "completion_tokens": self.usage.get("completion_tokens") or self.chunks,
        }


def judge_completion(parsed, latency, min_tokens_per_second=None):
    """Checks on a parsed completion; returns the module's result fields."""
    tokens = parsed.get("completion_tokens") or 0
    if not parsed.get("completion", "").strip():
        raise ApiError(
            "empty completion: the model answered with no text (finish_reason %s, %d completion tokens)"
            % (parsed.get("finish_reason"), tokens)
        )
    if tokens <= 0:
        raise ApiError("the completion reports no completion tokens (usage.completion_tokens = %r)" % parsed.get("completion_tokens"))
    rate = tokens / latency if latency > 0 else None
    out = dict(parsed)
    out["completion"] = parsed["completion"][:200]
    out["latency_seconds"] = round(latency, 3)
    out["tokens_per_second"] = round(rate, 2) if rate is not None else None
    if min_tokens_per_second is not None and (rate or 0) < min_tokens_per_second:
        raise ApiError(
            "%.2f tokens/s is below min_tokens_per_second %s (%d tokens in %.2f s)" % (rate or 0, min_tokens_per_second, tokens, latency)
        )
    return out
