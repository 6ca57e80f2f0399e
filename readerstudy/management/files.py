"""File handling shared by the report commands: read a UTF-8 text file with a clear error, write
a folder of report files so that a failure never leaves half of it behind."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from django.core.management.base import CommandError


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``, or a CommandError that says where it is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CommandError(f"{path} is not UTF-8 text:\nline {line}: byte 0x{data[exc.start]:02x} is not UTF-8 "
                           "(save the file as UTF-8)") from None


def parse_file(path: Path, parse, invalid: type[ValueError]):
    """``parse(text of path)``, or a CommandError naming every problem that ``invalid`` lists
    (its ``errors``: line numbers and messages); nothing is written either way."""
    text = read_text(path)
    try:
        return parse(text)
    except invalid as exc:
        raise refused(path, exc, exc.errors) from None


def refused(path: Path, exc: ValueError, errors: list) -> CommandError:
    """The CommandError for a refused input file: how many problems, every one of them, nothing written."""
    count = len(errors)
    return CommandError(f"{path} was refused ({count} problem{'s' if count != 1 else ''}); nothing was "
                        f"written:\n{exc}")


def write_atomically(out: Path, write) -> list[Path]:
    """Call ``write(folder)`` on a staging folder next to ``out``, then move its files into ``out``.

    A new ``out`` appears in one rename; into an existing one each file is moved with
    ``os.replace``, so every file is whole, old or new. On failure the staging folder goes.
    """
    out = out.absolute()
    staging = out.parent / f".{out.name}.staging-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        names = [path.name for path in write(staging)]
        if not out.exists():
            try:
                staging.rename(out)
            except OSError:  # created meanwhile by someone else: move the files in instead
                pass
        if staging.exists():
            out.mkdir(exist_ok=True)
            for name in names:
                os.replace(staging / name, out / name)
    except OSError as exc:
        raise CommandError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]
