from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval import synthetic
from retrieval.ham10000 import MetadataError
from retrieval.management.commands._progress import progress_bar
from retrieval.management.commands.import_ham10000 import write_report
from retrieval.services import library_import

DEFAULT_METADATA = Path(__file__).resolve().parents[2] / "data" / "HAM10000_metadata.csv"
DEFAULT_COLLECTION = "synthetic"


class Command(BaseCommand):
    help = (
        "Render a procedural dermoscopy-like image (and lesion mask) for each HAM10000 metadata row and import "
        "them like real data. Deterministic by seed; re-running renders and imports only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--metadata", type=Path, default=None,
                            help=f"metadata CSV (default: the real HAM10000 metadata, {DEFAULT_METADATA})")
        parser.add_argument("--limit", type=int, default=None,
                            help="about this many images: a class-stratified sample of whole lesions (default: all rows)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--collection", default=DEFAULT_COLLECTION)
        parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
        parser.add_argument("--out", type=Path, default=None,
                            help="folder for the rendered HAM10000-layout files (default: var/synthetic/...)")

    def handle(self, *args, metadata, limit, seed, collection, workers, out, **options):
        metadata = metadata or DEFAULT_METADATA
        if not metadata.is_file():
            raise CommandError(f"metadata file {metadata} not found (give --metadata)")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        rows = synthetic.select_rows(synthetic.read_rows(metadata), limit, seed)
        if not rows:
            raise CommandError(f"{metadata} has no rows with a known diagnosis")
        folder = out or settings.VAR_DIR / "synthetic" / f"{collection}-seed{seed}-n{len(rows)}"
        with progress_bar(options["verbosity"], len(rows), "Rendering") as advance:
            written = synthetic.write_library(rows, folder, seed=seed, workers=max(1, workers), progress=advance)
        try:
            with progress_bar(options["verbosity"], len(rows), "Importing") as advance:
                report = library_import(directory=folder, metadata=written, collection=collection, progress=advance)
        except MetadataError as exc:
            raise CommandError(str(exc)) from None
        write_report(self, report, collection)
