"""Simulated readers through the HTTP layer: a whole small study, both tasks, the washout with
frozen time, resuming after an interruption, final answers, the admin dashboard and the export."""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import numpy as np
import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from readerstudy import services
from readerstudy.models import Answer, Assignment, StudyCase
from tests.readerstudy.conftest import signed_in

CLASS_CYCLE = ["nv", "mel", "bkl", "bcc", "akiec", "df", "vasc"]


def _page_position(response) -> int:
    match = re.search(rb'name="position" value="(\d+)"', response.content)
    assert match, response.content[:500]
    return int(match.group(1))


def _shown(response) -> str:
    return re.search(rb'name="shown" value="([^"]+)"', response.content).group(1).decode()


def _answer_all(client, study, task, *, stop_after=None, answer_of=lambda pos: "nv", confidence=3):
    """Answer the task's cases one by one as the page serves them; returns the positions answered."""
    url = reverse("readerstudy:task", args=[study.id, task])
    answered = []
    while True:
        page = client.get(url)
        assert page.status_code == 200
        if b"finished" in page.content and b'name="position"' not in page.content:
            return answered
        position = _page_position(page)
        response = client.post(url, {"position": position, "answer": answer_of(position), "confidence": confidence,
                                     "shown": _shown(page)})
        assert response.status_code == 302, response.content[:300]
        answered.append(position)
        if stop_after and len(answered) == stop_after:
            return answered


def test_a_small_study_end_to_end_through_the_pages(client, open_study, readers, study_admin):
    study = open_study
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        # Reader 1 starts Task 1, answers two cases, and "closes the browser".
        reader_client = signed_in(client, readers[0])
        home = reader_client.get(reverse("readerstudy:start", args=[study.id]))
        assert home.status_code == 200 and b"Start Task 1" in home.content
        first_two = _answer_all(reader_client, study, 1, stop_after=2)
        assert first_two == [1, 2]
        reader_client.logout()
        # Resuming (a new session) continues at the next unanswered case; nothing was lost.
        reader_client = signed_in(client, readers[0])
        assert b"Continue Task 1" in reader_client.get(reverse("readerstudy:start", args=[study.id])).content
        rest = _answer_all(reader_client, study, 1, answer_of=lambda pos: CLASS_CYCLE[pos % 7])
        assert rest == [3, 4, 5]
        assignment = Assignment.objects.get(study=study, reader=readers[0])
        assert assignment.task1_finished_at == start
        assert Answer.objects.filter(item__assignment=assignment, task=1).count() == 5
        # Time per case is recorded (served and answered at the same frozen instant: 0 s).
        assert set(Answer.objects.filter(item__assignment=assignment).values_list("seconds", flat=True)) == {0.0}
        # Task 2 is closed during the washout: the page says when it opens, the server refuses answers.
        done = reader_client.get(reverse("readerstudy:task", args=[study.id, 1]))
        opens = timezone.localtime(start + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M").encode()
        assert opens in done.content
        task2 = reverse("readerstudy:task", args=[study.id, 2])
        closed = reader_client.get(task2)
        assert closed.status_code == 403 and opens in closed.content
        refused = reader_client.post(task2, {"position": 1, "answer": "nv", "confidence": 3})
        assert refused.status_code == 403 and not Answer.objects.filter(task=2).exists()
        image = reader_client.get(reverse("readerstudy:case_image", args=[study.id, 2, 1]))
        assert image.status_code == 403
    with time_machine.travel(start + timedelta(hours=23, minutes=59), tick=False):
        assert reader_client.get(task2).status_code == 403
    with time_machine.travel(start + timedelta(hours=24, seconds=1), tick=False):
        page = reader_client.get(task2)
        assert page.status_code == 200
        assert page.content.count(b'class="neighbour"') == study.neighbours_shown
        # The Task 2 image is the Task 1 image rotated by 180 degrees (served without metadata).
        item = assignment.items.get(task2_position=_page_position(page))
        t2 = Image.open(io.BytesIO(reader_client.get(
            reverse("readerstudy:case_image", args=[study.id, 2, item.task2_position])).content))
        t1 = Image.open(io.BytesIO(reader_client.get(
            reverse("readerstudy:case_image", args=[study.id, 1, item.task1_position])).content))
        assert t2.size == t1.size and not t2.info.get("exif")
        diff = np.abs(np.asarray(t2.rotate(180).convert("L"), float) - np.asarray(t1.convert("L"), float))
        assert diff.mean() < 3  # the same picture up to JPEG noise
        assert np.abs(np.asarray(t2.convert("L"), float) - np.asarray(t1.convert("L"), float)).mean() > diff.mean()
        _answer_all(reader_client, study, 2, answer_of=lambda pos: "mel", confidence=4)
        assignment.refresh_from_db()
        assert assignment.task2_finished_at is not None
        assert Answer.objects.filter(item__assignment=assignment, task=2).count() == 5
    # The other readers read too (Task 1 only for reader 2; nothing for reader 3).
    reader_client.logout()
    _answer_all(signed_in(client, readers[1]), study, 1)
    client.logout()
    # The dashboard shows every reader's progress per task, and the results.
    admin_client = signed_in(client, study_admin)
    dashboard = admin_client.get(reverse("readerstudy:manage", args=[study.id]))
    assert dashboard.status_code == 200
    text = dashboard.content.decode()
    assert re.search(r"reader_1</td><td>5</td>\s*<td>5 of 5 · finished", text)
    assert re.search(r"reader_2</td><td>5</td>\s*<td>5 of 5", text)
    assert re.search(r"reader_3</td><td>5</td>\s*<td>0 of 5", text)
    assert 'data-testid="table-4ii"' in text
    export = admin_client.get(reverse("readerstudy:export", args=[study.id]))
    assert export.status_code == 200 and export["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(export.content)).namelist()
    assert {"report.json", "report.md", "report.xlsx", "mrmc.csv", "confusion_task1.png"} <= set(names)
    report = json.loads(zipfile.ZipFile(io.BytesIO(export.content)).read("report.json"))
    by_reader = {r["reader"]: r for r in report["readers"]}
    truth = {i.task1_position: i.study_case.case.dx for i in assignment.items.select_related("study_case__case")}
    expected_t1 = sum(CLASS_CYCLE[p % 7] == truth[p] for p in (3, 4, 5)) + sum(truth[p] == "nv" for p in (1, 2))
    assert by_reader["reader_1"]["task1"]["accuracy"] == pytest.approx(expected_t1 / 5)
    assert by_reader["reader_1"]["task2"]["accuracy"] == pytest.approx(sum(t == "mel" for t in truth.values()) / 5)
    assert set(by_reader) == {"reader_1", "reader_2"}


def test_answers_are_final_and_a_double_submit_stores_one_row(client, open_study, readers):
    study = open_study
    reader_client = signed_in(client, readers[0])
    url = reverse("readerstudy:task", args=[study.id, 1])
    page = reader_client.get(url)
    position = _page_position(page)
    data = {"position": position, "answer": "bkl", "confidence": 2, "shown": _shown(page)}
    assert reader_client.post(url, data).status_code == 302
    assert reader_client.post(url, data).status_code == 302  # a double click: the same answer again
    assert Answer.objects.filter(task=1).count() == 1
    changed = reader_client.post(url, {**data, "answer": "mel"})
    assert changed.status_code == 409 and b"answers are final" in changed.content
    assert Answer.objects.get(task=1).answer == "bkl"
    # Revisiting the answered case shows it read-only.
    again = reader_client.get(url, {"position": position})
    assert b"answers are final in this study" in again.content and b"<fieldset class=\"class-buttons\" disabled" in again.content


def test_a_study_that_allows_changes_records_them(client, make_study, readers):
    from readerstudy.services import study_assign, study_open

    study = make_study(name="Changes", allow_changes=True)
    study_assign(study=study, readers=readers[:1])
    study_open(study=study)
    reader_client = signed_in(client, readers[0])
    url = reverse("readerstudy:task", args=[study.id, 1])
    assert reader_client.post(url, {"position": 1, "answer": "bkl", "confidence": 2}).status_code == 302
    assert reader_client.post(url, {"position": 1, "answer": "mel", "confidence": 5}).status_code == 302
    answer = Answer.objects.get()
    assert (answer.answer, answer.confidence, answer.changes) == ("mel", 5, 1)


def test_bad_answers_are_refused_with_a_message_and_store_nothing(client, open_study, readers):
    reader_client = signed_in(client, readers[0])
    url = reverse("readerstudy:task", args=[open_study.id, 1])
    for data, message in [
        ({"position": 1, "answer": "xyz", "confidence": 3}, b"Select a valid choice"),
        ({"position": 1, "answer": "nv", "confidence": 9}, b"Select a valid choice"),
        ({"position": 1, "answer": "nv"}, b"Choose how confident you are"),
        ({"position": 99, "answer": "nv", "confidence": 3}, b"from 1 to 5"),
    ]:
        response = reader_client.post(url, data)
        assert response.status_code in (400, 404), response.status_code
        assert message in response.content
    assert not Answer.objects.exists()


def test_skipping_ahead_is_not_possible(client, open_study, readers):
    reader_client = signed_in(client, readers[0])
    url = reverse("readerstudy:task", args=[open_study.id, 1])
    page = reader_client.get(url, {"position": 4})
    assert _page_position(page) == 1
    # Nor through an image URL or a hand-made POST: a case after the next unanswered one is refused.
    for task, position in [(1, 2), (1, 4)]:
        image = reader_client.get(reverse("readerstudy:case_image", args=[open_study.id, task, position]))
        assert image.status_code == 403 and image["Content-Type"].startswith("text/html")
    assert reader_client.get(reverse("readerstudy:case_image", args=[open_study.id, 1, 1])).status_code == 200
    shown = services.shown_token(Assignment.objects.get(study=open_study, reader=readers[0]), 1, 1)
    response = reader_client.post(url, {"position": 3, "answer": "nv", "confidence": 3, "shown": shown})
    assert response.status_code == 403 and b"not reached yet" in response.content
    assert not Answer.objects.filter(item__assignment__reader=readers[0]).exists()


def test_relevance_mode_asks_for_every_neighbour_and_stores_ratings(client, make_study, readers):
    from readerstudy.models import RelevanceRating
    from readerstudy.services import study_assign, study_open

    study = make_study(name="Relevance", relevance_ratings=True, washout=timedelta(0), cases_per_reader=2)
    study_assign(study=study, readers=readers[:1])
    study_open(study=study)
    reader_client = signed_in(client, readers[0])
    _answer_all(reader_client, study, 1)
    url = reverse("readerstudy:task", args=[study.id, 2])
    page = reader_client.get(url)
    assert page.content.count(b'name="relevance_') == 4 * study.neighbours_shown
    incomplete = reader_client.post(url, {"position": 1, "answer": "nv", "confidence": 3, "relevance_1": 3})
    assert incomplete.status_code == 400 and b"Rate the relevance of every similar case" in incomplete.content
    ratings = {f"relevance_{rank}": rank % 4 for rank in range(1, 7)}
    assert reader_client.post(url, {"position": 1, "answer": "nv", "confidence": 3, **ratings}).status_code == 302
    assert sorted(RelevanceRating.objects.values_list("rank", "rating")) == [(r, r % 4) for r in range(1, 7)]


def test_readers_see_only_their_own_studies_and_never_a_draft(client, make_study, readers, clinician):
    from readerstudy.services import study_assign

    draft = make_study(name="Draft")
    study_assign(study=draft, readers=readers[:1])
    reader_client = signed_in(client, readers[0])
    assert reader_client.get(reverse("readerstudy:start", args=[draft.id])).status_code == 404
    assert b"Draft" not in reader_client.get(reverse("readerstudy:list")).content
    client.logout()
    other = signed_in(client, clinician)
    assert other.get(reverse("readerstudy:task", args=[draft.id, 1])).status_code == 404
    assert other.get(reverse("readerstudy:manage_list")).status_code == 403


@pytest.mark.parametrize(("field", "value"), [("washout_hours", 10**300), ("washout_hours", 365 * 24 + 1),
                                               ("seed", -1), ("seed", 2**31), ("cases_per_reader", 10**20)])
def test_the_study_form_refuses_settings_out_of_range_with_400(client, study_admin, field, value):
    """The page's form had the API's unbounded settings (found by tests/test_api_fuzz.py on the
    API): a washout of 1e300 hours overflowed timedelta (a 500), a huge integer the database."""
    from readerstudy.models import Study

    client.raise_request_exception = False
    form = {"name": "Bounds", "description": "", "cases_per_reader": 4, "neighbours_shown": 6,
            "washout_hours": 24, "task2_rotation": 180, "seed": 7, field: value}
    response = signed_in(client, study_admin).post(reverse("readerstudy:manage_list"), form)
    assert response.status_code == 400 and field in response.context["form"].errors
    assert not Study.objects.exists()


def test_study_admin_creates_assigns_opens_and_closes_through_the_pages(client, study_index, study_admin, readers):
    from readerstudy.models import Study
    from readerstudy.services import study_prepare

    admin_client = signed_in(client, study_admin)
    created = admin_client.post(reverse("readerstudy:manage_list"), {
        "name": "Through the pages", "description": "", "cases_per_reader": 4, "neighbours_shown": 6,
        "washout_hours": 24, "task2_rotation": 180, "seed": 7})
    study = Study.objects.get(name="Through the pages")
    assert created.status_code == 302 and study.status == Study.Status.PREPARING
    study_prepare(study_id=study.id, worker="test")  # what the worker does
    dashboard = admin_client.get(reverse("readerstudy:manage", args=[study.id]))
    assert b"test images" in dashboard.content and b"Open the study" in dashboard.content
    admin_client.post(reverse("readerstudy:action", args=[study.id, "assign"]),
                      {"readers": [r.id for r in readers[:2]]})
    assert study.assignments.count() == 2
    admin_client.post(reverse("readerstudy:action", args=[study.id, "open"]))
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN
    admin_client.post(reverse("readerstudy:action", args=[study.id, "close"]))
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED
    assert StudyCase.objects.filter(study=study).count() == study.curation["query_set"]


def test_the_reading_pages_credit_library_images_that_have_an_attribution(client, rows_only_study, readers):
    """The ISIC terms ask for the attribution wherever the image is shown: the case image (Task 1
    and 2) and the neighbours (Task 2); a case whose source gives none shows nothing extra."""
    from retrieval.models import Case

    credited = "ViDIR Group, Department of Dermatology, Medical University of Vienna"
    Case.objects.filter(collection="rows", split="test").update(attribution=credited, copyright_license="CC-BY-NC")
    Case.objects.filter(image_id="ROW_101").update(attribution="Cliff Rosendahl", copyright_license="CC-BY")
    client = signed_in(client, readers[0])
    credit = re.compile(r'<p class="credit small muted">(.*?)</p>', re.S)

    page = client.get(reverse("readerstudy:task", args=[rows_only_study.id, 1])).content.decode()
    assert [re.sub(r"<[^>]+>", "", c) for c in credit.findall(page)] == [f"Image: {credited} · CC-BY-NC"]

    _answer_all(client, rows_only_study, 1)
    page = client.get(reverse("readerstudy:task", args=[rows_only_study.id, 2])).content.decode()
    # The case, then the one credited neighbour (rank 2 = ROW_101); the other five have no attribution.
    assert [re.sub(r"<[^>]+>", "", c) for c in credit.findall(page)] == [
        f"Image: {credited} · CC-BY-NC", "Image: Cliff Rosendahl · CC-BY"]
    assert page.count('class="neighbour"') == 6
