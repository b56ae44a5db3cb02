"""site.yml refuses the service's bad inputs in its first (read-only) stage, before the driver,
Docker or anything else is touched: sglang_service's checks run from the defaults it imports there."""

import pytest

from test_bad_inventory import LOCAL, run

KEY_32 = "k" * 32


@pytest.mark.parametrize(
    "extra,expected",
    [
        ('{"sglang_service_bind_address": "0.0.0.0"}', "would publish the API beyond this host without authentication"),
        ('{"sglang_service_bind_address": "0.0.0.0", "sglang_service_api_key": "%s"}' % KEY_32[:-1],
         "sglang_service_api_key must be at least 32 visible ASCII characters"),
        ('{"sglang_service_instances": [{"name": "main", "port": 70000}]}', "ports must be whole numbers from 1 to 65535"),
        ('{"sglang_service_instances": [{"name": "main", "port": 8000, "gpus": "0, 1"}]}', 'got main: gpus "0, 1"'),
        ('{"sglang_service_instances": [{"name": "a", "port": 8000, "gpus": "0"}, {"name": "b", "port": 8001, "gpus": "0"}]}',
         "two instances may not share a GPU"),
    ],
)
def test_service_inputs_refused_in_preflight(tmp_path, extra, expected):
    rc, out = run(LOCAL, "-e", extra, tmp_path=tmp_path)
    assert rc != 0
    assert expected in out, out[-2000:]
    assert "changed=0" in out
    assert KEY_32[:-1] not in out


def test_a_key_opens_the_bind(tmp_path):
    rc, out = run(LOCAL, "-e", '{"sglang_service_bind_address": "0.0.0.0", "sglang_service_api_key": "%s"}' % KEY_32,
                  tmp_path=tmp_path)
    # Preflight still fails on this machine (no GPU), but not on the service's inputs, and shows no key.
    assert "Service | A non-loopback API has a key" in out and "would publish the API" not in out
    assert KEY_32 not in out
