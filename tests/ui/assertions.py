"""Playwright's ``expect`` for the browser test modules: without playwright they are skipped (failed in CI).

Kept apart from the fixtures plugin, which every test session loads, so a missing playwright only touches
the browser tests.
"""

from __future__ import annotations

import os

import pytest

try:
    from playwright.sync_api import expect
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("Python package playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

__all__ = ["expect"]
