"""What readers looked at: the Task 2 enlargements a reader's page (or API client) reports, stored
once, refused as a whole when anything is wrong, and turned into the staff's analysis rows."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from readerstudy import services
from readerstudy.analysis.viewing import NeighbourView as ViewRow
from readerstudy.analysis.viewing import viewing_summary
from readerstudy.models import MAX_VIEWS_PER_REQUEST, Assignment, NeighbourView, Study, StudyNeighbour
from readerstudy.selectors import study_reads
from readerstudy.services import SHOWN_MAX_AGE, StudyError, answer_submit, neighbour_views_record, shown_token
from readerstudy.viewing import study_views
from retrieval.models import Case
from tests.readerstudy.conftest import signed_in
from tests.apiclient import api, error_of

pytestmark = pytest.mark.django_db


def views_url(study_id, position, task=2):
    return f"/api/v1/studies/{study_id}/tasks/{task}/cases/{position}/views/"


def page_url(study_id, position):
    return reverse("readerstudy:case_views", args=[study_id, position])


def event(client_id="v1", rank=1, after=4.0, open_for=2.5, **extra):
    return {"id": client_id, "rank": rank, "seconds_after_shown": after, "seconds_open": open_for, **extra}


@pytest.fixture
def task2(rows_only_study, readers):
    """The first reader's assignment with Task 1 done: Task 2 open (washout 0) at its case 1."""
    assignment = Assignment.objects.get(study=rows_only_study, reader=readers[0])
    for position in (1, 2, 3):
        answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    assignment.refresh_from_db()
    return assignment


def record(assignment, views, position=1, task=2, token=""):
    return neighbour_views_record(assignment=assignment, task=task, position=position, views=views, token=token)


def refused(assignment, views, status=400, code="invalid", **options) -> str:
    with pytest.raises(StudyError) as error:
        record(assignment, views, **options)
    assert (error.value.status_code, error.value.code) == (status, code), str(error.value)
    return str(error.value)


# --- The service ------------------------------------------------------------------------------

def test_enlargements_are_stored_with_the_server_time_of_their_showing(task2):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        token = shown_token(task2, 2, 1)
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        done = record(task2, [event("a1", rank=2, after=4.25, open_for=3.0), event("a2", rank=5, after=12.0,
                                                                                     open_for=None)], token=token)
    assert done == services.ViewsRecorded(stored=2, repeated=0, total=2)
    stored = {v.client_id: v for v in NeighbourView.objects.all()}
    first = stored["a1"]
    assert (first.item.task2_position, first.task, first.rank, first.seconds_after_shown, first.seconds_open) == (
        1, 2, 2, 4.25, 3.0)
    assert abs((first.shown_at - start).total_seconds()) < 1e-3
    assert first.opened_at == first.shown_at + timedelta(seconds=4.25)
    assert first.received_at == start + timedelta(seconds=30)
    assert stored["a2"].seconds_open is None and stored["a2"].rank == 5


def test_the_same_batch_sent_again_is_stored_once(task2):
    batch = [event("a1", rank=1), event("a2", rank=2, after=9.5)]
    assert record(task2, batch).stored == 2
    assert record(task2, batch) == services.ViewsRecorded(stored=0, repeated=2, total=2)  # a retry
    # A later batch that repeats one (the beacon after a fetch whose answer was lost) adds the new one only.
    assert record(task2, [batch[1], event("a3", rank=3, after=20.0)]) == services.ViewsRecorded(1, 1, 3)
    assert sorted(NeighbourView.objects.values_list("client_id", flat=True)) == ["a1", "a2", "a3"]
    # Ids are the reader's per case: the same id on another case is another enlargement.
    answer_submit(assignment=task2, task=2, position=1, answer="nv", confidence=3)
    assert record(task2, [event("a1")], position=2).stored == 1


def test_an_id_stored_with_other_values_refuses_the_whole_batch(task2):
    record(task2, [event("a1", rank=1)])
    message = refused(task2, [event("a9", rank=4), event("a1", rank=2)], status=409, code="view_conflict")
    assert "a1" in message
    assert list(NeighbourView.objects.values_list("client_id", flat=True)) == ["a1"]  # a9 neither


def test_enlargements_are_accepted_after_the_answer(task2):
    answer_submit(assignment=task2, task=2, position=1, answer="mel", confidence=4)
    # The page's last batch can reach the server after the answer it came before; a revisit is recorded too.
    assert record(task2, [event("late")]).stored == 1


def test_without_a_valid_token_enlargements_are_stored_without_server_times(task2, readers):
    other = Assignment.objects.get(study=task2.study, reader=readers[1])
    tokens = ("", "forged", shown_token(task2, 2, 2), shown_token(other, 2, 1), shown_token(task2, 1, 1))
    for number, token in enumerate(tokens):
        record(task2, [event(f"t{number}")], token=token)
    assert NeighbourView.objects.count() == 5
    assert set(NeighbourView.objects.values_list("shown_at", "opened_at")) == {(None, None)}


@pytest.mark.parametrize(("views", "problem"), [
    ("not a list", "`views` must be a list"),
    ({"id": "a"}, "`views` must be a list"),
    ([event(rank=7)], "view 1: rank 7 is not a rank shown with this case (1, 2, 3, 4, 5, 6)"),
    ([event(rank=0)], "rank 0 is not a rank shown"),
    ([event(rank=True)], "rank True is not a rank shown"),
    ([event(rank="1")], "rank '1' is not a rank shown"),
    ([event(rank=1.0)], "rank 1.0 is not a rank shown"),
    (["a1"], "view 1 is not an object"),
    ([{"id": "a1"}], "view 1 lacks rank, seconds_after_shown"),
    ([event(similarity=0.9)], "view 1 has unknown field(s) similarity"),
    ([event(client_id="")], "view 1: id must be 1 to 64 letters, digits, - or _"),
    ([event(client_id="a b")], "id must be 1 to 64"),
    ([event(client_id="x" * 65)], "id must be 1 to 64"),
    ([event(client_id=7)], "id must be 1 to 64"),
    ([event("a1"), event("a1", rank=2)], "view 2: id 'a1' is view 1's already"),
    ([event(after=-0.5)], "view 1: seconds_after_shown -0.5 is not a number of seconds from 0 to 1209600"),
    ([event(after=SHOWN_MAX_AGE.total_seconds() + 1)], "seconds_after_shown 1209601.0 is not a number"),
    ([event(after=float("nan"))], "seconds_after_shown nan is not"),
    ([event(after=float("inf"))], "seconds_after_shown inf is not"),
    ([event(after="4")], "seconds_after_shown '4' is not"),
    ([event(after=None)], "seconds_after_shown must be a number of seconds, not null"),
    ([event(open_for=-1)], "seconds_open -1 is not"),
    ([event(open_for=True)], "seconds_open True is not"),
    ([event("ok"), event("bad", rank=9)], "view 2: rank 9"),  # one bad event: none stored
    ([event(str(i)) for i in range(MAX_VIEWS_PER_REQUEST + 1)], "At most 200 enlargements can be sent at once"),
])
def test_a_malformed_batch_is_refused_and_nothing_is_stored(task2, views, problem):
    message = refused(task2, views)
    assert problem in message
    assert not NeighbourView.objects.exists()


def test_a_refusal_names_the_first_ten_problems_and_counts_the_rest(task2):
    message = refused(task2, [event(f"v{i}", rank=9) for i in range(15)])
    assert "view 10: rank 9" in message and "view 11:" not in message and "and 5 more problem(s)" in message


def test_an_enlargement_after_the_present_is_refused_when_the_showing_is_known(task2):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        token = shown_token(task2, 2, 1)
    with time_machine.travel(start + timedelta(seconds=20), tick=False):
        assert record(task2, [event("a", after=17.0, open_for=7.5)], token=token).stored == 1  # within the slack
        message = refused(task2, [event("b", after=18.0, open_for=10.0)], token=token)
        assert "would end 28.0 s after the case was shown, but it was shown 20.0 s ago" in message
        assert record(task2, [event("b", after=18.0, open_for=10.0)]).stored == 1  # untimed: cannot be checked


def test_task_1_a_closed_study_the_washout_and_unreached_cases_are_refused(task2, rows_only_study, readers):
    assert refused(task2, [event()], task=1, status=404, code="not_found").startswith("Only Task 2")
    refused(task2, [event()], position=2, status=403, code="not_reached")
    refused(task2, [event()], position=4, status=404, code="not_found")
    refused(task2, [event()], position="1; drop", status=400, code="invalid")
    # Another reader who has not finished Task 1: Task 2 is not open to them.
    beginner = Assignment.objects.get(study=rows_only_study, reader=readers[1])
    refused(beginner, [event()], status=403, code="task2_not_open")
    Study.objects.filter(id=rows_only_study.id).update(status=Study.Status.CLOSED)
    task2.study.refresh_from_db()
    refused(task2, [event()], status=403, code="study_not_open")
    assert not NeighbourView.objects.exists()


def test_a_case_holds_at_most_so_many_enlargements(task2, monkeypatch):
    monkeypatch.setattr(services, "MAX_VIEWS_PER_CASE", 3)
    record(task2, [event("a"), event("b")])
    refused(task2, [event("c"), event("d")], status=409, code="view_limit")
    assert record(task2, [event("a"), event("c")]) == services.ViewsRecorded(1, 1, 3)  # repeats do not count


# --- The reading page's endpoint (session + CSRF, form-encoded so that a beacon can send it) ---

def test_the_task2_page_offers_the_enlargement_and_task1_does_not(client, task2, readers):
    reader_client = signed_in(client, readers[0])
    page = reader_client.get(reverse("readerstudy:task", args=[task2.study_id, 2])).content.decode()
    assert f'data-views-url="{page_url(task2.study_id, 1)}"' in page
    assert '<dialog id="enlarge"' in page and page.count('<li class="neighbour" data-rank="') == 6
    task1 = reader_client.get(reverse("readerstudy:task", args=[task2.study_id, 1]) + "?position=1").content.decode()
    assert "data-views-url" not in task1 and 'id="enlarge"' not in task1


def test_the_page_posts_enlargements_with_the_csrf_token_and_its_shown_token(task2, readers):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(readers[0])
    page = browser.get(reverse("readerstudy:task", args=[task2.study_id, 2]))
    csrf = page.cookies["csrftoken"].value
    shown = page.context["shown"]
    body = {"csrfmiddlewaretoken": csrf, "shown": shown,
            "views": json.dumps([event("p1", rank=3, after=2.0, open_for=1.0)])}
    url = page_url(task2.study_id, 1)
    assert browser.post(url, {k: v for k, v in body.items() if k != "csrfmiddlewaretoken"}).status_code == 403
    response = browser.post(url, body)
    assert response.status_code == 200 and response.json() == {"stored": 1, "repeated": 0, "total": 1}
    assert browser.post(url, body).json() == {"stored": 0, "repeated": 1, "total": 1}
    stored = NeighbourView.objects.get()
    assert stored.rank == 3 and stored.opened_at is not None
    # Refusals are JSON with the reason; nothing stored.
    for views, status, code in [("[{", 400, "invalid"), ("[" * 100_000, 400, "invalid"),
                                (json.dumps([event("p2", rank=8)]), 400, "invalid")]:
        refusal = browser.post(url, {**body, "views": views})
        assert (refusal.status_code, refusal.json()["code"]) == (status, code)
        assert refusal.json()["error"]
    assert browser.post(page_url(task2.study_id, 3), body).json()["code"] == "not_reached"
    assert browser.get(url).status_code == 405
    assert NeighbourView.objects.count() == 1


def test_only_the_assigned_reader_reaches_the_page_endpoint(client, task2, readers, clinician, study_admin):
    body = {"views": json.dumps([event()])}
    url = page_url(task2.study_id, 1)
    assert client.post(url, body).status_code == 302  # to the sign-in page
    for user in (clinician, study_admin, readers[2]):
        # readers[2] is assigned but has not finished Task 1; the others are not readers of the study.
        assert signed_in(Client(), user).post(url, body).status_code == (403 if user == readers[2] else 404)
    Study.objects.filter(id=task2.study_id).update(status=Study.Status.CLOSED)
    assert signed_in(Client(), readers[0]).post(url, body).json()["code"] == "study_not_open"
    assert not NeighbourView.objects.exists()
    # Positions are the reader's own: the same URL stores on each reader's own case.
    Study.objects.filter(id=task2.study_id).update(status=Study.Status.OPEN)
    other = Assignment.objects.get(study=task2.study, reader=readers[1])
    for position in (1, 2, 3):
        answer_submit(assignment=other, task=1, position=position, answer="nv", confidence=3)
    for reader in readers[:2]:
        assert signed_in(Client(), reader).post(url, body).json()["stored"] == 1
    assert sorted(NeighbourView.objects.values_list("item__assignment__reader__username", "item__task2_position")) \
        == [(readers[0].username, 1), (readers[1].username, 1)]


# --- The API ------------------------------------------------------------------------------------

def test_api_readers_report_enlargements(task2, readers):
    client = api(readers[0])
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        case = client.get(f"/api/v1/studies/{task2.study_id}/tasks/2/next/").json()["case"]
    with time_machine.travel(start + timedelta(seconds=60), tick=False):
        body = {"shown": case["shown"], "views": [event("x1", rank=1), event("x2", rank=6, open_for=None)]}
        created = client.post(views_url(task2.study_id, case["position"]), body, format="json")
        assert created.status_code == 201, created.json()
        assert created.json() == {"stored": 2, "repeated": 0, "total": 2}
        again = client.post(views_url(task2.study_id, case["position"]), body, format="json")
        assert again.status_code == 200 and again.json() == {"stored": 0, "repeated": 2, "total": 2}
        empty = client.post(views_url(task2.study_id, 1), {"views": []}, format="json")
        assert empty.status_code == 200 and empty.json()["stored"] == 0
        assert set(NeighbourView.objects.values_list("opened_at", flat=True)) != {None}

        # Malformed bodies are 400 with the field named; nothing more is stored.
        for bad in [{}, {"views": "x"}, {"views": [{"id": "a b", "rank": 1, "seconds_after_shown": 1}]},
                    {"views": [{"id": "a", "rank": 0, "seconds_after_shown": 1}]},
                    {"views": [{"id": "a", "rank": 1, "seconds_after_shown": -1}]},
                    {"views": [{"id": "a", "rank": 1}]},
                    {"views": [event(str(i)) for i in range(MAX_VIEWS_PER_REQUEST + 1)]}]:
            error = error_of(client.post(views_url(task2.study_id, 1), bad, format="json"), 400)
            assert error["code"] == "invalid" and "views" in error["fields"], (bad, error)
        error = error_of(client.post(views_url(task2.study_id, 1), {"views": [event("y", rank=7)]}, format="json"), 400)
        assert "rank 7 is not a rank shown" in error["message"]
        error = error_of(client.post(views_url(task2.study_id, 1), {"views": [event("x1", rank=2)]}, format="json"), 409)
        assert error["code"] == "view_conflict"
        assert error_of(client.post(views_url(task2.study_id, 1, task=1), {"views": []}, format="json"), 404)["code"] \
            == "not_found"
        assert error_of(client.post(views_url(task2.study_id, 2), {"views": []}, format="json"), 403)["code"] \
            == "not_reached"
        assert error_of(client.post(views_url(task2.study_id, 9), {"views": []}, format="json"), 404)["code"] \
            == "not_found"
        assert NeighbourView.objects.count() == 2


def test_only_the_assigned_reader_of_an_open_study_reports_through_the_api(task2, readers, clinician, study_admin):
    url, body = views_url(task2.study_id, 1), {"views": [event()]}
    assert error_of(APIClient().post(url, body, format="json"), 401)["code"] == "not_authenticated"
    for user in (clinician, study_admin):
        assert error_of(api(user).post(url, body, format="json"), 403)["code"] == "permission_denied"
    assert error_of(api(readers[1]).post(url, body, format="json"), 403)["code"] == "task2_not_open"
    Study.objects.filter(id=task2.study_id).update(status=Study.Status.CLOSED)
    assert error_of(api(readers[0]).post(url, body, format="json"), 403)["code"] == "study_not_open"
    Study.objects.filter(id=task2.study_id).update(status=Study.Status.DRAFT)
    assert error_of(api(readers[0]).post(url, body, format="json"), 404)["code"] == "not_found"
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(readers[0])
    Study.objects.filter(id=task2.study_id).update(status=Study.Status.OPEN)
    assert "CSRF" in error_of(session.post(url, body, format="json"), 403)["message"]
    assert not NeighbourView.objects.exists()


# --- The staff's rows and the summary -------------------------------------------------------

def test_study_views_give_the_analysis_what_readers_looked_at_before_answering(task2):
    study = task2.study
    item = task2.items.get(task2_position=1)
    ranks = StudyNeighbour.objects.filter(study_case=item.study_case).order_by("rank")
    Case.objects.filter(id=ranks.get(rank=2).case_id).update(dx="mel")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        first_showing = shown_token(task2, 2, 1)
    with time_machine.travel(start + timedelta(seconds=60), tick=False):  # the reader reloads the page
        second_showing = shown_token(task2, 2, 1)
    with time_machine.travel(start + timedelta(seconds=70), tick=False):
        record(task2, [event("early", rank=2, after=50.0, open_for=5.0)], token=first_showing)
        record(task2, [event("now", rank=1, after=4.0, open_for=2.0)], token=second_showing)
    with time_machine.travel(start + timedelta(seconds=80), tick=False):
        answer_submit(assignment=task2, task=2, position=1, answer="mel", confidence=4, token=second_showing)
    with time_machine.travel(start + timedelta(seconds=500), tick=False):  # back to the answered case
        revisit = shown_token(task2, 2, 1)
        record(task2, [event("revisit", rank=3, after=3.0, open_for=None)], token=revisit)

    views = study_views(study)
    image_id, reader = item.study_case.case.image_id, task2.reader.username
    assert [(v.rank, v.neighbour_class, round(v.seconds_after_shown, 3), v.seconds_open) for v in views] == [
        (2, "mel", -10.0, 5.0),  # 50 s into the first showing, 60 s before the answered one
        (1, "nv", 4.0, 2.0),  # the page's own measure, exactly
        (3, "nv", 443.0, None),  # 440 s after the answered showing plus 3 s
    ]
    assert views[1].seconds_after_shown == 4.0
    assert {(v.reader, v.case, v.task) for v in views} == {(reader, image_id, 2)}
    assert all(isinstance(v, ViewRow) for v in views)

    reads, _ = study_reads(study)
    summary = viewing_summary(reads, views)
    row = summary["readers"][0]
    # nv in Task 1, mel in Task 2 (after 20 s): a change, after enlarging rank 2 (mel) during the first showing.
    assert (row["reader"], row["cases"], row["answer_changes"], row["changes_after_viewing_new_class"]) == (
        reader, 1, 1, 1)
    assert (row["enlargements"], row["enlargements_after_answer"], row["cases_with_enlargement"]) == (2, 1, 1)
    # Without a token the server cannot place an enlargement: it keeps the page's own measure.
    record(task2, [event("untimed", rank=4, after=1.0)])
    assert [v for v in study_views(study) if v.rank == 4] == [ViewRow(reader, image_id, 2, 4, "nv", 1.0, 2.5)]
