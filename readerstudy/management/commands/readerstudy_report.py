"""Reader-study report from a responses CSV: Table 4.II, confusion matrices, statistics, files.

The input is read and checked in full before anything touches the disk: a malformed file
writes nothing, not even the output folder. The files are then written into a staging folder
next to ``--out`` and moved in, so a crash never leaves half a report behind.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from lesionsearch.audit import services as audit
from readerstudy.analysis.report import DEFAULT_BOOTSTRAP, build_report
from readerstudy.analysis.responses import ResponsesInvalid, parse_responses
from readerstudy.analysis.writers import FORMATS, check_formats, summary_lines, write_report


class Command(BaseCommand):
    help = (
        "Analyse a reader study's responses CSV (reader,case,truth,task,answer,confidence"
        "[,majority_vote][,seconds]) and write the report files (thesis Table 4.II, confusion matrices, "
        "per-class figures, McNemar, bootstrap CI, Wilcoxon, kappa, MRMC input) into a folder. "
        "A malformed file is refused with every offending line listed, and nothing is written."
    )

    def add_arguments(self, parser):
        parser.add_argument("--responses", type=Path, required=True, metavar="RESP.csv",
                            help="the responses CSV (UTF-8, header on line 1)")
        parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                            help="folder for the report files (created if missing; files of the same names "
                                 "are replaced, others are left alone)")
        parser.add_argument("--format", default=",".join(FORMATS), dest="formats", metavar="F1,F2",
                            help=f"comma-separated formats to write (default: all of {','.join(FORMATS)})")
        parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
        parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                            help=f"bootstrap resamples of the accuracy difference (default {DEFAULT_BOOTSTRAP})")

    def handle(self, *args, responses: Path, out: Path, formats: str, seed: int, bootstrap: int, **options):
        try:
            formats = check_formats(name.strip() for name in formats.split(",") if name.strip())
        except ValueError as exc:
            raise CommandError(f"--format: {exc}") from None
        if bootstrap < 1:
            raise CommandError("--bootstrap: needs at least 1 resample")
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out}: exists and is not a folder")
        reads = read_responses(responses)
        report = build_report(reads, seed=seed, n_bootstrap=bootstrap)
        paths = write_atomically(out, lambda folder: write_report(report, reads, folder, formats=formats))
        audit.record(audit.Action.STUDY_EXPORT, object_type="responses file", object_id=str(responses.name),
                     detail={"responses": str(responses.absolute()), "out": str(out.absolute()),
                             "formats": list(formats), "files": len(paths)})
        for line in summary_lines(report):
            self.stdout.write(line)
        self.stdout.write(f"Wrote {len(paths)} files into {out}: {', '.join(path.name for path in paths)}")


def read_responses(path: Path):
    """The reads of a responses file, or a CommandError naming every problem (with line numbers)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CommandError(f"{path} is not UTF-8 text:\nline {line}: byte 0x{data[exc.start]:02x} is not UTF-8 "
                           "(save the file as UTF-8)") from None
    try:
        return parse_responses(text)
    except ResponsesInvalid as exc:
        count = len(exc.errors)
        raise CommandError(f"{path} was refused ({count} problem{'s' if count != 1 else ''}); nothing was "
                           f"written:\n{exc}") from None


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
