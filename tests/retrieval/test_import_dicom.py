"""import_dicom: diagnosed DICOM images + a labels CSV keyed by SOP Instance UID -> library cases,
validated row by row, idempotent, and with no identifier of the patient (nor the UID) stored."""
from __future__ import annotations

import io

import pydicom
import pytest
from django.core.management import CommandError
from PIL import Image

from retrieval.dicom_labels import uid_digest
from retrieval.models import Case
from tests import dicom_files as dicom
from tests.dicom_files import assert_no_identifier, database_text
from tests.retrieval.importing import run_command

pytestmark = pytest.mark.django_db


def uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def run_import(folder, labels, **kwargs):
    return run_command("import_dicom", str(folder), "--labels", str(labels), **kwargs)


def files_under(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def folder(tmp_path):
    """A disc-like folder: nested, names without extensions, a DICOMDIR, a text file, and bad images."""
    root = tmp_path / "export"
    (root / "STUDY1" / "SERIES1").mkdir(parents=True)
    files = {
        "rgb": dicom.rgb_file(dicom.photo(seed=1)),
        "jpeg": dicom.jpeg_file(dicom.photo(seed=2)),
        "j2k": dicom.jpeg2000_file(dicom.photo(seed=3), sop_class=dicom.VL_PHOTOGRAPHIC),
        "mono": dicom.monochrome_file(dicom.photo(seed=4), bits=16),
        "truncated": dicom.truncated_file(),
        "multiframe": dicom.multiframe_file(),
        "unlisted": dicom.rgb_file(dicom.photo(seed=5)),
        "same-pixels": dicom.rgb_file(dicom.photo(seed=1)),  # another UID, the same picture as "rgb"
    }
    for index, (name, data) in enumerate(files.items()):
        (root / "STUDY1" / "SERIES1" / f"IM{index:06d}").write_bytes(data)
    (root / "DICOMDIR").write_bytes(dicom.dicomdir_file())
    (root / "README.TXT").write_text("Patient SENTINEL^PATIENT disc\n")
    return root, {name: uid(data) for name, data in files.items()}


def write_labels(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def labels(tmp_path, folder):
    _, uids = folder
    return write_labels(tmp_path / "labels.csv", [
        "sop_instance_uid,dx,dx_type,lesion_id,age,sex,localization",
        f"{uids['rgb']},mel,histo,LESION_1,55,female,back",  # row 2
        f"{uids['jpeg']},nv,follow_up,LESION_1,55,female,back",  # row 3: a second photo of the same lesion
        f"{uids['j2k']},bkl,consensus,,,,",  # row 4: a lesion of its own, age and sex unknown
        f"{uids['mono']},bcc,histo,,70,male,face",  # row 5
        f"{uids['truncated']},nv,histo,,,,",  # row 6: refused
        f"{uids['multiframe']},nv,histo,,,,",  # row 7: refused
        "1.2.3.4.5.6.7.8.9,nv,histo,,,,",  # row 8: no such file
        f"{uids['rgb']},nv,histo,,,,",  # row 9: the UID again
        f"{uids['jpeg'][:-1]}x,nv,histo,,,,",  # row 10: not a UID
        f"{uids['same-pixels']},mel,histo,,,,",  # row 11: the same image content as row 2
        f"{uids['unlisted'][:-2]}1,cancer,histo,,,,",  # row 12: unknown class
    ])


def test_imports_diagnosed_dicom_images_and_reports_every_bad_row(folder, labels, media_root):
    _, uids = folder
    out, err = run_import(folder[0], labels)

    assert "11 rows read, 4 imported, 0 already present, 7 skipped" in out
    skipped = err.splitlines()
    assert len(skipped) == 7 and all(line.startswith("skipped row ") for line in skipped)
    expect = {
        6: "unusable DICOM file: the DICOM file is damaged or truncated",
        7: "unusable DICOM file: the DICOM file holds 3 frames",
        8: "no DICOM file in the folder has this sop_instance_uid",
        9: "duplicate sop_instance_uid (first on row 2)",
        10: "sop_instance_uid is not a DICOM UID",
        11: f"same image content as {uid_digest(uids['rgb'])} in collection 'dicom'",
        12: "unknown class 'cancer'",
    }
    for row, message in expect.items():
        assert any(line.startswith(f"skipped row {row}") and message in line for line in skipped), (row, skipped)

    cases = {case.image_id: case for case in Case.objects.all()}
    assert set(cases) == {uid_digest(uids[name]) for name in ("rgb", "jpeg", "j2k", "mono")}
    first, j2k, mono = cases[uid_digest(uids["rgb"])], cases[uid_digest(uids["j2k"])], cases[uid_digest(uids["mono"])]
    assert (first.collection, first.dx, first.dx_type, first.lesion_id, first.age, first.sex, first.localization,
            first.source_dataset) == ("dicom", "mel", "histo", "LESION_1", 55, "female", "back", "dicom")
    assert cases[uid_digest(uids["jpeg"])].lesion_id == "LESION_1"
    assert (j2k.lesion_id, j2k.age, j2k.sex, j2k.localization) == (j2k.image_id, None, "unknown", "unknown")
    assert (mono.dx, mono.age, mono.sex) == ("bcc", 70, "male")
    for case in cases.values():  # the PNG of the pixels, exactly as decoded
        assert case.image.name.endswith(".png") and (case.width, case.height) == (96, 72)
        with Image.open(media_root / case.image.name) as image:
            assert image.format == "PNG" and image.mode == "RGB"
    with Image.open(media_root / first.image.name) as image:
        assert image.tobytes() == dicom.photo(seed=1).tobytes()

    # Neither the patient's identifiers nor the SOP Instance UIDs were stored or printed.
    assert_no_identifier(database_text(), "the database", *uids.values())
    stored = b"\n".join(files_under(media_root).values())
    assert_no_identifier(stored, "the media folder", *uids.values())
    assert_no_identifier(out + err, "the command's output", *uids.values())


def test_a_second_run_adds_nothing(folder, labels, media_root):
    run_import(folder[0], labels)
    cases, files = list(Case.objects.values_list("id", "image_id")), files_under(media_root)

    out, err = run_import(folder[0], labels)

    assert "11 rows read, 0 imported, 4 already present, 7 skipped" in out
    assert list(Case.objects.values_list("id", "image_id")) == cases and files_under(media_root) == files


def test_the_collection_option_and_strict_mode(folder, tmp_path, media_root):
    _, uids = folder
    good = write_labels(tmp_path / "good.csv", ["sop_instance_uid,dx,dx_type", f"{uids['rgb']},mel,histo"])
    out, _ = run_import(folder[0], good, collection="clinic", strict=True)
    assert "Summary for 'clinic': 1 rows read, 1 imported" in out
    assert Case.objects.get().collection == "clinic"
    bad = write_labels(tmp_path / "bad.csv", ["sop_instance_uid,dx,dx_type", f"{uids['multiframe']},mel,histo"])
    with pytest.raises(CommandError, match=r"1 row\(s\) skipped \(--strict\)"):
        run_import(folder[0], bad, strict=True)


@pytest.mark.parametrize("lines, message", [
    (["sop_instance_uid,dx", "1.2.3,mel"], r"header lacks column\(s\) dx_type"),
    ([""], "is empty"),
])
def test_an_unusable_labels_file_imports_nothing(folder, tmp_path, media_root, lines, message):
    labels = write_labels(tmp_path / "labels.csv", lines)
    with pytest.raises(CommandError, match=message) as refused:
        run_import(folder[0], labels)
    assert str(refused.value).endswith("Nothing was imported.")
    assert not Case.objects.exists() and files_under(media_root) == {}


def test_a_missing_folder_or_labels_file_is_an_error(tmp_path, labels):
    with pytest.raises(CommandError, match="DICOM folder .* does not exist"):
        run_import(tmp_path / "nowhere", labels)
    with pytest.raises(CommandError, match="labels file .* not found"):
        run_import(tmp_path, tmp_path / "none.csv")


def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path, media_root):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = dicom.rgb_file()
    (outside / "IM1").write_bytes(data)
    root = tmp_path / "export"
    root.mkdir()
    (root / "IM1").symlink_to(outside / "IM1")
    labels = write_labels(tmp_path / "labels.csv", ["sop_instance_uid,dx,dx_type", f"{uid(data)},mel,histo"])
    _, err = run_import(root, labels)
    assert "no DICOM file in the folder has this sop_instance_uid" in err and not Case.objects.exists()
