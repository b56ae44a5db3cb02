#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sglang_api_check
short_description: Prove an SGLang (or any OpenAI-compatible) server answers with a real completion
description:
  - Waits until the health path answers 200 (connection refused and 502/503/504 mean "not yet"),
    checks that C(/v1/models) lists the expected model, asks C(/v1/chat/completions) for a real
    completion, and measures it.
  - A container that is "running" is not a server that works; the seed's server crashed in
    warm-up after its container was up. This module is the gate after every (re)start.
  - Read-only. Never reports C(changed). Uses only the Python standard library through
    Ansible's own C(ansible.module_utils.urls); nothing to install on a GPU box.
version_added: "0.1.0"
author: bw-fleet contributors
options:
  url:
    description: Base URL of the server.
    type: str
    default: http://127.0.0.1:8000
  api_key:
    description:
      - Sent as C(Authorization) C(Bearer); the server's C(--api-key).
      - Never logged or returned.
    type: str
  model:
    description: The served model id to expect; when omitted, the first of C(/v1/models).
    type: str
  wait_timeout:
    description: Seconds to wait for readiness. A 32B model loads slowly.
    type: int
    default: 900
  poll_interval:
    description: Seconds between health polls.
    type: float
    default: 5
  health_path:
    description:
      - Path polled for readiness.
      - SGLang's C(/health_generate) is the stronger gate (it generates a token).
    type: str
    default: /health
  prompt:
    description: The user message sent to the model.
    type: str
    default: "Say hello in one short sentence."
  max_tokens:
    description: Completion length asked for.
    type: int
    default: 32
  request_timeout:
    description:
      - Seconds one request may take.
      - With O(stream=true) it also bounds the whole stream, not only each read, so a server that
        trickles events forever still fails in time.
      - At least 1.
    type: float
    default: 120
  max_response_bytes:
    description:
      - Largest response body (or, with O(stream=true), the whole stream) read, in bytes; a larger
        answer fails the check instead of filling the managed host's memory.
      - At least 1024. The default is 1 MiB, far above what O(max_tokens) asks for.
    type: int
    default: 1048576
  max_stream_events:
    description:
      - Most server-sent events read from one stream (O(stream=true)); a server that never ends its
        stream fails the check instead of keeping it busy.
      - At least 1.
    type: int
    default: 10000
  stream:
    description: Stream the completion and measure the time to first token.
    type: bool
    default: false
  min_tokens_per_second:
    description: Fail when the completion's rate is lower.
    type: float
  validate_certs:
    description: Verify TLS certificates for C(https) URLs.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; check mode asks the server for a real completion too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
    details: Changes nothing, so there is no diff.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - Qwen3 is a thinking model; a completion whose text is only in C(reasoning_content) counts.
"""

EXAMPLES = r"""
- name: Wait for the server and prove it answers
  sglang_api_check:
    url: http://127.0.0.1:8000
    model: Qwen/Qwen3-32B-AWQ
    api_key: "{{ sglang_api_key }}"
    wait_timeout: 900
  no_log: false

- name: Measure time to first token and insist on a rate
  sglang_api_check:
    url: http://127.0.0.1:8000
    stream: true
    max_tokens: 128
    min_tokens_per_second: 10
"""

RETURN = r"""
url:
  description: The base URL asked, without a trailing slash.
  returned: always
  type: str
  sample: http://127.0.0.1:8000
ready_seconds:
  description: Seconds until the health path answered 200.
  returned: when the server became ready
  type: float
  sample: 41.7
models:
  description: Model ids that C(/v1/models) lists.
  returned: when C(/v1/models) answered
  type: list
  elements: str
  sample: [Qwen/Qwen3-32B-AWQ]
model:
  description: The model the completion was asked of.
  returned: when C(/v1/models) listed the expected model
  type: str
  sample: Qwen/Qwen3-32B-AWQ
completion:
  description: First 200 characters of the answer (content, then reasoning_content).
  returned: success
  type: str
  sample: Hello there!
finish_reason:
  description: The choice's finish_reason.
  returned: success
  type: str
  sample: length
prompt_tokens:
  description: usage.prompt_tokens.
  returned: success
  type: int
  sample: 14
completion_tokens:
  description: usage.completion_tokens (streamed without usage, the number of content chunks).
  returned: success
  type: int
  sample: 16
latency_seconds:
  description: Seconds the completion took, end to end.
  returned: success
  type: float
  sample: 0.812
tokens_per_second:
  description: completion_tokens / latency_seconds.
  returned: success
  type: float
  sample: 19.7
ttft_seconds:
  description: Seconds to the first streamed token.
  returned: when O(stream=true)
  type: float
  sample: 0.093
"""

import http.client
import json
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bwfleet_api import (
    MAX_RESPONSE_BYTES,
    MAX_STREAM_EVENTS,
    ApiError,
    StreamBudget,
    StreamState,
    auth_failure,
    chat_request,
    excerpt,
    health_verdict,
    judge_completion,
    parse_completion,
    parse_models,
    parse_sse_event,
    pick_model,
    read_bounded,
)
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url


class Client:
    def __init__(self, params):
        self.base = params["url"].rstrip("/")
        self.validate_certs = params["validate_certs"]
        self.timeout = params["request_timeout"]
        self.max_bytes = params["max_response_bytes"]
        self.headers = {"Accept": "application/json"}
        if params["api_key"]:
            self.headers["Authorization"] = "Bearer " + params["api_key"]

    def open(self, method, path, payload=None, timeout=None):
        headers = dict(self.headers)
        data = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(payload)
        return open_url(
            self.base + path, method=method, data=data, headers=headers, timeout=timeout or self.timeout,
            validate_certs=self.validate_certs, follow_redirects="safe",
        )

    def request(self, method, path, payload=None, timeout=None):
        """-> (status or None, body, error text or None). Never raises on network trouble."""
        try:
            resp = self.open(method, path, payload, timeout)
            body = read_bounded(resp.read, self.max_bytes, path, "max_response_bytes")
            if getattr(resp, "length", None):  # a bounded read returns short bodies instead of raising
                raise http.client.IncompleteRead(body, resp.length)
            return resp.getcode(), body, None
        except HTTPError as exc:
            try:
                body = read_bounded(exc.read, self.max_bytes, path, "max_response_bytes")
            except ApiError:
                raise
            except Exception:
                body = b""
            return exc.code, body, None
        except (URLError, socket.timeout, OSError, http.client.HTTPException, ValueError) as exc:
            return None, b"", describe(exc)


# The options behind StreamBudget's bounds, named in its messages.
STREAM_OPTIONS = {"events": "max_stream_events", "bytes": "max_response_bytes", "deadline": "request_timeout"}


def describe(exc):
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, socket.timeout) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError) or "Connection refused" in str(reason):
        return "connection refused"
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError)):
        return "the server closed the connection mid-request (%s)" % type(exc).__name__
    return "%s: %s" % (type(reason).__name__, reason)


def wait_ready(client, params):
    start = time.monotonic()
    deadline = start + params["wait_timeout"]
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        status, body, error = client.request("GET", params["health_path"], timeout=max(1.0, min(params["request_timeout"], remaining)))
        if status is not None:
            if health_verdict(status, body, params["health_path"]) == "ready":
                return time.monotonic() - start
            last = "HTTP %d %s" % (status, excerpt(body, 200))
        else:
            last = error
        if time.monotonic() + params["poll_interval"] > deadline:
            raise ApiError(
                "%s%s not ready after %d s (last: %s): check the service log (journalctl -u sglang*) and that the model loads"
                % (client.base, params["health_path"], params["wait_timeout"], last)
            )
        time.sleep(params["poll_interval"])


def models(client):
    status, body, error = client.request("GET", "/v1/models")
    if status is None:
        raise ApiError("/v1/models: %s" % error)
    failure = auth_failure(status, "/v1/models")
    if failure:
        raise failure
    if status != 200:
        raise ApiError("/v1/models answered HTTP %d: %s" % (status, excerpt(body)))
    return parse_models(body)


def complete(client, params, model):
    payload = chat_request(model, params["prompt"], params["max_tokens"], params["stream"])
    start = time.monotonic()
    if not params["stream"]:
        status, body, error = client.request("POST", "/v1/chat/completions", payload)
        latency = time.monotonic() - start
        if status is None:
            raise ApiError("/v1/chat/completions: %s after %.1f s" % (error, latency))
        failure = auth_failure(status, "/v1/chat/completions")
        if failure:
            raise failure
        if status != 200:
            raise ApiError("/v1/chat/completions answered HTTP %d: %s" % (status, excerpt(body)))
        return judge_completion(parse_completion(body), latency, params["min_tokens_per_second"]), None

    state = StreamState()
    budget = StreamBudget(params["max_stream_events"], params["max_response_bytes"], params["request_timeout"], start,
                          options=STREAM_OPTIONS)
    try:
        resp = client.open("POST", "/v1/chat/completions", payload)
        while True:
            raw = resp.readline(budget.line_limit())
            if not raw:
                break  # the server closed the stream without [DONE]: judged on what came
            budget.take(raw, time.monotonic())
            event = parse_sse_event(raw.decode("utf-8", "replace"))
            if event == "done":
                break
            state.feed(event, time.monotonic())
    except HTTPError as exc:
        failure = auth_failure(exc.code, "/v1/chat/completions")
        if failure:
            raise failure
        raise ApiError("/v1/chat/completions answered HTTP %d: %s" % (exc.code, excerpt(read_bounded(exc.read, client.max_bytes, "/v1/chat/completions", "max_response_bytes"))))
    except (URLError, socket.timeout, OSError, http.client.HTTPException) as exc:
        raise ApiError("/v1/chat/completions (stream): %s after %.1f s" % (describe(exc), time.monotonic() - start))
    latency = time.monotonic() - start
    ttft = round(state.first_token_at - start, 3) if state.first_token_at else None
    return judge_completion(state.result(), latency, params["min_tokens_per_second"]), ttft


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8000"),
            api_key=dict(type="str", no_log=True),
            model=dict(type="str"),
            wait_timeout=dict(type="int", default=900),
            poll_interval=dict(type="float", default=5),
            health_path=dict(type="str", default="/health"),
            prompt=dict(type="str", default="Say hello in one short sentence."),
            max_tokens=dict(type="int", default=32),
            request_timeout=dict(type="float", default=120),
            stream=dict(type="bool", default=False),
            min_tokens_per_second=dict(type="float"),
            validate_certs=dict(type="bool", default=True),
            max_response_bytes=dict(type="int", default=MAX_RESPONSE_BYTES),
            max_stream_events=dict(type="int", default=MAX_STREAM_EVENTS),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not params["url"].startswith(("http://", "https://")):
        module.fail_json(msg="url must start with http:// or https://, got %r" % params["url"])
    if not params["health_path"].startswith("/"):
        module.fail_json(msg="health_path must start with '/', got %r" % params["health_path"])
    for name, floor in (("wait_timeout", 0), ("poll_interval", 0.1), ("max_tokens", 1), ("request_timeout", 1),
                        ("max_response_bytes", 1024), ("max_stream_events", 1)):
        if params[name] < floor:
            module.fail_json(msg="%s must be at least %s, got %s" % (name, floor, params[name]))

    client = Client(params)
    result = dict(changed=False, url=client.base)
    try:
        result["ready_seconds"] = round(wait_ready(client, params), 3)
        result["models"] = models(client)
        result["model"] = pick_model(result["models"], params["model"])
        answer, ttft = complete(client, params, result["model"])
        result.update(answer)
        if params["stream"]:
            result["ttft_seconds"] = ttft
    except ApiError as exc:
        module.fail_json(msg="%s: %s" % (client.base, exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
