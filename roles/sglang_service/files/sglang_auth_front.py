#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bw-fleet's authenticating front: PID 1 of a serving container when an API key is set.

It listens on the container's port, demands ``Authorization: Bearer <key>`` (compared with
hmac.compare_digest against the key read once, at start, from a root-only file), forwards
to the engine on the container's own loopback, and supervises the engine process.

Why a front instead of the engine's own ``--api-key``:
- it works with any OpenAI-compatible engine: the lab's ``transformers serve`` has no
  ``--api-key`` at all (it exits 2 on it), SGLang, vLLM... all get the same check;
- the key never reaches the engine: not its argv (``ps``, /proc/<pid>/cmdline), not SGLang's
  start-up log line ``server_args=ServerArgs(... api_key=...)`` (so not journald, not
  ``docker logs``), not a request header (Authorization is stripped before forwarding);
- it fails closed: a missing, empty or unreadable key file, or a directory where the file
  should be, stops it before the engine starts, so nothing answers without authentication.

Only the Python standard library: it runs with the image's own python3, nothing to install.
Configuration comes from the environment (none of it secret), so the container's command
stays exactly the engine's arguments:

  BWFLEET_FRONT_ENGINE            JSON list: the engine's entrypoint; this process's arguments follow it
  BWFLEET_FRONT_KEY_FILE          the API key file (required)
  BWFLEET_FRONT_LISTEN            host:port to serve on (default 0.0.0.0:8000)
  BWFLEET_FRONT_UPSTREAM          host:port of the engine (default 127.0.0.1:30000)
  BWFLEET_FRONT_OPEN_PATHS        comma-separated paths served without a key, GET/HEAD only
                                  (default /health,/health_generate: SGLang keeps these open too)
  BWFLEET_FRONT_MAX_BODY_BYTES    largest request body (default 32 MiB) -> 413 above it
  BWFLEET_FRONT_MAX_HEADER_BYTES  request line + headers (default 64 KiB) -> 431 above it
  BWFLEET_FRONT_MAX_CONNECTIONS   open client connections (default 1024) -> 503 above it
  BWFLEET_FRONT_CLIENT_TIMEOUT    seconds a client may stay silent while sending a request (default 60)
  BWFLEET_FRONT_UPSTREAM_TIMEOUT  seconds the engine may stay silent while answering (default 3600)

Exit status: the engine's (128+N when a signal N ended it), so the service manager restarts
the container; 78 (EX_CONFIG) when the configuration or the key file is unusable.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EX_CONFIG = 78
PREFIX = "BWFLEET_FRONT_"
MAX_KEY_FILE_BYTES = 4096
COPY_CHUNK = 65536
# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade")
)


def log(message):
    sys.stderr.write("bwfleet-front: %s\n" % message)
    sys.stderr.flush()


class ConfigError(Exception):
    """The front cannot start safely; the message names what to fix."""


class HeaderTooLarge(Exception):
    pass


def _int(environ, name, default, low=1):
    raw = environ.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError("%s%s must be an integer, got %r" % (PREFIX, name, raw))
    if value < low:
        raise ConfigError("%s%s must be at least %d, got %d" % (PREFIX, name, low, value))
    return value


def parse_hostport(text, what):
    host, sep, port = (text or "").strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("%s must be host:port (IPv6 as [addr]:port), got %r" % (what, text))
    return host, int(port)


class Config:
    def __init__(self, environ, args):
        try:
            entry = json.loads(environ.get(PREFIX + "ENGINE") or "null")
        except ValueError:
            raise ConfigError("%sENGINE must be a JSON list of strings (the engine's entrypoint)" % PREFIX)
        if not isinstance(entry, list) or not all(isinstance(x, str) for x in entry):
            raise ConfigError("%sENGINE must be a JSON list of strings (the engine's entrypoint)" % PREFIX)
        self.engine = entry + list(args)
        if not self.engine:
            raise ConfigError("no engine command: set %sENGINE and/or pass the engine's arguments" % PREFIX)
        self.key_file = environ.get(PREFIX + "KEY_FILE", "").strip()
        if not self.key_file:
            raise ConfigError("%sKEY_FILE is not set: without a key file there is no authentication" % PREFIX)
        self.listen = parse_hostport(environ.get(PREFIX + "LISTEN") or "0.0.0.0:8000", PREFIX + "LISTEN")
        self.upstream = parse_hostport(environ.get(PREFIX + "UPSTREAM") or "127.0.0.1:30000", PREFIX + "UPSTREAM")
        if self.listen[1] == self.upstream[1] and self.upstream[0] in ("127.0.0.1", "localhost", "::1", self.listen[0]):
            raise ConfigError("the front (%s) and the engine (%s) cannot share a port" % (self.listen, self.upstream))
        paths = environ.get(PREFIX + "OPEN_PATHS")
        paths = "/health,/health_generate" if paths is None else paths
        self.open_paths = frozenset(p.strip() for p in paths.split(",") if p.strip())
        bad = [p for p in self.open_paths if not p.startswith("/") or "?" in p]
        if bad:
            raise ConfigError("%sOPEN_PATHS entries must be plain paths such as /health, got %s" % (PREFIX, ", ".join(bad)))
        self.max_body = _int(environ, "MAX_BODY_BYTES", 32 * 1024 * 1024, low=0)
        self.max_header = _int(environ, "MAX_HEADER_BYTES", 64 * 1024, low=1024)
        self.max_connections = _int(environ, "MAX_CONNECTIONS", 1024)
        self.client_timeout = _int(environ, "CLIENT_TIMEOUT", 60)
        self.upstream_timeout = _int(environ, "UPSTREAM_TIMEOUT", 3600)


def read_key(path):
    """The key as bytes, or ConfigError: missing, a directory, unreadable, empty, or not one token."""
    if os.path.isdir(path):
        raise ConfigError(
            "the API key file %s is a directory (docker creates one when a missing file is bind-mounted): "
            "write the key file (sglang_service role) and restart" % path
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("the API key file %s is missing: write it (sglang_service role) and restart" % path)
    except OSError as exc:
        raise ConfigError("cannot read the API key file %s: %s" % (path, exc.strerror or exc))
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError("the API key file %s is larger than %d bytes: it does not hold one key" % (path, MAX_KEY_FILE_BYTES))
    key = data.strip()
    if not key:
        raise ConfigError("the API key file %s is empty: refusing to serve without authentication" % path)
    if any(c < 0x21 or c > 0x7E for c in key):
        raise ConfigError("the API key in %s has spaces or non-printable characters: it cannot be sent as a Bearer token" % path)
    return key


class _HeaderBudget:
    """rfile wrapper: the request line and headers together may not exceed a byte budget.

    The standard library bounds each line (64 KiB) and the header count (100); this bounds the
    sum, so one request cannot make the front buffer megabytes of headers."""

    def __init__(self, raw):
        self.raw = raw
        self.left = None

    def readline(self, limit=-1):
        if self.left is None:
            return self.raw.readline(limit)
        cap = self.left + 1 if limit is None or limit < 0 else min(limit, self.left + 1)
        line = self.raw.readline(cap)
        self.left -= len(line)
        if self.left < 0:
            raise HeaderTooLarge()
        return line

    def __getattr__(self, name):
        return getattr(self.raw, name)


class _Refusals:
    """Logs refused requests at most once a minute, so a scan cannot flood the journal."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.logged_at = None

    def note(self, who, what):
        with self.lock:
            self.count += 1
            now = time.monotonic()
            if self.logged_at is not None and now - self.logged_at < 60:
                return
            log("refused %d unauthenticated request(s) since the last report; the latest: %s %s" % (self.count, who, what))
            self.count = 0
            self.logged_at = now


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bwfleet-front"
    sys_version = ""
    cfg = None  # set by make_server
    key = b""
    refusals = None

    def setup(self):
        self.timeout = self.cfg.client_timeout
        super().setup()
        self.rfile = _HeaderBudget(self.rfile)

    def log_message(self, fmt, *args):  # the engine logs its own requests; refusals are counted instead
        pass

    def handle_one_request(self):
        # send_error needs these even when the request line never arrives in full
        self.command, self.request_version, self.requestline = "", "HTTP/1.0", ""
        self.prechecked = False
        self.rfile.left = self.cfg.max_header
        try:
            super().handle_one_request()
        except HeaderTooLarge:
            self.close_connection = True
            self.send_json(431, "request line and headers exceed %d bytes" % self.cfg.max_header)

    # --- responses of the front itself
    def send_json(self, status, message, extra=()):
        body = json.dumps({"error": {"message": message, "code": status}}).encode()
        try:
            self.send_response_only(status)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def refuse(self, status, message, extra=()):
        # The body (if any) was not read: this connection cannot carry another request.
        self.close_connection = True
        self.send_json(status, message, extra)
        return False

    # --- checks before anything is read or forwarded
    def is_open_path(self):
        return self.command in ("GET", "HEAD") and self.path.split("?", 1)[0] in self.cfg.open_paths

    def authorised(self):
        values = self.headers.get_all("Authorization") or []
        if len(values) != 1:
            return False
        scheme, _, token = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode("latin-1", "replace"), self.key)

    def precheck(self):
        """Auth and body size, before the body is read (and before '100 Continue')."""
        if self.prechecked:
            return True
        self.rfile.left = None  # headers are in; the body has its own bound
        if not self.is_open_path() and not self.authorised():
            self.refusals.note(self.client_address[0], "%s %s" % (self.command, self.path.split("?", 1)[0][:100]))
            return self.refuse(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               [("WWW-Authenticate", 'Bearer realm="bwfleet"')])
        lengths = set(v.strip() for v in self.headers.get_all("Content-Length") or [])
        if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
            return self.refuse(400, "malformed Content-Length")
        if self.headers.get("Transfer-Encoding") and (lengths or self.headers.get("Transfer-Encoding").strip().lower() != "chunked"):
            return self.refuse(400, "unsupported Transfer-Encoding (only chunked, without Content-Length)")
        if lengths and int(next(iter(lengths))) > self.cfg.max_body:
            return self.refuse(413, "request body larger than %d bytes" % self.cfg.max_body)
        self.prechecked = True
        return True

    def handle_expect_100(self):
        if not self.precheck():
            return False
        return super().handle_expect_100()

    # --- the request body, bounded
    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            data = self.rfile.read(int(length))
            if len(data) != int(length):
                self.close_connection = True
                return None
            return data
        if not self.headers.get("Transfer-Encoding"):
            return b""
        chunks, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.refuse(400, "malformed chunked body")
                return None
            total += size
            if total > self.cfg.max_body:
                self.refuse(413, "request body larger than %d bytes" % self.cfg.max_body)
                return None
            if size == 0:
                for _ in range(32):  # trailers, ignored; bounded
                    if self.rfile.readline(1026) in (b"\r\n", b"\n", b""):
                        break
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.read(2)

    # --- forwarding
    def upstream_headers(self, body):
        named = set()
        for value in self.headers.get_all("Connection") or []:
            named |= set(t.strip().lower() for t in value.split(","))
        out = [
            (name, value) for name, value in self.headers.items()
            if name.lower() not in HOP_BY_HOP and name.lower() not in named
            # The engine never sees the key; Content-Length is recomputed; Expect was answered here.
            and name.lower() not in ("authorization", "content-length", "expect", "x-forwarded-for")
        ]
        if self.headers.get("Host") is None:  # HTTP/1.0 clients may omit it; HTTP/1.1 engines require it
            out.append(("Host", "%s:%d" % self.cfg.upstream))
        forwarded = [v for v in self.headers.get_all("X-Forwarded-For") or []] + [self.client_address[0]]
        out.append(("X-Forwarded-For", ", ".join(forwarded)))
        if body or self.command in ("POST", "PUT", "PATCH"):
            out.append(("Content-Length", str(len(body))))
        return out

    def proxy(self):
        if not self.precheck():
            return
        body = self.read_body()
        if body is None:
            return
        host, port = self.cfg.upstream
        conn = http.client.HTTPConnection(host, port, timeout=self.cfg.upstream_timeout)
        try:
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.upstream_headers(body):
                    conn.putheader(name, value)
                conn.endheaders(body or None)
                resp = conn.getresponse()
            except ConnectionRefusedError:
                # The engine is still loading (its port opens after the model) or restarting.
                return self.send_json(503, "the engine is not ready yet", [("Retry-After", "5")])
            except socket.timeout:
                self.close_connection = True
                return self.send_json(504, "the engine did not answer within %d s" % self.cfg.upstream_timeout)
            except (OSError, http.client.HTTPException) as exc:
                self.close_connection = True
                return self.send_json(502, "the engine closed the connection (%s)" % type(exc).__name__)
            self.relay(resp)
        finally:
            conn.close()

    def relay(self, resp):
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        length = resp.getheader("Content-Length")
        chunked = not no_body and length is None and self.request_version != "HTTP/1.0"
        named = set()
        for value in resp.headers.get_all("Connection") or []:
            named |= set(t.strip().lower() for t in value.split(","))
        try:
            self.send_response_only(resp.status, resp.reason)
            for name, value in resp.headers.items():
                low = name.lower()
                if low in HOP_BY_HOP or low in named or low == "content-length":
                    continue
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            elif chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif not no_body:
                self.close_connection = True  # the body ends when the connection does
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if no_body:
                return
            # read1: whatever the engine has sent so far, at once: server-sent events pass unbuffered.
            while True:
                data = resp.read1(COPY_CHUNK)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            if resp.length:
                self.close_connection = True  # the engine sent less than it announced
        except (OSError, http.client.HTTPException):
            # The client went away (the engine sees its connection close and stops generating),
            # or the engine did mid-answer: either way this connection is finished.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = proxy


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    # Exiting must not wait for open streams: the container stops when the engine does.
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, cfg, handler):
        self.address_family = socket.AF_INET6 if ":" in cfg.listen[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(cfg.max_connections)
        super().__init__(cfg.listen, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):  # no tracebacks per broken connection
        log("connection from %s ended with %s" % (client_address[0], sys.exc_info()[0].__name__))


def make_server(cfg, key):
    handler = type("BoundHandler", (Handler,), {"cfg": cfg, "key": key, "refusals": _Refusals()})
    return FrontServer(cfg, handler)


def exit_status(status):
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 1


def main(args=None, environ=None):
    environ = os.environ if environ is None else environ
    args = sys.argv[1:] if args is None else args
    try:
        cfg = Config(environ, args)
        key = read_key(cfg.key_file)
    except ConfigError as exc:
        log("refusing to start: %s" % exc)
        return EX_CONFIG
    try:
        server = make_server(cfg, key)
    except OSError as exc:
        log("cannot listen on %s:%d: %s" % (cfg.listen[0], cfg.listen[1], exc))
        return 1
    # The engine gets none of the front's settings (and none of them is the key anyway).
    engine_env = dict((k, v) for k, v in environ.items() if not k.startswith(PREFIX))
    try:
        engine = subprocess.Popen(cfg.engine, env=engine_env)
    except OSError as exc:
        log("cannot start the engine %s: %s" % (cfg.engine[0], exc))
        return 127

    def forward(signum, _frame):
        try:
            os.kill(engine.pid, signum)
        except OSError:
            pass

    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), forward)
    threading.Thread(target=server.serve_forever, name="front", daemon=True).start()
    log("serving %s:%d -> engine %s:%d (pid %d); key from %s; open without a key: %s"
        % (cfg.listen[0], cfg.listen[1], cfg.upstream[0], cfg.upstream[1], engine.pid, cfg.key_file,
           ", ".join(sorted(cfg.open_paths)) or "nothing"))
    # As PID 1 this also reaps orphans the engine leaves (its worker processes).
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            status = 1 << 8
            break
        if pid == engine.pid:
            break
    code = exit_status(status)
    log("the engine exited (status %d): stopping, so the service manager restarts the container" % code)
    server.server_close()
    return code


if __name__ == "__main__":
    sys.exit(main())
