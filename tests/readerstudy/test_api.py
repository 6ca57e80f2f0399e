"""The reader-study REST API (/api/v1/studies/): reading both tasks, answers, access, no ground
truth for readers, study administration, and the schema."""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from lesionsearch.roles import STUDY_ADMIN
from readerstudy import services
from readerstudy.models import Answer, AssignedCase, Assignment, RelevanceRating, Study, StudyCase
from retrieval.api.views import QuerySubmitThrottle
from retrieval.models import Case
from tests.apiclient import api, error_of

pytestmark = pytest.mark.django_db

STUDIES = "/api/v1/studies/"
MANAGE = "/api/v1/studies/manage/"


def study_url(study_id, rest=""):
    return f"{STUDIES}{study_id}/{rest}"


def task_url(study_id, task, rest):
    return f"{STUDIES}{study_id}/tasks/{task}/{rest}"


def manage_url(study_id, rest=""):
    return f"{MANAGE}{study_id}/{rest}"


def answer(client, study_id, task, position, dx="nv", confidence=3, **extra):
    body = {"position": position, "answer": dx, "confidence": confidence, **extra}
    return client.post(task_url(study_id, task, "answers/"), body, format="json")


READER_ENDPOINTS = [("get", STUDIES), ("get", study_url(1)), ("get", task_url(1, 1, "next/")),
                    ("get", task_url(1, 1, "cases/1/")), ("post", task_url(1, 1, "answers/")),
                    ("post", task_url(1, 2, "cases/1/views/"))]
MANAGE_ENDPOINTS = [("get", MANAGE), ("post", MANAGE), ("get", manage_url(1)), ("post", manage_url(1, "open/")),
                    ("post", manage_url(1, "close/")), ("post", manage_url(1, "assign/")),
                    ("get", manage_url(1, "progress/")), ("get", manage_url(1, "report/")),
                    ("get", manage_url(1, "export/"))]


@pytest.fixture(autouse=True)
def no_broker(sent_jobs):
    """Study preparations the services would send, recorded instead (no worker runs here)."""
    return sent_jobs


# --- Authentication and roles (no study needed: permissions are checked first) ---------------
@pytest.mark.parametrize(("method", "url"), READER_ENDPOINTS + MANAGE_ENDPOINTS)
def test_anonymous_requests_are_401(method, url):
    response = getattr(APIClient(), method)(url)
    assert error_of(response, 401)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


def test_only_readers_may_read_and_only_study_admins_and_staff_may_manage(
        clinician, stranger, reader, study_admin, django_user_model):
    for user in (clinician, stranger, study_admin):  # study_admin is staff but not a reader
        for method, url in READER_ENDPOINTS:
            error = error_of(getattr(api(user), method)(url), 403)
            assert error["code"] == "permission_denied" and "reader role" in error["message"]
    for user in (reader, clinician, stranger):
        for method, url in MANAGE_ENDPOINTS:
            error = error_of(getattr(api(user), method)(url), 403)
            assert "study administrators" in error["message"]
    # The study admin role without staff status is enough to manage; staff without the role too.
    role_only = django_user_model.objects.create_user("role_admin", password="pw")
    role_only.groups.add(Group.objects.get_or_create(name=STUDY_ADMIN)[0])
    staff_only = django_user_model.objects.create_user("staff_only", password="pw", is_staff=True)
    for user in (role_only, staff_only):
        assert api(user).get(MANAGE).json() == []
    assert api(reader).get(STUDIES).json() == []


# --- Answers and access (a study from database rows: no images needed) ----------------------
def test_answers_are_stored_once_final_and_validated(rows_only_study, readers):
    study, client = rows_only_study, api(readers[0])
    first = answer(client, study.id, 1, 1, "mel", 4)
    assert first.status_code == 201
    body = first.json()
    assert {k: body[k] for k in ("task", "position", "answer", "confidence", "seconds")} == {
        "task": 1, "position": 1, "answer": "mel", "confidence": 4, "seconds": None}
    assert body["progress"]["answered"] == 1 and body["progress"]["next_position"] == 2

    # The identical answer again (a double click, a retry): the stored one, 200, one row.
    again = answer(client, study.id, 1, 1, "mel", 4)
    assert again.status_code == 200 and again.json() == body
    assert Answer.objects.filter(item__assignment__reader=readers[0]).count() == 1
    # A different one: answers are final in this study.
    for dx, confidence in (("nv", 4), ("mel", 5)):
        error = error_of(answer(client, study.id, 1, 1, dx, confidence), 409)
        assert error["code"] == "answer_final"
    assert Answer.objects.get(item__assignment__reader=readers[0]).answer == "mel"

    # Invalid bodies: 400 with the field named.
    for body, field in [({"answer": "nv", "confidence": 3}, "position"),
                        ({"position": 0, "answer": "nv", "confidence": 3}, "position"),
                        ({"position": 9, "answer": "nv", "confidence": 3}, "position"),
                        ({"position": 2, "answer": "cancer", "confidence": 3}, "answer"),
                        ({"position": 2, "confidence": 3}, "answer"),
                        ({"position": 2, "answer": "nv", "confidence": 6}, "confidence"),
                        ({"position": 2, "answer": "nv", "confidence": "sure"}, "confidence"),
                        ({"position": 2, "answer": "nv", "confidence": 3, "ratings": {"1": 7}}, "ratings"),
                        ({"position": 2, "answer": "nv", "confidence": 3, "ratings": [1, 2]}, "ratings")]:
        error = error_of(client.post(task_url(study.id, 1, "answers/"), body, format="json"), 400)
        assert error["code"] == "invalid" and field in error["fields"], (body, error)
    # Ratings belong to Task 2 of a relevance study only (the service's refusal).
    error = error_of(answer(client, study.id, 1, 2, ratings={"1": 2}), 400)
    assert error["code"] == "invalid" and "Relevance ratings" in error["message"]
    # Cases are read in order: no answer (nor case) after the next unanswered one.
    error = error_of(answer(client, study.id, 1, 3), 403)
    assert error["code"] == "not_reached" and "next case is 2" in error["message"]
    assert error_of(client.get(task_url(study.id, 1, "cases/3/")), 403)["code"] == "not_reached"
    assert error_of(client.get(task_url(study.id, 1, "cases/4/")), 404)["code"] == "not_found"
    assert client.get(task_url(study.id, 1, "cases/1/")).json()["answer"] == {"answer": "mel", "confidence": 4}
    assert error_of(client.get(task_url(study.id, 3, "next/")), 404)["code"] == "not_found"
    assert Answer.objects.count() == 1

    # A study that allows changes: a different answer is stored in place (200), still one row.
    Study.objects.filter(id=study.id).update(allow_changes=True)
    changed = answer(client, study.id, 1, 1, "bcc", 2)
    assert changed.status_code == 200 and (changed.json()["answer"], changed.json()["confidence"]) == ("bcc", 2)
    stored = Answer.objects.get()
    assert (stored.answer, stored.changes) == ("bcc", 1)


def test_a_shown_token_times_the_answer_and_session_writes_need_csrf(rows_only_study, readers):
    study, reader = rows_only_study, readers[1]
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        case = api(reader).get(task_url(study.id, 1, "next/")).json()["case"]
    with time_machine.travel(start + timedelta(seconds=12.5), tick=False):
        body = answer(api(reader), study.id, 1, case["position"], shown=case["shown"]).json()
    assert body["seconds"] == pytest.approx(12.5)
    # Another reader's token (or a forged one) is not trusted: no time rather than a wrong one.
    other = api(readers[2]).get(task_url(study.id, 1, "next/")).json()["case"]["shown"]
    assert answer(api(reader), study.id, 1, 2, shown=other).json()["seconds"] is None
    assert answer(api(reader), study.id, 1, 3, shown="forged").json()["seconds"] is None

    session = APIClient(enforce_csrf_checks=True)
    session.force_login(reader)
    assert session.get(STUDIES).status_code == 200
    error = error_of(answer(session, study.id, 1, 1), 403)
    assert "CSRF" in error["message"]


def test_readers_see_only_their_own_open_or_closed_studies(rows_only_study, readers, reader, clinician):
    study = rows_only_study
    # A reader not assigned to the study: it does not exist for them.
    assert api(reader).get(STUDIES).json() == []
    for url in (study_url(study.id), task_url(study.id, 1, "next/"), task_url(study.id, 1, "cases/1/")):
        assert error_of(api(reader).get(url), 404)["code"] == "not_found"
    assert error_of(answer(api(reader), study.id, 1, 1), 404)["code"] == "not_found"
    assert not Answer.objects.exists()

    listed = api(readers[0]).get(STUDIES).json()
    assert [(s["id"], s["name"], s["status"]) for s in listed] == [(study.id, "Rows", "open")]
    assert listed[0]["url"] == f"http://testserver{study_url(study.id)}"
    assert [t["task"] for t in listed[0]["tasks"]] == [1, 2]

    # Drafts, studies being prepared and failed ones are invisible to their readers too.
    for status in (Study.Status.DRAFT, Study.Status.PREPARING, Study.Status.FAILED):
        Study.objects.filter(id=study.id).update(status=status)
        assert api(readers[0]).get(STUDIES).json() == []
        assert error_of(api(readers[0]).get(study_url(study.id)), 404)["code"] == "not_found"
        assert error_of(api(readers[0]).get(task_url(study.id, 1, "next/")), 404)["code"] == "not_found"
    # A closed study is listed, but no longer read or answered.
    Study.objects.filter(id=study.id).update(status=Study.Status.CLOSED)
    assert api(readers[0]).get(study_url(study.id)).json()["status"] == "closed"
    assert error_of(api(readers[0]).get(task_url(study.id, 1, "next/")), 403)["code"] == "study_not_open"
    assert error_of(answer(api(readers[0]), study.id, 1, 1), 403)["code"] == "study_not_open"
    assert not Answer.objects.exists()


# --- A whole study through the API, with images and the washout ------------------------------
def test_a_reader_goes_through_both_tasks_via_the_api(make_study, readers, monkeypatch):
    # Answers are many: the query-creation throttle must not apply to them.
    monkeypatch.setattr(QuerySubmitThrottle, "rate", "1/min", raising=False)
    cache.clear()
    study = make_study(name="API study", cases_per_reader=4, relevance_ratings=True, washout=timedelta(hours=24))
    services.study_assign(study=study, readers=readers[:2])
    services.study_open(study=study)
    reader, client = readers[0], api(readers[0])

    detail = client.get(study_url(study.id)).json()
    assert detail == {
        "id": study.id, "name": "API study", "description": "", "status": "open", "cases_per_reader": 4,
        "neighbours_shown": study.neighbours_shown, "washout_seconds": 24 * 3600, "task2_rotation": 180,
        "allow_changes": False, "relevance_ratings": True, "tasks": detail["tasks"]}
    task1, task2 = detail["tasks"]
    assert (task1["total"], task1["answered"], task1["next_position"], task1["is_open"]) == (4, 0, 1, True)
    assert (task2["is_open"], task2["opens_at"]) == (False, None)
    assert "after you have finished Task 1" in task2["reason"]
    error = error_of(client.get(task_url(study.id, 2, "next/")), 403)
    assert error["code"] == "task2_not_open"

    # Task 1: next -> case -> answer, until done.
    seen = []
    while True:
        nxt = client.get(task_url(study.id, 1, "next/")).json()
        if nxt["done"]:
            break
        case = nxt["case"]
        assert case["position"] == nxt["progress"]["next_position"] == len(seen) + 1
        assert (case["task"], case["total"], case["rotation"], case["neighbours"], case["answer"]) == (
            1, 4, 0, [], None)
        again = client.get(task_url(study.id, 1, f"cases/{case['position']}/")).json()
        assert {**again, "shown": None} == {**case, "shown": None}
        image = client.get(case["image"])
        assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
        response = answer(client, study.id, 1, case["position"], "nv", 3, shown=case["shown"])
        assert response.status_code == 201, response.content
        assert response.json()["seconds"] is not None
        seen.append(case["position"])
    assert seen == [1, 2, 3, 4]
    assert nxt == {"done": True, "case": None, "progress": nxt["progress"]}
    assert nxt["progress"]["answered"] == 4 and nxt["progress"]["finished"] and nxt["progress"]["next_position"] is None
    # An answered case can be revisited; it shows the reader's own answer.
    assert client.get(task_url(study.id, 1, "cases/2/")).json()["answer"] == {"answer": "nv", "confidence": 3}

    # Task 2 waits for the washout: 403 saying when it opens.
    finished = Assignment.objects.get(study=study, reader=reader).task1_finished_at
    opens = finished + timedelta(hours=24)
    error = error_of(client.get(task_url(study.id, 2, "next/")), 403)
    assert error["code"] == "washout" and f"{timezone.localtime(opens):%Y-%m-%d %H:%M}" in error["message"]
    assert error_of(client.get(task_url(study.id, 2, "cases/1/")), 403)["code"] == "washout"
    assert error_of(answer(client, study.id, 2, 1), 403)["code"] == "washout"
    task2 = client.get(study_url(study.id)).json()["tasks"][1]
    assert parse_datetime(task2["opens_at"]) == opens and not task2["is_open"]
    case_image = client.get(task_url(study.id, 1, "cases/1/")).json()["image"].replace("/task/1/", "/task/2/")
    assert client.get(case_image).status_code == 403  # the image view keeps the washout too

    with time_machine.travel(opens + timedelta(minutes=1)):
        task2 = client.get(study_url(study.id)).json()["tasks"][1]
        assert task2["is_open"] and task2["reason"] == "" and task2["next_position"] == 1
        for position in range(1, 5):
            nxt = client.get(task_url(study.id, 2, "next/")).json()
            case = nxt["case"]
            assert (nxt["done"], case["position"], case["task"], case["rotation"]) == (False, position, 2, 180)
            neighbours = case["neighbours"]
            assert [n["rank"] for n in neighbours] == list(range(1, study.neighbours_shown + 1))
            assert set(neighbours[0]) == {"rank", "code", "label", "colour", "group", "image", "attribution",
                                          "copyright_license"}
            for neighbour in neighbours[:2]:
                image = client.get(neighbour["image"])
                assert image.status_code == 200 and image["Content-Type"] == "image/jpeg"
            # A relevance study: every shown neighbour is rated in Task 2.
            error = error_of(answer(client, study.id, 2, position, "mel", 4, shown=case["shown"]), 400)
            assert "Rate the relevance" in error["message"]
            ratings = {str(n["rank"]): n["rank"] % 4 for n in neighbours}
            response = answer(client, study.id, 2, position, "mel", 4, shown=case["shown"], ratings=ratings)
            assert response.status_code == 201, response.content
            assert client.get(task_url(study.id, 2, f"cases/{position}/")).json()["ratings"] == ratings
        done = client.get(task_url(study.id, 2, "next/")).json()
        assert done["done"] and done["progress"]["finished"] and done["progress"]["finished_at"]

    assignment = Assignment.objects.get(study=study, reader=reader)
    assert assignment.task2_finished_at is not None
    assert Answer.objects.filter(item__assignment=assignment).count() == 8
    assert RelevanceRating.objects.filter(item__assignment=assignment).count() == 4 * study.neighbours_shown
    # Images with a wrong token are 401; without any credentials the login page.
    bad = APIClient(HTTP_AUTHORIZATION="Token not-a-key").get(case["image"])
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "authentication_failed"
    assert APIClient().get(case["image"]).status_code == 302
    # Image URLs are positions in the reader's own order: for another reader the same URL is their
    # own case, and their Task 2 is not open.
    assert api(readers[1]).get(case["image"]).status_code == 403


# --- No ground truth for readers ---------------------------------------------------------------
def _shown_free(body):
    if isinstance(body, dict):
        return {k: ("SHOWN" if k == "shown" else _shown_free(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [_shown_free(v) for v in body]
    return body


def test_no_reader_response_depends_on_the_ground_truth(make_study, readers):
    study = make_study(name="Truth check", cases_per_reader=4, washout=timedelta(0))
    services.study_assign(study=study, readers=readers[:1])
    services.study_open(study=study)
    client = api(readers[0])
    for position in range(1, 5):
        assert answer(client, study.id, 1, position, "bkl", 2).status_code == 201
    assert answer(client, study.id, 2, 1, "mel", 5).status_code == 201  # Task 2 open (no washout), partly read

    def everything() -> dict:
        gets = [STUDIES, study_url(study.id)] + [task_url(study.id, task, "next/") for task in (1, 2)]
        gets += [task_url(study.id, task, f"cases/{p}/") for task in (1, 2) for p in range(1, 6)]
        responses = {url: client.get(url) for url in gets}
        # Answers already given, posted again: the stored answer, never the truth.
        for task, dx, confidence in ((1, "bkl", 2), (2, "mel", 5)):
            responses[f"POST {task}"] = answer(client, study.id, task, 1, dx, confidence)
        return {url: (r.status_code, _shown_free(r.json())) for url, r in responses.items()}

    before = everything()
    assert {url: status for url, (status, _) in before.items() if status != 200} == {
        task_url(study.id, 1, "cases/5/"): 404, task_url(study.id, 2, "cases/3/"): 403,
        task_url(study.id, 2, "cases/4/"): 403, task_url(study.id, 2, "cases/5/"): 404}
    study_cases = list(StudyCase.objects.filter(study=study).select_related("case"))
    identities = [s for sc in study_cases for s in (sc.case.image_id, sc.case.lesion_id)]
    texts = json.dumps(before)
    assert not [s for s in identities if s in texts]

    for sc in study_cases:  # every study case another class, another image and lesion id
        Case.objects.filter(id=sc.case_id).update(dx="vasc" if sc.case.dx != "vasc" else "df",
                                                  image_id=f"LEAK_IMAGE_{sc.case_id}",
                                                  lesion_id=f"LEAK_LESION_{sc.case_id}")
    StudyCase.objects.filter(study=study).update(majority_vote="akiec")  # nor the vote (staff only)
    after = everything()
    assert [url for url in before if before[url] != after[url]] == []
    assert "LEAK_" not in json.dumps(after)
    assert Answer.objects.count() == 5


# --- Study administration ----------------------------------------------------------------------
def test_study_admins_create_prepare_assign_open_follow_report_export_and_close(
        study_index, study_admin, readers, clinician, no_broker, django_capture_on_commit_callbacks):
    admin = api(study_admin)
    with django_capture_on_commit_callbacks(execute=True):
        created = admin.post(MANAGE, {"name": "API pilot", "description": "Two tasks", "cases_per_reader": 3,
                                      "washout_seconds": 3600, "task2_rotation": 90, "seed": 5,
                                      "index_version": study_index.id, "design": "nested"}, format="json")
    assert created.status_code == 202, created.content
    body = created.json()
    study = Study.objects.get(name="API pilot")
    assert created["Location"] == body["url"] == f"http://testserver{manage_url(study.id)}"
    assert no_broker["study_preparation"] == [study.preparation.id]  # its preparation is queued
    assert (body["status"], body["washout_seconds"], body["task2_rotation"], body["cases_per_reader"]) == (
        "preparing", 3600, 90, 3)
    assert (body["index_version"], body["readers"], body["neighbours_shown"], body["seed"], body["design"]) == (
        study_index.id, [], 6, 5, "nested")
    assert study.washout == timedelta(hours=1) and study.created_by == study_admin

    # Refusals: the service's (a taken name) and the input's.
    assert error_of(admin.post(MANAGE, {"name": "API pilot"}, format="json"), 409)["code"] == "exists"
    for payload, field in [({}, "name"), ({"name": "X", "neighbours_shown": 0}, "neighbours_shown"),
                           ({"name": "X", "washout_seconds": -1}, "washout_seconds"),
                           ({"name": "X", "task2_rotation": 45}, "task2_rotation"),
                           ({"name": "X", "design": "overlapping"}, "design"),
                           ({"name": "X", "index_version": 999999}, "index_version")]:
        assert field in error_of(admin.post(MANAGE, payload, format="json"), 400)["fields"]
    assert Study.objects.count() == 1

    assert services.study_prepare(study_id=study.id, worker="test")  # what the worker does
    detail = admin.get(manage_url(study.id)).json()
    assert detail["status"] == "draft" and detail["curation"]["query_set"] == detail["cases_count"] >= 3
    assert detail["message"].startswith("Query set:")
    listed = admin.get(MANAGE).json()
    assert [(s["id"], s["status"], s["readers_count"], s["cases_count"]) for s in listed] == [
        (study.id, "draft", 0, detail["cases_count"])]
    assert error_of(admin.get(manage_url(study.id + 1)), 404)["code"] == "not_found"

    assign = manage_url(study.id, "assign/")
    response = admin.post(assign, {"readers": ["reader_2", "reader_1"]}, format="json")
    assert response.json() == {"assigned": ["reader_1", "reader_2"], "readers": ["reader_1", "reader_2"]}
    assert admin.post(assign, {"readers": ["reader_1"]}, format="json").json()["assigned"] == []
    assert "readers" in error_of(admin.post(assign, {"readers": ["nobody"]}, format="json"), 400)["fields"]
    assert "readers" in error_of(admin.post(assign, {"readers": []}, format="json"), 400)["fields"]
    assert "reader group" in error_of(admin.post(assign, {"readers": [clinician.username]}, format="json"),
                                      400)["message"]
    assert AssignedCase.objects.filter(assignment__study=study).count() == 6

    assert error_of(api(readers[0]).get(study_url(study.id)), 404)["code"] == "not_found"  # a draft
    assert admin.post(manage_url(study.id, "open/")).json()["status"] == "open"
    assert error_of(admin.post(manage_url(study.id, "open/")), 409)["code"] == "wrong_status"
    assert api(readers[0]).get(study_url(study.id)).status_code == 200

    assert error_of(admin.get(manage_url(study.id, "report/")), 409)["code"] == "no_answers"
    assert error_of(admin.get(manage_url(study.id, "export/")), 409)["code"] == "no_answers"
    for reader in readers[:2]:
        for position, dx in zip((1, 2, 3), ("nv", "mel", "bkl")):
            assert answer(api(reader), study.id, 1, position, dx, 4).status_code == 201
    progress = admin.get(manage_url(study.id, "progress/")).json()["readers"]
    assert sorted((r["reader"], r["total"], r["task1"], r["task2"], r["task2_waiting"]) for r in progress) == [
        ("reader_1", 3, 3, 0, True), ("reader_2", 3, 3, 0, True)]
    assert all(parse_datetime(r["task2_opens_at"]) > timezone.now() for r in progress)

    report = admin.get(manage_url(study.id, "report/")).json()
    assert [row["reader"] for row in report["readers"]] == ["reader_1", "reader_2"]
    assert report["confusion"]["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]

    export = admin.get(manage_url(study.id, "export/"), {"format": ["json", "csv"]})
    assert export.status_code == 200 and export["Content-Type"] == "application/zip"
    assert re.fullmatch(rf'attachment; filename="study-{study.id}-report-\d{{8}}-\d{{4}}\.zip"',
                        export["Content-Disposition"])
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        names = archive.namelist()
        assert json.loads(archive.read("report.json")) == report
    assert "reads.csv" in names and not any(n.endswith((".png", ".xlsx", ".md")) for n in names)
    error = error_of(admin.get(manage_url(study.id, "export/"), {"format": ["json", "pdf"]}), 400)
    assert "format" in error["fields"] and "pdf" in error["message"]

    assert admin.post(manage_url(study.id, "close/")).json()["status"] == "closed"
    assert error_of(admin.post(manage_url(study.id, "close/")), 409)["code"] == "wrong_status"
    assert error_of(answer(api(readers[0]), study.id, 1, 1), 403)["code"] == "study_not_open"


@pytest.mark.parametrize(("field", "value"), [
    ("seed", 10**20), ("seed", -1), ("seed", 2**31), ("cases_per_reader", 10**20), ("cases_per_reader", 2**31),
    ("washout_seconds", 10**20), ("washout_seconds", 365 * 24 * 3600 + 1)])
def test_study_settings_out_of_range_are_400_not_500(study_admin, field, value):
    """Found by tests/test_api_fuzz.py: unbounded integers reached the database (SQLite's OverflowError)
    or timedelta (OverflowError) as a 500; a negative seed was stored and broke assigning readers
    later (NumPy's SeedSequence takes no negative seed); a washout of millennia overflowed the date
    Task 2 opens."""
    client = api(study_admin)
    client.raise_request_exception = False
    error = error_of(client.post(MANAGE, {"name": "Bounds", field: value}, format="json"), 400)
    assert list(error["fields"]) == [field]
    assert not Study.objects.exists()


def test_the_largest_study_settings_are_accepted(rows_only_study, study_admin):
    body = {"name": "Edges", "seed": 2**31 - 1, "cases_per_reader": 2**31 - 1, "washout_seconds": 365 * 24 * 3600}
    created = api(study_admin).post(MANAGE, {**body, "index_version": rows_only_study.index_version_id},
                                    format="json")
    assert created.status_code == 202, created.content
    assert {key: created.json()[key] for key in body} == body


@pytest.mark.parametrize("url", [study_url("9" * 30), task_url("9" * 30, 1, "next/"),
                                 task_url(1, "9" * 30, "cases/1/"), task_url(1, 1, f"cases/{'9' * 30}/"),
                                 manage_url("9" * 30), manage_url(2**63, "report/")])
def test_study_ids_too_large_for_the_database_are_404_not_500(reader, study_admin, url):
    """Found by tests/test_api_fuzz.py: /api/v1/studies/<30 digits>/ was a 500 (SQLite OverflowError)."""
    client = api(study_admin if "/manage/" in url else reader)
    client.raise_request_exception = False
    assert error_of(client.get(url), 404)["code"] == "not_found"


# --- Schema -----------------------------------------------------------------------------------
def test_the_schema_documents_every_study_endpoint():
    # (tests/retrieval/test_api.py validates the whole schema against OpenAPI 3, warnings as errors)
    schema = APIClient().get("/api/v1/schema/", {"format": "json"}).json()
    studies = {path: set(ops) for path, ops in schema["paths"].items() if path.startswith(STUDIES)}
    assert studies == {
        STUDIES: {"get"}, "/api/v1/studies/{study_id}/": {"get"},
        "/api/v1/studies/{study_id}/tasks/{task}/next/": {"get"},
        "/api/v1/studies/{study_id}/tasks/{task}/cases/{position}/": {"get"},
        "/api/v1/studies/{study_id}/tasks/{task}/cases/{position}/views/": {"post"},
        "/api/v1/studies/{study_id}/tasks/{task}/answers/": {"post"},
        MANAGE: {"get", "post"}, "/api/v1/studies/manage/{study_id}/": {"get"},
        **{f"/api/v1/studies/manage/{{study_id}}/{action}/": {"post"} for action in ("open", "close", "assign")},
        **{f"/api/v1/studies/manage/{{study_id}}/{view}/": {"get"} for view in ("progress", "report", "export")},
    }
    answers = schema["paths"]["/api/v1/studies/{study_id}/tasks/{task}/answers/"]["post"]
    assert set(answers["responses"]) == {"200", "201", "400", "401", "403", "404", "409"}
    views = schema["paths"]["/api/v1/studies/{study_id}/tasks/{task}/cases/{position}/views/"]["post"]
    assert views["operationId"] == "studies_case_views_create"
    assert set(views["responses"]) == {"200", "201", "400", "401", "403", "404", "409"}
    components = schema["components"]["schemas"]
    assert set(components["NeighbourViewsInputRequest"]["properties"]) == {"shown", "views"}
    assert components["NeighbourViewsInputRequest"]["properties"]["views"]["maxItems"] == 200
    assert set(components["NeighbourViewInputRequest"]["properties"]) == {
        "id", "rank", "seconds_after_shown", "seconds_open"}
    assert set(components["NeighbourViewsResult"]["properties"]) == {"stored", "repeated", "total"}
    assert set(components["ReaderCase"]["properties"]) == {
        "task", "position", "total", "rotation", "image", "shown", "neighbours", "answer", "ratings",
        "attribution", "copyright_license"}
    export = schema["paths"]["/api/v1/studies/manage/{study_id}/export/"]["get"]
    assert set(export["responses"]["200"]["content"]) == {"application/zip"}
    assert next(p for p in export["parameters"] if p["name"] == "format")["schema"]["type"] == "array"
