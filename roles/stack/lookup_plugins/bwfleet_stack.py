# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stack recipe, read once per run: stacks/<name>.yml with `extends:` resolved and checked.

The pure functions (load_recipe, merge, check_recipe) are what tests and scripts call too,
so the roles, the tests and scripts/check-server-args read a recipe the same way.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: bwfleet_stack
short_description: Read a bw-fleet stack recipe (stacks/<name>.yml), with extends resolved
description:
  - Reads C(<dir>/<name>.yml), deep-merges it over the recipe it C(extends) (lists and scalars replace,
    mappings merge), and checks that every key a role reads is there with the right type.
  - Unknown top-level keys, a name that differs from the file name, a missing parent and a cycle
    fail with the file and the fix.
options:
  _terms:
    description: The recipe name (the file name without .yml).
    required: true
  dir:
    description: The folder holding the recipes; empty means the project's C(stacks/) folder.
    type: str
    default: ""
"""

RETURN = r"""
_raw:
  description: The recipe as one mapping.
  type: list
  elements: dict
"""

import copy
import os
import re

import yaml

try:
    from ansible.errors import AnsibleLookupError
    from ansible.plugins.lookup import LookupBase
except ImportError:  # imported by tests and scripts without Ansible on the path
    AnsibleLookupError = ValueError
    LookupBase = object

TOP_LEVEL = {"name", "extends", "description", "validated", "known_good", "driver", "toolkit",
             "image", "sglang", "server"}
# key path -> type every complete recipe must have (what the roles read).
REQUIRED = {
    ("known_good", "compute_capabilities"): list,
    ("known_good", "pci_device_ids"): list,
    ("known_good", "driver_min"): str,
    ("driver", "branch"): str,
    ("driver", "flavour"): str,
    ("toolkit", "version"): str,
    ("toolkit", "verify_image"): str,
    ("image", "base"): str,
    ("image", "python"): str,
    ("image", "apt_packages"): list,
    ("image", "pip_version"): str,
    ("image", "pip_extra_index_urls"): list,
    ("image", "pip_requirements"): list,
    ("image", "pip_constraints"): list,
    ("image", "pip_check_known_faults"): list,
    ("image", "sgl_kernel_wheel_url"): str,
    ("image", "env"): dict,
    ("image", "entrypoint"): list,
    ("server", "model"): str,
    ("server", "args"): list,
}
MAX_DEPTH = 8
# roles/stack/lookup_plugins/ -> the project's stacks/
STACKS_DIR = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "stacks"))

_CACHE = {}


class RecipeError(AnsibleLookupError):
    pass


def merge(base, override):
    """Deep merge: mappings merge key by key, anything else (lists, scalars, null) replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available(folder):
    try:
        return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".yml"))
    except OSError:
        return []


def read_file(folder, name):
    path = os.path.join(folder, name + ".yml")
    if not os.path.isfile(path):
        raise RecipeError("stack recipe %r not found: no %s; known recipes: %s (set stack_name to one of them, "
                          "or add the file)" % (name, path, ", ".join(available(folder)) or "none"))
    with open(path) as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise RecipeError("stack recipe %s is not valid YAML: %s" % (path, exc))
    if not isinstance(data, dict):
        raise RecipeError("stack recipe %s must be a mapping" % path)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise RecipeError("stack recipe %s: unknown key(s) %s (known: %s)" % (path, ", ".join(unknown), ", ".join(sorted(TOP_LEVEL))))
    if data.get("name") != name:
        raise RecipeError("stack recipe %s: name is %r, must be the file name %r" % (path, data.get("name"), name))
    return data


def check_recipe(recipe, name="recipe"):
    """Every key the roles read is present with its type; returns the list of problems."""
    problems = []
    for path, kind in sorted(REQUIRED.items()):
        node = recipe
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, kind):
            problems.append("%s: %s must be a %s (is %r)" % (name, ".".join(path), kind.__name__, node))
    faults = ((recipe.get("image") or {}).get("pip_check_known_faults")) or []
    for index, fault in enumerate(faults if isinstance(faults, list) else []):
        if not (isinstance(fault, dict) and isinstance(fault.get("package"), str)
                and re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", fault["package"])
                and isinstance(fault.get("reason"), str) and fault["reason"].strip()):
            problems.append("%s: image.pip_check_known_faults[%d] must be {package: <a package name>, reason: <why it is "
                            "an upstream fault, not a broken install>} (is %r)" % (name, index, fault))
    sglang = recipe.get("sglang")
    if sglang is not None and not (isinstance(sglang, dict) and isinstance(sglang.get("version"), str)):
        problems.append("%s: sglang must be null (not an SGLang engine) or {version: \"X.Y.Z\"}" % name)
    return problems


def load_recipe(name, folder=STACKS_DIR):
    """The recipe `name` from `folder`, parents merged under it, checked."""
    chain, current = [], name
    while current:
        if current in chain:
            raise RecipeError("stack recipe %s: extends loops (%s)" % (name, " -> ".join(chain + [current])))
        if len(chain) >= MAX_DEPTH:
            raise RecipeError("stack recipe %s: extends is deeper than %d" % (name, MAX_DEPTH))
        chain.append(current)
        current = read_file(folder, current).get("extends")
    recipe = {}
    for part in reversed(chain):
        recipe = merge(recipe, read_file(folder, part))
    recipe["name"] = name
    recipe["extends"] = chain[1] if len(chain) > 1 else None
    problems = check_recipe(recipe, os.path.join(folder, name + ".yml"))
    if problems:
        raise RecipeError("; ".join(problems))
    return recipe


def _stamp(folder):
    # Any change to any recipe file invalidates the cache (parents included).
    try:
        return tuple(sorted((f, os.stat(os.path.join(folder, f)).st_mtime_ns) for f in os.listdir(folder)))
    except OSError:
        return ()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        folder = os.path.realpath(os.path.expanduser(self.get_option("dir") or STACKS_DIR))
        out = []
        for name in terms:
            key = (folder, name)
            stamp = _stamp(folder)
            cached = _CACHE.get(key)
            if cached is None or cached[0] != stamp:
                cached = (stamp, load_recipe(name, folder))
                _CACHE[key] = cached
            out.append(copy.deepcopy(cached[1]))
        return out
