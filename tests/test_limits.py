"""Limits: upload size (web and API, a clear 413 and nothing stored), the per-user query rate shared
by the search page and the API (429), and the sign-in lockout after repeated failures (429)."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from lesionsearch.audit.models import AuditEvent
from retrieval.models import Query
from retrieval.throttles import QuerySubmitThrottle
from tests.apiclient import api
from tests.conftest import jpeg_bytes, signed_in
from tests.readerstudy.conftest import active_index, readers, rows_only_study  # noqa: F401  (fixtures)

# Nothing reaches a broker: the jobs these tests queue are recorded instead.
pytestmark = pytest.mark.usefixtures("sent_jobs")


@pytest.fixture
def other_clinician(db, django_user_model):
    from tests.conftest import _user
    from lesionsearch.roles import CLINICIAN

    return _user(django_user_model, "dr_other", CLINICIAN)


def image(data: bytes | None = None, name: str = "lesion.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes(3) if data is None else data, content_type="image/jpeg")


def stored_files(media_root) -> list:
    folder = media_root / "queries"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- Upload size ----------------------------------------------------------------------------

def oversize(limit_mb: int, extra: int) -> bytes:
    """A valid JPEG padded past the limit (bytes after the end marker are ignored by decoders)."""
    data = jpeg_bytes(5)
    return data + b"\0" * (limit_mb * 1024 * 1024 - len(data) + extra)


@pytest.mark.parametrize("extra", [1, 200 * 1024], ids=["just-over", "far-over"])
def test_an_oversize_image_is_413_with_a_message_on_the_web(settings, clinician, active_index, media_root, extra):
    """Just over: the service refuses it; far over: refused from Content-Length before the body is read."""
    settings.QUERY_MAX_UPLOAD_MB = 1
    response = signed_in(clinician).post("/search/", {"image": image(oversize(1, extra))})
    assert response.status_code == 413
    assert b"larger than 1 MB" in response.content and b'role="alert"' in response.content
    assert not Query.objects.exists() and stored_files(media_root) == []


@pytest.mark.parametrize("extra", [1, 200 * 1024], ids=["just-over", "far-over"])
def test_an_oversize_image_is_413_with_a_message_in_the_api(settings, clinician, active_index, media_root, extra):
    settings.QUERY_MAX_UPLOAD_MB = 1
    response = api(clinician).post("/api/v1/queries/", {"image": image(oversize(1, extra))}, format="multipart")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large" and "larger than 1 MB" in error["message"]
    assert not Query.objects.exists() and stored_files(media_root) == []


def test_oversize_bodies_are_refused_on_every_path_before_parsing(settings, client, clinician):
    """Any URL, even one that takes no upload and an anonymous caller: 413 before the CSRF check reads it."""
    settings.QUERY_MAX_UPLOAD_MB = 1
    body = b"x" * (2 * 1024 * 1024)
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", body, content_type="application/octet-stream")
    assert response.status_code == 413 and b"larger than 1 MB" in response.content
    response = Client().post("/api/v1/studies/manage/", body, content_type="application/octet-stream")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_oversize_form_fields_are_a_clear_413_on_the_web(settings, clinician, active_index):
    """DATA_UPLOAD_MAX_MEMORY_SIZE (form fields, files not counted): a message, not a bare 400."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = signed_in(clinician).post("/search/", {"image": image(), "k": "1" + " " * 4096})
    assert response.status_code == 413
    assert b"fields are too large" in response.content
    assert not Query.objects.exists()


# --- Query rate -----------------------------------------------------------------------------

def test_the_search_page_has_the_api_rate_limit_per_user(monkeypatch, clinician, other_clinician, active_index):
    monkeypatch.setattr(QuerySubmitThrottle, "rate", "3/min", raising=False)
    web = signed_in(clinician)
    assert [web.post("/search/", {"image": image()}).status_code for _ in range(2)] == [302, 302]
    # One count for both ways in: the API's submission is the third, so the page's next is refused.
    assert api(clinician).post("/api/v1/queries/", {"image": image()}, format="multipart").status_code == 202
    response = web.post("/search/", {"image": image()})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert b"too many searches" in response.content and b'role="alert"' in response.content
    assert Query.objects.filter(user=clinician).count() == 3
    assert api(clinician).post("/api/v1/queries/", {"image": image()}, format="multipart").status_code == 429
    assert web.get("/search/").status_code == 200  # reading is not limited
    assert signed_in(other_clinician).post("/search/", {"image": image()}).status_code == 302  # per user


# --- Sign-in lockout ------------------------------------------------------------------------

def attempt(client: Client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_repeated_failed_sign_ins_lock_the_user_name(settings, client, clinician, other_clinician):
    settings.LOGIN_FAILURE_LIMIT = 3
    assert [attempt(client, "dr_clinician", "guess").status_code for _ in range(3)] == [200, 200, 200]
    response = attempt(client, "dr_clinician", "pw-dr_clinician")  # the right password, but locked
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= settings.LOGIN_LOCKOUT_SECONDS
    assert b"Too many failed sign-ins" in response.content and b"15 minutes" in response.content
    assert "_auth_user_id" not in client.session
    # The name is locked in the admin's sign-in too (it asks the same backend), in any letter case.
    admin = Client().post("/admin/login/", {"username": "DR_Clinician", "password": "pw-dr_clinician"})
    assert admin.status_code == 200 and "_auth_user_id" not in admin.wsgi_request.session
    # Other users are not affected.
    assert attempt(Client(), "dr_other", "pw-dr_other").status_code == 302
    events = AuditEvent.objects.filter(actor__iexact="dr_clinician").values_list("action", flat=True)
    assert sorted(events) == ["auth.login_failed"] * 3 + ["auth.login_locked"] * 2


def test_the_lockout_ends_and_a_success_clears_the_count(settings, monkeypatch, clinician):
    import time

    from lesionsearch import auth

    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        attempt(client, "dr_clinician", "guess")
    assert attempt(client, "dr_clinician", "pw-dr_clinician").status_code == 302  # clears the count
    client.post("/accounts/logout/")
    for _ in range(2):
        assert attempt(client, "dr_clinician", "guess").status_code == 200
    assert attempt(client, "dr_clinician", "pw-dr_clinician").status_code == 302  # 2 + 2 failures: not locked
    client.post("/accounts/logout/")
    for _ in range(3):
        attempt(client, "dr_clinician", "guess")
    assert attempt(client, "dr_clinician", "pw-dr_clinician").status_code == 429
    later = time.time() + settings.LOGIN_LOCKOUT_SECONDS + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    assert attempt(client, "dr_clinician", "pw-dr_clinician").status_code == 302
