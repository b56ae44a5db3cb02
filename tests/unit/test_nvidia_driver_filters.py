"""nvidia_driver's package table and branch check, on Ubuntu 22.04's real package relations.

tests/fixtures/ubuntu-jammy/jammy-updates-restricted.Packages is Ubuntu's own index (trimmed): the
dpkg state after `apt install nvidia-driver-570-open` without a pin is built from it, so the check
meets exactly what a real box would have (trap 1 of issue 11).
"""

import importlib.util
import os

import pytest
import yaml

from helpers import ROOT

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "ubuntu-jammy", "jammy-updates-restricted.Packages")


def _load():
    path = os.path.join(ROOT, "roles", "nvidia_driver", "filter_plugins", "nvidia_driver.py")
    spec = importlib.util.spec_from_file_location("nvidia_driver_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nd = _load()
with open(os.path.join(ROOT, "roles", "nvidia_driver", "defaults", "main.yml")) as _handle:
    SCHEMES = yaml.safe_load(_handle)["nvidia_driver_package_schemes"]


def ubuntu_index():
    stanzas = {}
    for block in open(FIXTURE).read().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith("#"))
        if "Package" in fields:
            stanzas[fields["Package"]] = fields
    return stanzas


def dpkg_line(fields, want="install"):
    return "%s installed %s %s %s" % (want, fields["Package"], fields["Version"], fields.get("Depends", ""))


# --- the table: both schemes, both sources
@pytest.mark.parametrize("source,branch,flavour,server,modules,expected", [
    ("cuda_repo", "570", "open", False, "dkms", ["nvidia-driver-570-open"]),
    ("cuda_repo", "580", "open", False, "dkms", ["nvidia-driver-580-open"]),
    ("cuda_repo", "590", "open", False, "dkms", ["nvidia-driver-pinning-590", "nvidia-open"]),
    ("cuda_repo", "595", "proprietary", False, "dkms", ["nvidia-driver-pinning-595", "cuda-drivers"]),
    ("distro", "580", "open", False, "dkms", ["nvidia-driver-580-open"]),
    ("distro", "580", "open", True, "dkms", ["nvidia-headless-580-server-open", "nvidia-utils-580-server"]),
    ("distro", "580", "open", False, "signed",
     ["nvidia-headless-no-dkms-580-open", "nvidia-utils-580", "linux-modules-nvidia-580-open-5.15.0-204-generic"]),
])
def test_packages_per_source_and_scheme(source, branch, flavour, server, modules, expected):
    assert nd.driver_packages(SCHEMES, source, branch, flavour, server, modules, "5.15.0-204-generic") == expected


def test_distro_packages_exist_in_ubuntus_index():
    # The distro names the table produces for 580 are real packages of jammy-updates (not invented).
    index = ubuntu_index()
    for server, modules in ((False, "dkms"), (True, "dkms"), (False, "signed")):
        for name in nd.driver_packages(SCHEMES, "distro", "580", "open", server, modules, "generic"):
            assert name in index, name


def test_server_or_signed_from_nvidias_repository_is_refused_with_the_fix():
    with pytest.raises(Exception, match="the -server and signed variants are Ubuntu's builds"):
        nd.driver_packages(SCHEMES, "cuda_repo", "580", "open", True, "dkms", "k")
    assert nd.driver_packages(SCHEMES, "cuda_repo", "latest", "open", False, "dkms", "k") == []  # validate.yml refuses it


def test_version_applies_to_versioned_packages_only():
    pkgs = ["nvidia-driver-pinning-590", "nvidia-open"]
    assert nd.with_version(pkgs, "590.48.01-0ubuntu1", "^(nvidia-driver-pinning-|linux-modules-nvidia-)") == [
        "nvidia-driver-pinning-590", "nvidia-open=590.48.01-0ubuntu1"]
    assert nd.with_version(pkgs, "", "^x") == pkgs


# --- the branch check: trap 1 on Ubuntu's real relations
def trap1_dpkg():
    """What dpkg shows after `apt install nvidia-driver-570-open` took Ubuntu's transitional package."""
    index = ubuntu_index()
    names = ["nvidia-driver-570-open", "nvidia-driver-580-open", "nvidia-dkms-580-open", "nvidia-utils-580",
             "nvidia-compute-utils-580", "nvidia-kernel-common-580", "libnvidia-compute-580"]
    # The old role held only the package it asked for: the transitional one.
    return "\n".join(dpkg_line(index[n], "hold" if n == "nvidia-driver-570-open" else "install") for n in names)


def test_transitional_package_is_named_as_the_culprit():
    state = nd.driver_state(trap1_dpkg(), "nvidia-utils-580: /usr/bin/nvidia-smi", "570", ["nvidia-driver-570-open"])
    assert not state["ok"]
    assert state["branch"] == "580" and state["package"] == "nvidia-utils-580"
    assert state["message"] == (
        "asked for driver branch 570 (nvidia-driver-570-open), but the installed driver is 580.178.04 "
        "(nvidia-utils-580 580.178.04-0ubuntu0.22.04.1): nvidia-driver-570-open 570.211.01-0ubuntu1.22.04.1 depends "
        "on nvidia-driver-580-open 580.178.04-0ubuntu0.22.04.1, which pulled branch 580 in. Pin NVIDIA's repository "
        "above the distribution's (nvidia_driver_cuda_repo_pin_priority, 600 like cuda-keyring's pin) or choose branch 580")


def test_distro_advice_names_the_branch_ubuntu_moved_to():
    state = nd.driver_state(trap1_dpkg(), "nvidia-utils-580: /usr/bin/nvidia-smi", "570", ["nvidia-driver-570-open"],
                            "distro")
    assert state["message"].endswith("Ubuntu moves old branches to newer ones with transitional packages: choose branch 580")


def test_branch_580_holds_every_package_of_the_branch_not_only_the_metapackage():
    state = nd.driver_state(trap1_dpkg(), "nvidia-utils-580: /usr/bin/nvidia-smi", "580", ["nvidia-driver-580-open"])
    assert state["ok"] and state["version"] == "580.178.04-0ubuntu0.22.04.1"
    assert state["hold"] == ["libnvidia-compute-580", "nvidia-compute-utils-580", "nvidia-dkms-580-open",
                             "nvidia-driver-580-open", "nvidia-kernel-common-580", "nvidia-utils-580"]
    # The transitional 570 package's own version is 570: held by the old role, released now.
    assert state["unhold"] == ["nvidia-driver-570-open"]


def test_nothing_installed_says_so():
    state = nd.driver_state("", "", "580", ["nvidia-driver-580-open"])
    assert not state["ok"] and "no installed package provides /usr/bin/nvidia-smi" in state["message"]


def test_branch_of():
    assert nd.branch_of("580.178.04-0ubuntu0.22.04.1") == "580"
    assert nd.branch_of("1:590.48.01-0ubuntu1") == "590"
    assert nd.branch_of("5.15.0-204.214") is None
    assert nd.branch_of("") is None


def test_switching_back_from_590_removes_its_packages_and_its_branch_lock():
    dpkg = "\n".join([
        "hold installed nvidia-open 590.48.01-0ubuntu1 nvidia-utils (= 590.48.01-0ubuntu1)",
        "hold installed nvidia-utils 590.48.01-0ubuntu1 ",
        "hold installed nvidia-driver-pinning-590 590-1 ",
        "hold installed linux-modules-nvidia-590-open-generic 5.15.0-204.214 ",
    ])
    state = nd.driver_state(dpkg, "nvidia-utils: /usr/bin/nvidia-smi", "580", ["nvidia-driver-580-open"])
    assert not state["ok"]
    assert state["other"] == ["nvidia-driver-pinning-590", "nvidia-open", "nvidia-utils"]


def test_the_container_toolkits_held_packages_are_left_to_its_role():
    dpkg = "\n".join([
        "hold installed nvidia-container-toolkit 1.17.8-1 ",
        "hold installed libnvidia-container1 1.17.8-1 ",
        "hold installed nvidia-utils-580 580.105.08-0ubuntu1 ",
    ])
    state = nd.driver_state(dpkg, "nvidia-utils-580: /usr/bin/nvidia-smi", "580", ["nvidia-driver-580-open"])
    assert state["ok"] and state["unhold"] == [] and state["hold"] == [] and state["other"] == []
