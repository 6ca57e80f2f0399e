"""Reading ISIC folders (``import_isic``): the 2019 challenge files and isic-cli archive exports.
No database here.

Two layouts, as their publishers ship them:

- ``challenge2019``: ``ISIC_2019_Training_GroundTruth.csv`` (``image`` and one-hot columns ``MEL, NV,
  BCC, AK, BKL, DF, VASC, SCC, UNK``), ``ISIC_2019_Training_Metadata.csv`` (``image, age_approx,
  anatom_site_general, lesion_id, sex``) and ``<image>.jpg`` in ``ISIC_2019_Training_Input/`` or the
  folder itself. The files state no per-image attribution or licence: the challenge publishes its
  training data as a whole under CC BY-NC (:data:`CHALLENGE_ATTRIBUTION`).
- ``archive``: what ``isic image download`` (isic-cli) writes: ``metadata.csv`` with ``isic_id``,
  ``attribution``, ``copyright_license``, ``image_type``, the hierarchical ``diagnosis_1`` ..
  ``diagnosis_5`` (or the legacy ``diagnosis``), ``anatom_site_general``, ``age_approx``, ``sex``,
  ``lesion_id``, ``patient_id``, optionally ``diagnosis_confirm_type``, and ``<isic_id>.jpg``.
  Only ``image_type`` "dermoscopic" is imported; other types are counted, not errors.

Field names and values are checked against the ISIC archive's own schema, the ``isic-metadata``
package (the diagnosis hierarchy, image types, sites, confirmation types, legacy diagnoses), so a
value the archive cannot hold is a row error, not a guess. Diagnoses become the library's seven
classes by :data:`DEFAULT_CLASS_MAP` (overridable with a class-map CSV); a valid diagnosis without
a class is left out and counted (:class:`~retrieval.ham10000.NotImported`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from isic_metadata.fields import (
    AnatomSiteGeneralEnum, DiagnosisConfirmTypeEnum, DiagnosisEnum, ImageTypeEnum, LegacyDxEnum,
)

from retrieval.classes import CODES, DX_TYPE_CLINICAL, DX_TYPE_UNKNOWN, SEXES
from retrieval.ham10000 import MetadataError, MetadataRow, NotImported, RowError, csv_reader, parse_age, safe_id

CHALLENGE2019, ARCHIVE, AUTO = "challenge2019", "archive", "auto"
LAYOUTS = (AUTO, CHALLENGE2019, ARCHIVE)

CHALLENGE_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
CHALLENGE_METADATA = "ISIC_2019_Training_Metadata.csv"
CHALLENGE_IMAGES = "ISIC_2019_Training_Input"
CHALLENGE_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
CHALLENGE_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
CHALLENGE_ATTRIBUTION = "ISIC 2019 challenge training data (BCN_20000, HAM10000, MSK Dermatology)"
CHALLENGE_LICENSE = "CC-BY-NC"
CHALLENGE_SOURCE = "ISIC 2019"

ARCHIVE_METADATA = "metadata.csv"
ARCHIVE_REQUIRED_COLUMNS = ("isic_id", "image_type", "attribution", "copyright_license")
DIAGNOSIS_LEVELS = tuple(f"diagnosis_{level}" for level in range(1, 6))
LEGACY_DIAGNOSIS = "diagnosis"
ARCHIVE_SOURCE = "ISIC archive"
DERMOSCOPIC = ImageTypeEnum.dermoscopic.value
#: The archive's three image licences (isic-metadata has no list of them: the archive's image model
#: holds it, CopyrightLicense in isic/ingest/models).
LICENSES = ("CC-0", "CC-BY", "CC-BY-NC")
MAX_ATTRIBUTION = 255  # Case.attribution

# Why a valid row is left out (the keys of ImportReport.not_imported).
NO_CLASS = "diagnosis with no class in the map"
NOT_DERMOSCOPIC = "not a dermoscopic image (image_type)"
NOT_STATED = "(none)"

#: Source diagnosis (matched without regard to case) -> class code; what is not here has no class.
#: The challenge's codes; the archive's hierarchical terms, matched at the most specific level that
#: is listed (so every subtype of "Nevus" is nv); the archive's legacy ``diagnosis`` values. The
#: choices follow the HAM10000 class definitions (retrieval.classes): akiec is actinic keratosis and
#: Bowen's disease (squamous cell carcinoma in situ), bkl the three benign keratoses, vasc cherry
#: angiomas, angiokeratomas, pyogenic granulomas and haemorrhage. Invasive SCC, the challenge's SCC
#: and UNK, and every other diagnosis have none.
DEFAULT_CLASS_MAP: dict[str, str] = {
    # ISIC 2019 challenge columns
    "mel": "mel", "nv": "nv", "bcc": "bcc", "ak": "akiec", "bkl": "bkl", "df": "df", "vasc": "vasc",
    # diagnosis_1..5 terms
    "malignant melanocytic proliferations (melanoma)": "mel",
    "nevus": "nv",
    "basal cell carcinoma": "bcc",
    "solar or actinic keratosis": "akiec",
    "squamous cell carcinoma in situ": "akiec",
    "pigmented benign keratosis": "bkl", "seborrheic keratosis": "bkl", "solar lentigo": "bkl",
    "lichen planus like keratosis": "bkl",
    "dermatofibroma": "df",
    "hemangioma": "vasc", "angiokeratoma": "vasc", "pyogenic granuloma": "vasc", "hemorrhage": "vasc",
    # legacy diagnosis values (those not already above)
    "melanoma": "mel", "actinic keratosis": "akiec", "lichenoid keratosis": "bkl",
    "vascular lesion": "vasc", "angioma": "vasc",
}
#: A class-map row with this class leaves the diagnosis out.
NO_CLASS_CODE = "none"
CLASS_MAP_COLUMNS = ("diagnosis", "class")

#: ``anatom_site_general`` (AnatomSiteGeneralEnum) -> our ``localization`` (HAM10000's values where one
#: fits: HAM splits the torso into back/chest/abdomen/trunk and the head into face/scalp/ear/neck).
SITE_MAP: dict[str, str] = {
    AnatomSiteGeneralEnum.head_neck.value: "head/neck",  # HAM's face/scalp/ear/neck: no single one fits
    AnatomSiteGeneralEnum.upper_extremity.value: "upper extremity",
    AnatomSiteGeneralEnum.lower_extremity.value: "lower extremity",
    AnatomSiteGeneralEnum.anterior_torso.value: "trunk",  # chest or abdomen: HAM's side-less torso value
    AnatomSiteGeneralEnum.lateral_torso.value: "trunk",
    AnatomSiteGeneralEnum.posterior_torso.value: "back",
    AnatomSiteGeneralEnum.palms_soles.value: "acral",
    AnatomSiteGeneralEnum.oral_genital.value: "genital",
}
#: ``diagnosis_confirm_type`` -> our ``dx_type``.
CONFIRM_TYPE_MAP: dict[str, str] = {
    DiagnosisConfirmTypeEnum.histopathology.value: "histo",
    DiagnosisConfirmTypeEnum.serial_imaging_showing_no_change.value: "follow_up",
    DiagnosisConfirmTypeEnum.single_image_expert_consensus.value: "consensus",
    DiagnosisConfirmTypeEnum.confocal_microscopy_with_consensus_dermoscopy.value: "confocal",
    DiagnosisConfirmTypeEnum.single_contributor_clinical_assessment.value: DX_TYPE_CLINICAL,
}

_DIAGNOSES = frozenset(member.value for member in DiagnosisEnum)
_DIAGNOSIS_TERMS = frozenset(term.lower() for value in _DIAGNOSES for term in value.split(":"))
_LEGACY = {member.value.lower(): member.value for member in LegacyDxEnum}
_IMAGE_TYPES = tuple(member.value for member in ImageTypeEnum)


class ClassMap:
    """Source diagnosis -> class code, or None for a diagnosis with no class."""

    def __init__(self, overrides: dict[str, str | None] | None = None) -> None:
        self._map: dict[str, str | None] = dict(DEFAULT_CLASS_MAP)
        self._map.update(overrides or {})

    def class_of(self, terms: list[str]) -> str | None:
        """The class of the most specific of ``terms`` (general first) that the map lists."""
        for term in reversed(terms):
            key = term.lower()
            if key in self._map:
                return self._map[key]
        return None


def read_class_map(path: Path) -> ClassMap:
    """A class map CSV (``diagnosis,class``; class a class code or ``none``) over the default map.

    Raises :class:`MetadataError` naming the line for anything wrong: a diagnosis no ISIC file can
    hold (a typo would silently change nothing), an unknown class, a diagnosis listed twice."""
    overrides: dict[str, str | None] = {}
    with csv_reader(path, "class map") as reader:
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        if header != list(CLASS_MAP_COLUMNS):
            raise MetadataError(f"{path}: the header must be {','.join(CLASS_MAP_COLUMNS)}")
        reader.fieldnames = header
        for record in reader:
            line = reader.line_num
            if None in record or any(record.get(col) is None for col in CLASS_MAP_COLUMNS):
                raise MetadataError(f"{path} line {line}: wrong number of fields")
            diagnosis, code = record["diagnosis"].strip(), record["class"].strip().lower()
            key = diagnosis.lower()
            if key not in _DIAGNOSIS_TERMS and key not in _LEGACY and diagnosis.upper() not in CHALLENGE_CLASSES:
                raise MetadataError(f"{path} line {line}: {diagnosis[:80]!r} is not an ISIC diagnosis (a 2019 "
                                    f"challenge column, a diagnosis_1..5 term or a legacy diagnosis)")
            if code != NO_CLASS_CODE and code not in CODES:
                raise MetadataError(f"{path} line {line}: unknown class {code[:40]!r} (expected one of "
                                    f"{', '.join(CODES)} or {NO_CLASS_CODE})")
            if key in overrides:
                raise MetadataError(f"{path} line {line}: {diagnosis[:80]!r} is listed twice")
            overrides[key] = None if code == NO_CLASS_CODE else code
    return ClassMap(overrides)


def detect_layout(directory: Path) -> str:
    """Which layout ``directory`` holds, from the files that name it."""
    challenge = (directory / CHALLENGE_GROUND_TRUTH).is_file()
    archive = (directory / ARCHIVE_METADATA).is_file()
    if challenge and archive:
        raise MetadataError(f"{directory} holds both {CHALLENGE_GROUND_TRUTH} and {ARCHIVE_METADATA}: "
                            "say which with --layout")
    if challenge:
        return CHALLENGE2019
    if archive:
        return ARCHIVE
    raise MetadataError(f"{directory} holds neither {CHALLENGE_GROUND_TRUTH} (challenge2019) nor "
                        f"{ARCHIVE_METADATA} (archive)")


def rows_file(directory: Path, layout: str) -> Path:
    """The CSV with one row per image of the layout (for a progress bar total)."""
    return directory / (CHALLENGE_GROUND_TRUTH if layout == CHALLENGE2019 else ARCHIVE_METADATA)


def read_rows(directory: Path, layout: str, class_map: ClassMap) -> Iterator[MetadataRow | RowError | NotImported]:
    """Stream the rows of an ISIC folder, each parsed, an error with its line number, or left out.

    Raises :class:`MetadataError` before yielding anything when a file as a whole is unusable."""
    if layout == CHALLENGE2019:
        return _challenge_rows(directory, class_map)
    if layout == ARCHIVE:
        return _archive_rows(directory / ARCHIVE_METADATA, class_map)
    raise MetadataError(f"unknown layout {layout!r} (expected one of {', '.join(LAYOUTS)})")


# --- Fields both layouts share ----------------------------------------------------------------
class _Invalid(ValueError):
    """A field's value is wrong: the message is the row's error."""


def _site(text: str) -> str:
    value = text.strip().lower()
    if not value:
        return "unknown"
    if value not in SITE_MAP:
        raise _Invalid(f"unknown anatom_site_general {value[:40]!r} (expected one of {', '.join(SITE_MAP)})")
    return SITE_MAP[value]


def _sex(text: str) -> str:
    value = text.strip().lower() or "unknown"
    if value not in SEXES:
        raise _Invalid(f"unknown sex {value[:20]!r} (expected one of {', '.join(SEXES)})")
    return value


def _age(text: str) -> int | None:
    text = text.strip()
    try:
        return 85 if text == "85+" else parse_age(text)  # the archive writes ages over 85 as "85+"
    except ValueError as exc:
        raise _Invalid(str(exc).replace("age ", "age_approx ", 1)) from None


def _optional_id(text: str, column: str) -> str:
    value = text.strip()
    if value and not safe_id(value):
        raise _Invalid(f"invalid {column} {value[:80]!r} (letters, digits, '_', '-', '.' only)")
    return value


def _image_id(line: int, text: str | None, column: str) -> str | RowError:
    value = (text or "").strip()
    if not value:
        return RowError(line, "", f"empty {column}")
    if not safe_id(value):
        return RowError(line, "", f"unsafe {column} {value[:80]!r} (letters, digits, '_', '-', '.' only)")
    return value


def _header(reader, path: Path, required: tuple[str, ...]) -> list[str]:
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [col for col in required if col not in header]
    if missing:
        raise MetadataError(f"{path}: header lacks column(s) {', '.join(missing)}; expected {', '.join(required)}")
    reader.fieldnames = header
    return header


def _first_of_each_image(reader, parse: Callable[[int, dict], MetadataRow | RowError | NotImported],
                         column: str) -> Iterator[MetadataRow | RowError | NotImported]:
    """Each record of ``reader`` parsed by ``parse(line, record)``; a later row of an image id already
    seen is an error naming the first (``column``: what the layout calls the image id)."""
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        parsed = parse(line, record)
        if not isinstance(parsed, RowError):
            first = seen.setdefault(parsed.image_id, line)
            if first != line:
                parsed = RowError(line, parsed.image_id, f"duplicate {column} (first on row {first})")
        yield parsed


# --- challenge2019 ------------------------------------------------------------------------------
def _challenge_rows(directory: Path, class_map: ClassMap) -> Iterator[MetadataRow | RowError | NotImported]:
    ground_truth, metadata_path = directory / CHALLENGE_GROUND_TRUTH, directory / CHALLENGE_METADATA
    if not metadata_path.is_file():
        raise MetadataError(f"{metadata_path} not found (the challenge2019 layout has it next to "
                            f"{CHALLENGE_GROUND_TRUTH})")
    # The metadata file is read whole first (one short row per image) so that ground-truth rows,
    # which drive the import, can be joined to it; its rows are checked when they are used.
    metadata: dict[str, list[tuple[int, dict]]] = {}
    with csv_reader(metadata_path, "metadata file") as reader:
        _header(reader, metadata_path, CHALLENGE_METADATA_COLUMNS)
        for record in reader:
            metadata.setdefault((record.get("image") or "").strip(), []).append((reader.line_num, record))
    with csv_reader(ground_truth, "ground truth file") as reader:
        _header(reader, ground_truth, ("image",) + CHALLENGE_CLASSES)
        yield from _first_of_each_image(
            reader, lambda line, record: _challenge_row(line, record, metadata, class_map), "image")


def _challenge_row(line: int, record: dict, metadata: dict[str, list[tuple[int, dict]]],
                   class_map: ClassMap) -> MetadataRow | RowError | NotImported:
    if None in record or any(record.get(col) is None for col in ("image",) + CHALLENGE_CLASSES):
        return RowError(line, "", "wrong number of fields")
    image_id = _image_id(line, record["image"], "image")
    if isinstance(image_id, RowError):
        return image_id
    hot = []
    for column in CHALLENGE_CLASSES:
        text = record[column].strip()
        try:
            value = float(text)
        except ValueError:
            value = None
        if value not in (0.0, 1.0):
            return RowError(line, image_id, f"{column} is {text[:20]!r}, not 0 or 1")
        if value == 1.0:
            hot.append(column)
    if len(hot) != 1:
        return RowError(line, image_id, f"the one-hot columns {', '.join(CHALLENGE_CLASSES)} hold {len(hot)} ones "
                                        f"({', '.join(hot) or 'none'}), not exactly one")
    described = metadata.get(image_id, [])
    if not described:
        return RowError(line, image_id, f"no row for it in {CHALLENGE_METADATA}")
    if len(described) > 1:
        return RowError(line, image_id, f"{CHALLENGE_METADATA} rows {described[0][0]} and {described[1][0]} "
                                        "both describe it")
    meta_line, meta = described[0]
    if None in meta or any(meta.get(col) is None for col in CHALLENGE_METADATA_COLUMNS):
        return RowError(line, image_id, f"{CHALLENGE_METADATA} row {meta_line}: wrong number of fields")
    try:
        age, sex, localization = _age(meta["age_approx"]), _sex(meta["sex"]), _site(meta["anatom_site_general"])
        lesion_id = _optional_id(meta["lesion_id"], "lesion_id") or image_id  # no lesion id: a lesion of its own
    except _Invalid as exc:
        return RowError(line, image_id, f"{CHALLENGE_METADATA} row {meta_line}: {exc}")
    dx = class_map.class_of([hot[0]])
    if dx is None:
        return NotImported(line, image_id, NO_CLASS, hot[0])
    return MetadataRow(line, lesion_id, image_id, dx, DX_TYPE_UNKNOWN, age, sex, localization, CHALLENGE_SOURCE,
                       attribution=CHALLENGE_ATTRIBUTION, copyright_license=CHALLENGE_LICENSE)


# --- archive ------------------------------------------------------------------------------------
def _archive_rows(path: Path, class_map: ClassMap) -> Iterator[MetadataRow | RowError | NotImported]:
    with csv_reader(path, "metadata file") as reader:
        header = _header(reader, path, ARCHIVE_REQUIRED_COLUMNS)
        levels = [col for col in DIAGNOSIS_LEVELS if col in header]
        if not levels and LEGACY_DIAGNOSIS not in header:
            raise MetadataError(f"{path}: header has no diagnosis column ({', '.join(DIAGNOSIS_LEVELS)} or "
                                f"{LEGACY_DIAGNOSIS})")
        yield from _first_of_each_image(
            reader, lambda line, record: _archive_row(line, record, levels, class_map), "isic_id")


def _diagnosis_terms(record: dict, levels: list[str]) -> list[str]:
    """The row's diagnosis as its terms, general first ([] when it has none)."""
    terms = [(record.get(col) or "").strip() for col in levels]
    while terms and not terms[-1]:
        terms.pop()
    if terms:
        if not all(terms):
            raise _Invalid(f"diagnosis levels with a gap: {':'.join(terms)[:120]!r}")
        value = ":".join(terms)
        if value not in _DIAGNOSES:
            raise _Invalid(f"unknown diagnosis {value[:120]!r} (not in the ISIC diagnosis hierarchy)")
        return terms
    legacy = (record.get(LEGACY_DIAGNOSIS) or "").strip()
    if not legacy:
        return []
    if legacy.lower() not in _LEGACY:
        raise _Invalid(f"unknown diagnosis {legacy[:80]!r} (not an ISIC legacy diagnosis)")
    return [_LEGACY[legacy.lower()]]


def _archive_row(line: int, record: dict, levels: list[str], class_map: ClassMap) -> MetadataRow | RowError | NotImported:
    if None in record or any(value is None for value in record.values()):
        return RowError(line, "", "wrong number of fields")
    image_id = _image_id(line, record["isic_id"], "isic_id")
    if isinstance(image_id, RowError):
        return image_id
    image_type = record["image_type"].strip()
    licence = record["copyright_license"].strip()
    attribution = " ".join(record["attribution"].split())
    try:
        if image_type and image_type not in _IMAGE_TYPES:
            raise _Invalid(f"unknown image_type {image_type[:40]!r} (expected one of {', '.join(_IMAGE_TYPES)})")
        if licence not in LICENSES:
            raise _Invalid(f"copyright_license {licence[:40]!r} is not one of {', '.join(LICENSES)}")
        if len(attribution) > MAX_ATTRIBUTION:
            raise _Invalid(f"attribution longer than {MAX_ATTRIBUTION} characters")
        terms = _diagnosis_terms(record, levels)
        age = _age(record.get("age_approx") or "")
        sex = _sex(record.get("sex") or "")
        localization = _site(record.get("anatom_site_general") or "")
        lesion_id = _optional_id(record.get("lesion_id") or "", "lesion_id") or image_id
        patient_id = _optional_id(record.get("patient_id") or "", "patient_id")
        dx_type = _confirm_type(record.get("diagnosis_confirm_type") or "")
    except _Invalid as exc:
        return RowError(line, image_id, str(exc))
    if image_type != DERMOSCOPIC:
        return NotImported(line, image_id, NOT_DERMOSCOPIC, image_type or NOT_STATED)
    dx = class_map.class_of(terms)
    if dx is None:
        return NotImported(line, image_id, NO_CLASS, terms[-1] if terms else NOT_STATED)
    return MetadataRow(line, lesion_id, image_id, dx, dx_type, age, sex, localization, ARCHIVE_SOURCE,
                       patient_id=patient_id, attribution=attribution, copyright_license=licence)


def _confirm_type(text: str) -> str:
    value = text.strip().lower()
    if not value:
        return DX_TYPE_UNKNOWN
    if value not in CONFIRM_TYPE_MAP:
        raise _Invalid(f"unknown diagnosis_confirm_type {value[:60]!r} (expected one of {', '.join(CONFIRM_TYPE_MAP)})")
    return CONFIRM_TYPE_MAP[value]
