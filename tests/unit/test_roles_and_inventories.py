"""Roles, their argument specs and the inventories agree with each other."""

import glob
import os
import re

import pytest
import yaml

from helpers import ROOT

ROLES = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "roles", "*", "defaults")))


def load(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle) or {}


def spec(role):
    return load("roles", role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]


def test_every_role_has_defaults_and_a_spec():
    assert ROLES == ["docker", "nvidia_container_toolkit", "nvidia_driver", "preflight", "sglang_image", "sglang_service"]
    for role in ROLES:
        assert spec(role), role


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_specified_and_prefixed(role):
    defaults = load("roles", role, "defaults", "main.yml")
    options = spec(role)
    assert set(defaults) == set(options), "defaults and argument_specs differ: %s" % (set(defaults) ^ set(options))
    for name in defaults:
        assert name.startswith(role + "_"), "%s: %s is not prefixed with the role name" % (role, name)


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_commented(role):
    # defaults/main.yml is the documentation: a comment above each top-level key (or its group).
    lines = open(os.path.join(ROOT, "roles", role, "defaults", "main.yml")).read().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z_]+:", line)]
    for index in keys:
        above = [l for l in lines[max(0, index - 12):index] if l.strip()]
        assert any(l.startswith("#") for l in above), "%s: %s has no comment above it" % (role, lines[index])


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_their_declared_types(role):
    names = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "path": str}
    for name, value in load("roles", role, "defaults", "main.yml").items():
        declared = spec(role)[name]["type"]
        if value is None:
            continue
        assert isinstance(value, names[declared]), "%s: %s is %r, declared %s" % (role, name, value, declared)


@pytest.mark.parametrize("inventory", ["gpu", "lab"])
def test_inventory_variables_are_real_role_variables(inventory):
    known = set()
    for role in ROLES:
        known |= set(spec(role))
    files = glob.glob(os.path.join(ROOT, "inventories", inventory, "group_vars", "**", "*.yml"), recursive=True)
    assert files
    for path in files:
        for name in load(os.path.relpath(path, ROOT)):
            if name.startswith(("ansible_", "lab_", "vault_")):
                continue
            assert name in known, "%s sets %s, which no role defines (a typo?)" % (os.path.relpath(path, ROOT), name)


def test_production_stack_is_the_seed_recipe():
    stack = load("inventories", "gpu", "group_vars", "gpu_servers", "stack.yml")
    image = load("roles", "sglang_image", "defaults", "main.yml")
    assert stack["sglang_image_pip_constraints"] == image["sglang_image_pip_constraints"]
    assert "sgl-kernel==0.3.9.post2" in stack["sglang_image_pip_constraints"]
    assert stack["sglang_image_base"] == "nvidia/cuda:12.8.0-cudnn-devel-ubuntu22.04"
    assert int(stack["nvidia_driver_branch"]) >= 570 and stack["nvidia_driver_flavour"] == "open"


def test_server_arguments_have_no_flag_sglang_0_5_2_lacks():
    # The seed's --disable-flashinfer is not an SGLang 0.5.2 option; argparse prefix-matched it to another one.
    for path in ("roles/sglang_service/defaults/main.yml", "inventories/gpu/group_vars/gpu_servers/stack.yml"):
        args = load(path)["sglang_service_args"]
        assert "--disable-flashinfer" not in args
        assert args[args.index("--attention-backend") + 1] == "torch_native"
        assert args[args.index("--sampling-backend") + 1] == "pytorch"


def test_no_stand_in_reaches_a_role_or_the_production_inventory():
    for path in glob.glob(os.path.join(ROOT, "roles", "**", "*"), recursive=True) + \
            glob.glob(os.path.join(ROOT, "inventories", "gpu", "**", "*"), recursive=True):
        if os.path.isfile(path):
            text = open(path).read()
            assert "bwlab" not in text and "STAND-IN" not in text, path
