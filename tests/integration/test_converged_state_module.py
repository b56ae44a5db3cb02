"""converged_state through real Ansible: files, a bounded command, a real HTTP server on loopback."""

import http.server
import threading

import pytest

from ansible_run import run_module


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(Health.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Health.status = 200
    yield "http://127.0.0.1:%d/health_generate" % httpd.server_address[1]
    httpd.shutdown()


def args(tmp_path, url, **extra):
    base = {"path": str(tmp_path / "stamp" / "converged.json"), "inputs": "inputs-1",
            "files": [str(tmp_path / "etc")], "commands": [["cat", str(tmp_path / "gpu")]], "urls": [url]}
    base.update(extra)
    return base


def test_record_then_current_then_each_drift_is_named(tmp_path, server):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "daemon.json").write_text('{"exec-opts": ["native.cgroupdriver=cgroupfs"]}')
    (tmp_path / "gpu").write_text("0, 00000000:01:00.0, 580.105.08, Enabled\n")

    rc, result = run_module("converged_state", args(tmp_path, server))
    assert rc == 0 and result["current"] is False and result["reasons"] == ["no record of a run that passed every stage"]

    # In check mode a record is only announced.
    rc, result = run_module("converged_state", args(tmp_path, server, state="record"), check=True)
    assert rc == 0 and result["changed"] is True and not (tmp_path / "stamp").exists()

    rc, result = run_module("converged_state", args(tmp_path, server, state="record"))
    assert rc == 0 and result["changed"] is True and result["recorded_at"].endswith("Z")
    stamp = tmp_path / "stamp" / "converged.json"
    assert oct(stamp.stat().st_mode & 0o777) == "0o600"
    assert "cgroupfs" not in stamp.read_text()  # digests, never contents

    rc, again = run_module("converged_state", args(tmp_path, server, state="record"))
    assert again["changed"] is False and again["recorded_at"] == result["recorded_at"]

    rc, result = run_module("converged_state", args(tmp_path, server))
    assert rc == 0 and result["current"] is True and result["reasons"] == []

    # Drift, one at a time, each named.
    (tmp_path / "gpu").write_text("0, 00000000:01:00.0, 580.105.08, Disabled\n")
    _rc, result = run_module("converged_state", args(tmp_path, server))
    assert not result["current"] and result["reasons"][0].startswith("commands cat ") and "Disabled" in result["reasons"][0]
    (tmp_path / "gpu").write_text("0, 00000000:01:00.0, 580.105.08, Enabled\n")

    (tmp_path / "etc" / "daemon.json").write_text("{}")
    _rc, result = run_module("converged_state", args(tmp_path, server))
    assert result["reasons"] == ["file %s changed" % (tmp_path / "etc" / "daemon.json")]
    (tmp_path / "etc" / "daemon.json").write_text('{"exec-opts": ["native.cgroupdriver=cgroupfs"]}')

    _rc, result = run_module("converged_state", args(tmp_path, server, inputs="inputs-2"))
    assert result["reasons"] == ["this run brings other inputs (variables or the project's code changed)"]

    Health.status = 503
    _rc, result = run_module("converged_state", args(tmp_path, server))
    assert not result["current"] and result["reasons"] == ["%s: HTTP Error 503: Service Unavailable" % server]


def test_a_hung_command_is_a_difference_not_a_hang(tmp_path, server):
    (tmp_path / "etc").mkdir()
    (tmp_path / "gpu").write_text("x")
    run_module("converged_state", args(tmp_path, server, state="record"))
    rc, result = run_module("converged_state", args(tmp_path, server, commands=[["sleep", "30"]], command_timeout=1), timeout=20)
    assert rc == 0 and not result["current"]
    assert "commands sleep 30: absent -> timeout " in result["reasons"]


def test_bad_input(tmp_path, server):
    rc, result = run_module("converged_state", args(tmp_path, server, url_timeout=0))
    assert rc != 0 and "url_timeout must be at least 1 second" in result["msg"]
    rc, result = run_module("converged_state", {"files": []})
    assert rc != 0 and "inputs" in result["msg"]
