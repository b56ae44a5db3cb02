"""The sglang_service role's inputs, docker run command and unit file, for real.

Rendered by tests/playbooks/render_service.yml (the role's own validate, command and template
tasks; no service manager), then the unit's ExecStart is run as systemd would run it, on this
machine's Docker engine, with the tests' fake SGLang server as the engine behind the front."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from helpers import ROOT
from servers.control import free_port
from servers.front import FAKE, FRONT, KEY

PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
RENDER = os.path.join(ROOT, "tests", "playbooks", "render_service.yml")
BASE_IMAGE = "bwfleet-lab/ubuntu2204:latest"
IMAGE = "bwfleet-authtest/engine:fake-sglang"


def render(tmp_path, extra, verbose=False):
    out = tmp_path / "render"
    out.mkdir(exist_ok=True)
    cmd = [PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
           "-e", "render_dir=" + str(out), "-e", json.dumps(extra), RENDER] + (["-vvv"] if verbose else [])
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return proc.returncode, " ".join(text.split()), None
    return 0, text, json.loads((out / "render.json").read_text())


def exec_start(unit_text):
    """ExecStart as systemd reads it: quotes removed, $$ and %% unescaped."""
    line = [l for l in unit_text.splitlines() if l.startswith("ExecStart=")][0][len("ExecStart="):]
    return [a.replace("$$", "$").replace("%%", "%") for a in shlex.split(line)]


# --- refused input: the role's checks, with the fix named, and nothing rendered
@pytest.mark.parametrize(
    "extra,expected",
    [
        ({"sglang_service_bind_address": "0.0.0.0"},
         "sglang_service_bind_address 0.0.0.0 would publish the API beyond this host without authentication"),
        ({"sglang_service_bind_address": "10.0.0.5", "sglang_service_api_key": "k" * 31},
         "sglang_service_api_key must be at least 32 visible ASCII characters"),
        ({"sglang_service_api_key": "a key with spaces in it, long enough to pass"},
         "sglang_service_api_key must be at least 32 visible ASCII characters without spaces"),
        ({"sglang_service_bind_address": "localhost"}, "sglang_service_bind_address must be an IP address"),
        ({"sglang_service_instances": [{"name": "main", "port": 70000}]}, "ports must be whole numbers from 1 to 65535: instance main: 70000"),
        ({"sglang_service_instances": [{"name": "main", "port": 0}]}, "instance main: 0"),
        ({"sglang_service_container_port": 30000}, "different from each other"),
        ({"sglang_service_instances": [{"name": "main", "port": 8000, "gpus": ""}]}, 'got main: gpus ""'),
        ({"sglang_service_instances": [{"name": "main", "port": 8000, "gpus": "ALL"}]}, 'got main: gpus "ALL"'),
        ({"sglang_service_instances": [{"name": "main", "port": 8000, "gpus": "0, 1"}]}, 'got main: gpus "0, 1"'),
        ({"sglang_service_instances": [{"name": "main", "port": 8000, "gpus": "0,0"}]}, 'got main: gpus "0,0"'),
        ({"sglang_service_instances": [{"name": "a", "port": 8000, "gpus": "0,1"}, {"name": "b", "port": 8001, "gpus": [1]}]},
         "two instances may not share a GPU (\"all\" takes every GPU): a and b (GPU 1)"),
        ({"sglang_service_instances": [{"name": "a", "port": 8000}, {"name": "b", "port": 8001, "gpus": "0"}]},
         "a and b (GPU 0)"),
        ({"sglang_service_instances": [{"name": "a", "port": 8000, "gpus": "0"}, {"name": "b", "port": 8000, "gpus": "1"}]},
         "unique ports"),
        ({"sglang_service_entrypoint": "python3 -m sglang.launch_server"}, "sglang_service_entrypoint lists of strings"),
        ({"sglang_service_front_open_paths": ["/health,/metrics"]}, "sglang_service_front_open_paths must be a list of plain paths"),
    ],
)
def test_refused_input_names_the_fix(tmp_path, extra, expected):
    rc, out, _ = render(tmp_path, extra)
    assert rc != 0
    assert expected in out, out[-3000:]
    assert "changed=0" in out
    assert not (tmp_path / "render" / "render.json").exists()


def test_defaults_bind_loopback_without_a_key(tmp_path):
    rc, out, doc = render(tmp_path, {})
    assert rc == 0, out[-3000:]
    argv = doc["command"]["main"]
    assert doc["bind"] == "127.0.0.1" and "127.0.0.1:8000:8000" in argv
    assert "--entrypoint" not in argv
    assert doc["check_host"] == "127.0.0.1"


@pytest.mark.parametrize(
    "bind,published,check_host",
    [("0.0.0.0", "0.0.0.0:8000:8000", "127.0.0.1"), ("10.0.0.5", "10.0.0.5:8000:8000", "10.0.0.5"),
     ("::", "[::]:8000:8000", "[::1]"), ("fd00::5", "[fd00::5]:8000:8000", "[fd00::5]")],
)
def test_gates_follow_the_bind_address(tmp_path, bind, published, check_host):
    rc, out, doc = render(tmp_path, {"sglang_service_api_key": KEY, "sglang_service_bind_address": bind})
    assert rc == 0, out[-3000:]
    assert published in doc["command"]["main"] and doc["check_host"] == check_host


def test_gpu_lists_and_none(tmp_path):
    rc, out, doc = render(tmp_path, {"sglang_service_instances": [
        {"name": "a", "port": 8000, "gpus": [0, 1]}, {"name": "b", "port": 8001, "gpus": 2},
        {"name": "c", "port": 8002, "gpus": "none"}]})
    assert rc == 0, out[-3000:]
    assert doc["gpus"] == {"a": "0,1", "b": "2", "c": "none"}
    a, b, c = (doc["command"][n] for n in "abc")
    assert a[a.index("--gpus") + 1] == '"device=0,1"' and "--env=NVIDIA_VISIBLE_DEVICES=0,1" in a
    assert b[b.index("--gpus") + 1] == '"device=2"'
    # The image sets NVIDIA_VISIBLE_DEVICES=all: without an override the nvidia runtime hands "none" every GPU.
    assert "--gpus" not in c and "--env=NVIDIA_VISIBLE_DEVICES=void" in c


def test_the_key_is_not_in_the_unit_the_command_or_verbose_output(tmp_path):
    rc, out, doc = render(tmp_path, {"sglang_service_api_key": KEY}, verbose=True)
    assert rc == 0, out[-3000:]
    assert KEY not in out
    assert KEY not in json.dumps(doc)
    unit = (tmp_path / "render" / "sglang-main.service").read_text()
    assert KEY not in unit and "API key required" in unit
    argv = doc["command"]["main"]
    assert argv[argv.index("--entrypoint") + 1] == "/opt/bwfleet/sglang_auth_front.py"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "30000"]  # the engine: container loopback only


# --- the rendered unit's command on a real Docker engine
def _docker_ok():
    return shutil.which("docker") and subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def engine_image(tmp_path_factory):
    if not _docker_ok():
        pytest.skip("needs the Docker engine and the lab base image (make lab-image)")
    ctx = tmp_path_factory.mktemp("image")
    shutil.copy(FAKE, ctx / "fake_sglang.py")
    # Like the serving images: the engine is the entrypoint, and the image asks for every GPU.
    (ctx / "Dockerfile").write_text(
        "FROM %s\nCOPY fake_sglang.py /opt/engine/fake_sglang.py\nENV NVIDIA_VISIBLE_DEVICES=all\n"
        'ENTRYPOINT ["python3", "/opt/engine/fake_sglang.py"]\n' % BASE_IMAGE)
    subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(ctx)], check=True, capture_output=True, timeout=300)
    return IMAGE


class Unit:
    """One instance rendered by the role, run the way systemd runs ExecStart."""

    def __init__(self, tmp_path, image):
        self.name = "bwfleet-authtest-" + uuid.uuid4().hex[:8]
        self.port = free_port()
        self.secrets = tmp_path / "secrets"
        self.secrets.mkdir(mode=0o700)
        self.key_file = self.secrets / "api_key"
        rc, out, doc = render(tmp_path, {
            "sglang_service_api_key": KEY, "sglang_service_bind_address": "127.0.0.1",
            "sglang_service_image_ref": image, "sglang_service_runtime": "", "sglang_service_container_prefix": "",
            "sglang_service_instances": [{"name": self.name, "port": self.port, "gpus": "none"}],
            "sglang_service_entrypoint": ["python3", "/opt/engine/fake_sglang.py"],
            "sglang_service_args": ["--lifetime", "300", "--model", "authtest"],
            "sglang_service_listen_args": ["--port", "30000"],  # the fake listens on 127.0.0.1 only
            "sglang_service_secrets_dir": str(self.secrets), "sglang_service_front_path": FRONT,
            "sglang_service_hf_cache_dir": str(tmp_path / "hf"), "sglang_service_shm_size": "64m",
            "sglang_service_ulimits": []})
        assert rc == 0, out[-3000:]
        self.unit = (tmp_path / "render" / (self.name + ".service")).read_text()
        self.argv = exec_start(self.unit)
        self.log = tmp_path / (self.name + ".log")
        self.proc = None

    def write_key(self, text=KEY):
        self.key_file.write_text(text)
        self.key_file.chmod(0o600)

    def start(self):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)  # ExecStartPre
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        return self

    def output(self):
        return self.log.read_text(errors="replace")

    def get(self, path, key=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path))
        if key:
            req.add_header("Authorization", "Bearer " + key)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_health(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("no health: " + self.output())

    def stop(self):
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        if self.proc and self.proc.poll() is None:
            self.proc.wait(30)


@pytest.fixture
def unit(tmp_path, engine_image):
    u = Unit(tmp_path, engine_image)
    yield u
    u.stop()


@pytest.mark.lab
def test_key_end_to_end_in_a_container(unit):
    unit.write_key()
    unit.start().wait_health()
    assert unit.get("/v1/models")[0] == 401
    assert unit.get("/v1/models", key=KEY[:-1] + "#")[0] == 401
    status, body = unit.get("/v1/models", key=KEY)
    assert status == 200 and json.loads(body)["data"][0]["id"] == "authtest"

    info = subprocess.run(["docker", "inspect", unit.name], capture_output=True, text=True, check=True).stdout
    doc = json.loads(info)[0]
    assert KEY not in info
    assert doc["Config"]["Cmd"] == ["--lifetime", "300", "--model", "authtest", "--port", "30000"]
    assert doc["Config"]["Entrypoint"] == ["/opt/bwfleet/sglang_auth_front.py"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in doc["Config"]["Env"] and "NVIDIA_VISIBLE_DEVICES=all" not in doc["Config"]["Env"]
    mounts = {m["Destination"]: m for m in doc["Mounts"]}
    assert mounts["/run/secrets/sglang_api_key"]["RW"] is False
    logs = subprocess.run(["docker", "logs", unit.name], capture_output=True, text=True).stdout
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    inside = subprocess.run(["docker", "exec", unit.name, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
                            capture_output=True, text=True).stdout
    assert "fake_sglang.py" in inside and "sglang_auth_front.py" in ps  # the processes are there to be seen
    for place in (logs, ps, inside, unit.unit, unit.output()):
        assert KEY not in place


@pytest.mark.lab
@pytest.mark.parametrize("state,expected", [("missing", "bind source path does not exist"), ("empty", "is empty"),
                                            ("directory", "is a directory")])
def test_fails_closed_without_the_key_file(unit, state, expected):
    if state == "empty":
        unit.write_key("")
    elif state == "directory":
        unit.key_file.mkdir()
    unit.start()
    rc = unit.proc.wait(60)
    assert rc != 0 and expected in unit.output(), unit.output()
    if state != "missing":
        assert rc == 78 and "refusing to start" in unit.output()
    assert not os.path.isdir(unit.key_file) or state == "directory"  # --mount never creates a directory
    with pytest.raises(OSError):
        unit.get("/v1/models")
