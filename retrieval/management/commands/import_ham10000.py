from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval.ham10000 import MetadataError, count_rows
from retrieval.management.commands._progress import progress_bar
from retrieval.services import ImportReport, library_import

DEFAULT_COLLECTION = "ham10000"


class Command(BaseCommand):
    help = (
        "Import a folder in the HAM10000 layout (HAM10000_metadata.csv + <image_id>.jpg, possibly in part "
        "folders). Bad rows are reported with their line numbers and skipped; re-running adds nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="folder holding the images (and, by default, the CSV)")
        parser.add_argument("--metadata", type=Path, help="metadata CSV (default: DIRECTORY/HAM10000_metadata.csv)")
        parser.add_argument("--masks", type=Path, help="folder of <image_id>_segmentation.png masks (default: DIRECTORY)")
        parser.add_argument("--collection", default=DEFAULT_COLLECTION, help=f"library collection (default {DEFAULT_COLLECTION})")
        parser.add_argument("--strict", action="store_true", help="exit with status 1 when any row was skipped")

    def handle(self, *args, directory: Path, metadata: Path | None, masks: Path | None, collection: str, strict: bool, **options):
        metadata = metadata or directory / "HAM10000_metadata.csv"
        if not metadata.is_file():
            raise CommandError(f"metadata file {metadata} not found")
        try:
            with progress_bar(options["verbosity"], count_rows(metadata), "Importing") as advance:
                report = library_import(directory=directory, metadata=metadata, collection=collection,
                                        masks=masks, progress=advance)
        except MetadataError as exc:
            raise CommandError(f"{exc}. Nothing was imported.") from None
        write_report(self, report, collection)
        if strict and report.errors:
            raise CommandError(f"{len(report.errors)} row(s) skipped (--strict)")


def write_report(command: BaseCommand, report: ImportReport, collection: str) -> None:
    for error in report.errors:
        command.stderr.write(f"skipped {error}")
    for reason, counts in report.not_imported.items():
        listed = "; ".join(f"{value!r} {count}" for value, count in sorted(counts.items()))
        command.stdout.write(f"Not imported, {reason}: {listed}.")
    if report.imported == 0 and not report.errors and report.already_present:
        command.stdout.write(f"Nothing to add: all {report.already_present} images are already in {collection!r}.")
    left_out = f", {report.left_out} not imported by rule" if report.left_out else ""
    command.stdout.write(
        f"Summary for {collection!r}: {report.total_rows} rows read, {report.imported} imported, "
        f"{report.already_present} already present, {report.skipped} skipped{left_out}."
    )
