"""The PDF report of a finished query: the page's download and the API's, who may have one, when
it cannot be made, and what it holds, read back with pypdfium2 (its text, its image objects and
the pixels of its rendered pages)."""
from __future__ import annotations

import io
import re

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image

from lesionsearch.audit.models import AuditEvent
from lesionsearch.roles import CLINICIAN
from retrieval.classes import BY_CODE
from retrieval.ml.overlay import render_overlay
from retrieval.models import Case, IndexVersion, ModelVersion, Query, QueryEvidence
from retrieval.report import QueryReport, ReportUnavailable, render_query_report
from retrieval.services.queries import OOD_WARNING, VOTE_NOTE
from tests.apiclient import api, error_of
from tests.conftest import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("sent_jobs")]

#: Five classes among the six, nv twice: the vote lists nv first (2 of 6).
LABELS = ["mel", "nv", "nv", "bkl", "bcc", "akiec"]
ATTRIBUTION = "Photo: Dr. A. Example <Example Clinic>"
LICENCE = "CC-BY-NC-4.0"
PATIENT_ID = "PAT-SECRET-0042"
ORIGINAL_NAME = "smith-john-1970.jpg"
#: The query photograph's colour, and each similar case's (rank 1 first): none near a class colour.
QUERY_COLOUR = (150, 120, 200)
CASE_COLOURS = [(230, 230, 200), (200, 230, 230), (230, 200, 230), (240, 240, 240), (210, 210, 250), (250, 220, 180)]
SCALE = 2  # rendered at 144 dpi


def solid_jpeg(colour, size=(120, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def colleague(django_user_model):
    user = django_user_model.objects.create_user(username="dr_colleague", password="pw-dr_colleague")
    user.groups.add(Group.objects.get_or_create(name=CLINICIAN)[0])
    return user


@pytest.fixture
def finished_query(clinician, stored_done_query, media_root):
    """The clinician's DONE query as the worker leaves it: its image and saliency overlay on disk,
    six similar cases whose library images are on disk (rank 2 with an attribution and a licence;
    every case with a patient id that must never be printed), searched in an index of a model."""
    query = stored_done_query(clinician, LABELS)
    rgb = ModelVersion.objects.create(config="tiny", stage="3ch", collection="votes", checkpoint="models/a.pt",
                                      checkpoint_sha256="a" * 64, data_fingerprint="f" * 64)
    model = ModelVersion.objects.create(config="tiny", stage="4ch", parent=rgb, collection="votes",
                                        checkpoint="models/b.pt", checkpoint_sha256="b" * 64,
                                        data_fingerprint="f" * 64)
    index = IndexVersion.objects.create(model_version=model, collection="votes", status=IndexVersion.Status.DONE,
                                        active=True)
    default_storage.delete(query.image.name)
    default_storage.save(query.image.name, ContentFile(solid_jpeg(QUERY_COLOUR)))
    saliency = np.zeros((16, 16), np.float32)
    saliency[4:12, 4:12] = 1.0
    overlay = default_storage.save(f"queries/{clinician.id}/report-saliency.png",
                                   ContentFile(render_overlay(saliency, (120, 90))))
    Query.objects.filter(pk=query.pk).update(index_version=index, saliency=overlay, original_name=ORIGINAL_NAME)
    for row in query.neighbours.select_related("case").order_by("rank"):
        case = row.case
        (media_root / case.image.name).parent.mkdir(parents=True, exist_ok=True)
        (media_root / case.image.name).write_bytes(solid_jpeg(CASE_COLOURS[row.rank - 1]))
        Case.objects.filter(pk=case.pk).update(patient_id=PATIENT_ID, age=40 + row.rank, sex="female",
                                               localization="back", **({"attribution": ATTRIBUTION,
                                                                         "copyright_license": LICENCE}
                                                                        if row.rank == 2 else {}))
    query.refresh_from_db()
    return query


def unfinish(query: Query, status: str) -> None:
    """The query back to ``status``: pending or running as a live worker leaves it (just sent, a fresh
    heartbeat: the refresh on reading leaves it so), or failed with a message."""
    from django.utils import timezone

    now = timezone.now()
    if status == Query.Status.FAILED:
        Query.objects.filter(pk=query.pk).update(status=status, message="The image could not be read.")
    else:
        Query.objects.filter(pk=query.pk).update(status=status, enqueued_at=now, finished_at=None,
                                                 started_at=now if status == Query.Status.RUNNING else None,
                                                 heartbeat_at=now if status == Query.Status.RUNNING else None)


def pdf_of(response) -> pdfium.PdfDocument:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/pdf"
    assert re.fullmatch(r'attachment; filename="lesionsearch-query-\d+-\d{8}-\d{4}\.pdf"',
                        response["Content-Disposition"])
    assert response.content.startswith(b"%PDF-")
    return pdfium.PdfDocument(response.content)


def words(document: pdfium.PdfDocument) -> str:
    """All the text of the document, whitespace (line breaks of wrapped lines too) made single spaces."""
    return " ".join(" ".join(page.get_textpage().get_text_range() for page in document).split())


def images_on(page) -> list[tuple[float, float, float, float]]:
    """(left, bottom, right, top) in points of the page's image objects."""
    return [obj.get_bounds() for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])]


def pixel(rendered: np.ndarray, page_height: float, x: float, y: float) -> np.ndarray:
    """The rendered pixel at (x, y) in points (PDF coordinates: y from the bottom)."""
    return rendered[int((page_height - y) * SCALE), int(x * SCALE)].astype(int)


def near(colour, expected, tolerance: int = 8) -> bool:
    return bool(np.all(np.abs(np.asarray(colour, int) - np.asarray(expected, int)) <= tolerance))


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


# --- What the report holds -------------------------------------------------------------------

def test_the_report_prints_the_six_cases_the_vote_versions_and_attribution_and_no_patient_identifier(
        clinician, finished_query):
    document = pdf_of(signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf"))
    text = words(document)
    index = finished_query.index_version
    assert f"query #{finished_query.pk}" in text
    for row in finished_query.neighbours.select_related("case").order_by("rank"):
        label = BY_CODE[row.case.dx].label
        assert f"#{row.rank} {row.case.dx} {label}" in text
        assert f"Similarity {row.similarity:.3f}" in text
        assert f"Image {row.case.image_id}" in text
        assert f"Age {40 + row.rank} years · Sex female · Site back" in text
    assert "Diagnosis by Histopathology" in text
    # The neighbour vote, in the stored order, with the stored wording: not a diagnosis.
    assert "Neighbour vote (not a diagnosis)" in text and " ".join(VOTE_NOTE.split()) in text
    assert "nv Melanocytic nevus 2 of 6 33 %" in text and "mel Melanoma 1 of 6 17 %" in text
    assert text.index("nv Melanocytic nevus 2 of 6") < text.index("mel Melanoma 1 of 6")
    assert f"Model version #{index.model_version_id} (tiny, 4-channel (RGB + saliency))" in text
    assert f"Index version #{index.id} (collection votes)" in text
    assert "Query submitted" in text and "Report generated" in text and "Similarity measure SE-CBIR" in text
    neighbour_2 = finished_query.neighbours.get(rank=2).case
    assert f"Rank 2 (image {neighbour_2.image_id}): {ATTRIBUTION}; licence {LICENCE}" in text
    assert text.count("licence") == 1  # the cases without one print none
    assert PATIENT_ID not in text and ORIGINAL_NAME not in text and "smith" not in text
    assert "Caution" not in text  # no out-of-distribution warning for this query


def test_the_report_shows_the_query_image_its_overlay_and_each_case_framed_in_its_class_colour(
        clinician, finished_query):
    document = pdf_of(signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf"))
    assert len(document) == 2  # the six cases on the first page, the attribution on the second
    page = document[0]
    width, height = page.get_size()
    rendered = np.asarray(page.render(scale=SCALE).to_pil().convert("RGB"))
    boxes = images_on(page)
    assert len(boxes) == 8  # the query image, the query image with its overlay, six cases
    # The two query images come first (top row), then the cases in rank order: row by row, left to right.
    boxes.sort(key=lambda box: (-round(box[3]), box[0]))
    query_image, overlaid, cases = boxes[0], boxes[1], boxes[2:]

    def centre(box):
        return pixel(rendered, height, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)

    assert near(centre(query_image), QUERY_COLOUR)
    assert not near(centre(overlaid), QUERY_COLOUR, tolerance=20)  # the overlay's heat covers the centre
    assert near(pixel(rendered, height, overlaid[0] + 3, overlaid[1] + 3), QUERY_COLOUR)  # and not the corner
    for rank, box in enumerate(cases, start=1):
        colour = hex_rgb(BY_CODE[LABELS[rank - 1]].colour)
        assert near(centre(box), CASE_COLOURS[rank - 1]), rank
        middle = (box[1] + box[3]) / 2
        for x in (box[0] + 1.5, box[2] - 1.5):  # inside the 4 pt frame, left and right
            assert near(pixel(rendered, height, x, middle), colour), (rank, x)
        assert near(pixel(rendered, height, (box[0] + box[2]) / 2, box[3] - 1.5), colour), rank
    assert all(width > box[2] and box[0] > 0 for box in boxes)


def test_the_report_carries_the_out_of_distribution_warning_of_a_flagged_query(clinician, finished_query):
    Query.objects.filter(pk=finished_query.pk).update(warning=OOD_WARNING, ood_method="energy", ood_score=-3.0,
                                                      ood_threshold=1.0)
    text = words(pdf_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf")))
    assert f"Caution: {OOD_WARNING}" in text


def test_a_report_while_evidence_maps_are_pending_shows_the_cases(clinician, finished_query):
    QueryEvidence.objects.create(query=finished_query, status=QueryEvidence.Status.PENDING, total=6)
    text = words(pdf_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf")))
    assert "#6 akiec" in text


def test_a_query_without_an_overlay_says_so(clinician, finished_query):
    Query.objects.filter(pk=finished_query.pk).update(saliency="")
    document = pdf_of(signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf"))
    assert "No saliency overlay was stored for this query." in words(document)
    assert len(images_on(document[0])) == 7


# --- The page, the API and the audit log ----------------------------------------------------

def test_the_page_and_the_api_hand_out_the_report_and_each_export_is_audited(clinician, finished_query):
    page = signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf")
    through_api = api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf",
                                     HTTP_ACCEPT="application/pdf")
    assert words(pdf_of(page)) .replace(" ", "")[:80] == words(pdf_of(through_api)).replace(" ", "")[:80]
    events = list(AuditEvent.objects.filter(action="query.report").order_by("id"))
    assert [(e.via, e.actor, e.object_id, e.detail["neighbours"]) for e in events] == [
        ("web", "dr_clinician", str(finished_query.pk), 6), ("api", "dr_clinician", str(finished_query.pk), 6)]
    assert events[0].detail["bytes"] == len(page.content)


def test_the_result_page_offers_the_report_once_the_query_is_done(clinician, finished_query):
    body = signed_in(clinician).get(f"/queries/{finished_query.pk}/").content.decode()
    link = re.search(r'<a class="button" id="report-link" href="([^"]+)" download([^>]*)>PDF report</a>', body)
    assert link and link.group(1) == f"/queries/{finished_query.pk}/report.pdf" and "hidden" not in link.group(2)
    unfinish(finished_query, Query.Status.RUNNING)
    running = signed_in(clinician).get(f"/queries/{finished_query.pk}/").content.decode()
    assert re.search(r'id="report-link"[^>]* hidden>', running)


def test_only_the_owner_gets_the_report(client, clinician, colleague, reader, stranger, finished_query):
    page, endpoint = f"/queries/{finished_query.pk}/report.pdf", f"/api/v1/queries/{finished_query.pk}/report.pdf"
    assert client.get(page).status_code == 302
    assert error_of(api().get(endpoint), 401)["code"] == "not_authenticated"
    assert signed_in(colleague).get(page).status_code == 404
    assert error_of(api(colleague).get(endpoint), 404)["code"] == "not_found"
    for other in (reader, stranger):  # no clinician role: refused as on the result page
        assert signed_in(other).get(page).status_code == 403
        assert error_of(api(other).get(endpoint), 403)["code"] == "permission_denied"
    assert not AuditEvent.objects.filter(action="query.report").exists()


# --- When there is no report --------------------------------------------------------------------

@pytest.mark.parametrize("status, code", [(Query.Status.PENDING, "not_ready"), (Query.Status.RUNNING, "not_ready"),
                                          (Query.Status.FAILED, "query_failed")])
def test_a_query_that_is_not_done_gets_409_and_no_report(clinician, finished_query, status, code):
    unfinish(finished_query, status)
    error = error_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf"), 409)
    assert error["code"] == code and f"#{finished_query.pk}" in error["message"]
    if code == "query_failed":
        assert "The image could not be read." in error["message"]
    page = signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf")
    assert page.status_code == 409 and page["Content-Type"].startswith("text/plain")
    assert page.content.decode() == error["message"]
    assert not AuditEvent.objects.filter(action="query.report").exists()


@pytest.mark.parametrize("missing", ["query", "overlay", "case"])
def test_a_missing_image_file_gets_409_image_missing(clinician, finished_query, missing):
    name = {"query": finished_query.image.name, "overlay": finished_query.saliency.name,
            "case": finished_query.neighbours.get(rank=3).case.image.name}[missing]
    default_storage.delete(name)
    error = error_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf"), 409)
    assert error["code"] == "image_missing"
    assert {"query": "the query image", "overlay": "the saliency overlay",
            "case": "the library image of rank 3"}[missing] in error["message"]
    assert signed_in(clinician).get(f"/queries/{finished_query.pk}/report.pdf").status_code == 409
    assert not AuditEvent.objects.filter(action="query.report").exists()


def test_a_damaged_image_gets_409_image_unreadable(clinician, finished_query, media_root):
    (media_root / finished_query.neighbours.get(rank=1).case.image.name).write_bytes(b"not an image")
    error = error_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf"), 409)
    assert error["code"] == "image_unreadable" and "rank 1" in error["message"]


def test_the_renderer_refuses_bytes_that_are_no_image():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
    report = QueryReport(query_id=1, created=now, finished=now, generated=now, method_label="SE-CBIR",
                         model_version="#1", index_version="#1", image=b"\x89PNG broken", saliency=None,
                         vote_note=VOTE_NOTE)
    with pytest.raises(ReportUnavailable) as refused:
        render_query_report(report)
    assert refused.value.code == "image_unreadable" and "the query image" in str(refused.value)


# --- The schema -----------------------------------------------------------------------------

def test_the_schema_documents_the_report_as_application_pdf_with_its_errors():
    schema = Client().get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/queries/{query_id}/report.pdf"]
    assert set(operation) == {"get"}
    responses = operation["get"]["responses"]
    assert set(responses) == {"200", "401", "403", "404", "409"}
    assert set(responses["200"]["content"]) == {"application/pdf"}
    assert responses["200"]["content"]["application/pdf"]["schema"] == {"type": "string", "format": "binary"}
    assert "not_ready" in responses["409"]["description"] and "image_missing" in responses["409"]["description"]


def test_the_restriction_line_names_every_filter_and_counts_excluded_patients():
    from retrieval.selectors import query_filter_payload, search_filter_text

    query = Query(search_filter={"sites": ["face", "scalp"], "sexes": ["female"], "age_min": 40, "age_max": 70,
                                 "datasets": ["vidir_modern"], "exclude_lesion_ids": ["HAM_0000118"],
                                 "exclude_patient_ids": ["IP_0000001", "IP_0000002"]})
    assert search_filter_text(query_filter_payload(query)) == (
        "Similar cases restricted to: body site face, scalp; sex female; age 40-70; dataset vidir_modern; "
        "excluding the photos of 1 lesion and 2 patients.")
    assert search_filter_text({"age_min": 18}) == "Similar cases restricted to: age 18 or more."
    assert search_filter_text({"age_max": 30}) == "Similar cases restricted to: age 30 or less."
    assert search_filter_text({}) == ""


def test_the_result_page_and_the_report_say_how_the_neighbours_were_restricted(clinician, finished_query):
    line = "Similar cases restricted to: body site back; sex male; age 30-60."
    plain = signed_in(clinician).get(f"/queries/{finished_query.pk}/").content.decode()
    assert 'id="query-filter"' not in plain
    assert "restricted to" not in words(pdf_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf")))
    Query.objects.filter(pk=finished_query.pk).update(
        search_filter={"sites": ["back"], "sexes": ["male"], "age_min": 30, "age_max": 60})
    page = signed_in(clinician).get(f"/queries/{finished_query.pk}/").content.decode()
    assert f'<p class="note" id="query-filter">{line}</p>' in page
    assert line in words(pdf_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf")))


def test_the_report_says_which_shown_case_was_withdrawn_since(clinician, finished_query):
    from retrieval.services import case_withdraw

    row = finished_query.neighbours.order_by("rank")[1]
    case_withdraw(case=row.case, reason="duplicate of an earlier image")
    text = words(pdf_of(api(clinician).get(f"/api/v1/queries/{finished_query.pk}/report.pdf")))
    assert text.count("Withdrawn from the library since this search:") == 1
    assert "Withdrawn from the library since this search: duplicate of an earlier image" in text
