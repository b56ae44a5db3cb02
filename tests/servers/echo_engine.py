#!/usr/bin/env python3
"""TEST ONLY: an engine that shows what reaches it, and misbehaves on request.

Takes the arguments the service role appends (--host, --port) and ignores the others, so it can
stand behind the authenticating front exactly where SGLang would. Exits after --lifetime seconds.

  GET  /health                 200
  GET  /v1/models              {"data": [{"id": --model}]}; --mode huge: a 2 MiB list
  GET  /echo                   the request's headers and argv as JSON
  POST /echo                   the body's length and sha256 as JSON
  POST /v1/chat/completions    --mode ok: SSE, 5 events --gap seconds apart, then [DONE]
                               --mode endless: SSE events until the client goes away
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None


def chunk(text, finish=None):
    return {"object": "chat.completion.chunk", "model": ARGS.model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.send(200, {})
        if self.path == "/v1/models":
            models = [{"id": ARGS.model, "object": "model"}]
            if ARGS.mode == "huge":
                models += [{"id": "padding-%06d" % i, "object": "model"} for i in range(50000)]
            return self.send(200, {"object": "list", "data": models})
        if self.path == "/echo":
            return self.send(200, {"headers": [[k, v] for k, v in self.headers.items()], "argv": sys.argv})
        return self.send(404, {"detail": "Not Found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/echo":
            return self.send(200, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})
        if self.path != "/v1/chat/completions":
            return self.send(404, {"detail": "Not Found"})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        count = 0
        while ARGS.mode == "endless" or count < 5:
            last = ARGS.mode != "endless" and count == 4
            self.wfile.write(("data: %s\n\n" % json.dumps(chunk("t%d " % count, "stop" if last else None))).encode())
            self.wfile.flush()
            count += 1
            time.sleep(ARGS.gap if ARGS.mode != "endless" else 0.001)
        self.wfile.write(b"data: [DONE]\n\n")


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="echo-model")
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--gap", type=float, default=0.4)
    parser.add_argument("--lifetime", type=float, default=120)
    ARGS, _ = parser.parse_known_args()
    threading.Timer(ARGS.lifetime, lambda: os._exit(0)).start()  # bounded whatever the test does
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
