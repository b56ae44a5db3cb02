"""Helpers for molecule verify tests: run a playbook against the scenario's hosts."""

import json
import os
import subprocess
import sys

ROOT = os.environ.get("MOLECULE_PROJECT_DIRECTORY") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "inventory")


def playbook(*args, timeout=900, extra=None):
    """ansible-playbook from the project root on the scenario inventory -> (rc, stdout)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY] + list(args)
    if extra:
        cmd += ["-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), BWLAB_ROOT=ROOT, ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def recipe(name):
    """A stack recipe as the roles read it (stacks/<name>.yml, extends resolved)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bwfleet_stack", os.path.join(ROOT, "roles", "stack", "lookup_plugins", "bwfleet_stack.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_recipe(name, os.path.join(ROOT, "stacks"))


def recap(output, host):
    """The PLAY RECAP counters of one host, summed over the plays."""
    for line in output.splitlines():
        if line.startswith(host + " ") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError("no recap line for %s in:\n%s" % (host, output[-3000:]))


AUTH_HEADER = "/root/.bwfleet-test-auth-header"


def auth_header(host):
    """A curl header file (-H @file) with the host's API key, written by the shell's printf builtin:
    the key never becomes a process argument that the tests' own `ps` checks would then find."""
    host.check_output("umask 077; k=$(cat /etc/sglang/secrets/api_key 2>/dev/null); "
                      "if [ -n \"$k\" ]; then printf 'Authorization: Bearer %%s\\n' \"$k\" > %s; else : > %s; fi"
                      % (AUTH_HEADER, AUTH_HEADER))
    return AUTH_HEADER
