"""labctl's OS profiles: Ubuntu 22.04 (the default, what CI proves) and Debian 12 (opt-in), keyring
checked, no silent fallback."""
import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import pytest

LABCTL = os.path.join(os.path.dirname(__file__), "..", "..", "lab", "labctl")


def load(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    loader = importlib.machinery.SourceFileLoader("labctl_under_test", LABCTL)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_default_profile_is_the_fleets_os(monkeypatch):
    monkeypatch.delenv("LAB_OS", raising=False)
    labctl = load(monkeypatch)
    assert labctl.LAB_OS == "ubuntu2204" and labctl.IMAGE_REPO == "bwfleet-lab/ubuntu2204" and labctl.SUITE == "jammy"


def test_debian12_is_a_second_profile(monkeypatch):
    labctl = load(monkeypatch, LAB_OS="debian12")
    assert labctl.IMAGE_REPO == "bwfleet-lab/debian12" and labctl.SUITE == "bookworm"
    assert labctl.SERVING_BASE_OS == "ubuntu2204"  # the serving image's base stays jammy


def test_jammy_profile_is_like_a_fresh_install(monkeypatch):
    labctl = load(monkeypatch, LAB_OS="ubuntu2204")
    assert labctl.LAB_OS == "ubuntu2204"
    assert labctl.IMAGE_REPO == "bwfleet-lab/ubuntu2204"
    assert labctl.SUITE == "jammy"
    assert labctl.PROFILE["components"] == "main restricted universe"
    assert labctl.PROFILE["pockets"] == ["jammy", "jammy-updates", "jammy-security"]


def test_sources_list_has_updates_and_security(monkeypatch, tmp_path):
    labctl = load(monkeypatch, LAB_OS="ubuntu2204")
    (tmp_path / "etc" / "apt").mkdir(parents=True)
    labctl.write_sources(str(tmp_path))
    lines = (tmp_path / "etc" / "apt" / "sources.list").read_text().splitlines()
    assert lines == ["deb %s %s main restricted universe" % (labctl.MIRROR, p)
                     for p in ("jammy", "jammy-updates", "jammy-security")]


def test_unreachable_archive_fails_in_one_line_naming_debian12(monkeypatch, tmp_path):
    env = dict(os.environ, LAB_OS="ubuntu2204", BWLAB_UBUNTU_MIRROR="http://127.0.0.1:9/ubuntu")
    code = ("import importlib.machinery as m, importlib.util as u; l=m.SourceFileLoader('x', %r); "
            "s=u.spec_from_loader('x', l); mod=u.module_from_spec(s); l.exec_module(mod); "
            "mod.ubuntu_keyring(%r)" % (LABCTL, str(tmp_path)))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "does not answer" in lines[0] and "LAB_OS=debian12" in lines[0]


def test_keyring_with_wrong_sha256_is_refused(monkeypatch, tmp_path):
    labctl = load(monkeypatch, LAB_OS="ubuntu2204")

    class Answer:
        def read(self):
            return b"not the ubuntu-keyring deb"

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Answer())
    with pytest.raises(SystemExit):
        labctl.ubuntu_keyring(str(tmp_path))
    assert hashlib.sha256(b"not the ubuntu-keyring deb").hexdigest() != labctl.PROFILE["keyring_sha256"]
    assert not (tmp_path / "ubuntu-keyring.deb").exists()


def test_unknown_profile_is_refused(monkeypatch):
    with pytest.raises(SystemExit, match="LAB_OS=nope is not a lab profile"):
        load(monkeypatch, LAB_OS="nope")
