"""The authenticating front's configuration and key rules (pure parts), and ansible.cfg's SSH settings."""

import ast
import configparser
import glob
import importlib.util
import os
import sys

import pytest
import yaml

from helpers import ROOT

FRONT_PATH = os.path.join(ROOT, "roles", "sglang_service", "files", "sglang_auth_front.py")
spec = importlib.util.spec_from_file_location("sglang_auth_front", FRONT_PATH)
front = importlib.util.module_from_spec(spec)
spec.loader.exec_module(front)

GOOD = {"BWFLEET_FRONT_ENGINE": '["python3", "-m", "sglang.launch_server"]', "BWFLEET_FRONT_KEY_FILE": "/run/secrets/k"}


def test_the_front_needs_only_the_standard_library_of_the_oldest_image_python():
    source = open(FRONT_PATH).read()
    tree = ast.parse(source, feature_version=(3, 8))  # SGLang images have 3.10, the lab 3.11
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules - set(sys.stdlib_module_names) == set()
    assert os.stat(FRONT_PATH).st_mode & 0o111, "the container runs it through its shebang"
    assert source.startswith("#!/usr/bin/env python3\n")


def test_config_defaults_and_engine_argv():
    cfg = front.Config(GOOD, ["--model-path", "m", "--host", "127.0.0.1", "--port", "30000"])
    assert cfg.engine == ["python3", "-m", "sglang.launch_server", "--model-path", "m", "--host", "127.0.0.1", "--port", "30000"]
    assert cfg.listen == ("0.0.0.0", 8000) and cfg.upstream == ("127.0.0.1", 30000)
    assert cfg.open_paths == {"/health", "/health_generate"}
    assert cfg.max_body == 32 * 1024 * 1024 and cfg.max_header == 65536
    v6 = front.Config(dict(GOOD, BWFLEET_FRONT_LISTEN="[::]:8000", BWFLEET_FRONT_OPEN_PATHS=""), [])
    assert v6.listen == ("::", 8000) and v6.open_paths == frozenset()


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"BWFLEET_FRONT_ENGINE": "python3 -m sglang"}, "must be a JSON list of strings"),
        ({"BWFLEET_FRONT_ENGINE": "[1, 2]"}, "must be a JSON list of strings"),
        ({"BWFLEET_FRONT_ENGINE": "[]"}, "no engine command"),
        ({"BWFLEET_FRONT_KEY_FILE": ""}, "KEY_FILE is not set"),
        ({"BWFLEET_FRONT_LISTEN": "8000"}, "must be host:port"),
        ({"BWFLEET_FRONT_LISTEN": "0.0.0.0:70000"}, "must be host:port"),
        ({"BWFLEET_FRONT_UPSTREAM": "127.0.0.1:8000"}, "cannot share a port"),
        ({"BWFLEET_FRONT_OPEN_PATHS": "health"}, "must be plain paths"),
        ({"BWFLEET_FRONT_MAX_BODY_BYTES": "lots"}, "must be an integer"),
        ({"BWFLEET_FRONT_MAX_HEADER_BYTES": "10"}, "must be at least 1024"),
    ],
)
def test_config_errors_name_the_setting(env, expected):
    with pytest.raises(front.ConfigError, match=expected):
        front.Config(dict(GOOD, **env), [])


def test_key_rules(tmp_path):
    key = tmp_path / "k"
    key.write_text("  " + "a" * 40 + "\n")
    assert front.read_key(str(key)) == b"a" * 40  # surrounding whitespace (an editor's newline) is not part of it
    key.write_text("x" * 5000)
    with pytest.raises(front.ConfigError, match="larger than 4096 bytes"):
        front.read_key(str(key))
    key.write_bytes(b"\xff" * 40)
    with pytest.raises(front.ConfigError, match="non-printable"):
        front.read_key(str(key))
    key.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(front.ConfigError, match="cannot read"):
            front.read_key(str(key))


def test_exit_status_of_the_engine():
    assert front.exit_status(3 << 8) == 3
    assert front.exit_status(15) == 128 + 15


# --- SSH: production inventories check host keys
def test_ansible_cfg_does_not_disable_host_key_checking():
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(ROOT, "ansible.cfg"))
    for section in cfg.sections():
        assert cfg[section].get("host_key_checking", "true").lower() not in ("false", "no", "0", "off"), section
        assert "StrictHostKeyChecking=no" not in cfg[section].get("ssh_args", "")


def test_production_inventory_does_not_disable_host_key_checking():
    for path in glob.glob(os.path.join(ROOT, "inventories", "gpu", "**", "*.yml"), recursive=True):
        text = open(path).read()
        assert "host_key_checking" not in text and "StrictHostKeyChecking" not in text, path
        yaml.safe_load(text)
