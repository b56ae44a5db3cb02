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
    assert ROLES == ["apt_repository", "docker", "nvidia_container_toolkit", "nvidia_driver", "preflight", "sglang_image",
                     "sglang_service", "stack"]
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
        if value is None or (isinstance(value, str) and value.startswith("{{")):
            continue  # templated (the stack recipe's values are checked in test_stacks.py)
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


def test_inventories_select_a_recipe_by_name():
    assert load("inventories", "gpu", "group_vars", "gpu_servers", "stack.yml")["stack_name"] == "sglang-0.5.2-cu128-sm120"
    assert load("inventories", "lab", "group_vars", "all.yml")["stack_name"] == "lab-cpu-engine"


def test_no_stand_in_reaches_a_role_or_the_production_inventory():
    for path in glob.glob(os.path.join(ROOT, "roles", "**", "*"), recursive=True) + \
            glob.glob(os.path.join(ROOT, "inventories", "gpu", "**", "*"), recursive=True):
        if os.path.isfile(path):
            text = open(path).read()
            assert "bwlab" not in text and "STAND-IN" not in text, path


def test_the_skip_tags_the_fast_path_ignores_are_on_no_task():
    # site.yml takes the fast path under --skip-tags made only of these: true only while nothing carries them.
    inert = set(load("playbooks", "site", "converged_vars.yml")["site_inert_skip_tags"])
    assert inert >= {"molecule-notest", "notest"}
    files = ["site.yml"] + [f for pattern in ("playbooks/**/*.yml", "roles/**/*.yml")
                            for f in glob.glob(os.path.join(ROOT, pattern), recursive=True)]
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            tags = node.get("tags", [])
            tags = [tags] if isinstance(tags, str) else tags
            found.extend((where, t) for t in tags if t in inert)
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for path in files:
        walk(load(path), path)
    assert len(files) > 20 and not found, found
