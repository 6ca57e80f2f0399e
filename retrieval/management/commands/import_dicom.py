from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval.dicom_labels import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from retrieval.ham10000 import MetadataError, count_rows
from retrieval.management.commands._progress import progress_bar
from retrieval.management.commands.import_ham10000 import write_report
from retrieval.services.dicom_library import DEFAULT_COLLECTION, dicom_library_import


class Command(BaseCommand):
    help = (
        "Import diagnosed DICOM images (single-frame VL Photographic or Dermoscopic Photography images, anywhere "
        f"under DIRECTORY) with a labels CSV keyed by SOP Instance UID (columns {', '.join(REQUIRED_COLUMNS)}; "
        f"optional {', '.join(OPTIONAL_COLUMNS)}). Only the pixels and the labels are stored, never the DICOM "
        "header; a case's image_id is a digest of its UID. Bad rows are reported with their line numbers and "
        "skipped; re-running adds nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="folder holding the DICOM files (any depth, any names)")
        parser.add_argument("--labels", type=Path, required=True, help="labels CSV keyed by sop_instance_uid")
        parser.add_argument("--collection", default=DEFAULT_COLLECTION,
                            help=f"library collection (default {DEFAULT_COLLECTION})")
        parser.add_argument("--strict", action="store_true", help="exit with status 1 when any row was skipped")

    def handle(self, *args, directory: Path, labels: Path, collection: str, strict: bool, **options):
        if not labels.is_file():
            raise CommandError(f"labels file {labels} not found")
        try:
            with progress_bar(options["verbosity"], count_rows(labels), "Importing") as advance:
                report = dicom_library_import(directory=directory, labels=labels, collection=collection,
                                              progress=advance)
        except MetadataError as exc:
            raise CommandError(f"{exc}. Nothing was imported.") from None
        write_report(self, report, collection)
        if strict and report.errors:
            raise CommandError(f"{len(report.errors)} row(s) skipped (--strict)")
