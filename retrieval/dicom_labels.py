"""Reading a folder of diagnosed DICOM images and its labels CSV (``import_dicom``). No database here.

The labels CSV is keyed by SOP Instance UID, one row per image:

    sop_instance_uid,dx,dx_type[,lesion_id][,age][,sex][,localization]

``dx`` and ``dx_type`` take the HAM10000 codes (``retrieval.classes``); a row without a
``lesion_id`` is a lesion of its own; ``age``, ``sex`` and ``localization`` are optional (empty:
unknown) and are never taken from the DICOM header. A SOP Instance UID identifies the image in
the hospital's archive, so it is not stored: the case's ``image_id`` is :func:`uid_digest`, a
one-way digest of it (the same UID always gives the same id, so a second run adds nothing).
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from retrieval.dicom import MAGIC, PREAMBLE_LENGTH
from retrieval.ham10000 import (MetadataError, MetadataRow, RowError, csv_reader, diagnosis_fields, person_fields,
                                safe_id)

REQUIRED_COLUMNS = ("sop_instance_uid", "dx", "dx_type")
OPTIONAL_COLUMNS = ("lesion_id", "age", "sex", "localization")
SOURCE = "dicom"  # the cases' source_dataset
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1: digits and dots, no leading zeros
MAX_UID_LENGTH = 64
IMAGE_ID_PREFIX = "dcm-"
DIGEST_HEX = 48  # 192 bits of SHA-256: ids stay under the 64 characters of Case.image_id


def uid_digest(uid: str) -> str:
    """The case image id of a SOP Instance UID: a one-way digest, stable across runs."""
    return IMAGE_ID_PREFIX + hashlib.sha256(uid.encode("ascii")).hexdigest()[:DIGEST_HEX]


@dataclass(frozen=True)
class LabelRow:
    uid: str  # kept in memory to find the file; never stored, logged or printed
    metadata: MetadataRow  # image_id = uid_digest(uid)


def _parse(line: int, record: dict[str, str | None]) -> LabelRow | RowError:
    if None in record or any(record.get(col) is None for col in REQUIRED_COLUMNS):
        return RowError(line, "", "wrong number of fields")
    uid = (record["sop_instance_uid"] or "").strip().rstrip("\x00")
    if not uid:
        return RowError(line, "", "empty sop_instance_uid")
    if len(uid) > MAX_UID_LENGTH or not _UID.match(uid):
        return RowError(line, "", "sop_instance_uid is not a DICOM UID (digits and dots, at most 64 characters)")
    image_id = uid_digest(uid)
    diagnosis = diagnosis_fields(line, image_id, record)
    if isinstance(diagnosis, RowError):
        return diagnosis
    dx, dx_type = diagnosis
    lesion_id = (record.get("lesion_id") or "").strip() or image_id
    if not safe_id(lesion_id):
        return RowError(line, image_id, f"invalid lesion_id {lesion_id[:80]!r} (letters, digits, '_', '-', '.' only)")
    person = person_fields(line, image_id, record)
    if isinstance(person, RowError):
        return person
    age, sex, localization = person
    return LabelRow(uid, MetadataRow(line, lesion_id, image_id, dx, dx_type, age, sex, localization, SOURCE))


def read_labels(path: Path) -> Iterator[LabelRow | RowError]:
    """Stream the rows of a labels CSV, each parsed or an error with its line number (header = 1).

    Raises :class:`MetadataError` before yielding anything when the file as a whole is unusable.
    A UID seen before is reported on its later rows."""
    with csv_reader(path, "labels file") as reader:
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            raise MetadataError(f"{path}: header lacks column(s) {', '.join(missing)}; expected "
                                f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})")
        reader.fieldnames = header
        seen: dict[str, int] = {}
        for record in reader:
            parsed = _parse(reader.line_num, record)
            if isinstance(parsed, LabelRow):
                first = seen.setdefault(parsed.uid, reader.line_num)
                if first != reader.line_num:
                    parsed = RowError(reader.line_num, parsed.metadata.image_id,
                                      f"duplicate sop_instance_uid (first on row {first})")
            yield parsed


class DicomFolder:
    """The DICOM files under a folder (any depth, any names), found by their ``DICM`` magic and
    indexed by SOP Instance UID. Only regular files whose real path stays inside the folder are
    read, so a symlink cannot make the importer read files elsewhere."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise MetadataError(f"DICOM folder {root} does not exist")
        self._by_uid: dict[str, Path | None] = {}  # None: several files hold this UID
        self.unreadable = 0  # files with the DICOM magic whose header cannot be read
        for folder, _, names in os.walk(self.root):
            for name in sorted(names):
                path = Path(folder) / name
                if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(self.root):
                    continue
                if path.stat().st_size > max_bytes or not self._has_magic(path):
                    continue
                uid = self._uid_of(path)
                if uid is None:
                    self.unreadable += 1
                    continue
                self._by_uid[uid] = None if uid in self._by_uid else path

    @staticmethod
    def _has_magic(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                head = handle.read(PREAMBLE_LENGTH + len(MAGIC))
        except OSError:
            return False
        return head[PREAMBLE_LENGTH:] == MAGIC

    @staticmethod
    def _uid_of(path: Path) -> str | None:
        import pydicom

        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = str(dataset.get("SOPInstanceUID", "") or "").strip().rstrip("\x00")
        except Exception:  # noqa: BLE001 - a damaged header of any kind: not an image we can match
            return None
        return uid or None  # a DICOMDIR has none

    def ambiguous(self, uid: str) -> bool:
        """Whether several files hold this UID (which one is meant is a guess: none is imported)."""
        return uid in self._by_uid and self._by_uid[uid] is None

    def path_for(self, uid: str) -> Path | None:
        """The one file with this UID; None when none (or several) has it."""
        return self._by_uid.get(uid)
