# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions behind sglang_load_check: the prompt set, what one streamed or
plain answer means under load, percentiles, aggregation and the verdict.
No I/O here; the module's runner does the HTTP and threads and calls these.
What a single answer means is bwfleet_api's (SSE lines, StreamState, usage):
reused, not copied."""

from __future__ import annotations

import http.client
import math
import socket
import ssl

from ansible.module_utils.bwfleet_api import (
    ApiError,
    StreamBudget,
    StreamState,
    chat_request,
    excerpt,
    parse_completion,
    parse_sse_event,
)

# A fixed, varied set: short and long answers, so a run exercises prefill
# and decode alike and two runs of the same workload are comparable.
DEFAULT_PROMPTS = [
    "Explain in a few sentences what a GPU driver does.",
    "Write a short poem about a fleet of servers.",
    "List five prime numbers and say why each is prime.",
    "Summarise the plot of a detective story in one paragraph.",
    "Describe how to make a cup of tea, step by step.",
    "What is the difference between latency and throughput?",
    "Translate 'good morning, the server is ready' into French and German.",
    "Give three tips for writing clear error messages.",
]

PERCENTILES = (50, 95, 99)
ERRORS_KEPT = 5  # the result carries the first few errors, not all of them
ERROR_CHARS = 160  # ... each cut to this length
MAX_CONCURRENCY = 256  # one thread per request in flight: bound it

# Bounds on what one answer may send, so a broken server cannot exhaust memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
MAX_STREAM_BYTES = 64 * 1024 * 1024

TOKEN_SOURCES = ("usage", "content_chunks", "none")


class LoadError(ApiError):
    """The run cannot go on (refused, rejected key) or missed a threshold."""


def validate(params):
    """-> list of problems with the options, every one of them (empty when fine)."""
    problems = []
    url = params.get("url") or ""
    if not url.startswith(("http://", "https://")):
        problems.append("url must start with http:// or https://, got %r" % url)
    if params["requests"] < 1:
        problems.append("requests must be at least 1, got %d" % params["requests"])
    if params["concurrency"] < 1:
        problems.append("concurrency must be at least 1, got %d" % params["concurrency"])
    elif params["concurrency"] > params["requests"] >= 1:
        problems.append("concurrency (%d) must not exceed requests (%d)" % (params["concurrency"], params["requests"]))
    elif params["concurrency"] > MAX_CONCURRENCY:
        problems.append("concurrency must be at most %d, got %d" % (MAX_CONCURRENCY, params["concurrency"]))
    if params["max_tokens"] < 1:
        problems.append("max_tokens must be at least 1, got %d" % params["max_tokens"])
    if params["warmup_requests"] < 0:
        problems.append("warmup_requests must be 0 or more, got %d" % params["warmup_requests"])
    for name in ("total_timeout", "request_timeout"):
        value = params[name]
        if not value > 0 or math.isinf(value):  # "not >" also catches NaN
            problems.append("%s must be a number of seconds > 0, got %s" % (name, value))
    rate = params.get("max_error_rate")
    if not 0 <= rate <= 1:
        problems.append("max_error_rate must be between 0 and 1 (a fraction: 0.05 = 5%%), got %s" % rate)
    floor = params.get("min_tokens_per_second")
    if floor is not None and not floor > 0:
        problems.append("min_tokens_per_second must be > 0 when set, got %s" % floor)
    prompts = params.get("prompts")
    if prompts is not None:
        if not prompts:
            problems.append("prompts must not be empty (leave it out for the built-in set)")
        elif not all(isinstance(p, str) and p.strip() for p in prompts):
            problems.append("every entry of prompts must be a non-empty string")
    return problems


def payloads(model, prompts, count, max_tokens, stream, offset=0):
    """The chat requests of a run: prompts taken in turn, as bwfleet_api builds one."""
    prompts = prompts or DEFAULT_PROMPTS
    return [chat_request(model, prompts[(offset + i) % len(prompts)], max_tokens, stream) for i in range(count)]


def percentile(values, pct):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(math.floor(rank))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values):
    """-> {p50, p95, p99, max} in seconds, rounded to ms; all None when nothing was measured."""
    out = {}
    for pct in PERCENTILES:
        value = percentile(values, pct)
        out["p%d" % pct] = round(value, 3) if value is not None else None
    out["max"] = round(max(values), 3) if values else None
    return out


def short(text, limit=ERROR_CHARS):
    return excerpt(text, limit)


def describe_exception(exc, elapsed=None):
    """A network or protocol exception -> one short line an operator can act on."""
    after = " after %.1f s" % elapsed if elapsed is not None else ""
    if isinstance(exc, socket.timeout) or "timed out" in str(exc):
        return "timed out%s" % after
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering%s" % after
    if isinstance(exc, (http.client.IncompleteRead, ConnectionResetError, BrokenPipeError)):
        return "the server dropped the connection mid-answer%s (%s)" % (after, type(exc).__name__)
    if isinstance(exc, ssl.SSLError):
        return "TLS: %s" % short(str(exc), 120)
    if isinstance(exc, ApiError):
        return short(str(exc))
    return "%s: %s%s" % (type(exc).__name__, short(str(exc), 120), after)


def http_error(status, body):
    """A non-200 answer to a chat request -> short text (the JSON error's message when there is one)."""
    return "HTTP %d: %s" % (status, short(body, 120) or "(empty body)")


def stream_error(event):
    """SGLang reports a failure inside a started stream as `data: {"error": {...}}`, then [DONE]."""
    if isinstance(event, dict) and event.get("error"):
        err = event["error"]
        message = err.get("message") if isinstance(err, dict) else err
        return "the server reported an error mid-stream: %s" % short(str(message), 120)
    return None


class LineSplitter:
    """Bytes as they arrive -> complete lines. The runner reads with read1(): unlike readline(),
    it raises IncompleteRead when a chunked stream (uvicorn's framing) is cut."""

    def __init__(self):
        self.rest = b""

    def feed(self, data):
        self.rest += data
        *lines, self.rest = self.rest.split(b"\n")
        if len(self.rest) > MAX_LINE_BYTES:
            raise ApiError("a stream line exceeded %d KiB" % (MAX_LINE_BYTES // 1024))
        return [line + b"\n" for line in lines]

    def tail(self):
        """A last line without its newline, when the stream ended there."""
        rest, self.rest = self.rest, b""
        return [rest] if rest.strip() else []


class StreamReader:
    """One streamed answer, line by line: bwfleet_api's SSE parsing plus the checks
    a load run needs (error events, a stream cut before its finish_reason)."""

    def __init__(self):
        self.state = StreamState()
        self.done = False
        self.error = None
        # bwfleet_api's bound on bytes; no event bound and no deadline: the runner's timeouts bound time.
        self.budget = StreamBudget(None, MAX_STREAM_BYTES, None, 0.0)

    def feed_line(self, raw, now):
        """-> False once the stream is over (done, or an error event)."""
        self.budget.take(raw, now)
        event = parse_sse_event(raw.decode("utf-8", "replace"))
        if event == "done":
            self.done = True
            return False
        self.error = stream_error(event)
        if self.error:
            return False
        self.state.feed(event, now)
        return True

    def outcome(self):
        """-> (tokens, token source, error or None) once the stream ended."""
        if self.error:
            return 0, "none", self.error
        result = self.state.result()
        if self.state.finish_reason is None:
            # transformers serve ends without [DONE]; every server sends a finish_reason: its absence is a cut.
            return 0, "none", ("the stream ended after %d chunks without a finish_reason (the server dropped it mid-answer)"
                               % self.state.chunks)
        tokens, source = stream_tokens(self.state)
        if tokens <= 0 or not result["completion"].strip():
            return 0, source, "empty completion (finish_reason %s)" % self.state.finish_reason
        return tokens, source, None


def stream_tokens(state):
    """Output tokens of a stream: the server's usage when it sent one (stream_options include_usage), else content chunks."""
    if state.usage.get("completion_tokens") is not None:
        return int(state.usage["completion_tokens"]), "usage"
    return state.chunks, "content_chunks"


def judge_body(body):
    """A non-streamed 200 answer -> (tokens, token source, error or None)."""
    parsed = parse_completion(body)
    if not (parsed.get("completion") or "").strip():
        return 0, "none", "empty completion (finish_reason %s)" % parsed.get("finish_reason")
    if parsed.get("completion_tokens") is None:
        return 0, "none", None  # counted as ok; tokens unknown (the result says token_count: none)
    return int(parsed["completion_tokens"]), "usage", None


def outcome(index, ok, latency, ttft=None, tokens=0, source="none", error=None):
    return {"index": index, "ok": ok, "latency": latency, "ttft": ttft, "tokens": tokens, "source": source, "error": error}


def aggregate(outcomes, requests, duration):
    """Outcomes of the measured requests (None: never sent) -> the module's figures."""
    sent = [o for o in outcomes if o is not None]
    good = [o for o in sent if o["ok"]]
    failed = [o for o in sent if not o["ok"]]
    tokens = sum(o["tokens"] for o in good)
    sources = sorted(set(o["source"] for o in good))
    if not sources:
        source = "none"
    elif len(sources) == 1:
        source = sources[0]
    else:
        source = "mixed (%s)" % ", ".join(sources)
    errors = ["request %d: %s" % (o["index"] + 1, o["error"]) for o in sorted(failed, key=lambda o: o["index"])[:ERRORS_KEPT]]
    ttfts = [o["ttft"] for o in good if o["ttft"] is not None]
    return {
        "requests": requests,
        "requests_ok": len(good),
        "requests_failed": len(failed),
        "requests_not_sent": requests - len(sent),
        "error_rate": round(len(failed) / float(len(sent)), 4) if sent else 0.0,
        "errors": errors,
        "output_tokens": tokens,
        "token_count": source,
        "duration_seconds": round(duration, 3),
        "tokens_per_second": round(tokens / duration, 2) if duration > 0 else 0.0,
        "requests_per_second": round(len(good) / duration, 3) if duration > 0 else 0.0,
        "ttft_seconds": distribution(ttfts),
        "latency_seconds": distribution([o["latency"] for o in good]),
    }


def verdict(figures, max_error_rate=0.0, min_tokens_per_second=None, timed_out=None):
    """-> None when the run passes, else the message that fails it (the worst problem first)."""
    if timed_out is not None:
        done = figures["requests_ok"] + figures["requests_failed"]
        return ("the run exceeded total_timeout (%s s): %d of %d requests finished (%d ok), %d not sent; "
                "raise total_timeout or lower requests or max_tokens" % (
                    timed_out, done, figures["requests"], figures["requests_ok"], figures["requests_not_sent"]))
    if figures["error_rate"] > max_error_rate:
        return "error rate %.4g (%d of %d requests failed) is above max_error_rate %s; first: %s" % (
            figures["error_rate"], figures["requests_failed"], figures["requests_failed"] + figures["requests_ok"],
            max_error_rate, figures["errors"][0] if figures["errors"] else "?")
    if min_tokens_per_second is not None:
        if figures["token_count"] == "none":
            return ("min_tokens_per_second is set but the server reported no token counts "
                    "(no usage in the answers): use stream: true, where content chunks are counted")
        if figures["tokens_per_second"] < min_tokens_per_second:
            return "%.2f output tokens/s is below min_tokens_per_second %s (%d tokens in %.2f s at the given concurrency)" % (
                figures["tokens_per_second"], min_tokens_per_second, figures["output_tokens"], figures["duration_seconds"])
    return None
