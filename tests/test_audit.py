"""The audit log: each audited action writes exactly one event naming who did it; refused actions
write none; only staff with the permission (superusers) can read the log."""
from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command
from django.test import Client

from lesionsearch.audit.models import AuditEvent
from readerstudy.models import Study
from retrieval.models import Query
from tests.apiclient import api
from tests.conftest import jpeg_bytes, signed_in
from tests.readerstudy.conftest import active_index, readers, rows_only_study  # noqa: F401  (fixtures)

# Nothing reaches a broker: the jobs these tests queue are recorded instead.
pytestmark = pytest.mark.usefixtures("sent_jobs")

A = AuditEvent.Action


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root")


def only_event(action: str) -> AuditEvent:
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, events
    return events[0]


def upload(name="lesion.jpg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, jpeg_bytes(7), content_type="image/jpeg")


def test_query_submit_and_delete_on_the_web(clinician, active_index):
    client = signed_in(clinician)
    response = client.post("/search/", {"image": upload()})
    assert response.status_code == 302
    query = Query.objects.get()
    event = only_event(A.QUERY_SUBMIT)
    assert (event.user, event.actor, event.object_type, event.object_id, event.via, event.ip) == (
        clinician, clinician.username, "retrieval.query", str(query.id), "web", "127.0.0.1")
    assert event.detail["sha256"] == query.sha256 and event.detail["method"] == "secbir"

    assert client.post(f"/queries/{query.id}/delete/").status_code == 302
    event = only_event(A.QUERY_DELETE)
    assert (event.user, event.object_id, event.via, event.detail) == (clinician, str(query.id), "web",
                                                                      {"owner": clinician.id})


def test_query_submit_and_delete_through_the_api(clinician, active_index):
    client = api(clinician)
    response = client.post("/api/v1/queries/", {"image": upload()}, format="multipart")
    assert response.status_code == 202
    event = only_event(A.QUERY_SUBMIT)
    assert (event.user, event.object_id, event.via) == (clinician, str(response.json()["id"]), "api")
    assert client.delete(f"/api/v1/queries/{response.json()['id']}/").status_code == 204
    assert (only_event(A.QUERY_DELETE).user, only_event(A.QUERY_DELETE).via) == (clinician, "api")


def test_a_refused_query_writes_no_event(clinician, rows_only_study):  # noqa: F811
    """No active index: 503, no query, no event (the event is written in the query's transaction)."""
    response = signed_in(clinician).post("/search/", {"image": upload()})
    assert response.status_code == 503
    assert not Query.objects.exists() and not AuditEvent.objects.filter(action=A.QUERY_SUBMIT).exists()


def _answer_everything(study):
    from readerstudy.models import Assignment
    from readerstudy.services import answer_submit

    assignment = Assignment.objects.filter(study=study).first()
    for task in (1, 2):
        for position in (1, 2, 3):
            answer_submit(assignment=assignment, task=task, position=position, answer="nv", confidence=3)


def test_study_exports_on_the_web_and_the_api(study_admin, rows_only_study):  # noqa: F811
    _answer_everything(rows_only_study)
    response = signed_in(study_admin).get(f"/studies/manage/{rows_only_study.id}/export/?format=csv")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    event = only_event(A.STUDY_EXPORT)
    assert (event.user, event.object_type, event.object_id, event.via, event.detail["formats"]) == (
        study_admin, "readerstudy.study", str(rows_only_study.id), "web", ["csv"])
    event.delete()
    assert api(study_admin).get(f"/api/v1/studies/manage/{rows_only_study.id}/export/").status_code == 200
    assert (only_event(A.STUDY_EXPORT).user, only_event(A.STUDY_EXPORT).via) == (study_admin, "api")
    assert api(study_admin).get(f"/api/v1/studies/manage/{rows_only_study.id}/report/").status_code == 200
    assert only_event(A.STUDY_REPORT).user == study_admin


def test_refused_exports_write_no_event(clinician, reader, study_admin, rows_only_study):  # noqa: F811
    assert signed_in(clinician).get(f"/studies/manage/{rows_only_study.id}/export/").status_code == 403
    assert api(reader).get(f"/api/v1/studies/manage/{rows_only_study.id}/export/").status_code == 403
    # nobody answered yet: 409, nothing exported
    assert signed_in(study_admin).get(f"/studies/manage/{rows_only_study.id}/export/").status_code == 409
    assert not AuditEvent.objects.filter(action=A.STUDY_EXPORT).exists()


def test_the_report_command_records_the_export(db, tmp_path):
    from tests.readerstudy.analysis.scenario import study_csv

    responses = tmp_path / "responses.csv"
    responses.write_text(study_csv(), encoding="utf-8")
    call_command("readerstudy_report", "--responses", str(responses), "--out", str(tmp_path / "out"),
                 "--format", "json", stdout=io.StringIO())
    event = only_event(A.STUDY_EXPORT)
    assert event.user is None and event.via == "command" and event.actor.startswith("command:")
    assert event.detail["responses"] == str(responses) and event.detail["formats"] == ["json"]


def test_study_state_changes_name_who_made_them(study_admin, rows_only_study):  # noqa: F811
    client = signed_in(study_admin)
    assert client.post(f"/studies/manage/{rows_only_study.id}/close/").status_code == 302
    rows_only_study.refresh_from_db()
    assert rows_only_study.status == Study.Status.CLOSED
    event = only_event(A.STUDY_CLOSE)
    assert (event.user, event.object_id) == (study_admin, str(rows_only_study.id))
    # Closing again is refused (a message, no change): no second event.
    client.post(f"/studies/manage/{rows_only_study.id}/close/")
    assert AuditEvent.objects.filter(action=A.STUDY_CLOSE).count() == 1


def test_index_rebuild_through_the_api_and_the_command(study_admin, rows_only_study):  # noqa: F811
    response = api(study_admin).post("/api/v1/index/rebuild/", {}, format="json")
    assert response.status_code == 202
    event = only_event(A.INDEX_REBUILD)
    assert (event.user, event.object_id, event.via, event.detail["existing"]) == (
        study_admin, str(response.json()["id"]), "api", False)
    event.delete()
    # The command asks for the same build (one is under way): recorded as such, by the command.
    call_command("build_index", "--collection", "rows", stdout=io.StringIO())
    event = only_event(A.INDEX_REBUILD)
    assert event.user is None and event.via == "command" and event.detail["existing"] is True


def test_failed_sign_ins_are_recorded(client, clinician):
    response = client.post("/accounts/login/", {"username": "dr_clinician", "password": "wrong"},
                           REMOTE_ADDR="192.0.2.7")
    assert response.status_code == 200
    event = only_event(A.LOGIN_FAILED)
    assert (event.user, event.actor, event.ip, event.detail["failures"]) == (None, "dr_clinician", "192.0.2.7", 1)
    assert "wrong" not in str(event.detail)  # never the password
    assert client.post("/accounts/login/", {"username": "dr_clinician", "password": "pw-dr_clinician"}).status_code == 302
    assert AuditEvent.objects.filter(action=A.LOGIN, user=clinician).count() == 1


def test_only_superusers_read_the_log(clinician, reader, study_admin, superuser, active_index):
    signed_in(clinician).post("/search/", {"image": upload()})
    url = "/admin/audit/auditevent/"
    assert Client().get(url).status_code == 302
    for user in (clinician, reader):  # not staff: to the admin's sign-in page
        assert signed_in(user).get(url).status_code == 302
    assert signed_in(study_admin).get(url).status_code == 403  # staff without the permission
    page = signed_in(superuser).get(url)
    assert page.status_code == 200 and b"query.submit" in page.content
    event = AuditEvent.objects.get(action=A.QUERY_SUBMIT)
    # Read-only even for the superuser: no edit, no delete.
    assert signed_in(superuser).post(f"{url}{event.id}/change/", {"action": "x"}).status_code == 403
    assert signed_in(superuser).post(f"{url}{event.id}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(id=event.id, action=A.QUERY_SUBMIT).exists()
    # Nothing in the API exposes it.
    assert api(study_admin).get("/api/v1/audit/").status_code == 404


def test_csv_download_and_command(superuser, clinician, active_index):
    signed_in(clinician).post("/search/", {"image": upload()})
    event = AuditEvent.objects.get(action=A.QUERY_SUBMIT)
    response = signed_in(superuser).post("/admin/audit/auditevent/", {
        "action": "download_csv", "_selected_action": [event.id]})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["id"], r["actor"], r["action"]) for r in rows] == [(str(event.id), "dr_clinician", "query.submit")]
    assert only_event(A.AUDIT_EXPORT).user == superuser  # reading the log out is itself audited

    out = io.StringIO()
    call_command("audit_export", "--action", "query.submit", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["actor"], r["object_id"]) for r in rows] == [("dr_clinician", event.object_id)]
