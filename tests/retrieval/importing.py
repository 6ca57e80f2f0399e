"""Helpers of the import command tests (import_ham10000, import_isic, import_dicom): running a
command quietly, the files it stored, and its skipped-row lines."""
from __future__ import annotations

from io import StringIO
from pathlib import Path

from django.core.management import call_command


def run_command(name: str, *args: str, **kwargs) -> tuple[str, str]:
    """Run the management command ``name`` at verbosity 0: what it wrote to stdout and to stderr."""
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err, verbosity=0, **kwargs)
    return out.getvalue(), err.getvalue()


def stored_files(media_root: Path) -> list[Path]:
    """Every file under ``media_root``, relative to it, sorted."""
    return sorted(p.relative_to(media_root) for p in media_root.rglob("*") if p.is_file())


def assert_skipped(err: str, expected: list[str]) -> None:
    """``err`` is one ``skipped <message>`` line per expected message, in order (each line may go on)."""
    lines = err.strip().splitlines()
    assert len(lines) == len(expected)
    for line, message in zip(lines, expected):
        assert line.startswith(f"skipped {message}"), (line, message)
