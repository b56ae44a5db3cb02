"""The authenticating front (roles/sglang_service/files/sglang_auth_front.py) as real processes on
loopback: in front of the tests' fake SGLang server, an engine that echoes what reaches it, and the
real CPU engine (`transformers serve`) that the lab runs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ansible_run import run_module
from servers.front import ECHO, FAKE, KEY, Front

MODEL = "Qwen/Qwen3-32B-AWQ"  # the fake's default model id


@pytest.fixture
def fronts(tmp_path):
    started = []

    def start(engine, args, **kwargs):
        front = Front(tmp_path, engine, args, **kwargs)
        started.append(front)
        return front

    yield start
    for front in started:
        front.stop()


def fake_front(fronts, *extra, **kwargs):
    return fronts([sys.executable, FAKE], ["--port", "{engine_port}", "--lifetime", "120"] + list(extra), **kwargs).wait_health()


def echo_front(fronts, *extra, **kwargs):
    return fronts([sys.executable, ECHO], ["--port", "{engine_port}", "--lifetime", "120"] + list(extra), **kwargs).wait_health()


def raw_request(port, text, timeout=10):
    """Send bytes as they are (two Authorization headers, chunked bodies...) -> the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(text if isinstance(text, bytes) else text.encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None


def test_no_key_wrong_key_right_key(fronts):
    front = fake_front(fronts)
    status, headers, body = front.request("GET", "/v1/models", auth=False)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in json.loads(body)["error"]["message"]
    wrong = KEY[:-1] + ("x" if KEY[-1] != "x" else "y")  # same length, one character off
    assert front.request("GET", "/v1/models", auth="Bearer " + wrong)[0] == 401
    assert front.request("GET", "/v1/models", auth="Basic " + KEY)[0] == 401
    assert front.request("GET", "/v1/models", auth="Bearer")[0] == 401
    assert front.request("POST", "/v1/chat/completions", {"model": MODEL, "messages": []}, auth=False)[0] == 401
    two = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAuthorization: Bearer %s\r\n\r\n" % (KEY, KEY)
    assert raw_request(front.port, two) == 401

    status, _, body = front.request("GET", "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == MODEL
    assert front.request("GET", "/v1/models", auth="bearer " + KEY)[0] == 200  # the scheme is case-insensitive
    status, _, body = front.request("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "Hello! I am a test server."
    assert "refused" in front.output() and KEY not in front.output()


def test_streamed_completion_passes_through(fronts):
    front = fake_front(fronts)
    status, headers, body = front.request("POST", "/v1/chat/completions",
                                          {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert headers.get("Transfer-Encoding") == "chunked"  # the engine's close-delimited stream, re-framed
    events = [line[len("data: "):] for line in body.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"]["content"] for c in map(json.loads, events[:-1]) if c["choices"])
    assert text == "Hello! I am streaming."


def test_stream_is_not_buffered(fronts):
    # The echo engine sends 5 events 0.4 s apart: each must arrive when sent, not at the end.
    front = echo_front(fronts, "--gap", "0.4")
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as sock:
        body = b"{}"
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body))
        start, arrivals, data = time.monotonic(), [], b""
        while b"[DONE]" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
            arrivals += [time.monotonic() - start] * more.count(b"data: {")
    assert len(arrivals) == 5, data
    assert arrivals[0] < 0.3, arrivals
    assert arrivals[-1] - arrivals[0] > 1.2, arrivals


def test_health_open_everything_else_closed(fronts):
    front = fake_front(fronts)
    assert front.request("GET", "/health", auth=False)[0] == 200
    assert front.request("GET", "/health_generate", auth=False)[0] == 200
    assert front.request("HEAD", "/health", auth=False)[0] != 401  # reaches the engine (the fake has no HEAD: 501)
    assert front.request("GET", "/health?x=1", auth=False)[0] != 401
    for method, path in [("POST", "/health"), ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/health/../v1/models"),
                         ("GET", "/health/"), ("GET", "/Health"), ("POST", "/update_weights_from_disk"), ("GET", "/get_server_info")]:
        assert front.request(method, path, auth=False)[0] == 401, (method, path)


def test_the_engine_never_sees_the_key(fronts):
    front = echo_front(fronts)
    status, _, body = front.request("GET", "/echo", headers={"X-Client": "yes"})
    seen = json.loads(body)
    names = [k.lower() for k, _ in seen["headers"]]
    assert status == 200 and "x-client" in names and "x-forwarded-for" in names
    assert "authorization" not in names
    assert KEY not in body.decode()


def _cmdlines():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    out.append(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                pass
    return out


def test_the_key_is_in_no_process_argument_or_environment(fronts):
    front = echo_front(fronts)
    assert front.request("GET", "/echo")[0] == 200
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "sglang_auth_front.py" in ps and "echo_engine.py" in ps  # both are there to be looked at
    assert KEY not in ps
    assert not [c for c in _cmdlines() if KEY in c]
    engine_pid = int(front.output().split("(pid ")[1].split(")")[0])
    for pid in (front.proc.pid, engine_pid):
        with open("/proc/%d/environ" % pid, "rb") as handle:
            environ = handle.read()
        assert KEY.encode() not in environ
    with open("/proc/%d/environ" % engine_pid, "rb") as handle:
        assert b"BWFLEET_FRONT_" not in handle.read()  # the engine gets none of the front's settings


def test_bodies_and_headers_are_bounded(fronts):
    front = echo_front(fronts, env={"BWFLEET_FRONT_MAX_BODY_BYTES": "1024"})
    status, _, body = front.request("POST", "/echo", b"a" * 1024)
    assert status == 200 and json.loads(body)["length"] == 1024
    assert front.request("POST", "/echo", b"a" * 1025)[0] == 413
    assert front.request("POST", "/echo", b"a" * 5000, auth=False)[0] == 401  # the key is checked first

    def chunked(total):
        pieces = "".join("%x\r\n%s\r\n" % (len(p), p) for p in ["b" * 500] * (total // 500)) + "0\r\n\r\n"
        return ("POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%s" % (KEY, pieces))
    assert raw_request(front.port, chunked(1000)) == 200
    assert raw_request(front.port, chunked(1500)) == 413

    big = {"X-Big-%d" % i: "h" * 8000 for i in range(9)}  # each line fine, 72 KB together
    assert front.request("GET", "/echo", headers=big)[0] == 431
    assert front.request("GET", "/echo", headers={"X-Big": "h" * 8000})[0] == 200


@pytest.mark.parametrize(
    "setup,expected",
    [
        ("missing", "is missing"),
        ("empty", "is empty"),
        ("newline", "is empty"),
        ("directory", "is a directory"),
        ("space", "spaces or non-printable"),
        ("unset", "KEY_FILE is not set"),
    ],
)
def test_refuses_to_start_without_a_usable_key(fronts, tmp_path, setup, expected):
    path = tmp_path / "key"
    if setup == "empty":
        path.write_text("")
    elif setup == "newline":
        path.write_text("\n")
    elif setup == "directory":
        path.mkdir()
    elif setup == "space":
        path.write_text("two words " + "k" * 40)
    marker = tmp_path / "engine-ran"
    env = {"BWFLEET_FRONT_KEY_FILE": ""} if setup == "unset" else None
    front = fronts([sys.executable, "-c", "open(%r, 'w').write('ran')" % str(marker)], [], key_file=str(path), env=env)
    assert front.proc.wait(15) == 78
    out = front.output()
    assert "refusing to start" in out and expected in out, out
    assert not marker.exists(), "the engine must not start without authentication"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", front.port)) != 0  # nothing listens


def test_exits_with_the_engine(fronts):
    front = fronts([sys.executable, "-c", "import time, sys; time.sleep(1); sys.exit(3)"], [])
    assert front.proc.wait(20) == 3
    assert "the engine exited (status 3)" in front.output()


def test_sigterm_reaches_the_engine(fronts):
    front = fake_front(fronts)
    engine_pid = int(front.output().split("(pid ")[1].split(")")[0])
    os.kill(front.proc.pid, signal.SIGTERM)
    assert front.proc.wait(20) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert not os.path.exists("/proc/%d" % engine_pid) or "Z" in open("/proc/%d/stat" % engine_pid).read().split()[2]


def test_an_engine_still_loading_is_503_and_still_needs_the_key(fronts):
    front = fronts([sys.executable, FAKE], ["--port", "{engine_port}", "--refuse-for", "60", "--lifetime", "90"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            status = front.request("GET", "/health", auth=False, timeout=5)[0]
            break
        except OSError:
            time.sleep(0.3)
    assert status == 503  # what SGLang says while it loads; sglang_api_check waits on it
    assert front.request("GET", "/v1/models", auth=False)[0] == 401


def test_real_engine_behind_the_front(fronts, engine):
    """The lab's engine, `transformers serve` (which has no --api-key), behind the front, gated by sglang_api_check."""
    venv_bin = os.path.dirname(engine.proc.args[0])
    front = fronts([os.path.join(venv_bin, "transformers"), "serve"],
                   [engine.model, "--device", "cpu", "--host", "127.0.0.1", "--port", "{engine_port}"],
                   env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}).wait_health(240)
    base = {"url": "http://127.0.0.1:%d" % front.port, "model": engine.model, "wait_timeout": 60, "poll_interval": 1,
            "request_timeout": 120, "max_tokens": 8}
    rc, res = run_module("sglang_api_check", dict(base, api_key=KEY, stream=True))
    assert rc == 0, res
    assert res["completion_tokens"] > 0 and res["ttft_seconds"] is not None
    rc, res = run_module("sglang_api_check", dict(base, api_key=KEY))
    assert rc == 0 and res["completion"].strip(), res
    rc, res = run_module("sglang_api_check", base)
    assert rc != 0 and "rejected" in res["msg"] and "401" in res["msg"], res
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert "transformers serve" in ps and KEY not in ps
    assert KEY not in front.output()
