"""Hostile and odd uploads through every way an image gets in: the search page, the API, the admin.

Every entry of :data:`tests.hostile.CORPUS` (and every malformed request of ``REQUESTS``) is sent
to the clinician's search form and to ``POST /api/v1/queries/``. Each must get either

* a clear 4xx with a readable message (the API's one JSON error shape), with no Query row,
  nothing new under the media root and no upload left in the temporary folder; or
* a correct result: the query is accepted, its stored image shows the upright picture that was
  sent, and the worker's ``query_run`` on a real (tiny) index ends ``done`` with its neighbours.

Never a 5xx, never a query left pending or running. The index is built once for the module
(committed outside the tests' transactions, and removed again at the end).
"""
from __future__ import annotations

import html
import io
import re
from pathlib import Path

import numpy as np
import pytest
from django.test import override_settings
from PIL import Image

from lesionsearch.audit.models import AuditEvent
from retrieval.ml.overlay import overlay_size
from retrieval.models import Case, IndexVersion, LibraryCheck, ModelVersion, Query
from retrieval.services.queries import query_run
from tests.conftest import build_index_here, import_tiny_library
from tests.hostile import CORPUS, LIMIT_MB, REQUESTS, mutate, upload_body
from tests.apiclient import api, error_of

#: Pillow notes the corrupt EXIF block of "jpeg-corrupt-exif" and reads the image anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

QUERIES = "/api/v1/queries/"
SEARCH = "/search/"


# --- Fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_index(django_db_setup, django_db_blocker, tiny_assets, tmp_path_factory):
    """A finished, active index over the tiny synthetic library, built once for this module.

    Its rows are committed (the tests' own rows roll back as usual) and deleted at the end; its
    files live in this module's own media root."""
    from retrieval import runtime

    media = tmp_path_factory.mktemp("hostile") / "media"
    overrides = override_settings(MEDIA_ROOT=str(media), INDEX_CHUNK_SIZE=16)
    made = [Query, IndexVersion, Case, LibraryCheck, ModelVersion, AuditEvent]  # children first
    with django_db_blocker.unblock():
        start = {model: model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0 for model in made}
        overrides.enable()
        runtime.forget()
        try:
            versions = import_tiny_library(tiny_assets)
            index = build_index_here(model_version=versions["4ch"])
            assert index.status == "done" and index.active, index.message
            yield index, media
        finally:
            runtime.forget()
            for model in made:
                if model is ModelVersion:  # 4-channel models first: they point at their 3-channel parent
                    model.objects.filter(pk__gt=start[model], parent__isnull=False).delete()
                model.objects.filter(pk__gt=start[model]).delete()
            overrides.disable()


@pytest.fixture
def media(real_index, settings):
    settings.MEDIA_ROOT = str(real_index[1])  # the module's media root (a test's settings change is undone after it)
    return real_index[1]


@pytest.fixture
def upload_tmp(settings, tmp_path):
    """Where Django spools uploads larger than 16 kB while a request is read; must end empty."""
    folder = tmp_path / "upload-tmp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024
    return folder


@pytest.fixture(autouse=True)
def limits(settings, monkeypatch):
    """A small upload limit (oversize files need little memory); no task message leaves the test."""
    from lesionsearch.jobs import services as jobs

    settings.QUERY_MAX_UPLOAD_MB = LIMIT_MB
    monkeypatch.setattr(jobs, "send", lambda kind, job_id, stamped=False: None)


@pytest.fixture
def web(client, clinician):
    client.force_login(clinician)
    return client


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def page_text(response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def upload_error(response) -> str:
    """The search page's error paragraph, or the message of the 400/413 page."""
    content = response.content.decode()
    match = re.search(r'<p[^>]*role="alert"[^>]*>(.*?)</p>', content, re.S)
    assert match, content[:2000]
    return html.unescape(match.group(1)).strip()


def post(client, url: str, body: bytes, content_type: str):
    return client.generic("POST", url, body, content_type=content_type)


# --- Checks shared by both entry points -------------------------------------------------------
def assert_refused_cleanly(response, status: int, before: set[str], media: Path, upload_tmp: Path):
    assert response.status_code == status, (response.status_code, response.content[:600])
    assert not Query.objects.exists()
    assert files_under(media) == before, files_under(media) - before
    assert list(upload_tmp.iterdir()) == []


def assert_stored_upright(entry_id: str, query: Query, media: Path, before: set[str]):
    """The upload is stored once, under the user's folder, and decodes to the picture that was sent."""
    entry = CORPUS.uploads[entry_id]
    new = files_under(media) - before
    assert new == {query.image.name}, new
    assert re.fullmatch(rf"queries/{query.user_id}/[0-9a-f]{{32}}\.{entry.stored_ext}", query.image.name)
    expected = CORPUS.expected(entry_id)
    with Image.open(media / query.image.name) as image:
        stored = np.asarray(image.convert("RGB"), dtype=np.int16)  # as the worker reads it
    assert stored.shape == expected.shape, (stored.shape, expected.shape)
    assert (query.height, query.width) == expected.shape[:2]
    assert np.abs(stored - expected).mean() <= entry.tolerance


def assert_original_name(entry_id: str, query: Query):
    entry = CORPUS.uploads[entry_id]
    wanted = entry.original_name if entry.original_name is not None else entry.filename
    assert query.original_name == wanted
    assert not re.search(r"[\x00-\x1f\x7f/\\]", query.original_name)


def run_to_the_end(query: Query, media: Path, before: set[str]) -> Query:
    """The worker's part, on the real index: the query must finish done with k neighbours."""
    assert query.status == Query.Status.PENDING
    assert query_run(query_id=query.id, worker="test")
    query.refresh_from_db()
    assert query.status == Query.Status.DONE, (query.status, query.message)
    assert query.message == "" and query.neighbours.count() == query.k == 6
    assert query.saliency.name and (media / query.saliency.name).is_file()
    with Image.open(media / query.saliency.name) as overlay:
        assert overlay.size == overlay_size(query.width, query.height)
    # Everything the run wrote belongs to this query or is a shared library overlay.
    new = files_under(media) - before
    assert all(name.startswith((f"queries/{query.user_id}/", "overlays/")) for name in new), new
    return query


# --- The corpus through the search page -------------------------------------------------------
@pytest.mark.parametrize("entry_id", CORPUS.ids(refused=True))
def test_search_page_refuses(entry_id, web, media, upload_tmp):
    status, fragment = CORPUS.uploads[entry_id].refuse
    before = files_under(media)
    response = post(web, SEARCH, *upload_body(entry_id))
    assert_refused_cleanly(response, status, before, media, upload_tmp)
    assert fragment in upload_error(response)


@pytest.mark.parametrize("entry_id", CORPUS.ids(refused=False))
def test_search_page_accepts_and_the_worker_finishes(entry_id, web, clinician, media, upload_tmp, settings):
    settings.QUERY_EVIDENCE_MAPS = False  # the API's test of the same entry renders them (60% of a run's time)
    before = files_under(media)
    response = post(web, SEARCH, *upload_body(entry_id))
    assert response.status_code == 302, (response.status_code, upload_error(response) if response.content else "")
    query = Query.objects.get(user=clinician)
    assert response["Location"] == f"/queries/{query.pk}/"
    assert list(upload_tmp.iterdir()) == []
    assert_stored_upright(entry_id, query, media, before)
    assert_original_name(entry_id, query)
    run_to_the_end(query, media, before)
    detail = web.get(f"/queries/{query.pk}/")
    assert detail.status_code == 200
    assert "Done." in page_text(detail) and detail.content.decode().count('<li class="neighbour"') >= 6
    for page in (detail, web.get(SEARCH)):  # the file name is shown, as text
        assert html.escape(query.original_name) in page.content.decode() or not query.original_name
        assert "<img src=x" not in page.content.decode()


# --- The corpus through the API ----------------------------------------------------------------
@pytest.mark.parametrize("entry_id", CORPUS.ids(refused=True))
def test_api_refuses(entry_id, clinician, media, upload_tmp):
    status, fragment = CORPUS.uploads[entry_id].refuse
    before = files_under(media)
    response = post(api(clinician), QUERIES, *upload_body(entry_id))
    assert_refused_cleanly(response, status, before, media, upload_tmp)
    error = error_of(response, status)
    assert fragment in error["message"], error
    assert error["code"] in ({"rejected", "invalid", "parse_error"} if status == 400 else {"too_large"}), error


@pytest.mark.parametrize("entry_id", CORPUS.ids(refused=False))
def test_api_accepts_and_the_worker_finishes(entry_id, clinician, media, upload_tmp):
    client = api(clinician)
    before = files_under(media)
    response = post(client, QUERIES, *upload_body(entry_id))
    assert response.status_code == 202, response.content[:600]
    query = Query.objects.get(pk=response.json()["id"], user=clinician)
    assert list(upload_tmp.iterdir()) == []
    assert_stored_upright(entry_id, query, media, before)
    assert_original_name(entry_id, query)
    run_to_the_end(query, media, before)
    payload = client.get(response["Location"]).json()
    assert payload["status"] == "done" and len(payload["neighbours"]) == 6 and not payload["error"]
    served = client.get(payload["query_image_url"])
    assert served.status_code == 200
    # Served under the type of what it is (never sniffed as HTML, even for a JPEG/HTML polyglot).
    assert served["Content-Type"] == {"jpg": "image/jpeg", "png": "image/png"}[CORPUS.uploads[entry_id].stored_ext]
    assert served["X-Content-Type-Options"] == "nosniff"
    assert b"".join(served.streaming_content) == (media / query.image.name).read_bytes()


# --- Malformed requests ------------------------------------------------------------------------
@pytest.mark.parametrize("bad", REQUESTS, ids=lambda bad: bad.id)
def test_search_page_answers_malformed_requests_with_a_message(bad, web, media, upload_tmp):
    status, fragment = bad.web
    before = files_under(media)
    response = post(web, SEARCH, *bad.body())
    assert_refused_cleanly(response, status, before, media, upload_tmp)
    message = upload_error(response)
    assert message and fragment in message


@pytest.mark.parametrize("bad", REQUESTS, ids=lambda bad: bad.id)
def test_api_answers_malformed_requests_with_the_error_body(bad, clinician, media, upload_tmp):
    status, fragment = bad.api
    before = files_under(media)
    response = post(api(clinician), QUERIES, *bad.body())
    assert_refused_cleanly(response, status, before, media, upload_tmp)
    assert fragment in error_of(response, status)["message"]


def test_the_corpus_is_at_least_thirty_uploads_of_both_kinds():
    assert len(CORPUS.uploads) >= 30
    assert len(CORPUS.ids(refused=True)) >= 15 and len(CORPUS.ids(refused=False)) >= 15


# --- The admin: the other place a file could be uploaded ---------------------------------------
ADMIN_SUBSET = ["text-named-jpg", "svg-with-script", "bomb-png-header-50000x50000", "truncated-jpeg", "png-named-jpg",
                "exif-orientation-6"]


@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "pw-root"))
    return client


def _case_form(case: Case) -> dict:
    fields = ("collection", "image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization", "source_dataset",
              "split")
    return {name: "" if getattr(case, name) is None else str(getattr(case, name)) for name in fields}


@pytest.mark.parametrize("entry_id", ADMIN_SUBSET)
def test_the_admin_takes_no_case_image_uploads(entry_id, superuser_client, media, upload_tmp):
    """Library images come in only through import_ham10000 (every image inspected): the admin can
    neither add a case with a file nor replace a case's image or mask."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = CORPUS.uploads[entry_id]
    case = Case.objects.order_by("pk").first()
    stored = (case.image.name, case.mask.name, case.sha256)
    cases, before = Case.objects.count(), files_under(media)

    def image():
        return SimpleUploadedFile(upload.filename, CORPUS.data(entry_id), content_type=upload.content_type)

    added = superuser_client.post("/admin/retrieval/case/add/", {**_case_form(case), "image_id": "NEW_1",
                                                                 "image": image(), "mask": image()})
    assert added.status_code == 403
    changed = superuser_client.post(f"/admin/retrieval/case/{case.pk}/change/",
                                    {**_case_form(case), "image": image(), "mask": image()})
    assert changed.status_code in (200, 302), changed.content[:600]
    case.refresh_from_db()
    assert (case.image.name, case.mask.name, case.sha256) == stored
    assert Case.objects.count() == cases
    assert files_under(media) == before
    assert list(upload_tmp.iterdir()) == []
    page = superuser_client.get(f"/admin/retrieval/case/{case.pk}/change/").content.decode()
    assert 'type="file"' not in page


# --- Mutated files: only ever a readable refusal -------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the corrupt metadata it skips
def test_mutated_images_are_refused_with_a_reason_or_stored_readably():
    """Byte flips, cuts and insertions in the accepted corpus files (and the multi-image ones): the
    checks raise only ImageRejected, and whatever passes is stored as an image the worker can read."""
    import random

    from retrieval.images import ImageRejected, inspect_image
    from retrieval.services.queries import _normalised_upload

    seeds = [CORPUS.data(i) for i in CORPUS.ids(refused=False) if len(CORPUS.data(i)) < 30_000]
    seeds += [CORPUS.data(i) for i in ("multi-page-tiff", "animated-png", "animated-webp", "float32-tiff")]
    rng = random.Random(7)
    outcomes = {"refused": 0, "stored": 0}
    for _ in range(3000):
        data = mutate(rng.choice(seeds), rng, edits=6)
        try:
            info = inspect_image(data)
        except ImageRejected as exc:
            assert str(exc)
            outcomes["refused"] += 1
            continue
        stored, _, width, height = _normalised_upload(data, info.format)
        with Image.open(io.BytesIO(stored)) as image:
            assert image.convert("RGB").size == (width, height)
        outcomes["stored"] += 1
    assert outcomes["refused"] > 1000 and outcomes["stored"] > 100, outcomes
