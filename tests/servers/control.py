"""Start and stop the test servers: bounded in time, loopback only."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

from helpers import ROOT

FAKE = os.path.join(ROOT, "tests", "servers", "fake_sglang.py")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, argv, port, env=None, log=None):
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_health(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited rc=%s: %s" % (self.proc.returncode, self.tail()))
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not healthy after %d s: %s" % (timeout, self.tail()))

    def tail(self):
        if not self.log or not os.path.exists(self.log):
            return ""
        with open(self.log, "rb") as handle:
            return handle.read()[-2000:].decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def fake(*args, lifetime=90):
    port = free_port()
    return Server([sys.executable, FAKE, "--port", str(port), "--lifetime", str(lifetime)] + list(args), port)
