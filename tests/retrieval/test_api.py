"""The REST API (/api/v1/): every endpoint, its permissions and its errors, schema and offline docs."""
from __future__ import annotations

import io
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from django.contrib.auth.models import Group
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.core.management import call_command
from django.middleware.csrf import _get_new_csrf_string
from PIL import Image
from rest_framework.test import APIClient

from lesionsearch.roles import CLINICIAN, READER
from retrieval.api.serializers import MAX_WAIT_SECONDS
from retrieval.api.views import QuerySubmitThrottle
from retrieval.models import Case, IndexVersion, ModelVersion, Query
from tests.apiclient import QUERIES, api, error_of, submit, upload
from tests.conftest import jpeg_bytes, real_metadata_rows, write_ham_folder
from tests.retrieval.conftest import ISSUE_15_LABELS

pytestmark = pytest.mark.django_db

CASES = "/api/v1/cases/"
INDEX = "/api/v1/index/"
REBUILD = "/api/v1/index/rebuild/"
PAYLOAD_KEYS = {"id", "status", "error", "created", "k", "method", "method_label", "model_version", "index_version", "query_image_url", "acquisition", "filters",
                "query_saliency_url", "neighbour_vote", "warning", "ood", "neighbours"}
CASE_KEYS = {"id", "image_id", "lesion_id", "collection", "diagnosis", "diagnosis_label", "diagnosis_type", "age",
             "sex", "localization", "split", "width", "height", "image_url", "attribution", "copyright_license",
             "withdrawn_at", "withdrawn_reason"}


# --- Actors and fixtures -------------------------------------------------------------------
def _member(django_user_model, name: str, *roles: str, **extra):
    user = django_user_model.objects.create_user(username=name, password="pw-" + name, **extra)
    for role in roles:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def other_clinician(django_user_model):
    return _member(django_user_model, "dr_other", CLINICIAN)


@pytest.fixture
def clinician_reader(django_user_model):
    return _member(django_user_model, "dr_reader", CLINICIAN, READER)


@pytest.fixture
def staff(django_user_model):
    """Staff without any role: may rebuild the index and query, as staff."""
    return _member(django_user_model, "staff_member", is_staff=True)


@pytest.fixture(autouse=True)
def sent(sent_jobs):
    """Task messages the services send, recorded instead of written to the broker (reading a
    query or a build whose message looks lost re-sends it)."""
    cache.clear()  # throttle history
    return sent_jobs


@pytest.fixture
def library(tmp_path, media_root):
    write_ham_folder(tmp_path / "ham", real_metadata_rows(30))
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    call_command("split_library", verbosity=0)
    return Case.objects.order_by("image_id")


def _model_pair(collection: str) -> ModelVersion:
    rgb = ModelVersion.objects.create(config="tiny", stage="3ch", collection=collection, checkpoint="models/a.pt",
                                      checkpoint_sha256="a" * 64, data_fingerprint="f" * 64)
    return ModelVersion.objects.create(config="tiny", stage="4ch", parent=rgb, collection=collection,
                                       checkpoint="models/b.pt", checkpoint_sha256="b" * 64,
                                       data_fingerprint="f" * 64)


@pytest.fixture
def index_row(library):
    """An active index row: enough for the API to accept queries (no worker runs them here)."""
    collection = library.first().collection
    return IndexVersion.objects.create(model_version=_model_pair(collection), collection=collection,
                                       status=IndexVersion.Status.DONE, active=True, size=27, dimension=8,
                                       total=27, done=27, directory="indexes/x")


# --- Authentication and roles --------------------------------------------------------------
ENDPOINTS = [("get", QUERIES), ("post", QUERIES), ("get", f"{QUERIES}1/"), ("delete", f"{QUERIES}1/"),
             ("get", CASES), ("get", f"{CASES}1/"), ("get", INDEX), ("post", REBUILD)]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_anonymous_requests_get_401_with_the_token_challenge(method, url):
    response = getattr(APIClient(), method)(url)
    error = error_of(response, 401)
    assert error["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Token'


def test_a_wrong_or_inactive_token_is_401(clinician):
    response = APIClient(HTTP_AUTHORIZATION="Token not-a-real-key").get(INDEX)
    assert error_of(response, 401)["code"] == "authentication_failed"
    client = api(clinician)
    clinician.is_active = False
    clinician.save()
    assert error_of(client.get(INDEX), 401)["message"] == "User inactive or deleted."


@pytest.mark.parametrize(("method", "url"), [m for m in ENDPOINTS if m[1] != INDEX])
def test_a_user_in_no_role_gets_403(stranger, method, url):
    error = error_of(getattr(api(stranger), method)(url), 403)
    assert error["code"] == "permission_denied"


def test_a_user_in_no_role_may_not_see_the_index_either(stranger):
    assert "role" in error_of(api(stranger).get(INDEX), 403)["message"]


def test_readers_may_not_query_nor_browse_cases_but_may_see_the_index(reader, library):
    client = api(reader)
    assert "clinician" in error_of(client.get(QUERIES), 403)["message"]
    assert "readers may not see library diagnoses" in error_of(client.get(CASES), 403)["message"]
    assert error_of(client.get(f"{CASES}{library.first().id}/"), 403)["code"] == "permission_denied"
    assert client.get(INDEX).status_code == 200


def test_clinicians_and_study_admins_may_browse_cases(clinician, clinician_reader, study_admin, library):
    for user in (clinician, clinician_reader, study_admin):
        assert api(user).get(CASES).json()["count"] == 30


def test_session_authentication_works_and_needs_the_csrf_token_for_writes(clinician, index_row):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinician)
    assert client.get(QUERIES).json()["count"] == 0
    refused = client.post(QUERIES, {"image": upload()}, format="multipart")
    assert "CSRF" in error_of(refused, 403)["message"]
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    accepted = client.post(QUERIES, {"image": upload()}, format="multipart", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 202
    assert Query.objects.get().user == clinician


# --- Queries -------------------------------------------------------------------------------
def test_submitting_an_image_answers_202_with_the_query_url(clinician, index_row, media_root,
                                                            django_capture_on_commit_callbacks, sent):
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(api(clinician), k=4)
    assert response.status_code == 202
    body = response.json()
    query = Query.objects.get()
    assert body == {"id": query.id, "status": "pending", "url": f"http://testserver{QUERIES}{query.id}/"}
    assert response["Location"] == body["url"]
    assert sent["query"] == [query.id]
    assert (query.user, query.k, query.original_name, query.index_version) == (clinician, 4, "lesion.jpg", index_row)
    assert (media_root / query.image.name).read_bytes() == jpeg_bytes(7)

    result = api(clinician).get(body["url"])
    assert result.status_code == 200
    payload = result.json()
    assert set(payload) == PAYLOAD_KEYS
    assert payload["status"] == "pending" and payload["neighbours"] == [] and payload["neighbour_vote"] is None
    assert payload["query_image_url"] == f"http://testserver/media/{query.image.name}"
    assert payload["index_version"] == index_row.id and payload["model_version"] == index_row.model_version_id


def test_staff_may_query_without_the_clinician_role(staff, index_row):
    assert submit(api(staff)).status_code == 202


def test_k_defaults_to_six(clinician, index_row):
    submit(api(clinician))
    assert Query.objects.get().k == 6


@pytest.mark.parametrize(("fields", "field", "fragment"), [
    ({}, "image", "No file was submitted"),
    ({"image": ""}, "image", "The submitted data was not a file"),
    ({"k": "0"}, "k", "greater than or equal to 1"),
    ({"k": "21"}, "k", "less than or equal to 20"),
    ({"k": "six"}, "k", "A valid integer is required"),
])
def test_invalid_submissions_are_400_with_the_field_named(clinician, index_row, fields, field, fragment):
    data = {"image": upload(), **fields} if field != "image" else fields
    error = error_of(api(clinician).post(QUERIES, data, format="multipart"), 400)
    assert error["code"] == "invalid"
    assert fragment in " ".join(error["fields"][field])
    assert error["message"].startswith(f"{field}: ")
    assert not Query.objects.exists()


def test_an_empty_file_is_400(clinician, index_row):
    error = error_of(submit(api(clinician), b""), 400)
    assert "empty" in error["fields"]["image"][0]


def test_a_file_that_is_not_an_image_is_400_with_the_services_message(clinician, index_row, media_root):
    error = error_of(submit(api(clinician), b"%PDF-1.4 definitely not an image"), 400)
    assert error["code"] == "rejected" and error["message"].startswith("This file cannot be used:")
    assert "fields" not in error
    assert not Query.objects.exists() and not (media_root / "queries").exists()


def test_querying_before_any_index_is_ready_is_503(clinician, library):
    error = error_of(submit(api(clinician)), 503)
    assert error["code"] == "unavailable" and "No case library index is ready" in error["message"]


def test_a_body_larger_than_the_limit_is_413_before_it_is_parsed(clinician, index_row, settings):
    settings.QUERY_MAX_UPLOAD_MB = 1
    response = submit(api(clinician), b"\xff" * (2 * 1024 * 1024))
    error = error_of(response, 413)
    assert error["code"] == "too_large" and "1 MB" in error["message"]
    assert not Query.objects.exists()


def test_a_file_just_over_the_limit_is_413_from_the_service(clinician, index_row, settings):
    settings.QUERY_MAX_UPLOAD_MB = 1
    # Small enough for the header check (it allows room for the multipart envelope).
    error = error_of(submit(api(clinician), jpeg_bytes(3) + b"\0" * (1024 * 1024)), 413)
    assert error["code"] == "too_large" and "larger than 1 MB" in error["message"]


def _noise_png(megabytes: float) -> bytes:
    """A valid PNG of random pixels: incompressible, so about 3 bytes a pixel."""
    side = int((megabytes * 1024 * 1024 / 3) ** 0.5) + 1
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_10_mb_upload_is_accepted_with_token_and_session(clinician, index_row, settings, media_root):
    data = _noise_png(10)
    assert len(data) > 10 * 1024 * 1024 >= 2 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert submit(api(clinician), data, name="big.png").status_code == 202
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(clinician)
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    response = client.post(QUERIES, {"image": upload(data, "big.png")}, format="multipart", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202, response.content
    assert [(media_root / q.image.name).stat().st_size for q in Query.objects.all()] == [len(data)] * 2


def test_form_fields_over_djangos_memory_limit_are_413(clinician, index_row, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    error = error_of(submit(api(clinician), k="1" + " " * 4096), 413)
    assert error["code"] == "too_large" and "files are not counted" in error["message"]


def test_json_bodies_are_415_as_the_schema_says(clinician, index_row):
    error = error_of(api(clinician).post(QUERIES, {"k": 3}, format="json"), 415)
    assert error["code"] == "unsupported_media_type"
    documented = _schema()["paths"]["/api/v1/queries/"]["post"]["responses"]
    assert documented["415"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_query_creation_is_throttled_per_user(clinician, other_clinician, index_row, monkeypatch):
    monkeypatch.setattr(QuerySubmitThrottle, "rate", "2/min", raising=False)
    client = api(clinician)
    assert [submit(client).status_code for _ in range(2)] == [202, 202]
    response = submit(client)
    assert error_of(response, 429)["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60
    assert client.get(QUERIES).status_code == 200  # reading is not throttled
    assert submit(api(other_clinician)).status_code == 202  # per user


def _queries(user, n: int) -> list[Query]:
    return Query.objects.bulk_create([
        Query(user=user, image=f"queries/{user.id}/{i}.jpg", sha256=f"{i:064d}", width=10, height=10,
              status=Query.Status.DONE) for i in range(n)
    ])


def test_the_query_list_holds_only_the_users_own_queries_newest_first_in_pages_of_50(clinician, other_clinician):
    mine = _queries(clinician, 51)
    _queries(other_clinician, 3)
    first = api(clinician).get(QUERIES).json()
    assert first["count"] == 51 and len(first["results"]) == 50 and first["previous"] is None
    second = api(clinician).get(first["next"]).json()
    ids = [row["id"] for row in first["results"] + second["results"]]
    assert ids == sorted((q.id for q in mine), reverse=True)
    row = second["results"][0]
    assert set(row) == {"id", "status", "k", "original_name", "created", "finished", "url"}
    assert row["url"] == f"http://testserver{QUERIES}{row['id']}/"
    assert api(other_clinician).get(QUERIES).json()["count"] == 3
    assert error_of(api(clinician).get(QUERIES, {"page": 9}), 404)["code"] == "not_found"


def test_other_users_queries_are_404(clinician, other_clinician, media_root):
    theirs = _queries(other_clinician, 1)[0]
    client = api(clinician)
    for method in ("get", "delete"):
        error = error_of(getattr(client, method)(f"{QUERIES}{theirs.id}/"), 404)
        assert error["message"] == f"You have no query with id {theirs.id}."
    assert Query.objects.filter(id=theirs.id).exists()
    assert error_of(client.get(f"{QUERIES}999999/"), 404)["code"] == "not_found"


def test_deleting_a_query_removes_the_row_and_its_files(clinician, index_row, media_root,
                                                        django_capture_on_commit_callbacks):
    client = api(clinician)
    url = submit(client).json()["url"]
    query = Query.objects.get()
    image = media_root / query.image.name
    assert image.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(url)
    assert response.status_code == 204 and response.content == b""
    assert not Query.objects.exists() and not image.exists()
    assert error_of(client.get(url), 404)["code"] == "not_found"


@pytest.mark.parametrize(("wait", "fragment"), [
    (MAX_WAIT_SECONDS + 1, "less than or equal to 30"),
    (-1, "greater than or equal to 0"),
    ("soon", "A valid number is required"),
])
def test_wait_beyond_30_seconds_or_malformed_is_400(clinician, index_row, wait, fragment):
    url = submit(api(clinician)).json()["url"]
    error = error_of(api(clinician).get(url, {"wait": wait}), 400)
    assert fragment in error["fields"]["wait"][0]


def test_wait_long_polls_a_pending_query_for_at_most_the_time_asked(clinician, index_row):
    url = submit(api(clinician)).json()["url"]
    started = time.monotonic()
    response = api(clinician).get(url, {"wait": 0.6})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert 0.6 <= elapsed < 5


def test_endpoints_allow_only_their_methods(staff):
    client = api(staff)
    error = error_of(client.put(QUERIES, {}), 405)
    assert error["code"] == "method_not_allowed" and 'Method "PUT" not allowed.' == error["message"]
    assert error_of(client.patch(f"{QUERIES}1/", {}), 405)["code"] == "method_not_allowed"
    assert error_of(client.post(CASES, {}), 405)["code"] == "method_not_allowed"
    assert error_of(client.get(REBUILD), 405)["code"] == "method_not_allowed"


def test_unknown_api_paths_are_json_404_with_a_hint_for_a_missing_slash(clinician):
    client = api(clinician)
    assert error_of(client.get("/api/v1/nothing-here/"), 404)["message"] == "No API endpoint at /api/v1/nothing-here/."
    assert error_of(client.get("/api/v1/queries/abc/"), 404)["code"] == "not_found"
    hint = error_of(client.get("/api/v1/queries"), 404)["message"]
    assert "Did you mean /api/v1/queries/ (with a trailing slash)?" in hint
    assert error_of(client.get("/api/v2/queries/"), 404)["code"] == "not_found"


def test_writes_to_unknown_api_paths_are_json_404_not_a_csrf_page(clinician):
    """Found by tests/test_api_fuzz.py: a POST or DELETE to a path that matches no endpoint (e.g.
    a non-numeric id) was Django's HTML "CSRF verification failed" 403, not the API's JSON 404."""
    for client in (APIClient(enforce_csrf_checks=True), api(clinician)):
        client.handler.enforce_csrf_checks = True
        assert error_of(client.delete(f"{QUERIES}abc/"), 404)["code"] == "not_found"
        assert error_of(client.post("/api/v1/studies/manage/x/close/"), 404)["code"] == "not_found"
        assert error_of(client.post("/api/v1/nothing-here/", {"a": 1}), 404)["code"] == "not_found"


@pytest.mark.parametrize("url", [f"{QUERIES}{'9' * 30}/", f"{CASES}{'9' * 30}/", f"{QUERIES}{2**63}/"])
def test_ids_too_large_for_the_database_are_404_not_500(clinician, library, url):
    """Found by tests/test_api_fuzz.py: an id past a 64-bit integer reached SQLite (OverflowError, 500)."""
    client = api(clinician)
    client.raise_request_exception = False
    assert error_of(client.get(url), 404)["code"] == "not_found"
    assert client.delete(url).status_code == 404


def test_pages_take_the_same_bounded_ids(client, clinician, reader):
    client.raise_request_exception = False
    client.force_login(clinician)
    assert client.get(f"/queries/{'9' * 30}/").status_code == 404
    client.force_login(reader)
    assert client.get(f"/studies/{'9' * 30}/task/1/").status_code == 404


def test_the_largest_id_the_urls_accept_is_an_ordinary_404(clinician, library):
    error = error_of(api(clinician).get(f"{CASES}{10**18 - 1}/"), 404)
    assert error["message"] == f"There is no case with id {10**18 - 1}."


def test_an_unexpected_error_stays_a_500_and_is_never_answered_as_success(clinician, library, monkeypatch):
    """The exception handler maps API errors only: anything else is Django's logged 500."""
    from retrieval.api import exceptions as api_exceptions
    from retrieval.api import views

    def broken(**kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(views.selectors, "index_status", broken)
    assert api_exceptions.api_exception_handler(RuntimeError("unexpected"), {}) is None
    client = api(clinician)
    client.raise_request_exception = False
    response = client.get(INDEX)
    assert response.status_code == 500
    with pytest.raises(RuntimeError, match="unexpected"):
        api(clinician).get(INDEX)


# --- A finished query, searched in a real index ---------------------------------------------
@pytest.mark.slow
def test_a_finished_query_returns_its_neighbours_and_its_files_only_to_its_owner(
        clinician, other_clinician, staff, ready_index, media_root, django_capture_on_commit_callbacks):
    from retrieval.services.queries import query_run

    client = api(clinician)
    created = submit(client, k=5).json()
    assert query_run(query_id=created["id"], worker="test") is True
    started = time.monotonic()
    payload = client.get(created["url"], {"wait": MAX_WAIT_SECONDS}).json()
    assert time.monotonic() - started < 5  # a finished query never waits
    assert set(payload) == PAYLOAD_KEYS and payload["status"] == "done" and payload["error"] is None
    assert payload["index_version"] == ready_index.id
    neighbours = payload["neighbours"]
    assert [n["rank"] for n in neighbours] == [1, 2, 3, 4, 5]
    similarities = [n["similarity"] for n in neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert payload["neighbour_vote"]["label"] == "neighbour vote"
    assert abs(sum(payload["neighbour_vote"]["scores"].values()) - 1) < 1e-3
    documented = _schema()["components"]["schemas"]
    assert set(payload["neighbour_vote"]) == set(documented["NeighbourVote"]["properties"])
    assert set(neighbours[0]) == set(documented["Neighbour"]["properties"])
    for neighbour in neighbours:
        case = Case.objects.get(id=neighbour["case_id"])
        assert (neighbour["diagnosis"], neighbour["image_id"]) == (case.dx, case.image_id)
        assert neighbour["image_url"] == f"http://testserver/media/{case.image.name}"

    # The files the payload points to: the owner's (token or session) and staff's, nobody else's.
    own_files = [payload["query_image_url"], payload["query_saliency_url"]]
    assert all(url.startswith("http://testserver/media/queries/") for url in own_files)
    for url in own_files + [neighbours[0]["saliency_url"]]:
        assert client.get(url).status_code == 200
    for url in own_files:
        assert api(staff).get(url).status_code == 200
        assert api(other_clinician).get(url).status_code == 404

    saliency = media_root / payload["query_saliency_url"].split("/media/", 1)[1]
    image = media_root / payload["query_image_url"].split("/media/", 1)[1]
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(created["url"]).status_code == 204
    assert not saliency.exists() and not image.exists()
    assert client.get(own_files[0]).status_code == 404


def test_the_vote_of_issue_15_is_served_count_based_in_the_rules_order(clinician, stored_done_query):
    query = stored_done_query(clinician, ISSUE_15_LABELS)
    payload = api(clinician).get(f"{QUERIES}{query.id}/").json()

    vote = payload["neighbour_vote"]
    assert [n["diagnosis"] for n in payload["neighbours"]] == ISSUE_15_LABELS
    assert vote["top"] == "nv" and vote["order"] == ["nv", "bkl", "mel", "akiec"] and vote["n"] == 6
    assert vote["counts"] == {"nv": 2, "bkl": 2, "mel": 1, "akiec": 1}
    assert vote["scores"] == {"nv": 0.3333, "bkl": 0.3333, "mel": 0.1667, "akiec": 0.1667}
    assert "not a diagnosis" in vote["note"] and "weighted" not in vote["note"]
    documented = _schema()["components"]["schemas"]["NeighbourVote"]
    assert set(vote) == set(documented["properties"]) == set(documented["required"])
    assert "counts / n" in documented["properties"]["scores"]["description"]


# --- Cases ---------------------------------------------------------------------------------
def test_cases_are_listed_with_their_metadata_and_absolute_image_urls(clinician, library):
    body = api(clinician).get(CASES).json()
    assert body["count"] == 30 and body["next"] is None
    first = body["results"][0]
    case = library.first()
    assert set(first) == CASE_KEYS
    assert first == {
        "id": case.id, "image_id": case.image_id, "lesion_id": case.lesion_id, "collection": case.collection,
        "diagnosis": case.dx, "diagnosis_label": case.get_dx_display(), "diagnosis_type": case.dx_type,
        "age": case.age, "sex": case.sex, "localization": case.localization, "split": case.split,
        "width": case.width, "height": case.height, "image_url": f"http://testserver/media/{case.image.name}",
        "attribution": "", "copyright_license": "",  # HAM10000 rows carry none
        "withdrawn_at": None, "withdrawn_reason": "",  # in the library
    }
    assert api(clinician).get(f"{CASES}{case.id}/").json() == first


def test_cases_filter_by_diagnosis_split_and_collection(clinician, library):
    client = api(clinician)
    dx = library.first().dx
    by_dx = client.get(CASES, {"diagnosis": dx}).json()
    assert by_dx["count"] == library.filter(dx=dx).count() > 0
    assert {row["diagnosis"] for row in by_dx["results"]} == {dx}
    train = client.get(CASES, {"split": "train", "diagnosis": dx}).json()
    assert train["count"] == library.filter(split="train", dx=dx).count()
    assert client.get(CASES, {"collection": "no-such-collection"}).json()["count"] == 0
    assert client.get(CASES, {"collection": library.first().collection}).json()["count"] == 30


@pytest.mark.parametrize(("params", "field"), [({"diagnosis": "melanoma"}, "diagnosis"), ({"split": "all"}, "split")])
def test_unknown_case_filters_are_400(clinician, library, params, field):
    error = error_of(api(clinician).get(CASES, params), 400)
    assert "is not a valid choice" in error["fields"][field][0]


def test_a_missing_case_is_404(clinician, library):
    assert error_of(api(clinician).get(f"{CASES}999999/"), 404)["message"] == "There is no case with id 999999."


# --- Index ---------------------------------------------------------------------------------
def test_index_status_says_when_no_index_is_ready(clinician, library):
    body = api(clinician).get(INDEX).json()
    assert body == {"collection": None, "active": None, "builds": []}


def test_index_status_shows_the_active_index_and_build_progress(clinician, index_row, sent):
    building = IndexVersion.objects.create(model_version=index_row.model_version, collection=index_row.collection,
                                           status=IndexVersion.Status.RUNNING, total=27, done=9)
    body = api(clinician).get(INDEX).json()
    assert body["collection"] == index_row.collection
    assert body["active"]["id"] == index_row.id and body["active"]["size"] == 27
    assert [(b["id"], b["status"], b["done"], b["total"]) for b in body["builds"]] == [
        (building.id, "running", 9, 27), (index_row.id, "done", 27, 27)]
    assert set(body["active"]) == set(_schema()["components"]["schemas"]["IndexSummary"]["properties"])
    filtered = api(clinician).get(INDEX, {"collection": "elsewhere"}).json()
    assert filtered == {"collection": "elsewhere", "active": None, "builds": []}


def test_only_staff_may_rebuild_the_index(clinician, index_row):
    assert "staff" in error_of(api(clinician).post(REBUILD, {}, format="json"), 403)["message"]


def test_a_rebuild_is_queued_and_answered_with_202(staff, index_row, sent, django_capture_on_commit_callbacks):
    model = index_row.model_version
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff).post(REBUILD, {"model_version": model.id}, format="json")
    assert response.status_code == 202
    build = IndexVersion.objects.get(status=IndexVersion.Status.PENDING)
    assert response.json() == {
        "id": build.id, "status": "pending", "collection": index_row.collection, "model_version": model.id,
        "incremental_from": None, "methods": build.methods, "contrastive_model": None, "triplet_model": None,
        "segmentation_model": None, "done": 0, "total": 0, "message": "", "created": response.json()["created"],
        "url": f"http://testserver{INDEX}",
    }
    assert sent["index_build"] == [build.id] and build.requested_by == staff
    assert "style" in build.methods and "i1_sd" in build.methods
    incremental = api(staff).post(REBUILD, {"model_version": model.id, "incremental": True}, format="json")
    # A build of that model is already under way: the service hands back that one.
    assert incremental.status_code == 202 and incremental.json()["id"] == build.id


def test_a_rebuild_chooses_its_methods_and_models(staff, index_row):
    model = index_row.model_version
    error = error_of(api(staff).post(REBUILD, {"segmentation_model": model.id}, format="json"), 400)
    assert "segmentation_model" in error["fields"]
    response = api(staff).post(REBUILD, {"extra_methods": False}, format="json")
    assert response.status_code == 202 and response.json()["methods"] == ["secbir"]
    assert IndexVersion.objects.get(id=response.json()["id"]).methods == ["secbir"]


def test_an_incremental_rebuild_extends_the_active_index(staff, index_row):
    response = api(staff).post(REBUILD, {"incremental": True}, format="json")
    assert response.status_code == 202
    assert response.json()["incremental_from"] == index_row.id
    assert response.json()["model_version"] == index_row.model_version_id


def test_a_rebuild_without_a_trained_model_is_409(staff, library):
    error = error_of(api(staff).post(REBUILD, format="json"), 409)
    assert error["code"] == "conflict" and "no trained 4-channel model" in error["message"]


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"model_version": 999999}, "model_version", "does not exist"),
    ({"incremental": "perhaps"}, "incremental", "Must be a valid boolean"),
    ({"collection": "elsewhere"}, "collection", "There is no case collection 'elsewhere'."),
])
def test_invalid_rebuild_requests_are_400(staff, index_row, body, field, fragment):
    error = error_of(api(staff).post(REBUILD, body, format="json"), 400)
    assert fragment in error["fields"][field][0]


def test_a_rebuild_needs_a_4_channel_model(staff, index_row):
    rgb = index_row.model_version.parent
    assert "does not exist" in error_of(api(staff).post(REBUILD, {"model_version": rgb.id}, format="json"),
                                        400)["fields"]["model_version"][0]


def test_malformed_json_is_400(staff, index_row):
    response = api(staff).generic("POST", REBUILD, "{not json", content_type="application/json")
    assert error_of(response, 400)["code"] == "parse_error"


# --- Schema and documentation ---------------------------------------------------------------
def _schema() -> dict:
    response = APIClient().get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_openapi_3_with_every_endpoint_and_the_error_shape():
    schema = _schema()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "LesionSearch API"
    assert "not a diagnosis" in schema["info"]["description"]
    # (the reader-study endpoints, /api/v1/studies/..., are checked in tests/readerstudy/test_api.py)
    retrieval_paths = {path for path in schema["paths"] if not path.startswith("/api/v1/studies/")}
    assert retrieval_paths == {QUERIES, "/api/v1/queries/{query_id}/", "/api/v1/queries/{query_id}/report.pdf",
                               CASES, "/api/v1/cases/{case_id}/", "/api/v1/cases/{case_id}/withdrawal/",
                               "/api/v1/methods/",
                               INDEX, REBUILD}
    withdrawal = schema["paths"]["/api/v1/cases/{case_id}/withdrawal/"]
    assert set(withdrawal) == {"post", "delete", "parameters"} or set(withdrawal) == {"post", "delete"}
    assert set(withdrawal["post"]["responses"]) == {"200", "400", "401", "403", "404", "409"}
    assert set(schema["paths"][QUERIES]) == {"get", "post"}
    assert set(schema["paths"]["/api/v1/queries/{query_id}/"]) == {"get", "delete"}
    create = schema["paths"][QUERIES]["post"]
    assert set(create["responses"]) == {"202", "400", "401", "403", "409", "413", "415", "429", "503"}
    assert create["responses"]["413"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert "multipart/form-data" in create["requestBody"]["content"]
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"status", "code", "message", "fields"}
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}
    wait = next(p for p in schema["paths"]["/api/v1/queries/{query_id}/"]["get"]["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == MAX_WAIT_SECONDS


def test_the_schema_tells_the_truth_about_pages_and_ids(clinician, library):
    """Found by tests/test_api_fuzz.py: the paginated lists answer 404 for a page that does not exist
    (undocumented), and the method list was described as paginated (a `page` parameter, a
    {count, results} body) while it returns a plain list."""
    schema = _schema()
    for path in (QUERIES, CASES):
        assert "404" in schema["paths"][path]["get"]["responses"], path
        assert error_of(api(clinician).get(path, {"page": 2}), 404)["message"] == "Invalid page."
    methods = schema["paths"]["/api/v1/methods/"]["get"]
    assert "parameters" not in methods
    assert methods["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert isinstance(api(clinician).get("/api/v1/methods/", {"page": 2}).json(), list)
    case_id = next(p for p in schema["paths"]["/api/v1/cases/{case_id}/"]["get"]["parameters"])
    assert case_id["schema"] == {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


def test_the_schema_validates_against_the_openapi_3_specification_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    # --validate checks the document against the OpenAPI 3 JSON schema; --fail-on-warn makes any
    # view the generator cannot describe an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--api-version", "v1", "--file", str(out))
    assert out.read_text().startswith("openapi: 3.")


def test_the_schema_documents_exactly_the_query_payload(clinician, index_row):
    documented = _schema()["components"]["schemas"]["QueryResult"]["properties"]
    assert set(documented) == PAYLOAD_KEYS
    url = submit(api(clinician)).json()["url"]
    assert set(api(clinician).get(url).json()) == set(documented)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("page", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_docs_pages_work_offline_from_local_static_files(page):
    response = APIClient().get(page)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I), "the page must not load anything remote"
    links = _Links()
    links.feed(html)
    scripts = [url for url in links.urls if url.endswith(".js")]
    assert scripts, "the page loads its viewer script"
    for url in links.urls:
        assert url.startswith("/static/drf_spectacular_sidecar/"), url
        assert finders.find(url.removeprefix("/static/").split("?")[0]), f"{url} is not a bundled static file"
    assert "/api/v1/schema/" in html
    served = APIClient().get(scripts[0])
    assert served.status_code == 200 and b"".join(served.streaming_content)[:200].strip()


def test_swagger_ui_does_not_send_the_schema_to_the_public_validator():
    assert '"validatorUrl": null' in APIClient().get("/api/v1/docs/").content.decode()
