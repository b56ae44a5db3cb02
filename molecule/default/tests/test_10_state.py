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


def test_driver_branch_installed_and_held(host):
    pkg = host.package("nvidia-driver-570-open")
    assert pkg.is_installed
    assert pkg.version.startswith("570.")
    assert "hold" in host.check_output("dpkg --get-selections nvidia-driver-570-open")


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.mode == 0o644
    assert "blacklist nouveau" in conf.content_string and "options nouveau modeset=0" in conf.content_string


def test_loaded_module_matches_the_installed_driver(host):
    installed = host.package("nvidia-driver-570-open").version.split("-")[0]
    loaded = host.file("/run/bwlab/nvidia/version").content_string
    assert "Open Kernel Module" in loaded and installed in loaded
    assert installed in host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader")


def test_persistence_daemon_enabled_and_running(host):
    svc = host.service("nvidia-persistenced")
    assert svc.is_enabled and svc.is_running


def test_nvidia_smi_presents_an_rtx_5090(host):
    line = host.check_output("nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits")
    assert line == "NVIDIA GeForce RTX 5090, 12.0, 32607"


# --- docker
def test_docker_running_with_merged_daemon_json(host):
    assert host.service("docker").is_enabled and host.service("docker").is_running
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-opts"] == {"max-file": "3", "max-size": "100m"}
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"  # added by nvidia-ctk, kept by the merge
    assert host.package("python3-docker").is_installed


# --- nvidia_container_toolkit
@pytest.mark.parametrize("name", ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                                  "libnvidia-container1"])
def test_toolkit_pinned_not_newest_and_held(host, name):
    # The lab repository also offers 1.18.0-1: the pin, not apt's choice, decided.
    assert host.package(name).version == "1.17.8-1"
    assert "hold" in host.check_output("dpkg --get-selections %s" % name)


def test_cdi_spec_matches_the_driver(host):
    driver = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    assert "libcuda.so.%s" % driver in host.file("/etc/cdi/nvidia.yaml").content_string


def test_gpu_container_sees_the_gpu(host):
    out = host.check_output("docker run --rm --runtime nvidia --gpus all bwfleet-lab/debian12:latest nvidia-smi -L")
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
