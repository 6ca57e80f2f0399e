"""The report's files: each format is produced and reads back as what it claims to be."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from openpyxl import load_workbook
from PIL import Image

from readerstudy.analysis.report import build_report
from readerstudy.analysis.responses import parse_responses
from readerstudy.analysis.writers import FORMATS, render_files, report_archive, write_report
from retrieval.classes import CODES
from tests.readerstudy.analysis.scenario import study_ratings, study_reads

CSV_FILES = ["table4.csv", "confusion_task1.csv", "confusion_task2.csv", "per_class.csv", "changes.csv",
             "statistics.csv", "mcnemar.csv", "mrmc.csv", "mrmc_variance.csv", "kappa.csv", "reads.csv"]
MRMC_FILES = [f"mrmc_{endpoint}.{suffix}" for endpoint in ("accuracy", "auc_melanoma", "auc_malignant")
              for suffix in ("csv", "imrmc")]
PNG_FILES = ["confusion_task1.png", "confusion_task2.png", "accuracy_per_reader.png"]


@pytest.fixture(scope="module")
def reads():
    return study_reads()


@pytest.fixture(scope="module")
def report(reads):
    return build_report(reads)


@pytest.fixture(scope="module")
def written(report, reads, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "new" / "folder"
    return out, write_report(report, reads, out)


def rows_of(path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_all_formats_by_default_into_a_new_folder(written):
    out, paths = written
    # The scenario's readers share some cases but not all: its MRMC is refused, so no MRMC figures.
    assert [path.name for path in paths] == ["report.json", "report.md", *CSV_FILES, "report.xlsx", *PNG_FILES,
                                             *MRMC_FILES]
    assert all(path.parent == out and path.stat().st_size > 0 for path in paths)


def test_json_is_the_report(written, report):
    out, _ = written
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report


def test_markdown_has_table_4_ii_in_percent(written):
    text = (written[0] / "report.md").read_text(encoding="utf-8")
    assert "| Reader | Majority vote | Task 1 acc. | Task 1 conf. (correct / wrong) | Task 2 acc. " \
           "| Task 2 conf. (correct / wrong) |" in text
    assert "| alice | 50.0 | 50.0 | 3.00 (3.50 / 2.50) | 75.0 | 4.00 (4.33 / 3.00) |" in text
    assert "| carol | 0.0 | 50.0 | 3.00 (4.00 / 2.00) | – | – |" in text
    # mean ± std over readers; confidences pooled (26/9, 4.0, 2.0 and 4.0, 25/6, 3.0)
    assert "| **Average** | 50.0 ± 50.0 | 44.4 ± 9.6 | 2.89 (4.00 / 2.00) | 87.5 ± 17.7 " \
           "| 4.00 (4.17 / 3.00) |" in text
    assert "| wrong → right | 4 | 3 |" in text
    assert "Task 1: 1, Task 2: 0" in text
    assert "## Relevance" not in text


def test_table4_csv_has_fractions_and_the_average_rows(written):
    rows = rows_of(written[0] / "table4.csv")
    assert rows[0][:4] == ["reader", "n_cases", "majority_vote_accuracy", "task1_accuracy"]
    assert rows[1][:4] == ["alice", "4", "0.5", "0.5"]
    assert [row[0] for row in rows[-2:]] == ["Average", "Standard deviation"]
    assert float(rows[-2][3]) == pytest.approx(4 / 9, abs=1e-6)
    assert float(rows[-1][3]) == pytest.approx((1 / 108) ** 0.5, abs=1e-6)


def test_confusion_and_per_class_csv(written, report):
    rows = rows_of(written[0] / "confusion_task1.csv")
    assert rows[0] == ["truth", *CODES]
    assert [row[0] for row in rows[1:]] == list(CODES)
    assert [[int(cell) for cell in row[1:]] for row in rows[1:]] == report["confusion"]["task1"]
    per_class = rows_of(written[0] / "per_class.csv")
    assert per_class[0] == ["class", "task1_sensitivity", "task1_specificity", "task1_n",
                            "task2_sensitivity", "task2_specificity", "task2_n"]
    assert per_class[1 + CODES.index("mel")][:4] == ["mel", "0.25", "0.8", "4"]
    assert per_class[1 + CODES.index("akiec")][1] == ""  # undefined sensitivity


def test_statistics_csvs(written):
    mcnemar = rows_of(written[0] / "mcnemar.csv")
    assert mcnemar[0] == ["reader", "n_pairs", "wrong_to_right", "right_to_wrong", "p_value"]
    assert [row[0] for row in mcnemar[1:]] == ["alice", "bob", "carol"]  # no pooled row
    statistics = {(row[0], row[1]): row[2] for row in rows_of(written[0] / "statistics.csv")[1:]}
    assert float(statistics["accuracy_difference", "estimate"]) == pytest.approx(3 / 7, abs=1e-6)
    assert statistics["melanoma_false_positives", "task1"] == "1"
    assert "descriptive per-reader" in statistics["per_reader_tests", "note"]
    assert float(statistics["wilcoxon_confidence:bob", "median_difference"]) == 2.0
    assert rows_of(written[0] / "kappa.csv")[0] == ["reader_a", "reader_b", "task", "n_shared", "kappa"]
    assert rows_of(written[0] / "changes.csv")[1:] == [["wrong_to_right", "4", "3", "1"],
                                                       ["right_to_wrong", "1", "1", "0"]]
    refused = rows_of(written[0] / "mrmc.csv")
    assert refused[0][:3] == ["endpoint", "figure_of_merit", "analysis"]
    assert [row[0] for row in refused[1:]] == ["accuracy", "auc_melanoma", "auc_malignant"]
    assert all("neither fully crossed nor nested" in row[-1] for row in refused[1:])


def test_reads_csv_is_a_responses_file_of_the_same_reads(written, reads):
    assert parse_responses((written[0] / "reads.csv").read_text(encoding="utf-8")) == reads


def test_mrmc_files_are_the_paired_reads_in_the_tools_formats(written, reads):
    from readerstudy.analysis.mrmc.formats import read_imrmc, read_long_csv

    paired = [read for read in reads if read.reader != "carol"]  # carol read Task 1 only
    accuracy = read_long_csv((written[0] / "mrmc_accuracy.csv").read_text(encoding="utf-8"))
    assert len(accuracy) == len(paired) == 14
    assert {(r.reader, r.treatment, r.case, r.truth, r.rating) for r in accuracy} == {
        (read.reader, f"task{read.task}", read.case, 1, float(read.correct)) for read in paired}
    melanoma = read_long_csv((written[0] / "mrmc_auc_melanoma.csv").read_text(encoding="utf-8"))
    # alice c1 Task 2 answered mel with confidence 4: 5 + 4; Task 1 nv with confidence 2: 6 - 2
    by_key = {(r.reader, r.treatment, r.case): (r.truth, r.rating) for r in melanoma}
    assert by_key["alice", "task2", "c1"] == (1, 9.0) and by_key["alice", "task1", "c1"] == (1, 4.0)
    assert by_key["bob", "task1", "c2"] == (0, 7.0)  # nv case answered mel with confidence 2
    back = read_imrmc((written[0] / "mrmc_auc_melanoma.imrmc").read_text(encoding="utf-8"))
    numbers = {case: str(i) for i, case in enumerate(["c1", "c2", "c3", "c4", "c5"], start=1)}
    assert sorted((r.reader, r.treatment, r.case, r.truth, r.rating) for r in back) == sorted(
        (r.reader, r.treatment, numbers[r.case], r.truth, r.rating) for r in melanoma)


def test_xlsx_has_one_sheet_per_table(written):
    book = load_workbook(written[0] / "report.xlsx")
    assert book.sheetnames == ["Table 4.II", "Confusion task 1", "Confusion task 2", "Per class", "Changes",
                               "Statistics", "McNemar", "MRMC", "MRMC variance", "Kappa", "Reads"]
    table = book["Table 4.II"]
    assert [cell.value for cell in table[2]][:4] == ["alice", 4, 0.5, 0.5]
    assert table["C2"].number_format == "0.0%"
    assert book["Reads"].max_row == 1 + 16


def test_png_figures_open_and_are_deterministic(written, report, reads):
    for name in PNG_FILES:
        with Image.open(written[0] / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300
    again = render_files(report, reads, formats=["png"])
    assert all(again[name] == (written[0] / name).read_bytes() for name in PNG_FILES)


def test_archive_holds_the_same_files(written, report, reads):
    out, paths = written
    with zipfile.ZipFile(io.BytesIO(report_archive(report, reads))) as archive:
        assert archive.namelist() == [path.name for path in paths]
        # an XLSX records when it was saved, so only its presence is compared
        assert all(archive.read(path.name) == path.read_bytes() for path in paths if path.suffix != ".xlsx")
    assert report_archive(report, reads, formats=["json"]) == report_archive(report, reads, formats=["json"])


def test_a_subset_of_formats(report, reads, tmp_path):
    paths = write_report(report, reads, tmp_path, formats=["mrmc", "json"])
    assert [path.name for path in paths] == ["report.json", *MRMC_FILES]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["report.json", *MRMC_FILES])


def test_unknown_format_is_refused(report, reads, tmp_path):
    with pytest.raises(ValueError, match="valid: " + ", ".join(FORMATS)):
        write_report(report, reads, tmp_path / "out", formats=["json", "pdf"])
    assert not (tmp_path / "out").exists()


def test_relevance_files_with_ratings(reads, tmp_path):
    ratings = study_ratings()
    report = build_report(reads, ratings=ratings)
    files = render_files(report, reads, formats=["csv", "xlsx", "md"], ratings=ratings)
    relevance = list(csv.reader(io.StringIO(files["relevance.csv"].decode())))
    assert relevance[0] == ["reader", "method", "ndcg_at_6", "n_cases"]
    assert relevance[-1][:2] == ["All readers", "secbir"]
    assert len(list(csv.reader(io.StringIO(files["ratings.csv"].decode())))) == 1 + len(ratings)
    assert "## Relevance of the neighbours (nDCG@6)" in files["report.md"].decode()
    book = load_workbook(io.BytesIO(files["report.xlsx"]))
    assert book.sheetnames[-3:] == ["Reads", "Relevance", "Ratings"]


def test_an_empty_study_still_writes_every_format(tmp_path):
    report = build_report([])
    paths = write_report(report, [], tmp_path)
    # no reads: the MRMC long files have a header only, and no iMRMC file is written
    assert len(paths) == 1 + 1 + len(CSV_FILES) + 1 + len(PNG_FILES) + 3
    assert "0 readers, 0 cases, 0 reads" in (tmp_path / "report.md").read_text(encoding="utf-8")
