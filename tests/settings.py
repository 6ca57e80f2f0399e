"""Test settings: the product's settings with a separate var/ folder.

A separate folder keeps the tests' SQLite database, media and filesystem broker apart from a
running development instance (whose worker must never pick up a test's task).
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("LESIONSEARCH_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from lesionsearch.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
