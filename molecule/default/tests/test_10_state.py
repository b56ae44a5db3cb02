"""The state site.yml leaves on a lab host (testinfra through `docker exec`)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
from lab_run import auth_header  # noqa: E402


def test_systemd_is_running(host):
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_simulated_gpu_on_the_pci_bus(host):
    assert host.file("/srv/bwlab/sys/bus/pci/devices/0000:01:00.0/device").content_string.strip() == "0x2b85"


# --- nvidia_driver
def test_cuda_repository_signed_by_its_key(host):
    sources = host.file("/etc/apt/sources.list.d/nvidia-cuda.sources")
    assert sources.exists
    assert "Signed-By: /etc/apt/keyrings/nvidia-cuda.asc" in sources.content_string
    assert host.file("/etc/apt/keyrings/nvidia-cuda.asc").content_string.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


NO_PINS = "-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/nonexistent"


def candidate(host, package, options=""):
    policy = host.check_output("apt-cache %s policy %s" % (options, package))
    return next(line.split()[-1] for line in policy.splitlines() if line.strip().startswith("Candidate:"))


def test_trap1_ubuntus_transitional_570_wins_without_the_pin_nvidias_with_it(host):
    # Real Ubuntu 22.04: jammy-updates' restricted nvidia-driver-570-open is a transitional package
    # to branch 580 and sorts above NVIDIA's 570.*-0ubuntu1 (here the lab's stand-in repository).
    ubuntu = candidate(host, "nvidia-driver-570-open", NO_PINS)
    assert ubuntu.startswith("570.") and "ubuntu1.22.04" in ubuntu, ubuntu
    assert "nvidia-driver-580-open" in host.check_output("apt-cache show nvidia-driver-570-open=%s | grep ^Depends" % ubuntu)
    # The role's pin alone (cuda-keyring's own pin, installed by prepare.yml, left out) makes NVIDIA's win.
    host.check_output("rm -rf /tmp/role-pin && mkdir /tmp/role-pin && cp /etc/apt/preferences.d/bw-fleet-nvidia-cuda.pref /tmp/role-pin/")
    ours = candidate(host, "nvidia-driver-570-open", "-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/tmp/role-pin")
    assert ours.startswith("570.") and ours.endswith("-0ubuntu1"), ours
    assert 'Pin: origin "bwlab-repo"' in host.file("/etc/apt/preferences.d/bw-fleet-nvidia-cuda.pref").content_string


def test_driver_branch_installed_and_every_package_of_it_held(host):
    pkg = host.package("nvidia-driver-570-open")
    assert pkg.is_installed and pkg.version.startswith("570.") and pkg.version.endswith("-0ubuntu1")
    branch = sorted(line.split()[0] for line in host.check_output(
        "dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\n' 'nvidia-*' 'libnvidia-*'").splitlines()
        if line.split()[1].startswith("570.") and line.endswith(" installed"))
    assert "nvidia-utils-570" in branch and "nvidia-dkms-570-open" in branch
    held = [p for p in host.check_output("apt-mark showhold").split() if "nvidia-container" not in p]
    assert sorted(held) == branch  # not only the metapackage (a hold on a transitional package holds nothing)


def test_trap3_nvidias_own_sources_moved_aside_and_apt_updates(host):
    # prepare.yml put cuda-keyring's .list and nvidia-container-toolkit.list there (other Signed-By).
    listing = host.check_output("ls /etc/apt/sources.list.d")
    assert "cuda-ubuntu2204-x86_64.list" not in listing and "nvidia-container-toolkit.list" not in listing
    backups = host.check_output("ls /var/backups/bw-fleet/apt-sources")
    assert "cuda-ubuntu2204-x86_64.list." in backups and "nvidia-container-toolkit.list." in backups
    update = host.run("apt-get update")
    assert update.rc == 0 and "Conflicting values" not in update.stdout + update.stderr


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.mode == 0o644
    assert "blacklist nouveau" in conf.content_string and "options nouveau modeset=0" in conf.content_string


def test_loaded_module_matches_the_installed_driver(host):
    installed = host.package("nvidia-driver-570-open").version.split("-")[0]
    loaded = host.file("/run/bwlab/nvidia/version").content_string
    assert "Open Kernel Module" in loaded and installed in loaded
    assert installed in host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader")


def test_trap4_persistence_mode_on_through_nvidia_smi(host):
    # The packaged unit is Ubuntu's (--no-persistence-mode, no [Install], started when the driver
    # binds); the role's drop-in, not "enable", turns persistence mode on.
    packaged = host.file("/lib/systemd/system/nvidia-persistenced.service").content_string
    assert "--no-persistence-mode" in packaged and "[Install]" not in packaged
    assert host.service("nvidia-persistenced").is_running
    assert "--persistence-mode" in host.check_output("systemctl show -p ExecStart --value nvidia-persistenced")
    assert host.check_output("nvidia-smi --query-gpu=index,persistence_mode --format=csv,noheader").splitlines() == [
        "0, Enabled", "1, Enabled"]


def test_nvidia_smi_presents_an_rtx_5090(host):
    line = host.check_output("nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits")
    assert line.splitlines() == ["NVIDIA GeForce RTX 5090, 12.0, 32607"] * 2


# --- docker
def test_docker_running_with_merged_daemon_json(host):
    assert host.service("docker").is_enabled and host.service("docker").is_running
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-opts"] == {"max-file": "3", "max-size": "100m"}
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"  # added by nvidia-ctk, kept by the merge
    assert host.package("python3-docker").is_installed


def test_trap5_docker_manages_cgroups_with_cgroupfs(host):
    # So a systemctl daemon-reload cannot re-apply device rules that drop the GPUs of running containers.
    assert "native.cgroupdriver=cgroupfs" in json.loads(host.file("/etc/docker/daemon.json").content_string)["exec-opts"]
    assert host.check_output("docker info -f '{{.CgroupDriver}}'") == "cgroupfs"


# --- nvidia_container_toolkit
@pytest.mark.parametrize("name", ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                                  "libnvidia-container1"])
def test_toolkit_pinned_not_newest_and_held(host, name):
    # The lab repository also offers 1.18.0-1: the pin, not apt's choice, decided.
    assert host.package(name).version == "1.17.8-1"
    assert "hold" in host.check_output("dpkg --get-selections %s" % name)


def test_cdi_spec_matches_the_driver(host):
    driver = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").splitlines()[0]
    assert "libcuda.so.%s" % driver in host.file("/etc/cdi/nvidia.yaml").content_string


def test_gpu_container_sees_the_gpu(host):
    out = host.check_output("docker run --rm --runtime nvidia --gpus all bwfleet-lab/ubuntu2204:latest nvidia-smi -L")
    assert out.startswith("GPU 0: NVIDIA GeForce RTX 5090")


# --- sglang_image / sglang_service
def inspect(host):
    return json.loads(host.check_output("docker inspect sglang-main"))[0]


def test_unit_enabled_and_active(host):
    svc = host.service("sglang-main")
    assert svc.is_enabled and svc.is_running
    unit = host.file("/etc/systemd/system/sglang-main.service").content_string
    assert "Restart=always" in unit and "ExecStartPre=-/usr/bin/docker rm -f sglang-main" in unit
    assert "lab-not-a-real-token" not in unit


def test_container_runs_the_content_tagged_image_with_the_arguments(host):
    info = inspect(host)
    assert info["State"]["Running"]
    image = info["Config"]["Image"]
    assert image.startswith("bwfleet/lab-engine:") and len(image.split(":")[1]) == 12
    assert info["Config"]["Cmd"][:3] == ["/models/tiny-qwen3", "--device", "cpu"]
    assert info["HostConfig"]["Runtime"] == "nvidia"
    assert info["HostConfig"]["ShmSize"] == 1024 ** 3
    record = json.loads(host.file("/etc/sglang/main.json").content_string)
    assert record["image"] == image


def test_secret_file_root_only_and_out_of_docker_inspect(host):
    token = host.file("/etc/sglang/secrets/hf_token")
    assert token.user == "root" and token.mode == 0o600
    assert host.file("/etc/sglang/secrets").mode == 0o700
    info = inspect(host)
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/run/secrets/hf_token"]["RW"] is False
    assert "/root/.cache/huggingface" in mounts
    assert "HF_TOKEN_PATH=/run/secrets/hf_token" in info["Config"]["Env"]
    assert "lab-not-a-real-token" not in json.dumps(info)


def test_api_answers_a_real_completion(host):
    body = json.dumps({"model": "/models/tiny-qwen3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6})
    out = json.loads(host.check_output("curl -s --max-time 60 http://127.0.0.1:8000/v1/chat/completions "
                                       "-H 'content-type: application/json' -H @%s -d '%s'" % (auth_header(host), body)))
    assert out["choices"][0]["message"]["content"].strip()
    assert out["usage"]["completion_tokens"] == 6
