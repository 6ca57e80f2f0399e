"""Folders in the two ISIC layouts (2019 challenge, isic-cli archive export), built from rows of
the real HAM10000 metadata (every HAM10000 image is an ISIC archive image) with generated JPEGs.

The columns and values are those the publishers write (checked by the importer against the
isic-metadata schema); what HAM10000 does not have is derived from it in a fixed way: the ISIC
diagnosis path and challenge column of each class, the ISIC site of each HAM localization, and a
pseudonymous patient id shared by each two consecutive lesions (so that splits can be checked to
keep a patient's lesions together).
"""
from __future__ import annotations

import csv
from pathlib import Path

from retrieval import isic
from tests.conftest import jpeg_bytes, real_metadata_rows

#: HAM class -> the 2019 challenge's one-hot column.
CHALLENGE_COLUMN = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
#: HAM class -> an ISIC diagnosis path (diagnosis_1..3) the default class map gives that class.
ARCHIVE_DIAGNOSIS = {
    "akiec": ("Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis"),
    "bcc": ("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma"),
    "bkl": ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis"),
    "df": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma"),
    "mel": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive"),
    "nv": ("Benign", "Benign melanocytic proliferations", "Nevus"),
    "vasc": ("Benign", "Benign soft tissue proliferations - Vascular", "Hemangioma"),
}
#: HAM localization -> ISIC anatom_site_general ("" = not stated).
ISIC_SITE = {
    "abdomen": "anterior torso", "chest": "anterior torso", "trunk": "lateral torso", "back": "posterior torso",
    "face": "head/neck", "scalp": "head/neck", "ear": "head/neck", "neck": "head/neck",
    "upper extremity": "upper extremity", "hand": "upper extremity", "lower extremity": "lower extremity",
    "foot": "lower extremity", "acral": "palms/soles", "genital": "oral/genital", "unknown": "",
}
#: HAM ``dataset`` -> the attribution the ISIC archive shows for those images.
ATTRIBUTION = {
    "vidir_modern": "ViDIR Group, Department of Dermatology, Medical University of Vienna",
    "vidir_molemax": "ViDIR Group, Department of Dermatology, Medical University of Vienna",
    "vienna_dias": "ViDIR Group, Department of Dermatology, Medical University of Vienna",
    "rosendahl": "Cliff Rosendahl, School of Medicine, University of Queensland",
}
ARCHIVE_COLUMNS = ["isic_id", "attribution", "copyright_license", "image_type", "diagnosis_1", "diagnosis_2",
                   "diagnosis_3", "diagnosis_4", "diagnosis_5", "diagnosis_confirm_type", "benign_malignant",
                   "anatom_site_general", "age_approx", "sex", "lesion_id", "patient_id"]
CONFIRM_TYPE = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
                "consensus": "single image expert consensus", "confocal": "confocal microscopy with consensus dermoscopy"}


def isic_rows(per_class: int = 6) -> list[dict[str, str]]:
    """The first ``per_class`` rows of each class in the real HAM10000 metadata (7 x per_class rows)."""
    taken: dict[str, list[dict[str, str]]] = {}
    for row in real_metadata_rows():
        if len(taken.setdefault(row["dx"], [])) < per_class:
            taken[row["dx"]].append(row)
    return [row for dx in sorted(taken) for row in taken[dx]]


def patient_of(rows: list[dict[str, str]]) -> dict[str, str]:
    """lesion_id -> a pseudonymous ISIC patient id: each two consecutive lesions share one."""
    lesions = list(dict.fromkeys(row["lesion_id"] for row in rows))
    return {lesion: f"IP_{index // 2:07d}" for index, lesion in enumerate(lesions)}


def _age(row: dict[str, str]) -> str:
    return str(int(float(row["age"]))) if row["age"] else ""


def write_images(folder: Path, image_ids: list[str], *, first_seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(image_ids):
        (folder / f"{image_id}.jpg").write_bytes(jpeg_bytes(first_seed + i))


def write_challenge_folder(folder: Path, rows: list[dict[str, str]], *, extra_truth: list[str] = (),
                           extra_metadata: list[str] = (), images_in_input: bool = True) -> Path:
    """The 2019 challenge layout: ground truth, metadata, images in ISIC_2019_Training_Input/ (or
    the folder itself). ``extra_*`` lines are appended verbatim after the rows (broken rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / isic.CHALLENGE_GROUND_TRUTH, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *isic.CHALLENGE_CLASSES])
        for row in rows:
            writer.writerow([row["image_id"], *("1.0" if CHALLENGE_COLUMN[row["dx"]] == column else "0.0"
                                                for column in isic.CHALLENGE_CLASSES)])
        for line in extra_truth:
            handle.write(line + "\n")
    with open(folder / isic.CHALLENGE_METADATA, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(isic.CHALLENGE_METADATA_COLUMNS))
        for row in rows:
            writer.writerow([row["image_id"], _age(row), ISIC_SITE[row["localization"]], row["lesion_id"],
                             row["sex"] if row["sex"] != "unknown" else ""])
        for line in extra_metadata:
            handle.write(line + "\n")
    write_images(folder / isic.CHALLENGE_IMAGES if images_in_input else folder, [r["image_id"] for r in rows])
    return folder


def archive_record(row: dict[str, str], patients: dict[str, str], **overrides: str) -> dict[str, str]:
    """The metadata.csv row isic-cli writes for a HAM10000 image."""
    levels = ARCHIVE_DIAGNOSIS[row["dx"]]
    record = {
        "isic_id": row["image_id"], "attribution": ATTRIBUTION[row["dataset"]], "copyright_license": "CC-BY-NC",
        "image_type": "dermoscopic", **{f"diagnosis_{i}": "" for i in range(1, 6)},
        **{f"diagnosis_{i}": term for i, term in enumerate(levels, start=1)},
        "diagnosis_confirm_type": CONFIRM_TYPE[row["dx_type"]],
        "benign_malignant": "malignant" if levels[0] == "Malignant" else "benign",
        "anatom_site_general": ISIC_SITE[row["localization"]], "age_approx": _age(row),
        "sex": row["sex"] if row["sex"] != "unknown" else "", "lesion_id": row["lesion_id"],
        "patient_id": patients[row["lesion_id"]],
    }
    record.update(overrides)
    return record


def write_archive_folder(folder: Path, rows: list[dict[str, str]], *, extra: list[dict[str, str]] = (),
                         columns: list[str] = ARCHIVE_COLUMNS) -> Path:
    """An isic-cli export: metadata.csv + <isic_id>.jpg. ``extra`` records (archive_record with
    overrides) are appended after the rows, without images."""
    folder.mkdir(parents=True, exist_ok=True)
    patients = patient_of(rows)
    with open(folder / isic.ARCHIVE_METADATA, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(archive_record(row, patients))
        for record in extra:
            writer.writerow(record)
    write_images(folder, [r["image_id"] for r in rows])
    return folder
