"""The stack recipes (stacks/*.yml): one file per stack, read the same way by roles, tests and scripts."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT, load_source

STACKS = os.path.join(ROOT, "stacks")
SEED = "sglang-0.5.2-cu128-sm120"


stack = load_source("bwfleet_stack", "roles", "stack", "lookup_plugins", "bwfleet_stack.py")
RECIPES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(STACKS, "*.yml")))

# role variable -> where the selected recipe holds its value: the roles keep no second copy.
FROM_RECIPE = {
    "nvidia_driver_branch": "driver.branch",
    "nvidia_driver_flavour": "driver.flavour",
    "nvidia_driver_min_version": "known_good.driver_min",
    "nvidia_container_toolkit_version": "toolkit.version",
    "nvidia_container_toolkit_verify_image": "toolkit.verify_image",
    "sglang_image_recipe_name": "name",
    "sglang_image_base": "image.base",
    "sglang_image_python": "image.python",
    "sglang_image_apt_packages": "image.apt_packages",
    "sglang_image_pip_version": "image.pip_version",
    "sglang_image_pip_extra_index_urls": "image.pip_extra_index_urls",
    "sglang_image_pip_requirements": "image.pip_requirements",
    "sglang_image_pip_constraints": "image.pip_constraints",
    "sglang_image_pip_check_known_faults": "image.pip_check_known_faults",
    "sglang_image_sgl_kernel_wheel_url": "image.sgl_kernel_wheel_url",
    "sglang_image_env": "image.env",
    "sglang_image_entrypoint": "image.entrypoint",
    "sglang_service_entrypoint": "image.entrypoint",
    "sglang_service_model": "server.model",
    "sglang_service_args": "server.args",
}


def role_defaults():
    out = {}
    for path in glob.glob(os.path.join(ROOT, "roles", "*", "defaults", "main.yml")):
        out.update(yaml.safe_load(open(path)) or {})
    return out


def dig(recipe, dotted):
    for part in dotted.split("."):
        recipe = recipe[part]
    return recipe


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_complete(name):
    recipe = stack.load_recipe(name, STACKS)
    assert recipe["name"] == name
    assert stack.check_recipe(recipe) == []


def test_the_seed_recipe_is_the_field_reports():
    seed = stack.load_recipe(SEED, STACKS)
    assert seed["validated"] is True and seed["sglang"]["version"] == "0.5.2"
    assert seed["image"]["base"] == "nvidia/cuda:12.8.0-cudnn-devel-ubuntu22.04"
    assert "sgl-kernel==0.3.9.post2" in seed["image"]["pip_constraints"]
    assert "libnuma1" in seed["image"]["apt_packages"]
    assert int(seed["driver"]["branch"]) >= 570 and seed["driver"]["flavour"] == "open"
    assert "12.0" in seed["known_good"]["compute_capabilities"]
    args = seed["server"]["args"]
    # The seed's --disable-flashinfer is not an SGLang 0.5.2 option (argparse prefix-matched it).
    assert "--disable-flashinfer" not in args
    assert args[args.index("--attention-backend") + 1] == "torch_native"


def test_the_lab_recipe_changes_the_engine_only():
    seed, lab = stack.load_recipe(SEED, STACKS), stack.load_recipe("lab-cpu-engine", STACKS)
    assert lab["extends"] == SEED and lab["sglang"] is None
    for key in ("driver", "toolkit", "known_good"):
        assert lab[key] == seed[key], key


@pytest.mark.parametrize("var,path", sorted(FROM_RECIPE.items()))
def test_role_defaults_take_stack_values_from_the_recipe(var, path):
    assert role_defaults()[var] == "{{ stack_recipe.%s }}" % path


def test_no_role_default_repeats_a_recipe_value():
    # A literal copy of a recipe value in a role default would drift from the recipe.
    seed = stack.load_recipe(SEED, STACKS)
    values = {json.dumps(dig(seed, p), sort_keys=True) for p in FROM_RECIPE.values()
              if isinstance(dig(seed, p), (list, dict)) and dig(seed, p)}
    for name, value in role_defaults().items():
        assert json.dumps(value, sort_keys=True) not in values, "%s repeats a value of the recipe" % name


def test_no_copy_of_a_role_default_outside_its_role():
    # `X | default(<value>)` where X is a role default retypes that default; it drifts (it did:
    # the rollback gated on /health while the role gates on /health_generate). `default(omit)` is fine.
    names = set(role_defaults())
    pattern = re.compile(r"\b([a-z][a-z0-9_]*)\s*\|\s*default\((?!omit\b)")
    files = [os.path.join(ROOT, "site.yml")] + glob.glob(os.path.join(ROOT, "playbooks", "**", "*.yml"), recursive=True) \
        + glob.glob(os.path.join(ROOT, "roles", "**", "*.yml"), recursive=True) \
        + glob.glob(os.path.join(ROOT, "molecule", "**", "*.yml"), recursive=True)
    copies = []
    for path in files:
        for lineno, line in enumerate(open(path), 1):
            for match in pattern.finditer(line):
                if match.group(1) in names:
                    copies.append("%s:%d: %s" % (os.path.relpath(path, ROOT), lineno, line.strip()))
    assert copies == [], "role defaults retyped:\n" + "\n".join(copies)


def test_the_no_copies_check_sees_a_copy(tmp_path):
    line = "max_tokens: \"{{ sglang_service_check_max_tokens | default(16) }}\""
    assert re.search(r"\b([a-z][a-z0-9_]*)\s*\|\s*default\((?!omit\b)", line).group(1) == "sglang_service_check_max_tokens"


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    base = yaml.safe_load(open(os.path.join(STACKS, SEED + ".yml")))
    (tmp_path / (SEED + ".yml")).write_text(yaml.safe_dump(base))
    (tmp_path / "child.yml").write_text(yaml.safe_dump({
        "name": "child", "extends": SEED, "validated": False,
        "server": {"args": ["--model-path", "x"]}, "image": {"env": {"A": "1"}}}))
    child = stack.load_recipe("child", str(tmp_path))
    assert child["server"]["args"] == ["--model-path", "x"]
    assert child["server"]["model"] == base["server"]["model"]
    assert child["image"]["env"] == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "A": "1"}
    assert child["image"]["pip_constraints"] == base["image"]["pip_constraints"]
    assert child["validated"] is False and child["extends"] == SEED


@pytest.mark.parametrize("files,name,message", [
    ({}, "absent", "stack recipe 'absent' not found"),
    ({"a": {"name": "b"}}, "a", "name is 'b', must be the file name 'a'"),
    ({"a": {"name": "a", "extend": "x"}}, "a", "unknown key(s) extend"),
    ({"a": {"name": "a", "extends": "b"}, "b": {"name": "b", "extends": "a"}}, "a", "extends loops (a -> b -> a)"),
    ({"a": {"name": "a", "driver": {"branch": 580}}}, "a", "driver.branch must be a str"),
    ({"a": {"name": "a", "image": {"pip_check_known_faults": [{"package": "decord; rm -rf /", "reason": "x"}]}}}, "a",
     "image.pip_check_known_faults[0] must be {package"),
    ({"a": {"name": "a", "image": {"pip_check_known_faults": [{"package": "decord", "reason": " "}]}}}, "a",
     "image.pip_check_known_faults[0] must be {package"),
])
def test_bad_recipes_fail_with_the_cause(tmp_path, files, name, message):
    for fname, data in files.items():
        (tmp_path / (fname + ".yml")).write_text(yaml.safe_dump(data))
    with pytest.raises(stack.RecipeError) as err:
        stack.load_recipe(name, str(tmp_path))
    assert message in str(err.value)


def test_ansible_reads_the_selected_recipe_through_the_roles(tmp_path):
    # The real lookup inside real Ansible: the role variables a play sees are the recipe's values.
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.import_role": {"name": "sglang_service", "tasks_from": "defaults.yml"}},
            {"ansible.builtin.import_role": {"name": "sglang_image", "tasks_from": "tag.yml"}, "when": False},
            {"ansible.builtin.copy": {"dest": str(tmp_path / "out.json"), "mode": "0600", "content": "{{ {"
             "'args': sglang_service_args, 'model': sglang_service_model, 'base': sglang_image_base, "
             "'constraints': sglang_image_pip_constraints, 'name': sglang_image_recipe_name} | to_json }}"}},
        ]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_ROLES_PATH=os.path.join(ROOT, "roles"))
    bindir = os.path.dirname(sys.executable)
    for name in ("lab-cpu-engine", SEED):
        proc = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", "ansible_python_interpreter=" + sys.executable, "-e", "stack_name=" + name, str(play)],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        seen = json.load(open(tmp_path / "out.json"))
        recipe = stack.load_recipe(name, STACKS)
        assert seen == {"args": recipe["server"]["args"], "model": recipe["server"]["model"], "base": recipe["image"]["base"],
                        "constraints": recipe["image"]["pip_constraints"], "name": name}
