"""A progress bar on stderr for management commands (quiet when not a terminal or -v 0)."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(verbosity: int, total: int, description: str):
    disable = verbosity == 0
    with tqdm(total=total, desc=description, unit="img", disable=disable, file=sys.stderr,
              mininterval=0.5, dynamic_ncols=True) as bar:
        yield bar.update
