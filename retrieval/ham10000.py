"""Reading the HAM10000 layout: the metadata CSV and the image folders. No database here.

Tschandl, Rosendahl and Kittler, "The HAM10000 dataset, a large collection of multi-source
dermatoscopic images of common pigmented skin lesions", Scientific Data 5, 180161 (2018),
CC BY-NC 4.0.

The published layout is ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, dx_type, age,
sex, localization[, dataset]``) and JPEGs named ``<image_id>.jpg``, in the folder itself or
split over part folders (``HAM10000_images_part_1/``, ``HAM10000_images_part_2/``).
Segmentation masks, where present, are ``<image_id>_segmentation.png``.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from retrieval.classes import CODES, DX_TYPES, SEXES

REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
OPTIONAL_COLUMNS = ("dataset",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_segmentation.png"
# Ids become file names: letters, digits, '_', '-', '.', never a path.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MAX_AGE = 120
MAX_SITE_LENGTH = 32  # Case.localization's max_length


class MetadataError(Exception):
    """The metadata file as a whole cannot be read (missing, wrong header, not CSV)."""


@dataclass(frozen=True)
class MetadataRow:
    row: int  # 1-based line number in the CSV file, header = line 1
    lesion_id: str
    image_id: str
    dx: str
    dx_type: str
    age: int | None
    sex: str
    localization: str
    dataset: str
    # What an ISIC source publishes per image (empty for HAM10000 and DICOM labels).
    patient_id: str = ""
    attribution: str = ""
    copyright_license: str = ""


@dataclass(frozen=True)
class RowError:
    row: int
    image_id: str
    message: str

    def __str__(self) -> str:
        who = f" ({self.image_id})" if self.image_id else ""
        return f"row {self.row}{who}: {self.message}"


@dataclass(frozen=True)
class NotImported:
    """A valid row the importer leaves out by rule, counted by ``reason`` and ``value`` (ISIC: a
    diagnosis with no class in the map, an image that is not dermoscopic). Not an error."""

    row: int
    image_id: str
    reason: str
    value: str


def safe_id(value: str) -> bool:
    """True for ids that can safely become file names (no separators, no '..')."""
    return bool(_SAFE_ID.match(value)) and ".." not in value


def parse_age(text: str) -> int | None:
    """A whole number of years from 0 to ``MAX_AGE`` (``"50"``, ``"50.0"``), None when empty.

    Raises ``ValueError`` whose message is the row error."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"age {text[:20]!r} is not a number") from None
    if not (0 <= value <= MAX_AGE) or value != int(value):
        raise ValueError(f"age {text[:20]!r} is not a whole number of years from 0 to {MAX_AGE}")
    return int(value)


def diagnosis_fields(line: int, image_id: str, record: Mapping[str, str | None]) -> tuple[str, str] | RowError:
    """The row's ``dx`` and ``dx_type``, lower-cased and checked against the library's codes: the
    check every labelled layout shares (HAM10000's metadata, the DICOM labels CSV)."""
    dx = (record.get("dx") or "").strip().lower()
    if dx not in CODES:
        return RowError(line, image_id, f"unknown class {dx[:40]!r} (expected one of {', '.join(CODES)})")
    dx_type = (record.get("dx_type") or "").strip().lower()
    if dx_type not in DX_TYPES:
        return RowError(line, image_id, f"unknown dx_type {dx_type[:40]!r} (expected one of {', '.join(DX_TYPES)})")
    return dx, dx_type


def person_fields(line: int, image_id: str, record: Mapping[str, str | None]
                  ) -> tuple[int | None, str, str] | RowError:
    """The row's ``age`` (whole years, "45" or "45.0"; empty or absent: None), ``sex`` and
    ``localization`` (lower-cased; empty or absent: "unknown"), checked."""
    try:
        age = parse_age(record.get("age") or "")
    except ValueError as exc:
        return RowError(line, image_id, str(exc))
    sex = (record.get("sex") or "").strip().lower() or "unknown"
    if sex not in SEXES:
        return RowError(line, image_id, f"unknown sex {sex[:20]!r} (expected one of {', '.join(SEXES)})")
    localization = (record.get("localization") or "").strip().lower() or "unknown"
    if len(localization) > MAX_SITE_LENGTH:
        return RowError(line, image_id, f"localization longer than {MAX_SITE_LENGTH} characters")
    return age, sex, localization


def _parse_row(line: int, record: dict[str, str]) -> MetadataRow | RowError:
    image_id = (record.get("image_id") or "").strip()
    shown_id = image_id if safe_id(image_id) else ""
    if None in record or any(record.get(col) is None for col in REQUIRED_COLUMNS):
        return RowError(line, shown_id, "wrong number of fields")
    if not image_id:
        return RowError(line, "", "empty image_id")
    if not safe_id(image_id):
        return RowError(line, "", f"unsafe image_id {image_id[:80]!r} (letters, digits, '_', '-', '.' only)")
    lesion_id = record["lesion_id"].strip()
    if not lesion_id or not safe_id(lesion_id):
        return RowError(line, image_id, f"missing or invalid lesion_id {lesion_id[:80]!r}")
    diagnosis = diagnosis_fields(line, image_id, record)
    if isinstance(diagnosis, RowError):
        return diagnosis
    dx, dx_type = diagnosis
    person = person_fields(line, image_id, record)
    if isinstance(person, RowError):
        return person
    age, sex, localization = person
    dataset = (record.get("dataset") or "").strip()[:64]
    return MetadataRow(line, lesion_id, image_id, dx, dx_type, age, sex, localization, dataset)


@contextmanager
def csv_reader(path: Path, what: str) -> Iterator[csv.DictReader]:
    """A ``DictReader`` over the UTF-8 CSV file ``path`` (``what`` names it in messages).

    Raises :class:`MetadataError` before yielding when the file as a whole is unusable (cannot be
    opened, not UTF-8 text, empty), and turns a malformed row met while reading into one that
    names its line."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise MetadataError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            sample = handle.read(4096)
        except UnicodeDecodeError:
            raise MetadataError(f"{path} is not a UTF-8 text file") from None
        handle.seek(0)
        if not sample.strip():
            raise MetadataError(f"{path} is empty")
        reader = csv.DictReader(handle)
        try:
            yield reader
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MetadataError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from None


def read_metadata(path: Path) -> Iterator[MetadataRow | RowError]:
    """Stream the rows of a HAM10000 metadata file, each parsed or an error with its line number.

    Raises :class:`MetadataError` before yielding anything when the file as a whole is
    unusable (cannot be opened, not UTF-8 text, required columns missing). Duplicate
    image ids are reported on their second and later occurrences.
    """
    with csv_reader(path, "metadata file") as reader:
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [col for col in REQUIRED_COLUMNS if col not in header]
        if missing:
            raise MetadataError(
                f"{path}: header lacks column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}"
            )
        reader.fieldnames = header
        seen: dict[str, int] = {}
        for record in reader:
            line = reader.line_num
            parsed = _parse_row(line, record)
            if isinstance(parsed, MetadataRow):
                first = seen.setdefault(parsed.image_id, line)
                if first != line:
                    parsed = RowError(line, parsed.image_id, f"duplicate image_id (first on row {first})")
            yield parsed


def count_rows(path: Path) -> int:
    """Number of data rows (for a progress bar total); streams the file."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


class ImageFolder:
    """Finds ``<image_id>.<ext>`` (and its mask) in a folder or its immediate sub-folders.

    Only regular files whose real path stays inside the folder are offered, so a symlink
    or a crafted name cannot make the importer read files elsewhere.
    """

    def __init__(self, root: Path, masks: Path | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise MetadataError(f"image folder {root} does not exist")
        self._images = self._scan(self.root, lambda name: name.lower().endswith(IMAGE_SUFFIXES)
                                  and not name.lower().endswith(MASK_SUFFIX))
        mask_root = masks.resolve() if masks else self.root
        if masks and not mask_root.is_dir():
            raise MetadataError(f"mask folder {masks} does not exist")
        self._mask_root = mask_root
        self._masks = self._scan(mask_root, lambda name: name.lower().endswith(MASK_SUFFIX))

    @staticmethod
    def _scan(root: Path, wanted) -> dict[str, Path]:
        found: dict[str, Path] = {}
        folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
        for folder in folders:
            for entry in sorted(folder.iterdir()):
                if wanted(entry.name) and entry.is_file():
                    found.setdefault(entry.name.lower(), entry)
        return found

    def _inside(self, path: Path, root: Path) -> Path | None:
        real = path.resolve()
        return real if real.is_relative_to(root) and real.is_file() else None

    def image_for(self, image_id: str) -> Path | None:
        if not safe_id(image_id):
            return None
        for suffix in IMAGE_SUFFIXES:
            path = self._images.get(f"{image_id}{suffix}".lower())
            if path is not None:
                return self._inside(path, self.root)
        return None

    def mask_for(self, image_id: str) -> Path | None:
        if not safe_id(image_id):
            return None
        path = self._masks.get(f"{image_id}{MASK_SUFFIX}".lower())
        return self._inside(path, self._mask_root) if path is not None else None
