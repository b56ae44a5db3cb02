"""The API key end to end on the lab host (issue 12): the authenticating front in front of the lab's
engine, the key in none of the places a local user or a log reader sees, and the service failing
closed when the key file goes away.

Needs the scenario's host_vars (molecule/default/host_vars/bwmol-default-1.yml): an API key."""

import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from lab_run import auth_header, playbook, recap  # noqa: E402

HOST = "bwmol-default-1"
UNIT = "sglang-main"
KEY_FILE = "/etc/sglang/secrets/api_key"
API = "http://127.0.0.1:8000"
MODEL = "/models/tiny-qwen3"


def the_key(host):
    key = host.file(KEY_FILE).content_string.strip()
    assert len(key) >= 32, "this scenario runs with an API key (host_vars/%s.yml)" % HOST
    return key


def http_code(host, path, header=None):
    """The HTTP status of a GET, or 000 when nothing answers."""
    extra = "-H @%s " % header if header else ""
    return host.run("curl -s -o /dev/null -w '%%{http_code}' --max-time 10 %s%s%s" % (extra, API, path)).stdout.strip()


def wait_unauthenticated_closed(host, seconds):
    """Polls for `seconds`: every answer must be a refusal or no answer at all."""
    seen = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        seen.add(http_code(host, "/v1/models"))
        time.sleep(1)
    return seen


def test_key_file_is_root_only(host):
    the_key(host)
    f = host.file(KEY_FILE)
    assert f.user == "root" and f.group == "root" and f.mode == 0o600
    assert host.file("/etc/sglang/secrets").mode == 0o700


def test_published_on_every_address_because_a_key_is_set(host):
    info = json.loads(host.check_output("docker inspect %s" % UNIT))[0]
    assert info["HostConfig"]["PortBindings"]["8000/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8000"}]
    assert info["Config"]["Entrypoint"] == ["/opt/bwfleet/sglang_auth_front.py"]
    # The engine listens on the container's loopback only; the front on the published port.
    assert info["Config"]["Cmd"][-4:] == ["--host", "127.0.0.1", "--port", "30000"]
    assert "API key required" in host.file("/etc/systemd/system/%s.service" % UNIT).content_string


def test_unauthenticated_requests_are_refused(host):
    assert http_code(host, "/v1/models") == "401"
    wrong = "/root/.bwfleet-test-wrong-header"
    host.check_output("umask 077; printf 'Authorization: Bearer %s\\n' > " + wrong, "x" * 40)
    assert http_code(host, "/v1/models", wrong) == "401"
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    code = host.check_output("curl -s -o /dev/null -w '%%{http_code}' --max-time 30 -H 'content-type: application/json' "
                             "-d '%s' %s/v1/chat/completions" % (body, API))
    assert code == "401"
    assert http_code(host, "/metrics") == "401"
    assert http_code(host, "/health") == "200"  # open, as with SGLang's own --api-key


def test_authenticated_completion_and_stream(host):
    header = auth_header(host)
    assert http_code(host, "/v1/models", header) == "200"
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6})
    out = json.loads(host.check_output("curl -s --max-time 60 -H 'content-type: application/json' -H @%s -d '%s' %s/v1/chat/completions"
                                       % (header, body, API)))
    assert out["choices"][0]["message"]["content"].strip() and out["usage"]["completion_tokens"] == 6
    stream = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True})
    text = host.check_output("curl -sN --max-time 60 -H 'content-type: application/json' -H @%s -d '%s' %s/v1/chat/completions"
                             % (header, stream, API))
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    # The whole stream came through the front: SGLang ends it with [DONE]; transformers serve
    # (the lab's engine) ends it with the chunk that carries finish_reason and usage.
    last = events[-1] if events and events[-1] != "[DONE]" else events[-2]
    assert len(events) >= 2 and json.loads(last)["choices"][0]["finish_reason"] == "length"


def test_the_key_is_nowhere_to_be_seen(host):
    key = the_key(host)
    ps = host.check_output("ps -ww -eo args")
    assert "sglang_auth_front.py" in ps and "transformers serve" in ps  # the processes are there to be seen
    inside = host.check_output("docker exec %s sh -c \"cat /proc/[0-9]*/cmdline | tr '\\\\0' ' '\"" % UNIT)
    assert "transformers" in inside
    places = {
        "ps -eo args on the host": ps,
        "/proc/*/cmdline in the container": inside,
        "the unit file": host.file("/etc/systemd/system/%s.service" % UNIT).content_string,
        "docker inspect": host.check_output("docker inspect %s" % UNIT),
        "journalctl -u %s" % UNIT: host.run("journalctl --no-pager -u %s" % UNIT).stdout,
        "docker logs": host.run("docker logs %s 2>&1" % UNIT).stdout,
        "the deployment record": host.file("/etc/sglang/main.json").content_string,
    }
    assert "bwfleet-front: serving" in places["docker logs"]  # the logs are the front's and the engine's
    for where, text in places.items():
        assert key not in text, "the API key is in " + where


@pytest.mark.parametrize("state,journal", [
    ("missing", "bind source path does not exist"),
    ("empty", "is empty: refusing to serve without authentication"),
])
def test_fails_closed_without_the_key_file(host, state, journal):
    key = the_key(host)
    host.check_output("mv %s /root/.bwfleet-test-api-key.bak" % KEY_FILE)
    try:
        if state == "empty":
            host.check_output("umask 077; : > %s" % KEY_FILE)
        since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
        host.run("systemctl restart %s" % UNIT)
        # systemd keeps restarting it (Restart=always); nothing may ever answer without the key.
        seen = wait_unauthenticated_closed(host, 35)
        assert seen <= {"000", "401"} and "000" in seen, seen
        assert http_code(host, "/v1/models", auth_header(host)) == "000"  # no server at all, not an open one
        log = host.run("journalctl --no-pager -u %s --since '%s'" % (UNIT, since)).stdout
        assert journal in log, log[-3000:]
        assert int(host.check_output("systemctl show -p NRestarts --value %s" % UNIT)) >= 1
        assert not host.file(KEY_FILE).is_directory  # --mount never leaves a directory in its place
    finally:
        host.run("rm -f %s; mv /root/.bwfleet-test-api-key.bak %s" % (KEY_FILE, KEY_FILE))
    assert the_key(host) == key

    # The role puts the key back in place and the service answers again (the start limit reset if hit).
    host.check_output("rm -f %s" % KEY_FILE)
    rc, out = playbook("site.yml", "--tags", "sglang_service")
    assert rc == 0, out[-3000:]
    assert the_key(host) == key
    assert http_code(host, "/v1/models", auth_header(host)) == "200"
    assert http_code(host, "/v1/models") == "401"
    rc, out = playbook("site.yml", "--tags", "sglang_service")
    assert rc == 0 and recap(out, HOST)["changed"] == 0, out[-3000:]
