"""The real CPU engine for the API-check tests: built once per session, bounded, loopback only."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT
from servers.control import Server, free_port

CACHE = os.path.join(ROOT, ".cache", "engine")
VENV = os.path.join(CACHE, "venv")
# The CPU build of torch is on this kind of machine's disk (pip find-links); the index's default is the CUDA build.
TORCH = os.environ.get("BWLAB_TORCH_SPEC", "torch==2.13.0+cpu")


def _engine_venv():
    stamp = os.path.join(VENV, ".bwfleet-stamp")
    want = TORCH + "\n" + open(os.path.join(ROOT, "lab", "model", "requirements.txt")).read()
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
    pip = [os.path.join(VENV, "bin", "pip"), "install", "-q"]
    subprocess.run(pip + [TORCH, "-r", os.path.join(ROOT, "lab", "model", "requirements.txt")], check=True, timeout=900)
    with open(stamp, "w") as handle:
        handle.write(want)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    _engine_venv()
    model = str(tmp_path_factory.mktemp("model") / "tiny-qwen3")
    py = os.path.join(VENV, "bin", "python")
    subprocess.run([py, os.path.join(ROOT, "lab", "model", "make_tiny_qwen3.py"), model], check=True, timeout=300,
                   capture_output=True)
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    srv = Server([os.path.join(VENV, "bin", "transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port),
                  "--device", "cpu"], port, env=env, log=str(tmp_path_factory.mktemp("log") / "serve.log"))
    srv.model = model
    try:
        srv.wait_health(180)
        yield srv
    finally:
        srv.stop()
