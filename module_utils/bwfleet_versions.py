# -*- coding: utf-8 -*-
# Copyright: bw-fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dotted-version helpers shared by the bw-fleet modules.

Plain functions without Ansible imports, so unit tests call them directly.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^\d+$")


def parse_dotted(text):
    """'570.124.06' -> (570, 124, 6). Raises ValueError on anything else.

    String comparison gets these wrong ("9.0" > "12.0", "570.9" > "570.124"),
    which is exactly the mistake that lets an old driver through.
    """
    if not isinstance(text, str):
        text = str(text)
    parts = text.strip().split(".")
    if not parts or not all(_NUMBER.match(p) for p in parts):
        raise ValueError("not a dotted version: %r" % text)
    return tuple(int(p) for p in parts)


def compare(left, right):
    """-1, 0 or 1, comparing dotted versions numerically; missing parts are 0."""
    a, b = list(parse_dotted(left)), list(parse_dotted(right))
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


def at_least(version, floor):
    return compare(version, floor) >= 0


def sm_name(capability):
    """'12.0' -> 'sm_120'; '9.0' -> 'sm_90' (torch's arch-list spelling)."""
    parts = parse_dotted(capability) + (0,)
    return "sm_%d%d" % (parts[0], parts[1])
