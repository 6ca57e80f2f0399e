"""The in-app export and `readerstudy_report` share one implementation: the export's reads.csv,
fed to the command, gives the same report.json."""
from __future__ import annotations

import io
import json
import zipfile

from django.core.management import call_command
from django.urls import reverse

from readerstudy.models import Assignment
from readerstudy.services import answer_submit
from tests.readerstudy.conftest import signed_in


def test_export_and_command_give_the_same_report(client, rows_only_study, readers, study_admin, tmp_path):
    answers = {1: ("nv", "mel", 3, 5), 2: ("bkl", "nv", 2, 4), 3: ("nv", "nv", 4, 4)}
    for reader in readers[:2]:
        assignment = Assignment.objects.get(study=rows_only_study, reader=reader)
        for position, (first, second, c1, c2) in answers.items():
            answer_submit(assignment=assignment, task=1, position=position, answer=first, confidence=c1)
        assignment.refresh_from_db()
        for item in assignment.items.order_by("task2_position"):  # Task 2: another order, read in it
            first, second, c1, c2 = answers[item.task1_position]
            answer_submit(assignment=assignment, task=2, position=item.task2_position, answer=second, confidence=c2)
    export = signed_in(client, study_admin).get(reverse("readerstudy:export", args=[rows_only_study.id]))
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    (tmp_path / "reads.csv").write_bytes(archive.read("reads.csv"))
    (tmp_path / "views.csv").write_bytes(archive.read("views.csv"))
    call_command("readerstudy_report", "--responses", str(tmp_path / "reads.csv"), "--out", str(tmp_path / "out"),
                 "--format", "json", "--design", rows_only_study.design, "--views", str(tmp_path / "views.csv"),
                 stdout=io.StringIO())
    from_app = json.loads(archive.read("report.json"))
    from_command = json.loads((tmp_path / "out" / "report.json").read_text())
    assert from_command == from_app
    # Every truth is nv (the rows-only library): per reader, Task 1 2/3 right, Task 2 2/3 right,
    # one change wrong -> right (bkl -> nv) and one right -> wrong (nv -> mel).
    assert [r["task1"]["accuracy"] for r in from_app["readers"]] == [2 / 3, 2 / 3]
    assert from_app["changes"]["wrong_to_right"] == 2 and from_app["changes"]["right_to_wrong"] == 2


def test_exports_are_for_study_administrators_only(client, rows_only_study, readers, clinician):
    url = reverse("readerstudy:export", args=[rows_only_study.id])
    assert signed_in(client, readers[0]).get(url).status_code == 403
    assert signed_in(client, clinician).get(url).status_code == 403
    client.logout()
    assert client.get(url).status_code == 302  # to the sign-in page
