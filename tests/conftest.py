"""Test set-up: module_utils importable as plain modules, tests/ importable for helpers."""

import os
import sys

import ansible.module_utils

TESTS = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(os.path.dirname(TESTS), "module_utils")
sys.path.insert(0, MODULE_UTILS)
sys.path.insert(0, TESTS)
# module_utils that import each other do so as Ansible ships them (ansible.module_utils.X):
# let that name resolve to this checkout's module_utils/, as ansible.cfg's module_utils does.
if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)
