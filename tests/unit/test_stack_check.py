"""`make stack-check`'s pieces that run without a 10 GB build: the build context rendered from the
role's own template with the recipe, the rendered Dockerfile's pip-check step (the real shell, run
against pip check outputs), and the in-image probe's pip check rule."""

import glob
import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
import types

import pytest

from helpers import ROOT

BIN = os.path.dirname(sys.executable)
SEED = "sglang-0.5.2-cu128-sm120"
DECORD = "decord 0.6.0 is not supported on this platform"


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    ctx = tmp_path_factory.mktemp("ctx")
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "playbooks/stack-check.yml", "-i", "localhost,",
         "-e", "ansible_python_interpreter=" + sys.executable, "-e", "stack_name=" + SEED, "-e", "stack_check_context=%s" % ctx,
         "-e", "sglang_image_base=bwfleet-lab/ubuntu2204:latest", "-e", "sglang_image_ca_bundle=/etc/ssl/certs/ca-certificates.crt"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return ctx


def test_context_is_the_roles_template_with_the_recipe(context):
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.splitlines()[3] == "FROM bwfleet-lab/ubuntu2204:latest"
    assert "--extra-index-url=https://download.pytorch.org/whl/cu128 'sglang[all]==0.5.2' torch==2.8.0 torchvision==0.23.0 torchaudio==2.8.0" in dockerfile
    assert "COPY extra-ca.crt" in dockerfile and (context / "extra-ca.crt").exists()
    assert "sgl-kernel==0.3.9.post2" in (context / "constraints.txt").read_text().splitlines()
    spec = json.loads((context / "stack-check.json").read_text())
    assert spec["sglang_version"] == "0.5.2" and spec["compute_capabilities"] == ["12.0"]
    assert [f["package"] for f in spec["pip_check_known_faults"]] == ["decord"]
    assert re.match(r"^[0-9a-f]{12}$", spec["tag"])


def _pip_check_step(context):
    text = (context / "Dockerfile").read_text().replace("\\\n", "")
    steps = [line for line in text.splitlines() if line.startswith("RUN python3 -m pip check")]
    assert len(steps) == 1, steps
    return steps[0][len("RUN "):]


@pytest.mark.parametrize("output,rc,passes", [
    ("No broken requirements found.", 0, True),
    (DECORD, 1, True),                                                   # the recipe's known fault only
    (DECORD + "\nsglang 0.5.2 has requirement torch==2.8.0, but you have torch 2.9.0.", 1, False),
    ("flashinfer-python 0.3.1 requires nvidia-nvshmem-cu12, which is not installed.", 1, False),
    ("decordx 1.0 is not supported on this platform", 1, False),        # a name that only starts like it
])
def test_rendered_pip_check_step_tolerates_only_the_known_faults(context, tmp_path, output, rc, passes):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\ncat <<'EOF'\n%s\nEOF\nexit %d\n" % (output, rc))
    (fake / "python3").chmod(0o755)
    step = _pip_check_step(context).replace("/tmp/pip-check.txt", str(tmp_path / "pip-check.txt"))
    proc = subprocess.run(["/bin/sh", "-c", step], capture_output=True, text=True, env=dict(os.environ, PATH="%s:/usr/bin:/bin" % fake))
    assert (proc.returncode == 0) is passes, (proc.returncode, proc.stdout)
    assert output in proc.stdout  # the build log shows what pip check said


def _probe():
    path = os.path.join(ROOT, "scripts", "stack-check-probe")
    loader = importlib.machinery.SourceFileLoader("stack_check_probe", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("stack_check_probe", loader))
    loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("output,rc,passes", [
    (DECORD, 1, True),
    (DECORD + "\ntorchaudio 2.8.0 has requirement torch==2.8.0, but you have torch 2.9.0.", 1, False),
    ("No broken requirements found.", 0, True),
])
def test_probe_pip_rule_is_the_same(monkeypatch, output, rc, passes):
    probe = _probe()
    monkeypatch.setattr(probe.subprocess, "run", lambda *a, **k: types.SimpleNamespace(returncode=rc, stdout=output + "\n", stderr=""))
    ok, text = probe.check_pip([{"package": "decord", "reason": "cp36 wheel tag"}])
    assert ok is passes, text
    if rc and passes:
        assert text == "pip check: only known upstream faults: %s (recipe: cp36 wheel tag)" % DECORD


def _check_server_args():
    path = os.path.join(ROOT, "scripts", "check-server-args")
    loader = importlib.machinery.SourceFileLoader("check_server_args_digest", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("check_server_args_digest", loader))
    loader.exec_module(mod)
    return mod


def test_every_sglang_recipe_has_a_passing_stack_check_for_its_current_content():
    csa = _check_server_args()
    with open(os.path.join(ROOT, "docs", "STACKS.md")) as handle:
        results = re.findall(r"^### (\S+ \S+) UTC: `([^`]+)`: (PASS|FAIL), digest `([0-9a-f]{12})`", handle.read(), re.M)
    missing = []
    for path in sorted(glob.glob(os.path.join(ROOT, "stacks", "*.yml"))):
        recipe = csa.load_recipe_file(path)
        if not recipe.get("sglang"):
            continue
        name, digest = recipe["name"], csa.recipe_digest(recipe)
        newest = next((r for r in results if r[1] == name), None)  # newest first
        if newest is None or newest[2] != "PASS" or newest[3] != digest:
            missing.append("%s (digest %s; docs/STACKS.md's newest: %s)" % (name, digest, " ".join(newest) if newest else "none"))
    assert not missing, ("run `make stack-check STACK=<name>` and record its result in docs/STACKS.md for: %s" % "; ".join(missing))


def test_the_digest_follows_what_stack_check_proves(tmp_path):
    csa = _check_server_args()
    seed = csa.load_recipe_file(os.path.join(ROOT, "stacks", SEED + ".yml"))
    same = json.loads(json.dumps(seed))
    same["description"] = "edited prose"
    assert csa.recipe_digest(same) == csa.recipe_digest(seed)
    for edit in (("image", "pip_constraints"), ("server", "args"), ("sglang", "version")):
        changed = json.loads(json.dumps(seed))
        changed[edit[0]][edit[1]] = ["changed"]
        assert csa.recipe_digest(changed) != csa.recipe_digest(seed), edit
