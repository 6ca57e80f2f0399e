"""A crossed study read through to the end: its export and dashboard carry the MRMC analysis of
Task 2 vs Task 1, and the exported tool files analyse to the same result."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from readerstudy.analysis.mrmc import analyse
from readerstudy.analysis.mrmc.formats import read_imrmc, read_long_csv
from readerstudy.models import AssignedCase, Assignment
from readerstudy.services import answer_submit, study_assign, study_open
from retrieval.classes import CODES
from tests.readerstudy.conftest import signed_in


@pytest.fixture
def read_study(make_study, readers):
    """Three readers read the same six cases; in Task 2 they are right more often."""
    study = make_study(name="Crossed", cases_per_reader=6, design="crossed", washout=timedelta(hours=1))
    study_assign(study=study, readers=readers)
    study_open(study=study)
    for r, reader in enumerate(readers):
        assignment = Assignment.objects.get(study=study, reader=reader)
        items = list(AssignedCase.objects.filter(assignment=assignment).select_related("study_case__case"))
        for item in sorted(items, key=lambda i: i.task1_position):
            truth = item.study_case.case.dx
            wrong = CODES[(CODES.index(truth) + 1) % len(CODES)]
            answer = truth if (item.task1_position + r) % 2 else wrong
            answer_submit(assignment=assignment, task=1, position=item.task1_position, answer=answer,
                          confidence=2 + item.task1_position % 3)
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        for r, reader in enumerate(readers):
            assignment = Assignment.objects.get(study=study, reader=reader)
            items = list(AssignedCase.objects.filter(assignment=assignment).select_related("study_case__case"))
            for item in sorted(items, key=lambda i: i.task2_position):
                truth = item.study_case.case.dx
                answer = truth if (item.task2_position + r) % 5 else CODES[(CODES.index(truth) + 2) % len(CODES)]
                answer_submit(assignment=assignment, task=2, position=item.task2_position, answer=answer,
                              confidence=3 + item.task2_position % 3)
    return study


def test_the_export_carries_the_mrmc_analysis_and_the_tool_files(client, read_study, study_admin):
    export = signed_in(client, study_admin).get(reverse("readerstudy:export", args=[read_study.id]))
    assert export.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    report = json.loads(archive.read("report.json"))
    accuracy = report["mrmc"]["accuracy"]
    assert report["mrmc"]["study_design"] == "crossed"
    assert (accuracy["design"], accuracy["n_readers"], accuracy["n_cases"]) == ("factorial", 3, 6)
    rrrc = accuracy["random_readers_random_cases"]
    assert rrrc["F"] is not None and 0 <= rrrc["p"] <= 1
    assert (rrrc["differences"][0]["a"], rrrc["differences"][0]["b"]) == ("task1", "task2")
    # the accuracies are the Table 4.II ones, averaged over readers
    task1 = sum(row["task1"]["accuracy"] for row in report["readers"]) / 3
    assert accuracy["treatments"]["task1"]["fom"] == pytest.approx(task1)
    for endpoint in ("auc_melanoma", "auc_malignant"):  # analysed, or refused with a reason
        assert "random_readers_random_cases" in report["mrmc"][endpoint] or report["mrmc"][endpoint]["refused"]
    names = archive.namelist()
    assert {"mrmc_accuracy.csv", "mrmc_accuracy.imrmc", "mrmc.csv", "mrmc_forest_accuracy.png", "views.csv",
            "viewing.csv"} <= set(names)
    assert report["viewing"]["all_readers"]["cases"] == 18  # nobody enlarged anything here
    assert report["viewing"]["all_readers"]["enlargements"] == 0
    long = read_long_csv(archive.read("mrmc_accuracy.csv").decode())
    assert len(long) == 3 * 6 * 2
    again = analyse(long, fom="accuracy")
    assert again["random_readers_random_cases"]["F"] == pytest.approx(rrrc["F"])
    imrmc = read_imrmc(archive.read("mrmc_accuracy.imrmc").decode())
    assert sorted((r.reader, r.treatment, r.rating) for r in imrmc) == sorted(
        (r.reader, r.treatment, r.rating) for r in long)
    markdown = archive.read("report.md").decode()
    assert "## Does retrieval help? Multi-reader multi-case analysis (Task 2 vs Task 1)" in markdown


def test_the_dashboard_shows_the_mrmc_result_next_to_table_4_ii(client, read_study, study_admin):
    page = signed_in(client, study_admin).get(reverse("readerstudy:manage", args=[read_study.id]))
    text = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="mrmc-summary"' in text and "Task 2 − Task 1" in text
    assert "Planning the next study" in text
    figure = client.get(reverse("readerstudy:figure", args=[read_study.id, "mrmc_forest_accuracy.png"]))
    assert figure.status_code == 200 and figure["Content-Type"] == "image/png"
    assert client.get(reverse("readerstudy:figure", args=[read_study.id, "secret.png"])).status_code == 404
