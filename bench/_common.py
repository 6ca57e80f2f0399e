"""What the benchmark scripts that set up a private instance share."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def timed_setup(var: Path, what: str, set_up: Callable[[], T]) -> T:
    """Run ``set_up`` (a private instance's setup in ``var``), saying what it sets up and how long it took;
    returns what ``set_up`` returns."""
    print(f"Setting up a private instance in {var} ({what}) ...", flush=True)
    started = time.monotonic()
    result = set_up()
    print(f"  ready in {time.monotonic() - started:.0f} s", flush=True)
    return result
