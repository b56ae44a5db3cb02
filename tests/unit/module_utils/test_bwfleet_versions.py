import pytest

from bwfleet_versions import at_least, compare, parse_dotted, sm_name


@pytest.mark.parametrize(
    "left,right,expected",
    [
        ("9.0", "12.0", -1),  # a string compare says 9.0 > 12.0
        ("12.0", "12.0", 0),
        ("12", "12.0", 0),
        ("570.9", "570.124.06", -1),  # and 570.9 > 570.124 as strings
        ("570.124.06", "570.26", 1),
        ("580.159.04", "570.26", 1),
        ("535.247.01", "570.26", -1),
    ],
)
def test_compare_is_numeric(left, right, expected):
    assert compare(left, right) == expected


def test_at_least_floor():
    assert at_least("570.26", "570.26")
    assert not at_least("570.9", "570.26")


@pytest.mark.parametrize("bad", ["", "abc", "12.x", "1..2", "v570", None])
def test_parse_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_dotted(bad)


@pytest.mark.parametrize("cap,sm", [("12.0", "sm_120"), ("9.0", "sm_90"), ("8.6", "sm_86"), ("12", "sm_120")])
def test_sm_name(cap, sm):
    assert sm_name(cap) == sm
