"""The fast path's comparison: the state document, and what differs from the stamp."""

from bwfleet_state import compare, differences, file_digests, fingerprint, parse_packages, parse_units

# systemctl show -p Id -p ActiveState -p SubState -p InvocationID docker.service sglang-main.service
SYSTEMCTL = """\
Id=docker.service
ActiveState=active
SubState=running
InvocationID=9f0c1d2e3b4a4c5d8e7f6a5b4c3d2e1f

Id=sglang-main.service
ActiveState=failed
SubState=failed
InvocationID=
"""

# dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}\n' (a hold, an install, a removed
# package with its configuration, one dpkg knows but never installed).
DPKG = """\
hi |nvidia-utils-580|580.105.08-0ubuntu1
ii |docker.io|29.1.3-0ubuntu1~22.04.1
rc |nvidia-utils-570|570.195.03-0ubuntu1
un |nvidia-libopencl1-dev|
"""


def test_installed_packages_with_their_holds():
    assert parse_packages(DPKG) == {"nvidia-utils-580": "hi 580.105.08-0ubuntu1", "docker.io": "ii 29.1.3-0ubuntu1~22.04.1"}


def test_units_by_id():
    assert parse_units(SYSTEMCTL) == {"docker.service": "active/running/9f0c1d2e3b4a4c5d8e7f6a5b4c3d2e1f",
                                      "sglang-main.service": "failed/failed/"}


def test_files_directories_and_missing_ones(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a.conf").write_text("a")
    (tmp_path / "single").write_text("b")
    found = file_digests([str(tmp_path / "d"), str(tmp_path / "single"), str(tmp_path / "nothere"), str(tmp_path / "x*.service")])
    assert set(found) == {str(tmp_path / "d" / "sub" / "a.conf"), str(tmp_path / "single"), str(tmp_path / "nothere"),
                          str(tmp_path / "x*.service")}
    assert found[str(tmp_path / "nothere")] == "missing" and found[str(tmp_path / "x*.service")] == "missing"
    assert found[str(tmp_path / "single")] == "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"


def test_a_stamp_of_the_same_state_and_inputs_is_current():
    state = {"files": {"/etc/docker/daemon.json": "ab" * 32}, "units": parse_units(SYSTEMCTL)}
    assert compare({"inputs": "i1", "state": state}, "i1", state, []) == (True, [])


def test_every_kind_of_difference_is_named_without_a_file_digest():
    old = {"files": {"/etc/docker/daemon.json": "ab" * 32, "/etc/sglang/secrets/api_key": "cd" * 32},
           "packages": {"nvidia-utils-580": "hi 580.105.08-0ubuntu1"},
           "units": {"sglang-main.service": "active/running/1"}, "kernel": "5.15.0-160-generic"}
    new = {"files": {"/etc/docker/daemon.json": "ef" * 32, "/etc/cdi/nvidia.yaml": "01" * 32},
           "packages": {"nvidia-utils-580": "ii 580.105.08-0ubuntu1"},
           "units": {"sglang-main.service": "active/running/2"}, "kernel": "5.15.0-161-generic"}
    current, reasons = compare({"inputs": "i1", "state": old}, "i2", new, ["http://127.0.0.1:8000/health_generate answered 503"])
    assert not current
    assert reasons == [
        "this run brings other inputs (variables or the project's code changed)",
        "file /etc/cdi/nvidia.yaml new",
        "file /etc/docker/daemon.json changed",
        "file /etc/sglang/secrets/api_key gone",
        "kernel: 5.15.0-160-generic -> 5.15.0-161-generic",
        "packages nvidia-utils-580: hi 580.105.08-0ubuntu1 -> ii 580.105.08-0ubuntu1",  # someone released the hold
        "units sglang-main.service: active/running/1 -> active/running/2",  # restarted since
        "http://127.0.0.1:8000/health_generate answered 503",
    ]
    assert not any("ab" * 6 in r or "cd" * 6 in r for r in reasons)


def test_no_stamp_is_never_current():
    assert compare(None, "i", {}, []) == (False, ["no record of a run that passed every stage"])


def test_long_lists_are_cut_with_a_count():
    many = {"packages": {"p%02d" % i: "ii 1" for i in range(30)}}
    found = differences({}, many)
    assert len(found) == 21 and found[-1] == "... and 10 more"


def test_fingerprint_ignores_key_order():
    assert fingerprint({"a": 1, "b": {"c": 2, "d": 3}}) == fingerprint({"b": {"d": 3, "c": 2}, "a": 1})
