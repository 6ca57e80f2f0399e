from __future__ import annotations

from django.core.management.base import BaseCommand

from retrieval import selectors
from retrieval.services.cleanup import index_versions_remove


def human_bytes(size: int) -> str:
    """``size`` in B, KiB, MiB or GiB."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


class Command(BaseCommand):
    help = (
        "Remove index versions that nothing needs any more: their rows and their folders "
        "(MEDIA_ROOT/indexes/<id>/ and the cached overlays MEDIA_ROOT/overlays/index-<id>/). An index "
        "version is removed only when it is not active, is DONE or FAILED (a PENDING or RUNNING build is "
        "never touched), no query and no reader study references it, it is not the base of an unfinished "
        "incremental build (a finished extension holds its own copy of its base's vectors), and it is not "
        "the newest DONE version of a collection without an active one. The rule is checked again on each "
        "row as it is deleted, so an index a query or study came to reference meanwhile is kept. Folders "
        "outside MEDIA_ROOT/indexes (or MEDIA_ROOT/overlays) are never deleted. Each removal is recorded in "
        "the audit log."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
        parser.add_argument("--collection", metavar="C", help="only index versions of this collection")

    def handle(self, *args, dry_run, collection, **options):
        candidates = list(selectors.index_removable_list(collection=collection))
        where = f" of collection {collection!r}" if collection else ""
        if not candidates:
            self.stdout.write(f"Nothing to remove: every index version{where} is active, unfinished or referenced.")
            return
        result = index_versions_remove(indexes=candidates, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for index in result.removed:
            folders = ", ".join(index.folders) or "no files on disk"
            self.stdout.write(f"{verb} index #{index.id} ({index.collection}, {index.status}, created "
                              f"{index.created[:19]}): {index.files} files, {human_bytes(index.bytes)} ({folders})")
        for index_id in result.kept:
            self.stdout.write(f"kept index #{index_id}: it is referenced or in use since it was listed")
        for refused in result.refused:
            self.stderr.write(f"not deleted, outside the index folders: index #{refused}")
        for error in result.errors:
            self.stderr.write(f"could not delete {error}")
        exact = f" ({result.bytes} bytes)" if result.bytes >= 1024 else ""
        freed = f"{human_bytes(result.bytes)}{exact} in {result.files} files"
        if dry_run:
            self.stdout.write(f"Dry run: {len(result.removed)} index version(s) would be removed, freeing {freed}; "
                              "nothing was removed.")
        elif result.removed:
            self.stdout.write(f"Removed {len(result.removed)} index version(s), freed {freed}.")
        else:
            self.stdout.write(f"Nothing to remove{where}: the index versions listed are in use now.")
