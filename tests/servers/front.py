"""Start the sglang_service role's authenticating front as a real process on loopback, with a real engine behind it."""

import http.client
import json
import os
import subprocess
import sys
import time

from helpers import ROOT
from servers.control import free_port

FRONT = os.path.join(ROOT, "roles", "sglang_service", "files", "sglang_auth_front.py")
FAKE = os.path.join(ROOT, "tests", "servers", "fake_sglang.py")
ECHO = os.path.join(ROOT, "tests", "servers", "echo_engine.py")
KEY = "bwfleet-test-key-" + "9f3c" * 8  # 49 visible characters


class Front:
    """The front (PID of self.proc) supervising an engine: engine = entrypoint list, args = its arguments."""

    def __init__(self, tmp_path, engine, args, key=KEY, key_file=None, env=None):
        self.port, self.engine_port = free_port(), free_port()
        self.key = key
        if key_file is None:
            key_file = str(tmp_path / "api_key")
            with open(key_file, "w") as handle:
                handle.write(key)
            os.chmod(key_file, 0o600)
        self.key_file = key_file
        self.log = str(tmp_path / ("front-%d.log" % self.port))
        full_env = dict(os.environ, BWFLEET_FRONT_ENGINE=json.dumps(engine), BWFLEET_FRONT_KEY_FILE=key_file,
                        BWFLEET_FRONT_LISTEN="127.0.0.1:%d" % self.port,
                        BWFLEET_FRONT_UPSTREAM="127.0.0.1:%d" % self.engine_port)
        full_env.update(env or {})
        # BWFLEET_TEST_FRONT_PYTHON: run the front with another Python (Ubuntu 22.04 images have 3.10).
        argv = [os.environ.get("BWFLEET_TEST_FRONT_PYTHON") or sys.executable, FRONT] + [a.replace("{engine_port}", str(self.engine_port)) for a in args]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)

    def request(self, method, path, body=None, headers=None, auth=True, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if auth is True:
            hdrs["Authorization"] = "Bearer " + self.key
        elif auth:
            hdrs["Authorization"] = auth
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), data

    def wait_health(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("front exited rc=%s: %s" % (self.proc.returncode, self.output()))
            try:
                if self.request("GET", "/health", auth=False, timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("front not healthy after %d s: %s" % (timeout, self.output()))

    def output(self):
        with open(self.log, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        try:  # whatever the front left of its engine
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
