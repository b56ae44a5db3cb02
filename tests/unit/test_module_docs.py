"""Every module in library/ documents exactly what it takes and what it returns.

Generic over library/*.py: a new module is covered by being there.
- DOCUMENTATION, EXAMPLES and RETURN are read by Ansible's own parser (what ansible-doc uses),
  and ansible-doc renders every module.
- The documented options equal the module's argument_spec (taken from the module itself by
  stopping it at AnsibleModule(...)): names, types, defaults, choices, required, elements, aliases,
  no_log for secrets; suboptions recursively.
- `attributes:` declares check_mode (matching supports_check_mode), diff_mode and platform.
- RETURN covers every key the module can put into exit_json/fail_json, and documents no key it
  never returns. The keys are found by reading the code (returns_analysis.py), following the
  result dict through the module's and module_utils' functions; a construct it cannot follow
  fails the test with its line instead of passing silently.
"""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT
from returns_analysis import COMMON_RETURN_KEYS, result_keys

LIBRARY = os.path.join(ROOT, "library")
MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(LIBRARY, "*.py")))
BIN = os.path.dirname(sys.executable)
SECRET_NAME = re.compile(r"(^|_)(api_key|key|token|password|passwd|secret|passphrase)$")


def read_docs(name):
    from ansible.parsing.plugin_docs import read_docstring

    docs = read_docstring(os.path.join(LIBRARY, name + ".py"), verbose=False, ignore_errors=False)
    # Plain Python values (Ansible tags its YAML); the same content.
    return {key: json.loads(json.dumps(docs[key])) for key in ("doc", "returndocs")}, docs["plainexamples"]


class _Stop(Exception):
    pass


def module_spec(name):
    """The keyword arguments the module gives AnsibleModule(...), taken by running its main()."""
    import ansible.module_utils

    utils = os.path.join(ROOT, "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)  # what ansible.cfg's module_utils does for a run
    spec = importlib.util.spec_from_file_location("bwfleet_library_" + name, os.path.join(LIBRARY, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    captured = {}

    def stop(*args, **kwargs):
        captured.update(kwargs)
        if args:
            captured["argument_spec"] = args[0]
        raise _Stop()

    mod.AnsibleModule = stop
    with pytest.raises(_Stop):
        mod.main()
    return captured


def test_every_module_found():
    assert {"nvidia_gpu_verify", "sglang_api_check"} <= set(MODULES)


def test_ansible_doc_renders_every_module():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(BIN, "ansible-doc"), "-M", LIBRARY, "--json"] + MODULES,
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = json.loads(proc.stdout)
    assert sorted(rendered) == MODULES
    for name in MODULES:
        assert rendered[name]["doc"]["module"] == name
        assert rendered[name]["return"], "%s: RETURN is empty" % name
    assert "[WARNING]" not in proc.stderr, proc.stderr


def _compare_options(where, documented, spec):
    problems = []
    for opt in sorted(set(documented) - set(spec)):
        problems.append("%s%s: documented but not in argument_spec" % (where, opt))
    for opt in sorted(set(spec) - set(documented)):
        problems.append("%s%s: in argument_spec but not documented" % (where, opt))
    for opt in sorted(set(spec) & set(documented)):
        doc, arg, here = documented[opt], spec[opt], "%s%s" % (where, opt)
        if not doc.get("description"):
            problems.append("%s: no description" % here)
        if doc.get("type", "str") != arg.get("type", "str"):
            problems.append("%s: type %s documented, %s in the spec" % (here, doc.get("type", "str"), arg.get("type", "str")))
        doc_default, arg_default = doc.get("default"), arg.get("default")
        if arg.get("type") == "float" and doc_default is not None and arg_default is not None:
            doc_default, arg_default = float(doc_default), float(arg_default)
        if doc_default != arg_default:
            problems.append("%s: default %r documented, %r in the spec" % (here, doc.get("default"), arg.get("default")))
        for key in ("choices", "aliases"):
            if list(doc.get(key) or []) != list(arg.get(key) or []):
                problems.append("%s: %s %r documented, %r in the spec" % (here, key, doc.get(key), arg.get(key)))
        if bool(doc.get("required")) != bool(arg.get("required")):
            problems.append("%s: required %r documented, %r in the spec" % (here, doc.get("required"), arg.get("required")))
        if arg.get("type") == "list" and doc.get("elements") != arg.get("elements"):
            problems.append("%s: elements %r documented, %r in the spec" % (here, doc.get("elements"), arg.get("elements")))
        if SECRET_NAME.search(opt) and arg.get("no_log") is not True:
            problems.append("%s: looks like a secret but the spec has no no_log=True" % here)
        if arg.get("no_log") and "never logged" not in " ".join(_lines(doc.get("description"))).lower():
            problems.append("%s: no_log option; its description must say it is never logged" % here)
        if arg.get("options") or doc.get("suboptions"):
            problems += _compare_options(here + ".", doc.get("suboptions") or {}, arg.get("options") or {})
    return problems


def _lines(value):
    return value if isinstance(value, list) else [value or ""]


@pytest.mark.parametrize("name", MODULES)
def test_documented_options_equal_argument_spec(name):
    docs, _ = read_docs(name)
    doc = docs["doc"]
    assert doc["module"] == name
    assert doc.get("short_description") and doc.get("description") and doc.get("author")
    spec = module_spec(name)
    problems = _compare_options("", doc.get("options") or {}, spec["argument_spec"])
    assert not problems, "%s:\n  %s" % (name, "\n  ".join(problems))


@pytest.mark.parametrize("name", MODULES)
def test_attributes_declared(name):
    docs, _ = read_docs(name)
    attributes = docs["doc"].get("attributes") or {}
    assert {"check_mode", "diff_mode", "platform"} <= set(attributes), "%s: attributes %s" % (name, sorted(attributes))
    for attr, value in attributes.items():
        assert value.get("support") in ("full", "partial", "none", "N/A"), (name, attr, value)
        assert value.get("description"), (name, attr)
    supports_check_mode = bool(module_spec(name).get("supports_check_mode"))
    assert (attributes["check_mode"]["support"] in ("full", "partial")) == supports_check_mode, (
        "%s: check_mode support %r but supports_check_mode=%r" % (name, attributes["check_mode"]["support"], supports_check_mode))
    assert attributes["platform"].get("platforms"), "%s: platform attribute names no platforms" % name


@pytest.mark.parametrize("name", MODULES)
def test_examples_use_documented_options(name):
    docs, examples = read_docs(name)
    tasks = yaml.safe_load(examples)
    assert isinstance(tasks, list) and tasks, "%s: EXAMPLES is not a list of tasks" % name
    options = set(docs["doc"].get("options") or {})
    for task in tasks:
        assert task.get("name"), task
        args = task.get(name)
        assert isinstance(args, dict), "%s: example %r does not call the module" % (name, task.get("name"))
        assert set(args) <= options, "%s: example %r uses %s" % (name, task["name"], sorted(set(args) - options))


@pytest.mark.parametrize("name", MODULES)
def test_return_covers_what_the_module_returns(name):
    docs, _ = read_docs(name)
    documented = docs["returndocs"] or {}
    for key, value in documented.items():
        assert value.get("description") and value.get("returned") and value.get("type"), "%s: RETURN %s incomplete" % (name, key)
    returned = result_keys(os.path.join(LIBRARY, name + ".py"), os.path.join(ROOT, "module_utils"))
    undocumented = sorted(returned - set(documented) - COMMON_RETURN_KEYS)
    stale = sorted(set(documented) - returned)
    assert not undocumented, "%s returns keys RETURN does not document: %s" % (name, undocumented)
    assert not stale, "%s: RETURN documents keys the module never returns: %s" % (name, stale)
