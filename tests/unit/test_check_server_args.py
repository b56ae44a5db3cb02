"""scripts/check-server-args against SGLang's real options (the table generated from its parser),
and the table itself regenerated from the real SGLang and compared."""

import glob
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "check-server-args")
TABLES = os.path.join(ROOT, "scripts", "sglang-options")
SEED = "sglang-0.5.2-cu128-sm120"


def _load(path, name):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


csa = _load(SCRIPT, "check_server_args")
TABLE = csa.load_table("0.5.2")


def run(*args):
    proc = subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def seed_args():
    with open(os.path.join(ROOT, "stacks", SEED + ".yml")) as handle:
        return yaml.safe_load(handle)["server"]["args"]


def test_seed_recipe_args_pass():
    assert csa.check(seed_args(), TABLE) == []


def test_role_listen_args_pass_with_the_recipe_args():
    # sglang_service appends these to every instance's arguments.
    assert csa.check(seed_args() + ["--host", "0.0.0.0", "--port", "8000", "--api-key", "k", "--enable-metrics"], TABLE) == []


def test_seeds_disable_flashinfer_is_reported_with_what_argparse_would_do():
    problems = csa.check(["--model-path", "m", "--disable-flashinfer"], TABLE)
    assert problems == [
        "--disable-flashinfer: not an option of SGLang 0.5.2; SGLang's own parser (prefix matching) would silently "
        "take it as --disable-flashinfer-cutlass-moe-fp4-allgather; nearest option: --enable-flashinfer-mxfp4-moe"
    ]


@pytest.mark.parametrize("args,line", [
    (["--quantization", "awqq"], "--quantization: 'awqq' is not one of its choices (awq, fp8, gptq, marlin, gptq_marlin, awq_marlin, "
                                 "bitsandbytes, gguf, modelopt, modelopt_fp4, petit_nvfp4, w8a8_int8, w8a8_fp8, moe_wna16, qoq, "
                                 "w4afp8, mxfp4); did you mean 'awq'?"),
    (["--max-total-tokens", "2k"], "--max-total-tokens: '2k' is not an integer"),
    (["--mem-fraction-static", "most"], "--mem-fraction-static: 'most' is not a number"),
    (["--log-requests-level", "5"], "--log-requests-level: '5' is not one of its choices (0, 1, 2, 3)"),
    (["--trust-remote-code", "yes"], "--trust-remote-code: is a flag and takes no value, got 'yes'"),
    (["--trust-remote-code=true"], "--trust-remote-code: is a flag and takes no value, got 'true'"),
    (["--mem-fraction-static", "--trust-remote-code"], "--mem-fraction-static: needs a value (float), got none"),
    (["--attention-backend"], "--attention-backend: needs a value (str), got none"),
    (["--tp", "2"], "--tp: not an option of SGLang 0.5.2; SGLang's own parser (prefix matching) would silently take it as --tp-size; nearest option: --ep"),
    (["--port", "1", "--port", "2"], "--port: given more than once (also as --port); SGLang would keep only the last"),
    (["--tp-size", "1", "--tensor-parallel-size", "2"], "--tensor-parallel-size: given more than once (also as --tp-size); SGLang would keep only the last"),
    (["stray"], "stray: not an option and no option before it takes a value (a stray value?)"),
])
def test_each_kind_of_bad_argument_is_one_line(args, line):
    assert csa.check(["--model-path", "m"] + args, TABLE) == [line]


@pytest.mark.parametrize("args", [
    ["--attention-backend=triton"],                      # --flag=value
    ["--tp-size", "2"], ["--tensor-parallel-size", "2"],  # an alias
    ["--json-model-override-args", '{"a": 1}'],
    ["--lora-paths"], ["--lora-paths", "a=/x", "b=/y"],   # nargs *
    ["--cuda-graph-bs", "1", "2", "4"],                   # nargs +
    ["--hybrid-kvcache-ratio"], ["--hybrid-kvcache-ratio", "0.5"],  # nargs ?
    ["--random-seed", "-1"],                              # a negative number is a value
])
def test_valid_shapes_pass(args):
    assert csa.check(["--model"] + ["m"] + args, TABLE) == []


def test_missing_required_model_path():
    assert csa.check(["--quantization", "awq"], TABLE) == ["--model-path: required by SGLang 0.5.2 and missing"]


def test_cli_exit_codes_and_output():
    rc, out, err = run("--sglang-version", "0.5.2", "--", *seed_args())
    assert rc == 0 and out.startswith("check-server-args: 16 arguments OK for SGLang 0.5.2"), (out, err)
    rc, out, err = run("--sglang-version", "0.5.2", "--", "--model-path", "m", "--disable-flashinfer", "--quantization", "x")
    assert rc == 1 and len(out.splitlines()) == 2 and "2 bad arguments" in err
    rc, out, err = run("--sglang-version", "9.9.9", "--", "--model-path", "m")
    assert rc == 2 and "no option table for SGLang 9.9.9 (have: 0.5.2)" in err
    rc, out, err = run("--sglang-version", "0.5.2", "--recipe", "x.yml")
    assert rc == 2 and "give either" in err


def test_every_recipe_in_stacks_passes_or_is_skipped():
    for path in sorted(glob.glob(os.path.join(ROOT, "stacks", "*.yml"))):
        rc, out, err = run("--recipe", path)
        assert rc == 0, (path, out, err)
        recipe = yaml.safe_load(open(path))
        if "sglang" in recipe and recipe["sglang"] is None:
            assert out == "%s: skipped: not an SGLang recipe (no sglang.version)\n" % path


def _recipe_dir(tmp_path, name, **changes):
    for path in glob.glob(os.path.join(ROOT, "stacks", "*.yml")):
        shutil.copy(path, tmp_path)
    doc = {"name": name, "extends": SEED}
    doc.update(changes)
    (tmp_path / (name + ".yml")).write_text(yaml.safe_dump(doc))
    return str(tmp_path / (name + ".yml"))


def test_recipe_mode_reports_bad_args_of_an_extending_recipe(tmp_path):
    path = _recipe_dir(tmp_path, "bad-flags", server={"args": ["--model-path", "m", "--disable-flashinfer", "--attention-backend", "flashinfr"]})
    rc, out, _ = run("--recipe", path)
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].startswith("--disable-flashinfer: not an option of SGLang 0.5.2")
    assert lines[1].startswith("--attention-backend: 'flashinfr' is not one of its choices") and "did you mean 'flashinfer'?" in lines[1]


def test_recipe_mode_uses_the_recipes_version(tmp_path):
    path = _recipe_dir(tmp_path, "newer", sglang={"version": "0.5.4"})
    rc, _, err = run("--recipe", path)
    assert rc == 2 and "no option table for SGLang 0.5.4" in err and "scripts/sglang-option-table 0.5.4" in err


def test_recipe_mode_non_sglang_is_skipped_and_a_broken_recipe_is_an_error(tmp_path):
    path = _recipe_dir(tmp_path, "other-engine", sglang=None, server={"args": ["whatever", "--x"]})
    assert run("--recipe", path)[:2] == (0, "%s: skipped: not an SGLang recipe (no sglang.version)\n" % path)
    (tmp_path / "broken.yml").write_text("name: broken\nimage: [\n")
    rc, _, err = run("--recipe", str(tmp_path / "broken.yml"))
    assert rc == 2 and "not valid YAML" in err


@pytest.mark.parametrize("table", sorted(glob.glob(os.path.join(TABLES, "*.json"))))
def test_stored_table_equals_the_one_generated_from_sglang(table, tmp_path):
    """Regenerate from the real SGLang of that version (a cached venv; about 2 min the first time)."""
    version = os.path.basename(table)[:-5]
    out = tmp_path / "table.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "sglang-option-table"), version, "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text() == open(table).read(), "scripts/sglang-options/%s.json differs from SGLang %s's parser: regenerate it" % (version, version)
    assert json.loads(out.read_text())["options"]["--attention-backend"]["type"] == "str"
