"""import_ham10000 on a folder in the real layout, built from a slice of the real metadata."""
from __future__ import annotations

import pytest
from django.core.management import CommandError

from retrieval.models import Case
from tests.conftest import real_metadata_rows, write_ham_folder
from tests.retrieval.importing import run_command, stored_files

pytestmark = [pytest.mark.django_db, pytest.mark.services]


def run_import(folder, **kwargs):
    return run_command("import_ham10000", str(folder), **kwargs)


def test_imports_real_layout_with_metadata(tmp_path, media_root):
    rows = real_metadata_rows(40)
    write_ham_folder(tmp_path / "ham", rows)

    out, err = run_import(tmp_path / "ham")

    assert "40 rows read, 40 imported, 0 already present, 0 skipped" in out
    assert err == ""
    assert Case.objects.count() == 40
    case = Case.objects.get(image_id=rows[0]["image_id"])
    assert (case.lesion_id, case.dx, case.dx_type, case.sex, case.localization, case.source_dataset) == (
        rows[0]["lesion_id"], rows[0]["dx"], rows[0]["dx_type"], rows[0]["sex"], rows[0]["localization"], rows[0]["dataset"]
    )
    assert case.age == int(float(rows[0]["age"]))
    assert case.collection == "ham10000" and case.split == "none"
    assert (media_root / case.image.name).read_bytes()[:2] == b"\xff\xd8"
    # images from both part folders were found
    assert len(stored_files(media_root)) == 40


def test_second_run_adds_nothing_and_says_so(tmp_path, media_root):
    write_ham_folder(tmp_path / "ham", real_metadata_rows(12))
    run_import(tmp_path / "ham")
    files_before = stored_files(media_root)

    out, _ = run_import(tmp_path / "ham")

    assert "Nothing to add: all 12 images are already in 'ham10000'" in out
    assert "0 imported, 12 already present" in out
    assert Case.objects.count() == 12
    assert stored_files(media_root) == files_before


def test_bad_rows_are_reported_with_row_numbers_and_skipped(tmp_path, media_root):
    rows = real_metadata_rows(6)
    folder = tmp_path / "ham"
    good = rows[0]
    extra = [
        f"{good['lesion_id']},ISIC_9000001,psoriasis,histo,50,male,back,x",  # row 8: unknown class
        f"{good['lesion_id']},ISIC_9000002,nv,histo,50,male,back,x",  # row 9: image missing
        f"{good['lesion_id']},ISIC_9000003,nv,histo,50,male,back,x",  # row 10: unreadable image
        f"{good['lesion_id']},{good['image_id']},nv,histo,50,male,back,x",  # row 11: duplicate image_id
        f"{good['lesion_id']},../../etc/passwd,nv,histo,50,male,back,x",  # row 12: path traversal
        f"{good['lesion_id']},ISIC_9000004,nv,histo",  # row 13: too few fields
        f"{good['lesion_id']},ISIC_9000005,nv,histo,old,male,back,x",  # row 14: bad age
        f"{good['lesion_id']},ISIC_9000006,nv,histo,50,male,back,x",  # row 15: same bytes as row 2's image
        f"{good['lesion_id']},ISIC_9000007,nv,histo,50,male,back,x",  # row 16: truncated JPEG
    ]
    write_ham_folder(folder, rows, extra_lines=extra)
    part = folder / "HAM10000_images_part_1"
    (part / "ISIC_9000003.jpg").write_bytes(b"this is not a jpeg")
    (part / "ISIC_9000006.jpg").write_bytes((part / f"{rows[0]['image_id']}.jpg").read_bytes())
    (part / "ISIC_9000007.jpg").write_bytes((part / f"{rows[0]['image_id']}.jpg").read_bytes()[:300])

    out, err = run_import(folder)

    assert "15 rows read, 6 imported, 0 already present, 9 skipped" in out
    for expected in [
        "row 8 (ISIC_9000001): unknown class 'psoriasis'",
        "row 9 (ISIC_9000002): image file ISIC_9000002.jpg not found",
        "row 10 (ISIC_9000003): unreadable image: the file is not a readable image",
        f"row 11 ({good['image_id']}): duplicate image_id (first on row 2)",
        "row 12: unsafe image_id '../../etc/passwd'",
        "row 13 (ISIC_9000004): wrong number of fields",
        "row 14 (ISIC_9000005): age 'old' is not a number",
        f"row 15 (ISIC_9000006): same image content as {good['image_id']}",
        "row 16 (ISIC_9000007): unreadable image: the image is damaged or truncated",
    ]:
        assert expected in err
    assert Case.objects.count() == 6
    # nothing half-imported: one image file per imported case, none for skipped rows
    assert len(stored_files(media_root)) == 6


def test_malformed_csv_imports_nothing(tmp_path, media_root):
    folder = tmp_path / "ham"
    write_ham_folder(folder, real_metadata_rows(3))
    (folder / "HAM10000_metadata.csv").write_text("image,diagnosis\nISIC_1,nv\n")

    with pytest.raises(CommandError, match=r"header lacks column\(s\) lesion_id, image_id, dx.*Nothing was imported"):
        run_import(folder)
    assert Case.objects.count() == 0
    assert stored_files(media_root) == []


def test_binary_metadata_is_a_clear_error(tmp_path, media_root):
    folder = tmp_path / "ham"
    folder.mkdir()
    (folder / "HAM10000_metadata.csv").write_bytes(b"\xff\xfe\x00\x00garbage\x89PNG")
    with pytest.raises(CommandError, match="not a UTF-8 text file"):
        run_import(folder)
    assert Case.objects.count() == 0


def test_symlink_out_of_the_folder_is_not_followed(tmp_path, media_root):
    rows = real_metadata_rows(2)
    folder = tmp_path / "ham"
    write_ham_folder(folder, rows)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes((folder / "HAM10000_images_part_2" / f"{rows[1]['image_id']}.jpg").read_bytes())
    target = folder / "HAM10000_images_part_2" / f"{rows[1]['image_id']}.jpg"
    target.unlink()
    target.symlink_to(outside)

    out, err = run_import(folder)

    assert "1 imported" in out
    assert f"({rows[1]['image_id']}): image file" in err and "not found" in err


def test_masks_are_imported_when_present(tmp_path, media_root):
    from PIL import Image

    rows = real_metadata_rows(2)
    folder = tmp_path / "ham"
    write_ham_folder(folder, rows)
    Image.new("L", (60, 45), 255).save(folder / f"{rows[0]['image_id']}_segmentation.png")

    run_import(folder)

    with_mask = Case.objects.get(image_id=rows[0]["image_id"])
    assert with_mask.mask.name.startswith("masks/")
    assert Case.objects.get(image_id=rows[1]["image_id"]).mask.name == ""


def test_missing_folder_is_a_clear_error(tmp_path, media_root):
    with pytest.raises(CommandError, match="not found"):
        run_import(tmp_path / "nowhere")
