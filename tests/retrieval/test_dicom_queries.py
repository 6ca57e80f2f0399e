"""DICOM queries through the search page and the API, run by the worker on a real tiny index: they
finish done, keep the whitelisted acquisition attributes, and the patient's identifiers (sentinel
values in every test file) reach no database row, no file under MEDIA_ROOT, no log record, no
warning, no API answer and no page."""
from __future__ import annotations

import logging
import warnings

import pytest

from retrieval.models import Query
from retrieval.services.queries import DICOM_NAME, query_run
from tests import dicom_files as dicom
from tests import hostile
from tests.apiclient import QUERIES, api, error_of, upload
from tests.dicom_files import assert_no_identifier, database_text, media_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


# --- Where an identifier could end up ---------------------------------------------------------
class Everything(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''} {record.args!r}")


@pytest.fixture
def every_log_record():
    """Every record any logger emits, at every level, whether or not it propagates to the root."""
    handler = Everything()
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield handler.lines, caught
    for logger, level in levels:
        logger.removeHandler(handler)
        logger.setLevel(level)


def uids_of(data: bytes) -> list[str]:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    return [str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]


# --- The proofs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [dicom.jpeg_file, dicom.jpeg2000_file, dicom.monochrome_file],
                         ids=["jpeg", "jpeg2000", "monochrome"])
def test_an_api_dicom_query_finishes_and_no_identifier_reaches_db_media_logs_or_answers(
        build, ready_index, clinician, media_root, sent_jobs, every_log_record):
    data = build()
    client = api(clinician)
    response = client.post(QUERIES, {"image": upload(data, name="SENTINEL^PATIENT 19010203.dcm")}, format="multipart")
    assert response.status_code == 202, response.content[:500]
    query = Query.objects.get(pk=response.json()["id"])
    assert query.original_name == DICOM_NAME == hostile.DICOM_NAME
    assert query.image.name.endswith(".png")
    assert query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    assert query.status == Query.Status.DONE, query.message
    assert query.neighbours.count() == 6

    body = client.get(response["Location"]).content.decode()
    listing = client.get(QUERIES).content.decode()
    payload = client.get(response["Location"]).json()
    acquisition = payload["acquisition"]
    assert acquisition["sop_class"] == "Dermoscopic Photography Image" and acquisition["modality"] == "DMS"
    assert acquisition["light_source_polarization"] == "POLARIZED" and acquisition["contact_method"] == "CONTACT"
    assert acquisition["immersion_media"] == "ULTRASOUND_GEL" and acquisition["anatomic_region"] == "Forearm"
    assert acquisition["body_part_examined"] == "ARM" and acquisition["laterality"] == "L"
    assert (acquisition["rows"], acquisition["columns"]) == (72, 96) == (query.height, query.width)
    assert query.acquisition == acquisition

    lines, caught = every_log_record
    assert lines, "the run logged nothing at all: the capture is not working"
    uids = uids_of(data)
    assert_no_identifier(database_text(), "the database", *uids)
    assert_no_identifier(media_bytes(media_root), "the media folder", *uids)
    assert_no_identifier("\n".join(lines), "the logs", *uids)
    assert_no_identifier("\n".join(str(w.message) for w in caught), "the warnings", *uids)
    for text, where in ((body, "the query's API answer"), (listing, "the query list")):
        assert_no_identifier(text, where, *uids)


def test_a_page_dicom_query_finishes_shows_its_acquisition_and_no_identifier(
        ready_index, clinician, client, media_root, sent_jobs, every_log_record):
    client.force_login(clinician)
    data = dicom.rgb_file()
    response = client.post("/search/", {"image": upload(data, name="SENTINEL^PATIENT.dcm"), "k": 6})
    assert response.status_code == 302, response.content[:2000]
    query = Query.objects.get(user=clinician)
    assert query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    assert query.status == Query.Status.DONE, query.message
    page = client.get(f"/queries/{query.pk}/").content.decode()
    assert "DICOM acquisition" in page and "<dt>Light source</dt><dd>POLARIZED</dd>" in page
    assert "<dt>Immersion media</dt><dd>ULTRASOUND_GEL</dd>" in page and "<dt>Anatomic region</dt><dd>Forearm</dd>" in page
    history = client.get("/search/").content.decode()
    assert DICOM_NAME in history
    lines, caught = every_log_record
    uids = uids_of(data)
    for text, where in ((page, "the result page"), (history, "the search page"), (database_text(), "the database"),
                        ("\n".join(lines), "the logs"), ("\n".join(str(w.message) for w in caught), "warnings")):
        assert_no_identifier(text, where, *uids)
    assert_no_identifier(media_bytes(media_root), "the media folder", *uids)


def test_a_plain_image_query_has_no_acquisition_and_keeps_its_name(ready_index, clinician, sent_jobs):
    response = api(clinician).post(QUERIES, {"image": upload(name="lesion.jpg")}, format="multipart")
    query = Query.objects.get(pk=response.json()["id"])
    assert query.original_name == "lesion.jpg" and query.acquisition == {}
    assert api(clinician).get(response["Location"]).json()["acquisition"] == {}


@pytest.mark.parametrize("build, fragment", [
    (dicom.multiframe_file, "holds 3 frames"),
    (dicom.declared_2gb_file, "declares 2,147,483,632 bytes"),
    (dicom.dicomdir_file, "DICOMDIR"),
])
def test_a_refused_dicom_query_stores_nothing_and_the_message_names_no_identifier(
        build, fragment, ready_index, clinician, media_root, every_log_record):
    before = {p for p in media_root.rglob("*") if p.is_file()}
    response = api(clinician).post(QUERIES, {"image": upload(build(), name="SENTINEL^PATIENT.dcm")}, format="multipart")
    error = error_of(response, 400)
    assert fragment in error["message"] and error["message"].startswith("This file cannot be used: the DICOM file")
    assert not Query.objects.exists() and {p for p in media_root.rglob("*") if p.is_file()} == before
    assert_no_identifier(response.content.decode(), "the error")
    assert_no_identifier("\n".join(every_log_record[0]), "the logs")
