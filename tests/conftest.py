"""Test set-up: module_utils importable as plain modules, tests/ importable for helpers."""

import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "module_utils"))
sys.path.insert(0, TESTS)
