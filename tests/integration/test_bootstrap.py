"""scripts/bootstrap on a machine it already set up: installs nothing, says it is ready, and
prints no traceback (it used to: `ansible --version | head -1` broke ansible's pipe)."""

import os
import subprocess

import pytest

from helpers import ROOT


@pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap installs with apt-get: root only")
def test_second_run_is_quiet_and_has_no_traceback():
    proc = subprocess.run([os.path.join(ROOT, "scripts", "bootstrap")], capture_output=True, text=True, cwd=ROOT, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "Broken pipe" not in out and "Unexpected Exception" not in out, out
    assert proc.stdout.splitlines()[-1].startswith("bootstrap: ready (ansible [core 2."), out
    assert "apt-get install" not in out and "creating .venv" not in out, out
