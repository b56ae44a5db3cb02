"""Preflight's server-argument check through real Ansible on this machine (the controller):
the host checks that need a GPU box are switched off by variables, the argument check is real."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

BIN = os.path.dirname(sys.executable)
PLAY = """
- name: Preflight on this machine
  hosts: localhost
  gather_facts: true
  tasks:
    - name: The service role's defaults (what site.yml imports before preflight)
      ansible.builtin.import_role:
        name: sglang_service
        tasks_from: defaults.yml
    - name: Preflight
      ansible.builtin.import_role:
        name: preflight
"""
# Only what a GPU box has and this machine has not is switched off.
OFF = {"preflight_require_gpu": False, "preflight_require_known_gpu": False, "preflight_check_kernel_headers": False,
       "preflight_min_memory_mb": 1, "preflight_disk_requirements": []}


def preflight(tmp_path, check=False, **extra):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "vars.json").write_text(json.dumps(dict(OFF, **extra)))
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
           "-e", "@" + str(tmp_path / "vars.json"), str(tmp_path / "play.yml")] + (["--check"] if check else [])
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_ROLES_PATH=os.path.join(ROOT, "roles"),
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("check", [False, True])
def test_the_seed_recipes_arguments_pass(tmp_path, check):
    rc, out = preflight(tmp_path, check=check)
    assert rc == 0, out[-3000:]
    assert "Check the server arguments against SGLang's options" in out


def test_a_flag_sglang_does_not_have_fails_before_anything_is_built(tmp_path):
    rc, out = preflight(tmp_path, sglang_service_args=["--model-path", "m", "--disable-flashinfer", "--quantization", "awq-marlin"])
    assert rc != 0
    assert ("server arguments rejected by SGLang 0.5.2's options (scripts/check-server-args): --disable-flashinfer: not an option "
            "of SGLang 0.5.2; SGLang's own parser (prefix matching) would silently take it as "
            "--disable-flashinfer-cutlass-moe-fp4-allgather") in " ".join(out.split())
    assert "--quantization: 'awq-marlin' is not one of its choices" in out


def test_an_argument_that_collides_with_the_listen_args_fails(tmp_path):
    rc, out = preflight(tmp_path, sglang_service_args=["--model-path", "m", "--port", "30000"])
    assert rc != 0 and "--port: given more than once" in out


def test_a_recipe_that_is_not_sglang_is_not_checked(tmp_path):
    rc, out = preflight(tmp_path, stack_name="lab-cpu-engine")
    assert rc == 0, out[-3000:]
    assert "server arguments rejected" not in out
