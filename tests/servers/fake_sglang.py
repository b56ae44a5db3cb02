#!/usr/bin/env python3
"""TEST ONLY: a small HTTP server with SGLang 0.5's response shapes and failure modes.

It listens on 127.0.0.1 only and exits by itself after --lifetime seconds.

  --refuse-for S   do not listen for the first S seconds (the port opens after the model loads)
  --warmup S       then /health answers 503 for S seconds (SGLang while warming up)
  --api-key K      /v1/* need "Authorization: Bearer K" (health stays open, as in SGLang)
  --model ID       the served model id
  --mode MODE      ok | reasoning | empty | non-json | error500 | die | health-down | slow | no-usage-stream
                   | drop | die-mid-stream | error-mid-stream | stall-mid-stream | hang
  --fail-every N   the failure modes hit only every Nth chat completion (default 1: all of them)
  --chunk-delay S  seconds between streamed chunks (a slower engine streams slower)
  --chunked        stream with Transfer-Encoding: chunked, as uvicorn (SGLang, transformers serve) does

Failure modes of a chat completion:
  error500          HTTP 500 with SGLang's error JSON
  die               headers promise a body that never comes, then the connection closes (non-streamed)
  drop              the connection closes before any answer (a crashed or restarted worker)
  die-mid-stream    two chunks, then the connection closes: no finish_reason, no [DONE]
  error-mid-stream  two chunks, then SGLang's in-stream error event and [DONE]
  stall-mid-stream  two chunks, then nothing until --lifetime (a hung scheduler)
  hang              reads the request and never answers until --lifetime
GET /fake/stats (test-only, no key) says how many chat completions came and the most in flight at once.
"""

import argparse
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
STARTED = time.monotonic()
FAILURE_MODES = ("error500", "die", "drop", "die-mid-stream", "error-mid-stream", "stall-mid-stream", "hang")
STATS = {"chat_requests": 0, "in_flight": 0, "max_in_flight": 0}
STATS_LOCK = threading.Lock()


def completion_body(model, stream=False):
    content = "Hello! I am a test server."
    reasoning = None
    if ARGS.mode == "reasoning":  # Qwen3 thinking: all text in reasoning_content
        content, reasoning = None, "The user wants a greeting."
    if ARGS.mode == "empty":
        content = ""
    return {
        "id": "a1b2c3",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "reasoning_content": reasoning,
                                             "tool_calls": None},
                     "logprobs": None, "finish_reason": "length", "matched_stop": None}],
        "usage": {"prompt_tokens": 12, "total_tokens": 20, "completion_tokens": 0 if ARGS.mode == "empty" else 8,
                  "prompt_tokens_details": None},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def send(self, status, body=b"", ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.done_counting()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorised(self):
        if not ARGS.api_key:
            return True
        if self.headers.get("Authorization") == "Bearer " + ARGS.api_key:
            return True
        self.send(401, {"error": "Unauthorized"})
        return False

    def do_GET(self):
        warming = time.monotonic() - STARTED < ARGS.refuse_for + ARGS.warmup
        if self.path in ("/health", "/health_generate"):
            if warming or ARGS.mode == "health-down":
                return self.send(503)
            return self.send(200, b"", "text/plain")
        if self.path == "/fake/stats":
            with STATS_LOCK:
                return self.send(200, dict(STATS))
        if self.path == "/v1/models":
            if not self.authorised():
                return
            if ARGS.mode == "non-json":
                return self.send(200, b"<html>Bad Gateway</html>", "text/html")
            return self.send(200, {"object": "list", "data": [{
                "id": ARGS.model, "object": "model", "created": int(time.time()), "owned_by": "sglang",
                "root": ARGS.model, "max_model_len": 2048}]})
        self.send(404, {"detail": "Not Found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.send(404, {"detail": "Not Found"})
        if not self.authorised():
            return
        with STATS_LOCK:
            STATS["chat_requests"] += 1
            STATS["in_flight"] += 1
            STATS["max_in_flight"] = max(STATS["max_in_flight"], STATS["in_flight"])
            failing = ARGS.mode in FAILURE_MODES and STATS["chat_requests"] % ARGS.fail_every == 0
        self.counted = True
        try:
            self.chat(request, ARGS.mode if failing or ARGS.mode not in FAILURE_MODES else "ok")
        finally:
            self.done_counting()

    def done_counting(self):
        # Called before the last bytes go out too: a client that has them may start its next request at once.
        if getattr(self, "counted", False):
            self.counted = False
            with STATS_LOCK:
                STATS["in_flight"] -= 1

    def until_lifetime(self):
        time.sleep(max(0.0, ARGS.lifetime - (time.monotonic() - STARTED)))

    def chat(self, request, mode):
        if mode == "hang":
            return self.until_lifetime()
        if mode == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "error500":
            return self.send(500, {"object": "error", "message": "CUDA error: an illegal memory access was encountered",
                                   "type": "InternalServerError", "code": 500})
        if mode == "die":
            # Headers promise a body that never comes: the process "crashed" mid-request.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b'{"id": "x", "choi')
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if ARGS.mode == "slow":
            time.sleep(ARGS.slow)
        if request.get("model") != ARGS.model:
            return self.send(404, {"object": "error", "message": "The model `%s` does not exist." % request.get("model")})
        if not request.get("stream"):
            return self.send(200, completion_body(ARGS.model))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        if ARGS.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = ["Hello", "!", " I", " am", " streaming", "."]
        for i, piece in enumerate(chunks):
            if i == 2 and mode == "die-mid-stream":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if i == 2 and mode == "stall-mid-stream":
                return self.until_lifetime()
            if i == 2 and mode == "error-mid-stream":
                # SGLang's serving_chat: an exception inside the stream becomes one error event, then [DONE].
                error = {"error": {"object": "error", "message": "Internal server error: CUDA error: an illegal memory access was encountered",
                                   "type": "InternalServerError", "param": None, "code": 500}}
                self.emit("data: %s\n\ndata: [DONE]\n\n" % json.dumps(error), last=True)
                self.close_connection = True
                return
            event = {"id": "s1", "object": "chat.completion.chunk", "model": ARGS.model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            if i == len(chunks) - 1:
                event["choices"][0]["finish_reason"] = "stop"
            self.emit("data: %s\n\n" % json.dumps(event))
            time.sleep(ARGS.chunk_delay)
        if ARGS.mode != "no-usage-stream":
            usage = {"id": "s1", "object": "chat.completion.chunk", "choices": [],
                     "usage": {"prompt_tokens": 12, "completion_tokens": len(chunks), "total_tokens": 12 + len(chunks)}}
            self.emit("data: %s\n\n" % json.dumps(usage))
        self.emit("data: [DONE]\n\n", last=True)
        self.close_connection = True

    def emit(self, text, last=False):
        data = text.encode()
        if last:
            self.done_counting()
        if ARGS.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data) + (b"0\r\n\r\n" if last else b"")
        self.wfile.write(data)
        self.wfile.flush()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--refuse-for", type=float, default=0)
    parser.add_argument("--warmup", type=float, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--model", default="Qwen/Qwen3-32B-AWQ")
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--slow", type=float, default=3)
    parser.add_argument("--lifetime", type=float, default=120)
    parser.add_argument("--fail-every", type=int, default=1)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--chunked", action="store_true")
    ARGS = parser.parse_args()
    # Bounded: the process ends by itself whatever the test does.
    # os._exit, not sys.exit: SystemExit raised in the timer's thread would end only that thread.
    timer = threading.Timer(ARGS.lifetime, os._exit, args=(0,))
    timer.daemon = True
    timer.start()
    time.sleep(ARGS.refuse_for)
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print("listening on 127.0.0.1:%d" % ARGS.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
