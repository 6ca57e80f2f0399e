"""Importing ISIC folders (2019 challenge, isic-cli archive export) into the case library (``import_isic``).

Parsing is :mod:`retrieval.isic`; the rows go through the same loop as HAM10000's
(:func:`retrieval.services.library.folder_rows_import`), so the guarantees are the same: one image
and row per transaction, errors with line numbers, idempotent, content already in another
collection reported. Attribution, licence and the pseudonymous patient id are kept per case.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from retrieval import isic
from retrieval.ham10000 import ImageFolder, MetadataError
from retrieval.services.library import ImportReport, Progress, folder_rows_import

DEFAULT_COLLECTIONS = {isic.CHALLENGE2019: "isic2019", isic.ARCHIVE: "isic_archive"}


def isic_layout(*, directory: Path, layout: str = isic.AUTO) -> str:
    """The folder's layout: ``layout`` itself, or the one its files name (``auto``).

    Raises ``MetadataError`` when the folder is missing or its layout cannot be told."""
    if not directory.is_dir():
        raise MetadataError(f"folder {directory} not found")
    if layout not in isic.LAYOUTS:
        raise MetadataError(f"unknown layout {layout!r} (expected one of {', '.join(isic.LAYOUTS)})")
    chosen = isic.detect_layout(directory) if layout == isic.AUTO else layout
    rows_file = isic.rows_file(directory, chosen)
    if not rows_file.is_file():
        raise MetadataError(f"{rows_file} not found (the {chosen} layout)")
    return chosen


def isic_library_import(*, directory: Path, layout: str, collection: str, class_map: Path | None = None,
                        progress: Progress | None = None) -> ImportReport:
    """Import an ISIC folder of ``layout`` (challenge2019 or archive, see :func:`isic_layout`) into
    ``collection``, streaming row by row, with the default class map or ``class_map`` over it.

    Raises ``MetadataError`` (nothing imported) when a CSV or the folder as a whole is unusable."""
    mapping = isic.read_class_map(class_map) if class_map else isic.ClassMap()
    rows = isic.read_rows(directory, layout, mapping)
    first = next(rows, None)  # reads the headers: unusable CSVs fail before the folder is scanned
    folder = ImageFolder(directory)
    return folder_rows_import(rows=itertools.chain([first] if first is not None else [], rows), folder=folder,
                              collection=collection, progress=progress)

