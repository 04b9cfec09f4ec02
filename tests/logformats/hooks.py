"""Trigger hooks used by the tests (loaded by the node by file path)."""

from __future__ import annotations

import os


def flaky(change):
    """Identity, but raises while the file named by REPLIKV_TEST_HOOK_FAIL exists."""
    flag = os.environ.get("REPLIKV_TEST_HOOK_FAIL", "")
    if flag and os.path.exists(flag):
        raise RuntimeError("the test hook fails on purpose")
    return change


def upper(change):
    """A transform: string values upper-cased, hashes keep only the 'name' and 'email' fields."""
    if change.op != "put":
        return change
    if change.type == "string":
        return change.with_value(change.value.upper())
    if change.type == "hash":
        return change.with_value({k: v for k, v in change.value.items() if k in ("name", "email")})
    return change


def flaky_upper(change):
    return upper(flaky(change))
