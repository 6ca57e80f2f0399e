"""Removing index versions nothing needs any more: their rows and their files.

Which versions are removable is one rule, :func:`retrieval.selectors.index_removable_condition`
(not active, not unfinished, referenced by no query and no reader study, not the base of an
unfinished build, not a collection's last finished index). :func:`index_versions_remove` checks it
again on every row it deletes, in its transaction, so a list read a while ago (the command's, an
admin's selection) never removes an index that a query or a study has come to reference since.
The files go after the commit: a rolled-back removal leaves every file in place. Only an index's
own folders are deleted, ``MEDIA_ROOT/indexes/<...>`` (its ``directory``) and its cached library
overlays ``MEDIA_ROOT/overlays/index-<id>/``; a ``directory`` that leads anywhere else (outside
``MEDIA_ROOT``, through a symbolic link, the ``indexes`` folder itself) is left alone and reported.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError

from lesionsearch.audit import services as audit
from retrieval import selectors
from retrieval.models import IndexVersion

logger = logging.getLogger(__name__)

#: The folders under MEDIA_ROOT that hold index files: an index's ``directory`` must lie in the
#: first, its cached library overlays (``retrieval.services.index.case_overlay_name``) in the second.
INDEXES_DIR = "indexes"
OVERLAYS_DIR = "overlays"


@dataclass
class RemovedIndex:
    """One index version removed (or, in a dry run, that would be removed)."""

    id: int
    collection: str
    status: str
    created: str
    folders: list[str] = field(default_factory=list)  # relative to MEDIA_ROOT
    files: int = 0
    bytes: int = 0


@dataclass
class IndexRemoval:
    """What :func:`index_versions_remove` did: ``removed`` (the rows deleted, or that a dry run
    would delete, with their folders, file count and size on disk), ``kept`` (ids asked for that
    are no longer removable), ``refused`` (folders not deleted because they lie outside the index
    folders: ``"<index id>: <directory>"``) and ``errors`` (folders that could not be deleted)."""

    dry_run: bool
    removed: list[RemovedIndex] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(index.bytes for index in self.removed)

    @property
    def files(self) -> int:
        return sum(index.files for index in self.removed)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is strictly inside ``folder`` (both resolved)."""
    return path != folder and folder in path.parents


def index_folders(index: IndexVersion) -> tuple[list[Path], list[str]]:
    """The index's own folders that exist (resolved), and the ``directory`` values refused: one
    that resolves outside ``MEDIA_ROOT/indexes`` (``..``, an absolute path, a symbolic link, the
    folder itself, an empty value)."""
    media = Path(settings.MEDIA_ROOT).resolve()
    folders, refused = [], []
    candidates = [(index.directory, media / INDEXES_DIR), (f"{OVERLAYS_DIR}/index-{index.id}", media / OVERLAYS_DIR)]
    for name, parent in candidates:
        if not name:
            continue
        path = media / name
        if not path.exists() and not path.is_symlink():
            continue
        resolved = path.resolve()
        if path.is_symlink() or not _inside(resolved, parent.resolve()) or not _inside(resolved, media):
            refused.append(f"{index.id}: {name}")
            continue
        if resolved.is_dir():
            folders.append(resolved)
    return folders, refused


def folder_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``, not following symbolic links (a link counts as one file of
    its own size)."""
    files = size = 0
    for root, dirs, names in os.walk(path, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                continue
    return files, size


def _describe(index: IndexVersion) -> tuple[RemovedIndex, list[Path], list[str]]:
    folders, refused = index_folders(index)
    media = Path(settings.MEDIA_ROOT).resolve()
    entry = RemovedIndex(id=index.id, collection=index.collection, status=index.status,
                         created=index.created_at.isoformat(), folders=[str(f.relative_to(media)) for f in folders])
    for folder in folders:
        files, size = folder_size(folder)
        entry.files += files
        entry.bytes += size
    return entry, folders, refused


def _delete_folders(folders: list[Path], result: IndexRemoval) -> None:
    def failed(function, path, error):
        result.errors.append(f"{path}: {error[1] if isinstance(error, tuple) else error}")

    handler = {"onexc": failed} if sys.version_info >= (3, 12) else {"onerror": failed}

    for folder in folders:
        if folder.is_symlink():  # (swapped for a link since it was checked: never follow it)
            result.errors.append(f"{folder}: became a symbolic link; left alone")
            continue
        shutil.rmtree(folder, **handler)  # (rmtree never follows a link inside the folder)
    for error in result.errors:
        logger.error("index cleanup: %s", error)


def index_versions_remove(*, indexes, dry_run: bool = False, user=None) -> IndexRemoval:
    """Remove the given index versions that are still removable (rows, then after the commit their
    folders) and return what was removed, with the bytes freed; with ``dry_run`` only report what
    would be. ``indexes``: IndexVersion rows or ids, e.g. ``selectors.index_removable_list()``.
    Each removal is recorded in the audit log (``index.remove``; ``user``: who removed them,
    default the signed-in user of the request, else the command's operating-system user)."""
    ids = sorted({index if isinstance(index, int) else index.id for index in indexes})
    result = IndexRemoval(dry_run=dry_run)
    doomed: list[Path] = []
    with transaction.atomic():
        rows = IndexVersion.objects.filter(id__in=ids).filter(selectors.index_removable_condition()).order_by("id")
        rows = list(rows if dry_run else rows.select_for_update())
        result.kept = sorted(set(ids) - {row.id for row in rows})
        for row in rows:
            entry, folders, refused = _describe(row)
            if not dry_run:
                try:
                    with transaction.atomic():  # a reference that slipped in since the check protects it
                        row.delete()
                except ProtectedError:
                    result.kept.append(row.id)
                    continue
                audit.record(audit.Action.INDEX_REMOVE, user=user, object_type=IndexVersion._meta.label_lower,
                             object_id=entry.id, detail={"collection": entry.collection, "status": entry.status,
                                                         "folders": entry.folders, "files": entry.files,
                                                         "bytes": entry.bytes})
                doomed.extend(folders)
            result.removed.append(entry)
            result.refused.extend(refused)
        result.kept.sort()
        if doomed:
            media = Path(settings.MEDIA_ROOT)
            in_use = [(media / name).resolve() for name in
                      IndexVersion.objects.exclude(directory="").values_list("directory", flat=True)]
            # (a folder that holds a remaining row's files too is kept)
            doomed = [f for f in doomed if not any(f == other or f in other.parents for other in in_use)]
            transaction.on_commit(lambda: _delete_folders(doomed, result))
        if not dry_run and settings.SEARCH_BACKEND == "qdrant":
            removed_ids = [entry.id for entry in result.removed]
            transaction.on_commit(lambda: _drop_collections(removed_ids, result))
    return result


def _drop_collections(index_ids: list[int], result: IndexRemoval) -> None:
    """Drop the Qdrant collections of removed index versions (every method's)."""
    from retrieval import loaders, runtime
    from retrieval.methods import METHODS
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from retrieval.ml.search_qdrant import drop_collections

    names = [loaders.qdrant_collection(index_id, method) for index_id in index_ids for method in METHODS]
    try:
        dropped = drop_collections(runtime.qdrant_client(), names)
    except (UnexpectedResponse, ResponseHandlingException, OSError, ValueError) as error:
        # (after the commit: the rows are gone; the error is reported, the collections left behind)
        result.errors.append(f"Qdrant collections of {index_ids}: {error}")
        logger.error("index cleanup: dropping Qdrant collections of %s failed: %s", index_ids, error)
        return
    logger.info("index cleanup: dropped Qdrant collections %s", ", ".join(dropped) or "(none existed)")
