"""Test settings: the product's settings with a separate var/ folder.

A separate folder keeps the tests' SQLite database, media and filesystem broker apart from a
running development instance (whose worker must never pick up a test's task), and one folder
per test run keeps two runs at the same time (two engineers, or CI jobs) apart from each other.
Worker processes started by the tests inherit the variable and so use the same folder.
"""
from __future__ import annotations

import os
from pathlib import Path

TEST_VAR_ROOT = Path(__file__).resolve().parent.parent / "var" / "test"
os.environ.setdefault("LESIONSEARCH_VAR_DIR", str(TEST_VAR_ROOT / f"run-{os.getpid()}"))

from lesionsearch.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
