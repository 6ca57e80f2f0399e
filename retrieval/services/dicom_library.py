"""Importing diagnosed DICOM images into the case library (``import_dicom``).

Each image goes through the same checks as a DICOM query (:func:`retrieval.dicom.dicom_decode`)
and is stored, like any library image, by :func:`retrieval.services.library.case_create` as the
PNG of its pixels: the DICOM file, its header (the patient's identifiers) and its SOP Instance
UID are never stored; the case's ``image_id`` is the UID's one-way digest.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from retrieval.dicom import dicom_decode
from retrieval.dicom_labels import DicomFolder, LabelRow, read_labels
from retrieval.ham10000 import RowError
from retrieval.images import DEFAULT_MAX_BYTES
from retrieval.models import Case
from retrieval.services.library import ImportReport, Progress, case_import_row

DEFAULT_COLLECTION = "dicom"


def dicom_library_import(*, directory: Path, labels: Path, collection: str = DEFAULT_COLLECTION,
                         progress: Progress | None = None) -> ImportReport:
    """Import the DICOM files under ``directory`` that ``labels`` diagnoses into ``collection``.

    Every row is validated; bad rows (and rows whose file is missing, ambiguous or refused) are
    reported with their line numbers and skipped, the others are imported each in its own
    transaction. Rows whose image id the collection already holds count as already present
    without their file being decoded, so a second run adds nothing. Raises ``MetadataError``
    (nothing imported) when the CSV or the folder as a whole is unusable.
    """
    rows = read_labels(labels)
    first = next(rows, None)  # reads the header: an unusable CSV fails before the folder is scanned
    folder = DicomFolder(directory, max_bytes=DEFAULT_MAX_BYTES)
    present = set(Case.objects.filter(collection=collection).values_list("image_id", flat=True))
    report = ImportReport()
    for parsed in itertools.chain([first] if first is not None else [], rows):
        _import_row(parsed, folder, collection, present, report, progress)
    return report


def _import_row(parsed: LabelRow | RowError, folder: DicomFolder, collection: str, present: set[str],
                report: ImportReport, progress: Progress | None) -> None:
    if not report.take(parsed, progress):
        return
    row = parsed.metadata
    if row.image_id in present:
        report.already_present += 1
        return
    if folder.ambiguous(parsed.uid):
        report.errors.append(RowError(row.row, row.image_id, "several DICOM files in the folder have this "
                                                             "sop_instance_uid"))
        return
    path = folder.path_for(parsed.uid)
    if path is None:
        unreadable = f" ({folder.unreadable} file(s) there have an unreadable DICOM header)" if folder.unreadable else ""
        report.errors.append(RowError(row.row, row.image_id,
                                      f"no DICOM file in the folder has this sop_instance_uid{unreadable}"))
        return
    case_import_row(collection=collection, row=row, report=report, present=present,
                    read=lambda: (dicom_decode(path.read_bytes()).png(), None),
                    read_error="cannot read the DICOM file", reject_error="unusable DICOM file")
