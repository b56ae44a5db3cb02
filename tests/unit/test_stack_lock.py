"""The pinned stack resolves to the known-good matrix for the image's Python (3.10, manylinux x86_64).

Runs the real resolver (uv pip compile, against the package index) on the role's
requirements and constraints; fails if it would change torch, sgl-kernel or flashinfer.
pip's own cross-platform dry run cannot do this (flashinfer_python 0.3.1 exists only as an
sdist and pip's --platform demands binary-only wheels)."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from helpers import ROOT

KNOWN_GOOD = {
    "torch": "2.8.0",
    "sgl-kernel": "0.3.9.post2",
    "flashinfer-python": "0.3.1",
    "transformers": "4.56.1",
    "nvidia-cudnn-cu12": "9.10.2.21",
    "triton": "3.4.0",
}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    uv = shutil.which("uv") or os.path.join(os.path.dirname(os.sys.executable), "uv")
    if not os.path.exists(uv):
        pytest.fail("uv is missing from the test environment (requirements-dev.txt)")
    defaults = yaml.safe_load(open(os.path.join(ROOT, "roles", "sglang_image", "defaults", "main.yml")))
    work = tmp_path_factory.mktemp("lock")
    (work / "requirements.in").write_text("\n".join(defaults["sglang_image_pip_requirements"]) + "\n")
    (work / "constraints.txt").write_text("\n".join(defaults["sglang_image_pip_constraints"]) + "\n")
    proc = subprocess.run(
        [uv, "pip", "compile", "--native-tls", "--no-header", "--python-version", "3.10",
         "--python-platform", "x86_64-manylinux_2_28", "-c", str(work / "constraints.txt"), str(work / "requirements.in")],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, UV_NO_CONFIG="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    pins = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line)
        if match:
            pins[re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")] = match.group(2)
    return pins


@pytest.mark.parametrize("name,version", sorted(KNOWN_GOOD.items()))
def test_resolver_keeps_the_known_good_matrix(resolved, name, version):
    assert resolved.get(name) == version, "the resolver picks %s==%s, not %s" % (name, resolved.get(name), version)


def test_sglang_itself_is_pinned(resolved):
    assert resolved["sglang"] == "0.5.2"
