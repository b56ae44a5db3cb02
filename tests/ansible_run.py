"""Run one module through real Ansible (ad-hoc, JSON callback) and return its result."""

import json
import os
import subprocess
import sys

from helpers import ROOT

BIN = os.path.dirname(sys.executable)


def run_module(module, args, env=None, check=False, timeout=300, host="localhost"):
    """-> (rc, result dict) for `ansible localhost -m module -a args`."""
    cmd = [
        os.path.join(BIN, "ansible"), host, "-i", "localhost,", "-c", "local",
        "-e", "ansible_python_interpreter=" + sys.executable,
        "-m", module, "-a", json.dumps(args),
    ]
    if check:
        cmd.append("--check")
    full_env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                    ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env)
    start = proc.stdout.find("{")
    assert start >= 0, "no JSON from ansible (rc=%d): %s %s" % (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    # raw_decode: callbacks such as profile_tasks may print after the JSON document
    doc, _ = json.JSONDecoder().raw_decode(proc.stdout[start:])
    result = doc["plays"][0]["tasks"][0]["hosts"][host]
    return proc.returncode, result
