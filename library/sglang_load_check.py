#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sglang_load_check
short_description: Measure an SGLang (or any OpenAI-compatible) server under load and gate on it
description:
  - Sends O(requests) chat completions to C(/v1/chat/completions) with O(concurrency) of them in
    flight, from a fixed prompt set, each asking for O(max_tokens), and measures aggregate output
    throughput, requests per second, time to first token (streamed) and end-to-end latency
    (p50, p95, p99, max).
  - Fails when the error rate is above O(max_error_rate), the throughput below
    O(min_tokens_per_second), the server refuses (connection refused, a rejected API key, a model
    it does not serve), or the run exceeds O(total_timeout).
  - First asks C(/v1/models) once (the model to load, and a clear error when the server refuses),
    then sends O(warmup_requests) unmeasured requests, then the measured run.
  - The run is bounded. Every socket operation has a timeout no later than the run's deadline; at the
    deadline, requests still in flight are cut (their sockets shut down) and every worker thread is
    joined before the module returns. Nothing keeps running after it.
  - Uses only the Python standard library (C(http.client), C(ssl), C(threading)), so there is
    nothing to install on a GPU box. Connects directly, without C(http_proxy)/C(https_proxy), because
    a load figure taken through a proxy would measure the proxy.
  - Read-only. Never reports C(changed). See O(ignore:attributes.check_mode) for dry runs.
version_added: "0.2.0"
author: bw-fleet contributors
options:
  url:
    description: Base URL of the server (a path prefix, as behind a reverse proxy, is kept).
    type: str
    default: http://127.0.0.1:8000
  api_key:
    description: Sent as C(Authorization Bearer); the server's C(--api-key). Never logged or returned.
    type: str
  model:
    description: The served model id to ask; when omitted, the first of C(/v1/models). A model the server does not list fails the run at once.
    type: str
  requests:
    description: Measured requests in the run.
    type: int
    default: 32
  concurrency:
    description: Requests in flight at once (one worker thread each); between 1 and O(requests), at most 256.
    type: int
    default: 4
  max_tokens:
    description: Completion length asked of every request. Keep it the same between runs you compare.
    type: int
    default: 128
  prompts:
    description:
      - User messages, taken in turn. The built-in set of eight short prompts is used when omitted.
      - Keep the prompt set the same between runs you compare (the rollout's before/after).
    type: list
    elements: str
  stream:
    description:
      - Stream the answers (C(stream_options.include_usage) is asked for) and measure time to first token.
      - Without it, O(ignore:ttft_seconds) stays empty and only end-to-end latency is measured.
    type: bool
    default: true
  total_timeout:
    description: Seconds the whole run may take, the C(/v1/models) check and the warm-up included. Exceeding it fails the run.
    type: float
    default: 600
  request_timeout:
    description: Seconds one request may take from connect to its last byte.
    type: float
    default: 120
  validate_certs:
    description: Verify TLS certificates for C(https) URLs.
    type: bool
    default: true
  min_tokens_per_second:
    description: Fail when the aggregate output rate (all output tokens / the run's wall time) is lower.
    type: float
  max_error_rate:
    description: Fail when the fraction of failed requests is higher (C(0) = no request may fail; C(0.05) = 5%).
    type: float
    default: 0
  warmup_requests:
    description:
      - Requests sent and awaited before the measured run, not counted (first-request compilation, caches).
      - When every one of them fails, the run stops there with the first error.
    type: int
    default: 1
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: >-
      Read-only; check mode runs the same measurement, like M(sglang_api_check), so a dry run of a
      rollout shows the figures a real one would gate on. It does send real traffic; to skip it in
      dry runs, put C(when: not ansible_check_mode) on the task.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
    details: Changes nothing, so there is no diff.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Output tokens are the server's C(usage.completion_tokens) when it sends them (SGLang and
    C(transformers serve) do, streamed or not); a stream without usage counts its content chunks
    (about one token each). RV(token_count) says which.
  - A request counts as failed on any non-200 answer, a network error or timeout, an error event
    inside the stream, a stream that ends without a C(finish_reason) (the server dropped it), or an
    empty completion.
  - Qwen3 is a thinking model; text in C(reasoning_content) counts as output.
seealso:
  - module: sglang_api_check
"""

EXAMPLES = r"""
- name: Measure the server with 16 requests, 4 in flight
  sglang_load_check:
    url: http://127.0.0.1:8000
    api_key: "{{ sglang_api_key }}"
    requests: 16
    concurrency: 4
  register: load

- name: Gate on throughput and errors, with the workload spelled out
  sglang_load_check:
    url: http://127.0.0.1:8000
    api_key: "{{ sglang_api_key }}"
    model: Qwen/Qwen3-32B-AWQ
    requests: 64
    concurrency: 8
    max_tokens: 256
    prompts:
      - Explain in a few sentences what a GPU driver does.
      - Write a short poem about a fleet of servers.
    min_tokens_per_second: 200
    max_error_rate: 0.02
    total_timeout: 900
    warmup_requests: 4
"""

RETURN = r"""
url:
  description: The base URL measured.
  returned: always
  type: str
model:
  description: The model the requests asked for.
  returned: when /v1/models answered
  type: str
requests:
  description: Measured requests asked for (the O(requests) option).
  returned: when the run started
  type: int
concurrency:
  description: Requests in flight at once.
  returned: when the run started
  type: int
max_tokens:
  description: Completion length asked of every request.
  returned: when the run started
  type: int
stream:
  description: Whether the answers were streamed.
  returned: when the run started
  type: bool
requests_ok:
  description: Measured requests answered with a complete, non-empty completion.
  returned: when the run started
  type: int
requests_failed:
  description: Measured requests that failed (cut at O(total_timeout) included).
  returned: when the run started
  type: int
requests_not_sent:
  description: Measured requests never sent because the run reached O(total_timeout) or the server rejected the key.
  returned: when the run started
  type: int
error_rate:
  description: requests_failed / requests sent (0 to 1).
  returned: when the run started
  type: float
errors:
  description: The first few failures, each C(request N - what happened), cut short.
  returned: when the run started
  type: list
  elements: str
  sample: ["request 3: HTTP 500: {\"object\": \"error\", \"message\": \"CUDA error: an illegal memory access ...\"}"]
output_tokens:
  description: Output tokens of the successful requests.
  returned: when the run started
  type: int
token_count:
  description: >-
    Where output_tokens come from: C(usage) (the server's usage.completion_tokens), C(content_chunks)
    (streamed chunks counted), C(mixed) followed by the sources in parentheses, or C(none) (no request
    succeeded, or no usage in plain answers).
  returned: when the run started
  type: str
duration_seconds:
  description: Wall time of the measured run (first request sent to last answer; warm-up excluded).
  returned: when the run started
  type: float
tokens_per_second:
  description: Aggregate output throughput, output_tokens / duration_seconds.
  returned: when the run started
  type: float
requests_per_second:
  description: requests_ok / duration_seconds.
  returned: when the run started
  type: float
ttft_seconds:
  description: Time to first token of the successful requests (streamed only; all null when O(stream=false)).
  returned: when the run started
  type: dict
  contains:
    p50:
      description: Median, in seconds.
      type: float
    p95:
      description: 95th percentile (linear interpolation between closest ranks), in seconds.
      type: float
    p99:
      description: 99th percentile, in seconds.
      type: float
    max:
      description: Slowest, in seconds.
      type: float
latency_seconds:
  description: End-to-end latency of the successful requests (connect to last byte), with the same keys as ttft_seconds.
  returned: when the run started
  type: dict
  contains:
    p50:
      description: Median, in seconds.
      type: float
    p95:
      description: 95th percentile, in seconds.
      type: float
    p99:
      description: 99th percentile, in seconds.
      type: float
    max:
      description: Slowest, in seconds.
      type: float
warmup_requests_ok:
  description: Warm-up requests that succeeded.
  returned: when the run started
  type: int
warmup_requests_failed:
  description: Warm-up requests that failed (not counted in the run's figures).
  returned: when the run started
  type: int
"""

import http.client
import json
import socket
import ssl
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bwfleet_api import auth_failure, excerpt, parse_models, pick_model, read_bounded
from ansible.module_utils.bwfleet_load import (
    MAX_BODY_BYTES,
    ApiError,
    LineSplitter,
    LoadError,
    StreamReader,
    aggregate,
    describe_exception,
    http_error,
    judge_body,
    outcome,
    payloads,
    validate,
    verdict,
)
from ansible.module_utils.six.moves.urllib.parse import urlsplit

READ_BYTES = 64 * 1024
JOIN_GRACE = 5.0  # seconds to wait for workers after their sockets were shut down


class Target:
    """Where and how to connect: one resolved address for every request, so no worker waits on DNS."""

    def __init__(self, url, api_key, validate_certs):
        parts = urlsplit(url.rstrip("/"))
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.address = None  # (ip, port) once the first connection worked
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = "Bearer " + api_key
        self.context = None
        if self.https:
            self.context = ssl.create_default_context()
            if not validate_certs:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def connection(self, timeout):
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if self.address:
            address = self.address
            # http.client's own hook: connect to the address resolved once, keep Host and TLS names as they are.
            conn._create_connection = lambda _addr, t, src=None: socket.create_connection(address, t, src)
        return conn


class Runner:
    """Sends requests from worker threads; can cut every socket in flight; never outlives run()."""

    def __init__(self, target, request_timeout):
        self.target = target
        self.request_timeout = request_timeout
        self.lock = threading.Lock()
        self.sockets = {}
        self.stop = threading.Event()
        self.fatal = None  # an answer that makes every further request pointless (a rejected key)

    # -- one request -------------------------------------------------------------------------
    def request(self, index, payload, stream, deadline):
        """-> outcome dict, or None when the run was stopped before this request went out.
        Every blocking call is bounded by min(request_timeout, the run's deadline)."""
        start = time.monotonic()
        limit = min(start + self.request_timeout, deadline)
        conn = self.target.connection(timeout=max(0.01, limit - start))
        sock = resp = None
        try:
            conn.connect()
            sock = conn.sock  # kept: http.client drops conn.sock when the answer says Connection: close
            with self.lock:
                self.sockets[index] = sock
            if self.stop.is_set():
                return None
            conn.request("POST", self.target.prefix + "/v1/chat/completions", body=json.dumps(payload),
                         headers=self.target.headers)
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read(64 * 1024)
                failure = auth_failure(resp.status, "/v1/chat/completions")
                if failure:
                    self.fatal = str(failure)
                    self.stop.set()
                return outcome(index, False, time.monotonic() - start, error=http_error(resp.status, body))
            if not stream:
                body = read_bounded(resp.read, MAX_BODY_BYTES, "/v1/chat/completions")
                tokens, source, error = judge_body(body)
                return outcome(index, error is None, time.monotonic() - start, None, tokens, source, error)
            reader, lines = StreamReader(), LineSplitter()
            going = True
            while going:
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("timed out")
                sock.settimeout(remaining)
                data = resp.read1(READ_BYTES)
                if not data:
                    if self.cut_by_run(limit, deadline):
                        # abort()'s shutdown makes a blocked read return EOF, not raise
                        return self.cut(index, start)
                    for raw in lines.tail():
                        reader.feed_line(raw, time.monotonic())
                    break
                for raw in lines.feed(data):
                    going = reader.feed_line(raw, time.monotonic())
                    if not going:
                        break
            tokens, source, error = reader.outcome()
            first = reader.state.first_token_at
            return outcome(index, error is None, time.monotonic() - start, first - start if first else None, tokens,
                           source, error)
        except (OSError, http.client.HTTPException, ApiError, ValueError) as exc:
            if self.cut_by_run(limit, deadline):
                return self.cut(index, start)
            elapsed = time.monotonic() - start
            return outcome(index, False, elapsed, error=describe_exception(exc, elapsed))
        finally:
            with self.lock:
                self.sockets.pop(index, None)
            # The answer's file object holds the socket open on its own: close it too, not only the connection.
            for thing in (resp, conn, sock):
                if thing is not None:
                    try:
                        thing.close()
                    except OSError:
                        pass

    def cut_by_run(self, limit, deadline):
        """Did the run's deadline (not this request's own timeout, not a rejected key) end this request?"""
        if self.fatal is not None:
            return False
        return self.stop.is_set() or (limit == deadline and time.monotonic() >= deadline - 0.05)

    @staticmethod
    def cut(index, start):
        elapsed = time.monotonic() - start
        return outcome(index, False, elapsed, error="cut at total_timeout after %.1f s in flight" % elapsed)

    # -- a batch at a given concurrency -----------------------------------------------------------
    def run(self, batch, concurrency, stream, deadline):
        """-> (outcomes, seconds, cut): outcomes[i] is None when request i was never sent."""
        outcomes = [None] * len(batch)
        queue = iter(range(len(batch)))
        take = threading.Lock()

        def worker():
            while not self.stop.is_set() and time.monotonic() < deadline:
                with take:
                    index = next(queue, None)
                if index is None:
                    return
                outcomes[index] = self.request(index, batch[index], stream, deadline)

        threads = [threading.Thread(target=worker, name="sglang-load-%d" % n, daemon=True)
                   for n in range(min(concurrency, len(batch)))]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        duration = time.monotonic() - start
        cut = any(thread.is_alive() for thread in threads)
        if cut:
            self.abort()
            grace = time.monotonic() + JOIN_GRACE
            for thread in threads:
                thread.join(max(0.0, grace - time.monotonic()))
        # Requests a worker had not yet taken when the deadline passed were never sent: None stays.
        return outcomes, duration, cut or (time.monotonic() >= deadline and None in outcomes)

    def abort(self):
        """Cut every request in flight: shutdown() wakes a thread blocked in recv(), close() alone does not."""
        self.stop.set()
        with self.lock:
            for sock in list(self.sockets.values()):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- the model check ------------------------------------------------------------------------
    def models(self, deadline):
        """GET /v1/models once: the model list, the address to reuse, and a clear refusal."""
        timeout = max(0.01, min(self.request_timeout, deadline - time.monotonic()))
        conn = self.target.connection(timeout)
        try:
            conn.connect()
            self.target.address = conn.sock.getpeername()[:2]
            conn.request("GET", self.target.prefix + "/v1/models", headers=self.target.headers)
            resp = conn.getresponse()
            body = resp.read(MAX_BODY_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise LoadError("cannot reach %s/v1/models: %s; is the server running and ready? "
                            "(sglang_api_check waits for readiness)" % (self.target.url, describe_exception(exc)))
        finally:
            conn.close()
        failure = auth_failure(resp.status, "/v1/models")
        if failure:
            raise LoadError(str(failure))
        if resp.status != 200:
            raise LoadError("/v1/models answered HTTP %d: %s" % (resp.status, excerpt(body)))
        return parse_models(body)


def measure(params):
    """The whole check -> (result dict, failure message or None). Returns only when no worker is left."""
    started = time.monotonic()
    deadline = started + params["total_timeout"]
    target = Target(params["url"], params["api_key"], params["validate_certs"])
    runner = Runner(target, params["request_timeout"])
    result = {"url": target.url}
    try:
        result["model"] = pick_model(runner.models(deadline), params["model"])
    except ApiError as exc:
        return result, str(exc)
    result.update(requests=params["requests"], concurrency=params["concurrency"], max_tokens=params["max_tokens"],
                  stream=params["stream"])

    warm_ok = warm_failed = 0
    if params["warmup_requests"]:
        batch = payloads(result["model"], params["prompts"], params["warmup_requests"], params["max_tokens"], params["stream"])
        warm, _, cut = runner.run(batch, params["concurrency"], params["stream"], deadline)
        warm_ok = sum(1 for o in warm if o and o["ok"])
        warm_failed = sum(1 for o in warm if o and not o["ok"])
        first_error = next((o["error"] for o in warm if o and not o["ok"]), None)
        if runner.fatal or cut or not warm_ok:
            figures = aggregate([None] * params["requests"], params["requests"], 0.0)
            result.update(figures, warmup_requests_ok=warm_ok, warmup_requests_failed=warm_failed)
            if runner.fatal:
                return result, runner.fatal
            if cut:
                return result, "the warm-up exceeded total_timeout (%s s); raise total_timeout" % params["total_timeout"]
            return result, "every warm-up request failed (%d); first: %s" % (warm_failed, first_error)

    batch = payloads(result["model"], params["prompts"], params["requests"], params["max_tokens"], params["stream"],
                     offset=params["warmup_requests"])
    outcomes, duration, cut = runner.run(batch, params["concurrency"], params["stream"], deadline)
    figures = aggregate(outcomes, params["requests"], duration)
    result.update(figures, warmup_requests_ok=warm_ok, warmup_requests_failed=warm_failed)
    if runner.fatal:
        return result, runner.fatal
    return result, verdict(figures, params["max_error_rate"], params["min_tokens_per_second"],
                           timed_out=params["total_timeout"] if cut else None)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8000"),
            api_key=dict(type="str", no_log=True),
            model=dict(type="str"),
            requests=dict(type="int", default=32),
            concurrency=dict(type="int", default=4),
            max_tokens=dict(type="int", default=128),
            prompts=dict(type="list", elements="str"),
            stream=dict(type="bool", default=True),
            total_timeout=dict(type="float", default=600),
            request_timeout=dict(type="float", default=120),
            validate_certs=dict(type="bool", default=True),
            min_tokens_per_second=dict(type="float"),
            max_error_rate=dict(type="float", default=0),
            warmup_requests=dict(type="int", default=1),
        ),
        supports_check_mode=True,
    )
    problems = validate(module.params)
    if problems:
        module.fail_json(msg="; ".join(problems))
    result, failure = measure(module.params)
    result["changed"] = False
    if failure:
        module.fail_json(msg="%s: %s" % (result["url"], failure), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
