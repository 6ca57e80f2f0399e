"""Reader-study report from a responses CSV: Table 4.II, confusion matrices, the MRMC analysis of
Task 2 vs Task 1, per-reader statistics, files.

The input is read and checked in full before anything touches the disk: a malformed file
writes nothing, not even the output folder. The files are then written into a staging folder
next to ``--out`` and moved in, so a crash never leaves half a report behind. No database is
needed; the export is written to the audit log when there is one (the command says when not).
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from lesionsearch.audit import services as audit
from readerstudy.analysis.endpoints import CROSSED, NESTED
from readerstudy.analysis.report import build_report
from readerstudy.analysis.responses import ResponsesInvalid, parse_responses
from readerstudy.analysis.viewing import ViewsInvalid, parse_views
from readerstudy.analysis.writers import FORMATS, check_formats, summary_lines, write_report
from readerstudy.management.files import parse_file, write_atomically


DESIGNS = (CROSSED, NESTED)


class Command(BaseCommand):
    help = (
        "Analyse a reader study's responses CSV (reader,case,truth,task,answer,confidence"
        "[,majority_vote][,seconds]) and write the report files (thesis Table 4.II, confusion matrices, "
        "per-class figures, the multi-reader multi-case analysis of Task 2 vs Task 1 for accuracy and two AUC "
        "endpoints, per-reader McNemar and Wilcoxon, kappa, iMRMC and MRMCaov input) into a folder. "
        "A malformed file is refused with every offending line listed, and nothing is written."
    )
    requires_system_checks = []  # works without a database

    def add_arguments(self, parser):
        parser.add_argument("--responses", type=Path, required=True, metavar="RESP.csv",
                            help="the responses CSV (UTF-8, header on line 1)")
        parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                            help="folder for the report files (created if missing; files of the same names "
                                 "are replaced, others are left alone)")
        parser.add_argument("--format", default=",".join(FORMATS), dest="formats", metavar="F1,F2",
                            help=f"comma-separated formats to write (default: all of {','.join(FORMATS)})")
        parser.add_argument("--views", type=Path, default=None, metavar="VIEWS.csv",
                            help="the Task 2 neighbour enlargements (views.csv of an export: reader,case,task,rank,"
                                 "neighbour_class,seconds_after_shown,seconds_open) for 'what readers looked at'")
        parser.add_argument("--design", choices=DESIGNS, default=None,
                            help="the study's design, when known: crossed (every reader the same cases; the MRMC "
                                 "analysis then takes the cases every reader read in both tasks) or nested (each "
                                 "reader their own cases); default: found from the reads")

    def handle(self, *args, responses: Path, out: Path, formats: str, design: str | None, views: Path | None,
               **options):
        try:
            formats = check_formats(name.strip() for name in formats.split(",") if name.strip())
        except ValueError as exc:
            raise CommandError(f"--format: {exc}") from None
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out}: exists and is not a folder")
        reads = parse_file(responses, parse_responses, ResponsesInvalid)
        looked = parse_file(views, parse_views, ViewsInvalid) if views is not None else None
        try:
            report = build_report(reads, design=design, views=looked)
        except ValueError as exc:  # views that do not fit the reads (checked together)
            raise CommandError(f"{views} does not fit {responses}; nothing was written:\n{exc}") from None
        paths = write_atomically(out, lambda folder: write_report(report, reads, folder, formats=formats,
                                                                  views=looked))
        not_audited = audit.record_if_database(
            audit.Action.STUDY_EXPORT, object_type="responses file", object_id=str(responses.name),
            detail={"responses": str(responses.absolute()), "out": str(out.absolute()),
                    "formats": list(formats), "files": len(paths)})
        for line in summary_lines(report):
            self.stdout.write(line)
        self.stdout.write(f"Wrote {len(paths)} files into {out}: {', '.join(path.name for path in paths)}")
        if not_audited:
            self.stdout.write(f"Not recorded in the audit log: {not_audited}.")
