"""The host stack a rollout records and restores, from dpkg's records."""

import os

from bwfleet_dpkg import branch_of, host_stack, installed_packages, owner_of

from helpers import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "dpkg")

# dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}\n' on a host with NVIDIA's 570 held
# (versions as NVIDIA's repository names them), a removed 580 left with its configuration ("rc"),
# and the toolkit.
BRANCH_570 = """\
hi |nvidia-driver-570-open|570.195.03-0ubuntu1
hi |nvidia-utils-570|570.195.03-0ubuntu1
hi |nvidia-dkms-570-open|570.195.03-0ubuntu1
ii |libnvidia-compute-570|570.195.03-0ubuntu1
rc |nvidia-utils-580|580.105.08-0ubuntu1
hi |nvidia-container-toolkit|1.17.8-1
hi |nvidia-container-toolkit-base|1.17.8-1
ii |libnvidia-container1|1.17.8-1
un |nvidia-libopencl1-dev|
"""

# From 590 the names lose the branch; nvidia-smi comes from the unversioned nvidia-utils.
BRANCH_590 = """\
ii |nvidia-open|590.48.01-0ubuntu1
hi |nvidia-driver-pinning-590|590.48.01-0ubuntu1
ii |nvidia-utils|590.48.01-0ubuntu1
"""


def test_the_driver_is_the_package_that_brought_nvidia_smi():
    stack = host_stack(BRANCH_570, "nvidia-utils-570: /usr/bin/nvidia-smi\n")
    assert stack["driver"] == {"package": "nvidia-utils-570", "version": "570.195.03-0ubuntu1", "branch": "570"}
    assert stack["toolkit"] == {"package": "nvidia-container-toolkit", "version": "1.17.8-1"}
    # Removed ("rc") and never installed ("un") packages are not the host's.
    assert "nvidia-utils-580" not in stack["packages"]
    assert "nvidia-libopencl1-dev" not in stack["packages"]
    assert stack["held"] == ["nvidia-container-toolkit", "nvidia-container-toolkit-base",
                             "nvidia-dkms-570-open", "nvidia-driver-570-open", "nvidia-utils-570"]


def test_the_590_scheme_without_a_branch_in_the_names():
    stack = host_stack(BRANCH_590, "nvidia-utils: /usr/bin/nvidia-smi")
    assert stack["driver"] == {"package": "nvidia-utils", "version": "590.48.01-0ubuntu1", "branch": "590"}
    assert stack["toolkit"] == {"package": "", "version": ""}


def test_ubuntus_own_versions_keep_their_branch():
    # jammy-updates' scheme (tests/fixtures/ubuntu-jammy), and an epoch.
    assert branch_of("580.95.05-0ubuntu0.22.04.2") == "580"
    assert branch_of("1:570.172.08-0ubuntu1") == "570"
    assert branch_of("5.15.0-204.214") == ""
    assert branch_of("") == ""


def test_a_driver_installed_outside_dpkg_is_no_driver_to_restore():
    # Captured on the device machine: driver 580.159.04 loaded, no package owns nvidia-smi.
    with open(os.path.join(FIXTURES, "h100-ubuntu2404-runfile-driver.W.txt")) as handle:
        listing = handle.read()
    stack = host_stack(listing, "")
    assert stack["driver"] == {"package": "", "version": "", "branch": ""}
    assert stack["packages"] == {}
    assert stack["held"] == []


def test_an_owner_whose_package_is_gone_is_no_driver():
    # dpkg -S still names a package whose files were diverted or left behind after removal.
    stack = host_stack("rc |nvidia-utils-580|580.105.08-0ubuntu1\n", "nvidia-utils-580: /usr/bin/nvidia-smi")
    assert stack["driver"]["package"] == ""


def test_owner_and_listing_parsing():
    assert owner_of("nvidia-utils-580: /usr/bin/nvidia-smi") == "nvidia-utils-580"
    # A diversion is printed first, then the owner.
    assert owner_of("diversion by glx-alternative-nvidia from: /usr/bin/nvidia-smi\n"
                    "diversion by glx-alternative-nvidia to: /usr/lib/nvidia/nvidia-smi\n"
                    "nvidia-utils-580: /usr/bin/nvidia-smi\n") == "nvidia-utils-580"
    assert owner_of("") == ""
    assert installed_packages("garbage\nii |a|1\n|b|\n") == {"a": "1"}
