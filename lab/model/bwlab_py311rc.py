# LAB ONLY, installed into the lab serving image with a .pth line (inventories/lab: sglang_image_extra_run).
# Ubuntu 22.04's python3.11 is 3.11.0~rc1, which predates sys.get_int_max_str_digits (3.11.0 final);
# torch 2.13 wraps both functions, with their signatures, when it imports torch._dynamo. The lab uses
# python3.11 because this machine's only CPU build of torch is cp311 (docs/LAB.md); the real image
# runs Ubuntu's python3.10 (3.10.12 has them).
from __future__ import annotations

import sys

if not hasattr(sys, "get_int_max_str_digits"):
    def get_int_max_str_digits() -> int:
        return 0

    def set_int_max_str_digits(maxdigits: int) -> None:
        return None

    sys.get_int_max_str_digits = get_int_max_str_digits
    sys.set_int_max_str_digits = set_int_max_str_digits
