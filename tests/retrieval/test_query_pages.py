"""The clinician's pages without a browser: upload (the no-JS form), result, history, delete."""
from __future__ import annotations

import html
import json
import re

import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from lesionsearch.roles import CLINICIAN
from retrieval import selectors
from retrieval.classes import BY_CODE
from retrieval.models import Query
from retrieval.services.queries import neighbour_vote_json, query_run
from retrieval.views import VOTE_NOTE
from tests.conftest import jpeg_bytes
from tests.pages import section, text_of, vote_rows
from tests.retrieval.conftest import ISSUE_15_LABELS

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_clinician(django_user_model):
    user = django_user_model.objects.create_user(username="dr_other", password="pw-dr_other")
    user.groups.add(Group.objects.get(name=CLINICIAN))
    return user


def stored_query(user, seed: int, **fields) -> Query:
    """A query row with its image on disk, as query_submit leaves it (no worker involved)."""
    name = default_storage.save(f"queries/{user.id}/q{seed}.jpg", ContentFile(jpeg_bytes(seed)))
    return Query.objects.create(user=user, image=name, original_name=f"lesion-{seed}.jpg", sha256=f"{seed:064x}",
                                width=60, height=45, **fields)


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def neighbour_items(page: str) -> list[str]:
    """The server-rendered neighbour cards (the <template> copy for the script is not one of them)."""
    listing = re.search(r'<ol class="neighbours" id="neighbours"[^>]*>(.*?)</ol>', page, re.S).group(1)
    return re.findall(r'<li class="neighbour".*?</li>', listing, re.S)


# --- Who may use the pages --------------------------------------------------------------

def test_anonymous_users_are_sent_to_sign_in(client, clinician, media_root):
    query = stored_query(clinician, 1)
    for url in ("/search/", f"/queries/{query.pk}/", f"/queries/{query.pk}/delete/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert client.post(f"/queries/{query.pk}/delete/").status_code == 302
    assert Query.objects.filter(pk=query.pk).exists()


@pytest.mark.parametrize("actor", ["reader", "stranger"])
def test_users_without_the_clinician_role_are_refused(client, request, clinician, actor, media_root):
    query = stored_query(clinician, 1)
    client.force_login(request.getfixturevalue(actor))
    assert client.get("/search/").status_code == 403
    assert client.post("/search/", {"image": upload("a.jpg", jpeg_bytes(1))}).status_code == 403
    assert client.get(f"/queries/{query.pk}/").status_code == 403
    assert client.post(f"/queries/{query.pk}/delete/").status_code == 403
    assert Query.objects.filter(pk=query.pk).exists() and Query.objects.count() == 1
    library_page = client.get("/library/", follow=True).content.decode()
    assert 'href="/search/"' not in library_page  # no Search link in the navigation either


def test_staff_and_clinicians_get_the_search_page_with_its_limits(client, clinician, study_admin, settings):
    settings.QUERY_MAX_UPLOAD_MB = 7
    for user in (clinician, study_admin):  # the study admin is staff, without the clinician role
        client.force_login(user)
        response = client.get("/search/")
        page = response.content.decode()
        assert response.status_code == 200
        assert 'href="/search/" aria-current="page">Search</a>' in page
        assert 'enctype="multipart/form-data"' in page and 'name="image"' in page
        assert 'data-max-mb="7"' in page and "up to 7 MB" in page
        assert 'accept=".jpg,.jpeg,.png,.tif,.tiff,.webp,.bmp,' in page
        assert 'data-api-url="/api/v1/queries/"' in page
        assert "The case index is not ready yet" in page  # no index has been built
        assert "You have not searched yet." in page


# --- The no-JS upload ---------------------------------------------------------------------

def test_a_valid_upload_creates_a_pending_query_and_opens_its_page(client, clinician, ready_index):
    client.force_login(clinician)
    page = client.get("/search/").content.decode()
    assert "The case index is not ready yet" not in page

    response = client.post("/search/", {"image": upload("lesion.jpg", jpeg_bytes(5)), "k": "4"})

    query = Query.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/queries/{query.pk}/"
    assert (query.user, query.original_name, query.k, query.status) == (clinician, "lesion.jpg", 4, "pending")
    assert default_storage.open(query.image.name).read() == jpeg_bytes(5)
    result = client.get(response["Location"]).content.decode()
    assert "Queued: waiting for a worker" in result
    assert '<meta http-equiv="refresh" content="5">' in result  # no-JS pages reload until done
    assert neighbour_items(result) == []


@pytest.mark.parametrize(("name", "data", "status", "message"), [
    ("notes.jpg", b"this is not an image", 400, "This file cannot be used"),
    ("truncated.jpg", jpeg_bytes(3)[:200], 400, "This file cannot be used"),
    ("empty.png", b"", 400, "The submitted file is empty."),
])
def test_an_unusable_file_re_renders_the_form_with_the_reason(client, clinician, media_root, name, data, status,
                                                              message):
    client.force_login(clinician)
    response = client.post("/search/", {"image": upload(name, data)})
    page = response.content.decode()
    assert response.status_code == status
    assert message in html.unescape(page)
    assert re.search(r'<p id="upload-error" class="alert error" role="alert">[^<]+</p>', page)
    assert Query.objects.count() == 0


def test_missing_file_and_bad_k_are_explained(client, clinician, media_root):
    client.force_login(clinician)
    missing = client.post("/search/", {"k": "6"})
    assert missing.status_code == 400 and "Choose a dermoscopic image to upload." in missing.content.decode()
    for k in ("six", "0", "21"):
        response = client.post("/search/", {"image": upload("a.jpg", jpeg_bytes(1)), "k": k})
        assert response.status_code == 400, k
        assert "The number of similar cases must be a whole number from 1 to 20." in response.content.decode()
        assert f'value="{k}"' in response.content.decode()  # the form keeps what was typed
    assert Query.objects.count() == 0


def test_a_file_over_the_limit_is_refused_with_413(client, clinician, media_root, settings):
    settings.QUERY_MAX_UPLOAD_MB = 1
    client.force_login(clinician)
    big = upload("big.bmp", b"BM" + bytes(1024 * 1024), "image/bmp")
    response = client.post("/search/", {"image": big})
    assert response.status_code == 413
    assert "The image is larger than 1 MB." in response.content.decode()
    assert Query.objects.count() == 0


def test_without_an_index_a_valid_image_is_refused_with_503(client, clinician, media_root):
    client.force_login(clinician)
    response = client.post("/search/", {"image": upload("a.jpg", jpeg_bytes(1))})
    assert response.status_code == 503
    assert "No case library index is ready yet" in response.content.decode()
    assert Query.objects.count() == 0


# --- History and delete ---------------------------------------------------------------------

def test_history_lists_only_the_users_own_queries_newest_first(client, clinician, other_clinician, media_root):
    mine = [stored_query(clinician, i) for i in (1, 2)]
    mine.append(stored_query(clinician, 3, status="done",
                             neighbour_vote=neighbour_vote_json(["nv", "mel", "nv", "mel", "nv", "bkl"])))
    theirs = stored_query(other_clinician, 4)
    client.force_login(clinician)
    page = client.get("/search/").content.decode()
    rows = re.findall(r'<tr id="history-(\d+)"', page)
    assert rows == [str(q.pk) for q in reversed(mine)]
    assert f"/queries/{theirs.pk}/" not in page and "lesion-4.jpg" not in page
    top = re.search(rf'<tr id="history-{mine[2].pk}".*?</tr>', page, re.S).group(0)
    assert "nv" in text_of(top) and "Melanocytic nevus" in text_of(top) and "Done" in text_of(top)
    assert "Neighbour vote (top class)" in page
    assert client.get(f"/queries/{theirs.pk}/").status_code == 404


def test_delete_asks_first_then_removes_the_query_and_its_files(client, clinician, media_root,
                                                                django_capture_on_commit_callbacks):
    query = stored_query(clinician, 1)
    client.force_login(clinician)
    confirm = client.get(f"/queries/{query.pk}/delete/")
    assert confirm.status_code == 200 and "Delete query #" in confirm.content.decode()
    assert Query.objects.filter(pk=query.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/queries/{query.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == "/search/"
    assert not Query.objects.filter(pk=query.pk).exists()
    assert not (media_root / query.image.name).exists()
    page = client.get("/search/").content.decode()
    assert f"Query #{query.pk} (lesion-1.jpg) was deleted" in page and f'id="history-{query.pk}"' not in page


def test_nobody_deletes_another_users_query(client, clinician, other_clinician, media_root):
    theirs = stored_query(other_clinician, 1)
    client.force_login(clinician)
    assert client.get(f"/queries/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/queries/{theirs.pk}/delete/").status_code == 404
    assert Query.objects.filter(pk=theirs.pk).exists()


def test_the_vote_of_issue_15_reads_the_same_on_the_result_page_and_in_the_history(client, clinician,
                                                                                   stored_done_query):
    query = stored_done_query(clinician, ISSUE_15_LABELS)
    client.force_login(clinician)

    page = client.get(f"/queries/{query.pk}/").content.decode()
    # Counts with rank only breaking ties: nv before bkl on 1/rank, mel before akiec on rank.
    assert vote_rows(page) == [("nv", "2 of 6", "33 %"), ("bkl", "2 of 6", "33 %"),
                               ("mel", "1 of 6", "17 %"), ("akiec", "1 of 6", "17 %")]
    assert VOTE_NOTE in text_of(section(page, "vote")) and "weighted" not in VOTE_NOTE
    # query.js renders the same rows from the embedded API JSON, in its order.
    embedded = json.loads(re.search(r'<script id="query-data" type="application/json">(.*?)</script>',
                                    page, re.S).group(1))
    assert embedded["neighbour_vote"]["order"] == ["nv", "bkl", "mel", "akiec"]
    assert embedded["neighbour_vote"]["top"] == "nv"

    history = client.get("/search/").content.decode()
    row = text_of(re.search(rf'<tr id="history-{query.pk}".*?</tr>', history, re.S).group(0))
    assert "nv Melanocytic nevus · 2 of 6" in row and "Melanoma" not in row


# --- The result page rendered by the server -------------------------------------------------

@pytest.fixture
def done_query(clinician, ready_index):
    """A query run end to end by the real worker code (in this process) on the tiny index."""
    from retrieval.services.queries import query_submit

    query = query_submit(user=clinician, image_data=jpeg_bytes(11, size=(120, 90)), filename="mole.jpg")
    assert query_run(query_id=query.pk, worker="test")
    query.refresh_from_db()
    assert query.status == "done", query.message
    return query


@pytest.fixture
def settled_query(done_query):
    """``done_query`` with its second stage (the evidence map pairs) run too."""
    from retrieval.services.evidence import evidence_run

    assert evidence_run(evidence_id=done_query.evidence_job.id, worker="test")
    return Query.objects.get(pk=done_query.pk)


def test_a_done_result_shows_its_neighbours_while_the_evidence_pairs_are_computed(client, clinician, done_query):
    client.force_login(clinician)
    page = client.get(f"/queries/{done_query.pk}/").content.decode()
    cards = neighbour_items(page)
    assert len(cards) == 6 and "6 similar cases found" in page
    for card in cards:
        evidence = re.search(r'<details class="evidence"[^>]*>', card).group(0)
        assert 'data-evidence="pending"' in evidence and "hidden" not in evidence
        assert "Computing the evidence maps for this case" in text_of(card)
        assert 'data-slot="evidence-query" src=' not in card  # no pair yet
    # Without JavaScript the page reloads until the pairs are there; query.js long-polls for them.
    assert 'http-equiv="refresh"' in page
    embedded = json.loads(re.search(r'<script id="query-data" type="application/json">(.*?)</script>',
                                    page, re.S).group(1))
    assert {n["evidence"]["status"] for n in embedded["neighbours"]} == {"pending"}


def test_a_done_result_renders_six_framed_neighbours_and_the_neighbour_vote(client, clinician, settled_query):
    done_query = settled_query
    client.force_login(clinician)
    response = client.get(f"/queries/{done_query.pk}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "Done." in page and "6 similar cases found" in page
    assert "http-equiv=\"refresh\"" not in page

    payload = selectors.query_payload(done_query)
    cards = neighbour_items(page)
    assert len(cards) == 6
    for card, neighbour in zip(cards, payload["neighbours"]):
        cls = BY_CODE[neighbour["diagnosis"]]
        text = text_of(card)
        assert f'data-rank="{neighbour["rank"]}"' in card and f"#{neighbour['rank']}" in text
        assert f"--c: {cls.colour}; --c-text: {cls.badge_text}" in card  # the frame's class colour, badge text
        assert cls.code in text and cls.label in text
        assert f"Similarity {neighbour['similarity']:.3f}" in text
        assert neighbour["metadata"]["localization"] in text
        assert neighbour["metadata"]["diagnosis_type_label"] in text
        assert f'src="{neighbour["image_url"]}"' in card and f'src="{neighbour["saliency_url"]}"' in card
        assert 'aria-pressed="false"' in card and "alt=\"Rank " in card
        assert neighbour["evidence"]["status"] == "ready" and 'data-evidence="ready"' in card
        assert f'src="{neighbour["evidence"]["query_map_url"]}"' in card
        assert f'src="{neighbour["evidence"]["case_map_url"]}"' in card
    assert [n["rank"] for n in payload["neighbours"]] == [1, 2, 3, 4, 5, 6]
    assert f'src="{payload["query_saliency_url"]}"' in page

    vote = text_of(section(page, "vote"))
    assert vote.startswith("Neighbour vote ")
    assert VOTE_NOTE in vote
    # The only mention of a diagnosis near the vote is the sentence that says it is not one.
    assert "diagnos" not in vote.replace("It is not a diagnosis.", "").lower()
    shares = [int(p) for p in re.findall(r"(\d+) %", vote)]
    stored = payload["neighbour_vote"]
    assert len(shares) == len(stored["order"]) and 98 <= sum(shares) <= 102
    assert shares == sorted(shares, reverse=True)
    assert [(code, f"{stored['counts'][code]} of 6") for code in stored["order"]] == [
        (code, count) for code, count, _ in vote_rows(page)]
    assert stored["order"][0] == stored["top"]

    legend = text_of(section(page, "class-legend"))
    for cls in BY_CODE.values():
        assert cls.label in legend and cls.definition in legend

    embedded = json.loads(re.search(r'<script id="query-data" type="application/json">(.*?)</script>',
                                    page, re.S).group(1))
    assert embedded == json.loads(json.dumps(payload))  # the script starts from the API's own JSON


def test_the_out_of_distribution_warning_is_shown_above_the_results(client, clinician, done_query):
    from retrieval.services.queries import OOD_WARNING

    Query.objects.filter(pk=done_query.pk).update(warning=OOD_WARNING)
    client.force_login(clinician)
    page = client.get(f"/queries/{done_query.pk}/").content.decode()
    warning = re.search(r'<div id="query-warning" class="alert warning"[^>]*>(.*?)</div>', page, re.S)
    assert warning and "hidden" not in warning.group(0).split(">")[0]
    assert text_of(warning.group(1)) == f"Caution: {OOD_WARNING}"
    assert page.index('id="query-warning"') < page.index('id="neighbours"')
    # the live page (static/js/query.js) shows the payload's warning, the same text
    embedded = json.loads(re.search(r'<script id="query-data" type="application/json">(.*?)</script>',
                                    page, re.S).group(1))
    assert embedded["warning"] == OOD_WARNING


def test_a_failed_query_shows_its_error(client, clinician, media_root):
    query = stored_query(clinician, 1, status="failed", message="The image could not be analysed (reference: 1).")
    client.force_login(clinician)
    page = client.get(f"/queries/{query.pk}/").content.decode()
    error = re.search(r'<div id="query-error" class="alert error" role="alert"\s*>(.*?)</div>', page, re.S)
    assert error, "the error box is visible"
    assert "The search failed:" in text_of(error.group(1))
    assert "The image could not be analysed (reference: 1)." in text_of(error.group(1))
    assert neighbour_items(page) == [] and 'id="vote" aria-labelledby="vote-heading" hidden' in page


def _library_sites(index) -> list[str]:
    from retrieval.models import Case

    return sorted(set(Case.objects.filter(collection=index.collection).exclude(split="test")
                      .values_list("localization", flat=True)))


def test_the_search_page_offers_the_library_s_sites_and_filters_the_neighbours_like_the_api(
        client, clinician, ready_index):
    from collections import Counter

    from retrieval.models import Case

    client.force_login(clinician)
    page = client.get("/search/").content.decode()
    sites = _library_sites(ready_index)
    assert re.search(r'<details class="filters" id="filter-details">', page)  # closed: no filter by default
    assert re.findall(r'name="sites" value="([^"]+)"', page) == sites
    library = Case.objects.filter(collection=ready_index.collection).exclude(split="test")
    site = max(Counter(library.values_list("localization", flat=True)).items(), key=lambda kv: (kv[1], kv[0]))[0]

    response = client.post("/search/", {"image": upload("lesion.jpg", jpeg_bytes(5)), "k": "3", "sites": [site],
                                        "sexes": ["male", "female"], "age_min": "5", "age_max": "95"})

    query = Query.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/queries/{query.pk}/"
    # The same stored filter as the API's ``filters`` with the same values (SearchFilter sorts the lists).
    assert query.search_filter == {"sites": [site], "sexes": ["female", "male"], "age_min": 5, "age_max": 95}
    assert query_run(query_id=query.id, worker="w") is True
    query.refresh_from_db()
    assert query.status == "done", query.message
    matching = set(library.filter(localization=site, sex__in=["male", "female"], age__gte=5, age__lte=95)
                   .values_list("id", flat=True))
    found = set(query.neighbours.values_list("case_id", flat=True))
    assert found and found <= matching and len(found) == min(3, len(matching))
    result = client.get(f"/queries/{query.pk}/").content.decode()
    assert f"Similar cases restricted to: body site {site}; sex female, male; age 5-95." in result


@pytest.mark.parametrize(("fields", "message"), [
    ({"age_min": "70", "age_max": "20"}, "The lowest age (70) is above the highest (20)."),
    ({"sites": ["the moon"]}, "The body site the moon is not in the case library."),
    ({"sexes": ["other"]}, "Select a valid choice."),
    ({"age_min": "old"}, "The lowest age must be a whole number of years."),
])
def test_a_bad_filter_re_renders_the_form_open_with_the_reason_and_stores_nothing(
        client, clinician, ready_index, fields, message):
    client.force_login(clinician)
    response = client.post("/search/", {"image": upload("lesion.jpg", jpeg_bytes(5)), **fields})
    page = response.content.decode()
    assert response.status_code == 400 and message in html.unescape(page)
    assert '<details class="filters" id="filter-details" open>' in page
    assert not Query.objects.exists()
