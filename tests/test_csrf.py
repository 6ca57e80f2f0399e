"""CSRF: every form POST (and the API's session-authenticated writes) is refused without the token
(403) and accepted with it. Django's test client skips the check unless ``enforce_csrf_checks``."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from readerstudy.models import Assignment, Study
from retrieval.models import Query
from tests.conftest import jpeg_bytes
from tests.readerstudy.conftest import active_index, readers, rows_only_study  # noqa: F401  (fixtures)

# Nothing reaches a broker: the jobs these tests queue are recorded instead.
pytestmark = pytest.mark.usefixtures("sent_jobs")


def strict(user=None, page: str = "/accounts/login/") -> tuple[Client, str]:
    """A client that enforces CSRF, signed in as ``user``, and the token a page it opened gave it."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    assert client.get(page).status_code == 200
    return client, client.cookies["csrftoken"].value


def image():
    return SimpleUploadedFile("lesion.jpg", jpeg_bytes(9), content_type="image/jpeg")


def test_login_and_logout(clinician):
    client, token = strict()
    credentials = {"username": "dr_clinician", "password": "pw-dr_clinician"}
    assert client.post("/accounts/login/", credentials).status_code == 403
    assert "_auth_user_id" not in client.session
    assert client.post("/accounts/login/", {**credentials, "csrfmiddlewaretoken": token}).status_code == 302
    token = client.cookies["csrftoken"].value  # rotated at sign-in
    assert client.post("/accounts/logout/").status_code == 403
    assert "_auth_user_id" in client.session
    assert client.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert "_auth_user_id" not in client.session


def test_search_and_delete_query(clinician, active_index):
    client, token = strict(clinician, "/search/")
    assert client.post("/search/", {"image": image()}).status_code == 403
    assert not Query.objects.exists()
    assert client.post("/search/", {"image": image(), "csrfmiddlewaretoken": token}).status_code == 302
    query = Query.objects.get()
    assert client.post(f"/queries/{query.id}/delete/").status_code == 403
    assert Query.objects.filter(id=query.id).exists()
    assert client.post(f"/queries/{query.id}/delete/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert not Query.objects.filter(id=query.id).exists()


def test_study_answer_form(rows_only_study, readers):  # noqa: F811
    from readerstudy.services import shown_token

    study = rows_only_study
    url = f"/studies/{study.id}/task/1/"
    client, token = strict(readers[0], url)
    assignment = Assignment.objects.get(study=study, reader=readers[0])
    answer = {"position": 1, "answer": "mel", "confidence": 4, "shown": shown_token(assignment, 1, 1)}
    assert client.post(url, answer).status_code == 403
    assert not assignment.items.filter(answers__isnull=False).exists()
    assert client.post(url, {**answer, "csrfmiddlewaretoken": token}).status_code == 302
    assert assignment.items.filter(answers__isnull=False).count() == 1


def test_study_enlargement_reports(rows_only_study, readers):  # noqa: F811
    """The Task 2 page's enlargements (a fetch, or a beacon: form fields, so the token goes in the body)."""
    import json

    from readerstudy.models import NeighbourView
    from readerstudy.services import answer_submit

    study = rows_only_study
    assignment = Assignment.objects.get(study=study, reader=readers[0])
    for position in (1, 2, 3):
        answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    client, token = strict(readers[0], f"/studies/{study.id}/task/2/")
    url = f"/studies/{study.id}/task/2/case/1/views/"
    views = {"views": json.dumps([{"id": "a1", "rank": 1, "seconds_after_shown": 1.0}])}
    assert client.post(url, views).status_code == 403
    assert not NeighbourView.objects.exists()
    assert client.post(url, {**views, "csrfmiddlewaretoken": token}).status_code == 200
    assert NeighbourView.objects.count() == 1


def test_study_management_forms(study_admin, rows_only_study, active_index):  # noqa: F811
    client, token = strict(study_admin, "/studies/manage/")
    close = f"/studies/manage/{rows_only_study.id}/close/"
    assert client.post(close).status_code == 403
    assert Study.objects.get(id=rows_only_study.id).status == Study.Status.OPEN
    assert client.post(close, {"csrfmiddlewaretoken": token}).status_code == 302
    assert Study.objects.get(id=rows_only_study.id).status == Study.Status.CLOSED
    form = {"name": "Second", "cases_per_reader": 2, "neighbours_shown": 3, "washout_hours": 0, "task2_rotation": 180,
            "seed": 1}
    assert client.post("/studies/manage/", form).status_code == 403
    assert client.post("/studies/manage/", {**form, "csrfmiddlewaretoken": token}).status_code == 302
    assert Study.objects.filter(name="Second").exists()


def test_api_writes_with_a_session_need_the_token_but_token_clients_do_not(clinician, active_index):
    from rest_framework.authtoken.models import Token

    client, token = strict(clinician, "/search/")
    assert client.post("/api/v1/queries/", {"image": image()}).status_code == 403
    assert client.post("/api/v1/queries/", {"image": image()}, HTTP_X_CSRFTOKEN=token).status_code == 202
    key = Token.objects.create(user=clinician).key
    tokened = Client(enforce_csrf_checks=True)  # an integration: no cookie, no CSRF token
    assert tokened.post("/api/v1/queries/", {"image": image()}, HTTP_AUTHORIZATION=f"Token {key}").status_code == 202
    assert Query.objects.filter(user=clinician).count() == 2
