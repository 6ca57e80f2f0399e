"""``readerstudy_report``: a report folder from a responses CSV, and nothing at all from a bad one."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from tests.readerstudy.analysis.scenario import study_csv

# The command writes an audit event (lesionsearch.audit) for each report it writes.
pytestmark = pytest.mark.django_db

BAD_CSV = (
    "reader,case,truth,task,answer,confidence\n"
    "alice,c1,mel,1,nv,2\n"
    "alice,c1,Mel,1,nv,6\n"
    "bob,c2,nv,2,nv,3\n"
)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("readerstudy_report", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def responses(tmp_path):
    path = tmp_path / "responses.csv"
    path.write_text(study_csv(), encoding="utf-8")
    return path


def snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_writes_every_format_and_prints_the_averages(responses, tmp_path):
    out = tmp_path / "reports" / "pilot"
    printed = run("--responses", str(responses), "--out", str(out))
    assert sorted(path.name for path in out.iterdir()) == sorted([
        "report.json", "report.md", "table4.csv", "confusion_task1.csv", "confusion_task2.csv", "per_class.csv",
        "changes.csv", "statistics.csv", "mcnemar.csv", "mrmc.csv", "mrmc_variance.csv", "kappa.csv", "reads.csv",
        "report.xlsx", "confusion_task1.png", "confusion_task2.png", "accuracy_per_reader.png",
        *[f"mrmc_{e}.{s}" for e in ("accuracy", "auc_melanoma", "auc_malignant") for s in ("csv", "imrmc")],
    ])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # the scenario's readers share some cases but not all: refused, with the reason, in every endpoint
    assert set(report["mrmc"]) >= {"accuracy", "auc_melanoma", "auc_malignant"}
    assert "neither fully crossed nor nested" in report["mrmc"]["accuracy"]["refused"]
    assert "MRMC (accuracy): not analysed: readers 'alice' and 'bob' share" in printed
    assert "3 readers, 5 cases, 16 reads." in printed
    assert "Majority vote 50.0 ± 50.0 %; Task 1 44.4 ± 9.6 %, confidence 2.89 (4.00 / 2.00); " \
           "Task 2 87.5 ± 17.7 %, confidence 4.00 (4.17 / 3.00)." in printed
    assert sorted(path.name for path in out.parent.iterdir()) == ["pilot"]  # no staging folder left


def test_format_option_limits_the_files(responses, tmp_path):
    run("--responses", str(responses), "--out", str(tmp_path / "out"), "--format", "json, md")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]


def test_unknown_format_lists_the_valid_ones(responses, tmp_path):
    with pytest.raises(CommandError, match="unknown format.*'pdf'.*valid: json, md, csv, xlsx, png, mrmc"):
        run("--responses", str(responses), "--out", str(tmp_path / "out"), "--format", "json,pdf")
    assert not (tmp_path / "out").exists()


def test_malformed_responses_list_every_line_and_write_nothing(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_CSV, encoding="utf-8")
    out = tmp_path / "reports" / "pilot"
    with pytest.raises(CommandError) as refused:
        run("--responses", str(path), "--out", str(out))
    message = str(refused.value)
    assert "(5 problems); nothing was written" in message
    for expected in (
        "line 2: reader 'alice' has Task 1 of case 'c1' more than once (also line 3)",
        "line 3: truth 'Mel' is not a class code",
        "line 3: confidence 6 is not an integer from 1 to 5",
        "line 3: reader 'alice' has Task 1 of case 'c1' more than once (also line 2)",
        "line 4: reader 'bob' has Task 2 of case 'c2' but no Task 1 read of it",
    ):
        assert expected in message
    assert not (tmp_path / "reports").exists()


def test_malformed_responses_leave_an_existing_folder_untouched(responses, tmp_path):
    out = tmp_path / "out"
    run("--responses", str(responses), "--out", str(out), "--format", "json,csv")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(out)
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_CSV, encoding="utf-8")
    with pytest.raises(CommandError):
        run("--responses", str(bad), "--out", str(out))
    assert snapshot(out) == before


def test_an_existing_folder_gets_new_files_and_keeps_others(responses, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    run("--responses", str(responses), "--out", str(out), "--format", "json")
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["n_reads"] == 16
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "responses.csv"]


def test_a_crash_while_writing_leaves_no_half_report(responses, tmp_path, monkeypatch):
    def crash_after_one_file(report, reads, folder, **options):
        (folder / "report.json").write_text("{", encoding="utf-8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("readerstudy.management.commands.readerstudy_report.write_report", crash_after_one_file)
    with pytest.raises(CommandError, match="No space left on device"):
        run("--responses", str(responses), "--out", str(tmp_path / "out"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["responses.csv"]


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("reader,case,truth,task,answer,confidence\nJosé,c1,mel,1,nv,2\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8 text:\nline 2: byte 0xe9"):
        run("--responses", str(path), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path, responses):
    with pytest.raises(CommandError, match="cannot read"):
        run("--responses", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_crossed_or_nested_study_gets_its_mrmc_analysis(tmp_path):
    """Three readers read the same six cases in both tasks (crossed); a fourth did not finish."""
    rows = ["reader,case,truth,task,answer,confidence"]
    truth = ["mel", "nv", "mel", "bkl", "nv", "bcc"]
    for r, reader in enumerate(("r1", "r2", "r3")):
        for k, dx in enumerate(truth):
            first = dx if (k + r) % 3 else "nv"
            rows.append(f"{reader},c{k},{dx},1,{first},{2 + (k % 3)}")
            rows.append(f"{reader},c{k},{dx},2,{dx if (k + r) % 4 else 'nv'},{3 + (k % 2)}")
    rows.append("r4,c0,mel,1,mel,3")  # Task 1 only: not analysed, and c0 is then not common to all
    path = tmp_path / "crossed.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    printed = run("--responses", str(path), "--out", str(tmp_path / "out"), "--format", "json", "--design",
                  "crossed")
    mrmc = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["mrmc"]
    accuracy = mrmc["accuracy"]
    assert accuracy["design"] == "factorial" and accuracy["n_readers"] == 3 and accuracy["n_cases"] == 6
    assert mrmc["pairs"]["unpaired_left_out"] == 1
    assert accuracy["random_readers_random_cases"]["differences"][0]["a"] == "task1"
    assert mrmc["auc_melanoma"]["positive_classes"] == ["mel"]
    assert "MRMC (accuracy, Task 2 - Task 1):" in printed


def test_views_add_what_readers_looked_at(responses, tmp_path):
    from readerstudy.analysis.viewing import NeighbourView, views_csv

    # alice c1: Task 1 nv, Task 2 mel after 20 s; she enlarged a mel neighbour at 5 s and an nv one at 25 s
    views = tmp_path / "views.csv"
    views.write_text(views_csv([NeighbourView("alice", "c1", 2, 1, "mel", 5.0, 2.0),
                                NeighbourView("alice", "c1", 2, 3, "nv", 25.0, None)]), encoding="utf-8")
    run("--responses", str(responses), "--out", str(tmp_path / "out"), "--views", str(views))
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    alice = next(row for row in report["viewing"]["readers"] if row["reader"] == "alice")
    assert (alice["enlargements"], alice["enlargements_after_answer"], alice["cases_with_enlargement"]) == (1, 1, 1)
    assert alice["changes_after_viewing_new_class"] == 1
    assert (tmp_path / "out" / "views.csv").read_text(encoding="utf-8") == views.read_text(encoding="utf-8")
    assert "## What readers looked at (Task 2)" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    table = (tmp_path / "out" / "viewing.csv").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("reader,cases,cases_with_enlargement")

    bad = tmp_path / "bad-views.csv"
    bad.write_text("reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open\nalice,c1,2,0,MEL,-1,\n",
                   encoding="utf-8")
    with pytest.raises(CommandError, match="bad-views.csv was refused"):
        run("--responses", str(responses), "--out", str(tmp_path / "again"), "--views", str(bad))
    assert not (tmp_path / "again").exists()
