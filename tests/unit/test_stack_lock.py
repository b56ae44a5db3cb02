"""Each SGLang recipe's pins resolve for the image's Python (3.10, manylinux x86_64).

Runs the real resolver (uv pip compile, against the package index) on the recipe's
requirements and constraints (stacks/<name>.yml, the file the roles read): the resolution
must succeed and keep every constrained pin and the recipe's SGLang version.
pip's own cross-platform dry run cannot do this (flashinfer_python 0.3.1 exists only as an
sdist and pip's --platform demands binary-only wheels)."""

import os
import re
import shutil
import subprocess

import pytest

from test_stacks import RECIPES, STACKS, stack

SGLANG_RECIPES = [n for n in RECIPES if stack.load_recipe(n, STACKS)["sglang"]]


def pins(lines):
    out = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if match:
            out[re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")] = match.group(2)
    return out


@pytest.fixture(scope="module", params=SGLANG_RECIPES)
def resolved(request, tmp_path_factory):
    uv = shutil.which("uv") or os.path.join(os.path.dirname(os.sys.executable), "uv")
    if not os.path.exists(uv):
        pytest.fail("uv is missing from the test environment (requirements-dev.txt)")
    recipe = stack.load_recipe(request.param, STACKS)
    work = tmp_path_factory.mktemp("lock")
    (work / "requirements.in").write_text("\n".join(recipe["image"]["pip_requirements"]) + "\n")
    (work / "constraints.txt").write_text("\n".join(recipe["image"]["pip_constraints"]) + "\n")
    proc = subprocess.run(
        [uv, "pip", "compile", "--native-tls", "--no-header", "--python-version", "3.10",
         "--python-platform", "x86_64-manylinux_2_28", "-c", str(work / "constraints.txt"), str(work / "requirements.in")],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, UV_NO_CONFIG="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, pins(proc.stdout.splitlines())


def test_resolver_keeps_every_constrained_pin(resolved):
    recipe, got = resolved
    wanted = pins(recipe["image"]["pip_constraints"])
    assert wanted, "the recipe constrains nothing"
    changed = {name: (version, got.get(name)) for name, version in wanted.items() if got.get(name) != version}
    assert changed == {}, "the resolver moves these pins (recipe, resolved): %s" % changed


def test_sglang_is_the_recipes_version(resolved):
    recipe, got = resolved
    assert got["sglang"] == recipe["sglang"]["version"]

