"""Tools some tests need beyond Python (a browser, Docker): skip with one line when missing.

On a laptop a missing tool skips the tests that need it, saying what is missing and how to get it.
With `CI=true` (GitHub Actions sets it) every test must run, so a missing tool fails them instead.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """Whether this run is CI's, where nothing may be skipped."""
    return os.environ.get("CI", "").lower() == "true"


def binary(*names: str, how: str) -> str:
    """The first of `names` on PATH; else skip (fail under CI) saying `how` to get it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{names[0]} not found on PATH; {how}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: this test must run)", pytrace=False)
    pytest.skip(message)
