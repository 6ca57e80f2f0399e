"""import_isic on folders in the 2019 challenge and the isic-cli archive layouts, built from real
HAM10000 metadata rows (tests/retrieval/isic_folders.py), and the credit line of the imported
images on the library page, the result page and in the API."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from retrieval import isic, splits
from retrieval.models import Case
from tests.apiclient import api
from tests.conftest import write_ham_folder
from tests.pages import text_of
from tests.retrieval.importing import assert_skipped, run_command, stored_files
from tests.retrieval.isic_folders import (
    ATTRIBUTION, CONFIRM_TYPE, ISIC_SITE, archive_record, patient_of, write_archive_folder, write_challenge_folder,
    write_images,
)

pytestmark = [pytest.mark.django_db, pytest.mark.services]

ONE_HOT_ZEROS = ",".join(["0.0"] * len(isic.CHALLENGE_CLASSES))
DX_TYPE_OF = {"histopathology": "histo", "serial imaging showing no change": "follow_up",
              "single image expert consensus": "consensus"}


def run_import(folder, **kwargs):
    return run_command("import_isic", str(folder), **kwargs)


def one_hot(column: str) -> str:
    return ",".join("1.0" if c == column else "0.0" for c in isic.CHALLENGE_CLASSES)


# --- challenge2019 ------------------------------------------------------------------------------
@pytest.mark.parametrize("images_in_input", [True, False], ids=["input-folder", "folder-itself"])
def test_challenge_layout_imports_every_row_with_its_metadata(tmp_path, media_root, isic_source_rows,
                                                              images_in_input):
    folder = write_challenge_folder(tmp_path / "isic2019", isic_source_rows, images_in_input=images_in_input)

    out, err = run_import(folder)

    assert "Layout: challenge2019." in out
    assert "42 rows read, 42 imported, 0 already present, 0 skipped." in out
    assert err == ""
    assert Case.objects.filter(collection="isic2019").count() == 42
    for row in isic_source_rows:
        case = Case.objects.get(collection="isic2019", image_id=row["image_id"])
        assert (case.dx, case.lesion_id, case.age, case.sex) == (
            row["dx"], row["lesion_id"], int(float(row["age"])), row["sex"])
        assert case.localization == isic.SITE_MAP.get(ISIC_SITE[row["localization"]], "unknown")
        assert (case.dx_type, case.source_dataset, case.patient_id) == ("unknown", "ISIC 2019", "")
        assert (case.attribution, case.copyright_license) == (isic.CHALLENGE_ATTRIBUTION, "CC-BY-NC")
    assert Case.objects.get(image_id="ISIC_0029417").localization == "head/neck"  # HAM: neck
    assert Case.objects.get(image_id="ISIC_0028155").localization == "back"  # posterior torso
    assert len(stored_files(media_root)) == 42


def test_challenge_bad_rows_are_reported_with_line_numbers_and_no_class_rows_counted(tmp_path, media_root,
                                                                                      isic_source_rows):
    rows = isic_source_rows[:10]
    good = rows[0]["image_id"]
    folder = write_challenge_folder(tmp_path / "isic2019", rows, extra_truth=[
        f"ISIC_9000001,{one_hot('MEL')[:-3]}1.0",  # row 12: MEL and UNK both set
        f"ISIC_9000002,{ONE_HOT_ZEROS}",  # row 13: no class set
        "ISIC_9000003,x" + ONE_HOT_ZEROS[3:],  # row 14: not a number
        f"ISIC_9000004,{one_hot('SCC')}",  # row 15: SCC, no class
        f"ISIC_9000005,{one_hot('UNK')}",  # row 16: UNK, no class
        f"ISIC_9000006,{one_hot('NV')}",  # row 17: image missing
        f"../../etc/passwd,{one_hot('NV')}",  # row 18: unsafe name
        f"ISIC_9000007,{one_hot('NV')}",  # row 19: bad age in its metadata row
        f"ISIC_9000008,{one_hot('NV')}",  # row 20: no metadata row
        f"{good},{one_hot('AK')}",  # row 21: duplicate image
        f"ISIC_9000009,{one_hot('BKL')}",  # row 22: unknown site in its metadata row
        f"ISIC_9000010,{one_hot('DF')}",  # row 23: unreadable image
    ], extra_metadata=[
        "ISIC_9000004,60,head/neck,,male", "ISIC_9000005,60,head/neck,,male", "ISIC_9000006,60,head/neck,,male",
        "ISIC_9000007,sixty,head/neck,,male",  # metadata row 15
        "ISIC_9000009,60,elbow,,female",  # metadata row 16
        "ISIC_9000010,60,,BCN_0000001,female",
    ])
    write_images(folder / isic.CHALLENGE_IMAGES, ["ISIC_9000004", "ISIC_9000005", "ISIC_9000007"], first_seed=100)
    (folder / isic.CHALLENGE_IMAGES / "ISIC_9000010.jpg").write_bytes(b"not a jpeg")

    out, err = run_import(folder)

    assert "22 rows read, 10 imported, 0 already present, 10 skipped, 2 not imported by rule." in out
    assert "Not imported, diagnosis with no class in the map: 'SCC' 1; 'UNK' 1." in out
    expected = [
        "row 12 (ISIC_9000001): the one-hot columns MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK hold 2 ones "
        "(MEL, UNK), not exactly one",
        "row 13 (ISIC_9000002): the one-hot columns MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK hold 0 ones (none), "
        "not exactly one",
        "row 14 (ISIC_9000003): MEL is 'x', not 0 or 1",
        "row 17 (ISIC_9000006): image file ISIC_9000006.jpg not found",
        "row 18: unsafe image '../../etc/passwd'",
        "row 19 (ISIC_9000007): ISIC_2019_Training_Metadata.csv row 15: age_approx 'sixty' is not a number",
        "row 20 (ISIC_9000008): no row for it in ISIC_2019_Training_Metadata.csv",
        f"row 21 ({good}): duplicate image (first on row 2)",
        "row 22 (ISIC_9000009): ISIC_2019_Training_Metadata.csv row 16: unknown anatom_site_general 'elbow'",
        "row 23 (ISIC_9000010): unreadable image: the file is not a readable image",
    ]
    assert_skipped(err, expected)
    assert Case.objects.count() == 10 and len(stored_files(media_root)) == 10
    assert Case.objects.get(image_id=good).dx == rows[0]["dx"]  # the first row, not the duplicate


def test_challenge_folder_without_its_metadata_file_imports_nothing(tmp_path, media_root, isic_source_rows):
    folder = write_challenge_folder(tmp_path / "isic2019", isic_source_rows[:3])
    (folder / isic.CHALLENGE_METADATA).unlink()

    with pytest.raises(CommandError, match="ISIC_2019_Training_Metadata.csv not found.*Nothing was imported"):
        run_import(folder)
    assert Case.objects.count() == 0 and stored_files(media_root) == []


# --- archive ------------------------------------------------------------------------------------
def test_archive_layout_keeps_attribution_licence_and_patient(tmp_path, media_root, isic_source_rows):
    folder = write_archive_folder(tmp_path / "export", isic_source_rows)
    patients = patient_of(isic_source_rows)

    out, err = run_import(folder)

    assert "Layout: archive." in out and err == ""
    assert "Summary for 'isic_archive': 42 rows read, 42 imported, 0 already present, 0 skipped." in out
    for row in isic_source_rows:
        case = Case.objects.get(collection="isic_archive", image_id=row["image_id"])
        assert (case.dx, case.lesion_id, case.patient_id) == (row["dx"], row["lesion_id"], patients[row["lesion_id"]])
        assert case.dx_type == DX_TYPE_OF[CONFIRM_TYPE[row["dx_type"]]] == row["dx_type"]
        assert (case.attribution, case.copyright_license) == (ATTRIBUTION[row["dataset"]], "CC-BY-NC")
        assert case.source_dataset == "ISIC archive"
    assert Case.objects.get(image_id="ISIC_0027190").attribution.startswith("Cliff Rosendahl")


def test_archive_bad_rows_and_left_out_image_types(tmp_path, media_root, isic_source_rows):
    rows = isic_source_rows[:8]
    patients = patient_of(rows)
    base = rows[0]

    def extra(image_id, **overrides):
        return archive_record(base, patients, isic_id=image_id, **overrides)

    folder = write_archive_folder(tmp_path / "export", rows, extra=[
        extra("ISIC_9100001", diagnosis_3="Psoriasis"),  # row 10: not in the hierarchy
        extra("ISIC_9100002", image_type="clinical: close-up"),  # row 11: left out
        extra("ISIC_9100003", image_type="TBP tile: overview"),  # row 12: left out
        extra("ISIC_9100004", image_type="photo"),  # row 13: not an ISIC image type
        extra("ISIC_9100005"),  # row 14: image missing
        extra("ISIC_91/../../x"),  # row 15: unsafe name
        extra("ISIC_9100006", age_approx="200"),  # row 16: bad age
        extra("ISIC_9100007", copyright_license="all rights reserved"),  # row 17
        extra("ISIC_9100008", diagnosis_1="Malignant", diagnosis_2="Malignant epidermal proliferations",
              diagnosis_3="Squamous cell carcinoma, Invasive"),  # row 18: valid, no class
        extra(base["image_id"]),  # row 19: duplicate isic_id
        extra("ISIC_9100009", diagnosis_2="", diagnosis_3="Nevus"),  # row 20: a gap in the levels
        extra("ISIC_9100010", age_approx="85+", image_type=""),  # row 21: image type not stated
    ])
    write_images(folder, ["ISIC_9100002", "ISIC_9100008"], first_seed=200)

    out, err = run_import(folder)

    assert "20 rows read, 8 imported, 0 already present, 8 skipped, 4 not imported by rule." in out
    assert ("Not imported, not a dermoscopic image (image_type): '(none)' 1; 'TBP tile: overview' 1; "
            "'clinical: close-up' 1.") in out
    assert "Not imported, diagnosis with no class in the map: 'Squamous cell carcinoma, Invasive' 1." in out
    expected = [
        "row 10 (ISIC_9100001): unknown diagnosis 'Indeterminate:Indeterminate epidermal proliferations:Psoriasis' "
        "(not in the ISIC diagnosis hierarchy)",
        "row 13 (ISIC_9100004): unknown image_type 'photo' (expected one of dermoscopic, clinical: overview,",
        "row 14 (ISIC_9100005): image file ISIC_9100005.jpg not found",
        "row 15: unsafe isic_id 'ISIC_91/../../x'",
        "row 16 (ISIC_9100006): age_approx '200' is not a whole number of years from 0 to 120",
        "row 17 (ISIC_9100007): copyright_license 'all rights reserved' is not one of CC-0, CC-BY, CC-BY-NC",
        f"row 19 ({base['image_id']}): duplicate isic_id (first on row 2)",
        "row 20 (ISIC_9100009): diagnosis levels with a gap: 'Indeterminate::Nevus'",
    ]
    assert_skipped(err, expected)
    assert Case.objects.count() == 8 and len(stored_files(media_root)) == 8


def test_archive_legacy_diagnosis_column(tmp_path, media_root, isic_source_rows):
    rows = isic_source_rows[:2]
    patients = patient_of(rows)
    columns = ["isic_id", "attribution", "copyright_license", "image_type", "diagnosis", "benign_malignant",
               "age_approx", "sex", "lesion_id"]
    folder = write_archive_folder(tmp_path / "export", [], columns=columns, extra=[
        archive_record(rows[0], patients, diagnosis="actinic keratosis", attribution=""),
        archive_record(rows[1], patients, diagnosis="squamous cell carcinoma"),
        archive_record(rows[1], patients, isic_id="ISIC_9200001", diagnosis="eczema"),
    ])
    write_images(folder, [rows[0]["image_id"], rows[1]["image_id"]])

    out, err = run_import(folder)

    assert "3 rows read, 1 imported, 0 already present, 1 skipped, 1 not imported by rule." in out
    assert "'squamous cell carcinoma' 1." in out
    assert err.strip() == "skipped row 4 (ISIC_9200001): unknown diagnosis 'eczema' (not an ISIC legacy diagnosis)"
    case = Case.objects.get()
    assert (case.dx, case.dx_type, case.attribution, case.patient_id) == ("akiec", "unknown", "", "")


# --- both ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("writer", [write_challenge_folder, write_archive_folder], ids=["challenge", "archive"])
def test_second_run_adds_nothing(tmp_path, media_root, isic_source_rows, writer):
    folder = writer(tmp_path / "isic", isic_source_rows[:12])
    run_import(folder)
    files_before = stored_files(media_root)

    out, err = run_import(folder)

    assert "0 imported, 12 already present, 0 skipped." in out and "Nothing to add: all 12 images" in out
    assert err == "" and Case.objects.count() == 12 and stored_files(media_root) == files_before


def test_the_same_image_already_in_another_collection_is_reported(tmp_path, media_root, isic_source_rows):
    rows = isic_source_rows[:5]
    write_ham_folder(tmp_path / "ham", rows)  # the same images (same bytes): HAM10000 is part of ISIC 2019
    call_command("import_ham10000", str(tmp_path / "ham"), stdout=StringIO(), verbosity=0)
    folder = write_challenge_folder(tmp_path / "isic2019", rows)

    out, err = run_import(folder)

    assert "5 rows read, 0 imported, 0 already present, 5 skipped." in out
    for line, row in enumerate(rows, start=2):
        image_id = row["image_id"]
        assert f"row {line} ({image_id}): same image content as {image_id} in collection 'ham10000'" in err
    assert Case.objects.filter(collection="isic2019").count() == 0


def test_class_map_overrides_the_default(tmp_path, media_root, isic_source_rows):
    rows = [row for row in isic_source_rows if row["dx"] == "mel"][:3] + [
        row for row in isic_source_rows if row["dx"] == "nv"][:3]
    folder = write_challenge_folder(tmp_path / "isic2019", rows, extra_truth=[f"ISIC_9300001,{one_hot('SCC')}"],
                                    extra_metadata=["ISIC_9300001,70,head/neck,,male"])
    write_images(folder / isic.CHALLENGE_IMAGES, ["ISIC_9300001"], first_seed=300)
    class_map = tmp_path / "map.csv"
    class_map.write_text("diagnosis,class\nSCC,akiec\nNV,none\n")

    out, err = run_import(folder, class_map=str(class_map), collection="mine")

    assert "7 rows read, 4 imported, 0 already present, 0 skipped, 3 not imported by rule." in out
    assert "Not imported, diagnosis with no class in the map: 'NV' 3." in out
    assert err == ""
    assert Case.objects.get(collection="mine", image_id="ISIC_9300001").dx == "akiec"
    assert not Case.objects.filter(dx="nv").exists()


@pytest.mark.parametrize("content, message", [
    ("diagnosis,class\nSCC,akiec\nMelanoma Invasiv,mel\n", r"line 3: 'Melanoma Invasiv' is not an ISIC diagnosis"),
    ("diagnosis,class\nSCC,carcinoma\n", r"line 2: unknown class 'carcinoma'"),
    ("diagnosis,class\nSCC,akiec\nscc,none\n", r"line 3: 'scc' is listed twice"),
    ("source,target\nSCC,akiec\n", r"the header must be diagnosis,class"),
])
def test_a_bad_class_map_imports_nothing(tmp_path, media_root, isic_source_rows, content, message):
    folder = write_challenge_folder(tmp_path / "isic2019", isic_source_rows[:3])
    class_map = tmp_path / "map.csv"
    class_map.write_text(content)

    with pytest.raises(CommandError, match=message + r".*Nothing was imported"):
        run_import(folder, class_map=str(class_map))
    assert Case.objects.count() == 0


def test_layout_is_told_by_the_files(tmp_path, media_root, isic_source_rows):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="holds neither ISIC_2019_Training_GroundTruth.csv"):
        run_import(empty)
    both = write_archive_folder(write_challenge_folder(tmp_path / "both", isic_source_rows[:2]), isic_source_rows[:2])
    with pytest.raises(CommandError, match="holds both.*--layout"):
        run_import(both)
    out, _ = run_import(both, layout="archive")
    assert "Layout: archive." in out and "2 imported" in out
    with pytest.raises(CommandError, match="not found"):
        run_import(tmp_path / "nowhere")


def test_split_keeps_a_patients_lesions_together(tmp_path, media_root, isic_source_rows):
    run_import(write_archive_folder(tmp_path / "export", isic_source_rows))
    out = StringIO()

    call_command("split_library", "--collection", "isic_archive", "--seed", "3", stdout=out, verbosity=0)

    assert "0 lesion(s) in more than one split, 0 patient(s) in more than one split." in out.getvalue()
    by_patient = defaultdict(set)
    for patient_id, split in Case.objects.values_list("patient_id", "split"):
        by_patient[patient_id].add(split)
    assert len(by_patient) == 14 and all(len(s) == 1 for s in by_patient.values())
    assert len({split for s in by_patient.values() for split in s}) > 1
    # Grouping by lesion alone (what the split did before patient ids) puts a patient in two splits
    # with this seed: the patient grouping is what keeps them together.
    items = [splits.Item(image_id, lesion_id, dx) for image_id, lesion_id, dx in
             Case.objects.values_list("image_id", "lesion_id", "dx")]
    lesion_only = splits.grouped_stratified_split(items, splits.validate_fractions(0.8, 0.1, 0.1), seed=3)
    patient_of_image = dict(Case.objects.values_list("image_id", "patient_id"))
    spread = defaultdict(set)
    for image_id, split in lesion_only.items():
        spread[patient_of_image[image_id]].add(split)
    assert any(len(s) > 1 for s in spread.values())


# --- the credit line wherever the image is shown ------------------------------------------------
CREDIT = re.compile(r'<p class="credit small muted"([^>]*)>(.*?)</p>', re.S)  # (attributes, content)


@pytest.fixture
def archive_cases(tmp_path, media_root, isic_source_rows):
    rows = [isic_source_rows[i] for i in (0, 4, 7, 14, 21, 35)]  # five classes (the page shows 4 per class)
    run_import(write_archive_folder(tmp_path / "export", rows))
    return [Case.objects.get(image_id=row["image_id"]) for row in rows]


def test_library_page_credits_each_image(client, clinician, archive_cases):
    client.force_login(clinician)
    page = client.get("/library/", {"collection": "isic_archive"}).content.decode()

    credits = [text_of(content) for _, content in CREDIT.findall(page)]
    assert len(credits) == len(archive_cases)
    assert set(credits) == {f"Image: {ATTRIBUTION['vidir_modern']} · CC-BY-NC",
                            f"Image: {ATTRIBUTION['rosendahl']} · CC-BY-NC"}


def test_library_page_of_a_source_without_attribution_shows_no_credit(tmp_path, client, clinician, media_root,
                                                                      isic_source_rows):
    write_ham_folder(tmp_path / "ham", isic_source_rows[:6])
    call_command("import_ham10000", str(tmp_path / "ham"), stdout=StringIO(), verbosity=0)
    client.force_login(clinician)

    page = client.get("/library/", {"collection": "ham10000"}).content.decode()

    assert "ISIC_0029417" in page and 'class="credit' not in page and "Image: " not in page


def test_result_page_and_api_credit_the_neighbours(client, clinician, archive_cases, stored_done_query):
    query = stored_done_query(clinician, cases=archive_cases)
    client.force_login(clinician)

    page = client.get(f"/queries/{query.pk}/").content.decode()
    neighbours = re.findall(r'<li class="neighbour" data-rank="(\d)".*?</li>', page, re.S)
    assert len(neighbours) == len(archive_cases)
    shown = [text_of(content) for attributes, content in CREDIT.findall(page) if "hidden" not in attributes]
    assert shown == [f"Image: {case.attribution} · {case.copyright_license}" for case in archive_cases]
    embedded = json.loads(re.search(r'<script id="query-data" type="application/json">(.*?)</script>',
                                    page, re.S).group(1))
    assert [(n["attribution"], n["copyright_license"]) for n in embedded["neighbours"]] == [
        (case.attribution, case.copyright_license) for case in archive_cases]

    body = api(clinician).get(f"/api/v1/queries/{query.pk}/").json()
    assert [(n["attribution"], n["copyright_license"]) for n in body["neighbours"]] == [
        (case.attribution, case.copyright_license) for case in archive_cases]
    detail = api(clinician).get(f"/api/v1/cases/{archive_cases[0].pk}/").json()
    assert (detail["attribution"], detail["copyright_license"]) == (ATTRIBUTION["vidir_modern"], "CC-BY-NC")
    assert "patient_id" not in detail and archive_cases[0].patient_id not in json.dumps(body)
