from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from retrieval import isic
from retrieval.ham10000 import MetadataError, count_rows
from retrieval.management.commands._progress import progress_bar
from retrieval.management.commands.import_ham10000 import write_report
from retrieval.services.isic_library import DEFAULT_COLLECTIONS, isic_layout, isic_library_import


class Command(BaseCommand):
    help = (
        f"Import an ISIC folder: the 2019 challenge files ({isic.CHALLENGE_GROUND_TRUTH}, {isic.CHALLENGE_METADATA}, "
        f"images in {isic.CHALLENGE_IMAGES}/ or the folder) or an isic-cli archive export ({isic.ARCHIVE_METADATA} + "
        "<isic_id>.jpg). Diagnoses map onto the seven classes by the default map or --class-map; diagnoses with no "
        "class and images that are not dermoscopic are counted and left out. Attribution and licence are kept per "
        "case. Bad rows are reported with their line numbers and skipped; re-running adds nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="the ISIC folder")
        parser.add_argument("--layout", choices=isic.LAYOUTS, default=isic.AUTO,
                            help="auto (default: told by the files), challenge2019 or archive")
        parser.add_argument("--class-map", type=Path, dest="class_map",
                            help="CSV 'diagnosis,class' over the default map (class: a class code, or none)")
        parser.add_argument("--collection", help="library collection (default: " + ", ".join(
            f"{name} for {layout}" for layout, name in DEFAULT_COLLECTIONS.items()) + ")")
        parser.add_argument("--strict", action="store_true", help="exit with status 1 when any row was skipped")

    def handle(self, *args, directory: Path, layout: str, class_map: Path | None, collection: str | None,
               strict: bool, **options):
        directory = Path(directory)
        class_map = Path(class_map) if class_map else None  # call_command passes options through untyped
        if class_map is not None and not class_map.is_file():
            raise CommandError(f"class map {class_map} not found")
        try:
            layout = isic_layout(directory=directory, layout=layout)
            collection = collection or DEFAULT_COLLECTIONS[layout]
            total = count_rows(isic.rows_file(directory, layout))
            with progress_bar(options["verbosity"], total, "Importing") as advance:
                report = isic_library_import(directory=directory, layout=layout, collection=collection,
                                             class_map=class_map, progress=advance)
        except MetadataError as exc:
            raise CommandError(f"{exc}. Nothing was imported.") from None
        self.stdout.write(f"Layout: {layout}.")
        write_report(self, report, collection)
        if strict and report.errors:
            raise CommandError(f"{len(report.errors)} row(s) skipped (--strict)")
