"""A clinician's query: upload -> PENDING -> worker -> DONE (six neighbours) or FAILED (a message).

``query_submit`` stores the image and the row in one transaction and enqueues the task on
commit. ``query_run`` (the worker) claims the row with a conditional update, so a redelivered
task does nothing, and finishes with another conditional update, so a run that lost its claim
(its heartbeat went stale and another worker took over, or the user deleted the query) writes
nothing. ``query_refresh`` notices queries whose message or worker was lost and re-sends or
fails them, so no query waits silently forever.
"""
from __future__ import annotations

import io
import logging
import uuid

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image, ImageOps

from lesionsearch.audit import services as audit
from lesionsearch.jobs import services as jobs
from retrieval import runtime, selectors
from retrieval.classes import CODES
from retrieval.dicom import dicom_decode, is_dicom
from retrieval.images import ImageRejected, inspect_image
from retrieval.models import Case, IndexVersion, Query, QueryEvidence, QueryNeighbour
# Reads (the active index, the methods it serves), kept importable from here for the callers of old.
from retrieval.selectors import index_for_queries, index_methods  # noqa: F401
from retrieval.services import evidence
from retrieval.tasks import EVIDENCE, QUERY

logger = logging.getLogger(__name__)

Status = Query.Status
#: Extra neighbours searched so that cases deleted since the index was built can be skipped.
SEARCH_MARGIN = 8
#: Up to this many withdrawn cases in a collection, an unfiltered query's one search looks deeper
#: by that many rows instead of running a second, filtered search (a few hundred more rows of a
#: top-k cost nothing); beyond it the withdrawn cases are excluded inside a second search.
WITHDRAWN_SEARCHED_DEEPER = 256

#: Shown when the query's out-of-distribution score is below its index's threshold
#: (:mod:`retrieval.services.ood`); the page and the API show this text as it is.
OOD_WARNING = (
    "This does not look like a dermoscopic image like those in the case library, so the similar cases "
    "below may not be meaningful. Check that you uploaded a dermoscopic image of a skin lesion."
)
#: Stored with every vote; the result page says the same (``retrieval.views.VOTE_NOTE``).
VOTE_NOTE = ("The share of the similar cases per class: how many of them have that class; equal counts are "
             "listed by rank. It is not a diagnosis.")
INTERNAL_ERROR = (
    "The image could not be analysed because of an internal error (reference: query #{id}). "
    "Please try again; if it happens again, contact support."
)


#: The name a DICOM upload is listed under: its file name is not kept (it is often the patient's).
DICOM_NAME = "DICOM image"


class QueryRejected(ValueError):
    """The upload cannot become a query; the message is written for a clinician."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def _normalised_upload(data: bytes, fmt: str) -> tuple[bytes, str, int, int]:
    """Bytes to store, their extension and size: EXIF orientation applied, browser-displayable.

    JPEG and PNG without a rotation are kept byte for byte; everything else (TIFF, WebP, BMP,
    rotated photos, 16-bit greyscale) is stored as a lossless PNG of the upright image.
    """
    with Image.open(io.BytesIO(data)) as image:
        orientation = image.getexif().get(0x0112, 1)
        deep = image.mode.startswith("I;16")  # Pillow's own conversion to 8 bits clips at 255 (all white)
        if fmt in ("JPEG", "MPO", "PNG") and orientation in (1, None) and not deep:
            return data, "png" if fmt == "PNG" else "jpg", image.width, image.height
        upright = ImageOps.exif_transpose(image)
        if deep:  # 16-bit greyscale: keep the high byte
            upright = Image.fromarray((np.asarray(upright).astype(np.uint16) >> 8).astype(np.uint8), "L")
        if upright.mode not in ("RGB", "RGBA", "L"):
            upright = upright.convert("RGB")
        buffer = io.BytesIO()
        upright.save(buffer, "PNG")
        return buffer.getvalue(), "png", upright.width, upright.height


def query_submit(*, user, image_data: bytes, filename: str = "", k: int | None = None,
                 method: str | None = None, search_filter: dict | None = None) -> Query:
    """Store an uploaded image as a PENDING query and enqueue it once committed.

    ``method`` is a retrieval method name (:mod:`retrieval.methods`; default SE-CBIR) that the
    active index serves. A DICOM file (:mod:`retrieval.dicom`) is stored as the PNG of its pixels,
    under :data:`DICOM_NAME` instead of its file name, with its whitelisted acquisition attributes."""
    from retrieval.methods import DEFAULT_METHOD, METHODS
    from retrieval.ml.search import SearchFilter

    try:
        where = SearchFilter.from_json(search_filter)
    except (TypeError, ValueError) as exc:
        raise QueryRejected(f"The neighbour filter cannot be used: {exc}.") from None
    method = DEFAULT_METHOD if method in (None, "") else method
    if method not in METHODS:
        raise QueryRejected(f"Unknown similarity method {method!r}. Choose one of: {', '.join(METHODS)}.")
    k = settings.QUERY_DEFAULT_K if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.QUERY_MAX_K:
        raise QueryRejected(f"The number of similar cases must be a whole number from 1 to {settings.QUERY_MAX_K}.")
    limit_mb = settings.QUERY_MAX_UPLOAD_MB
    if len(image_data) > limit_mb * 1024 * 1024:
        raise QueryRejected(f"The image is larger than {limit_mb} MB. Please upload a smaller file.", 413)
    acquisition: dict = {}
    max_bytes = limit_mb * 1024 * 1024
    if is_dicom(image_data):  # by content, whatever the file is called
        # Only the decoded pixels (as a PNG, like any uploaded image) and the whitelisted attributes
        # go on: the file's bytes, its header and its name (often the patient's) are never stored
        # or logged.
        try:
            decoded = dicom_decode(image_data, max_bytes=max_bytes)
        except ImageRejected as exc:
            raise QueryRejected(f"This file cannot be used: {exc}.") from None
        image_data, filename, acquisition = decoded.png(), DICOM_NAME, decoded.acquisition
        max_bytes = max(max_bytes, len(image_data))  # the pixel limit bounds our own PNG, not the upload limit
    try:
        info = inspect_image(image_data, max_bytes=max_bytes)
    except ImageRejected as exc:
        raise QueryRejected(f"This file cannot be used: {exc}.") from None
    active = selectors.index_for_queries_brief()
    if active is None:
        raise QueryRejected("No case library index is ready yet, so similar cases cannot be searched. "
                            "Please try again later or ask an administrator to build the index.", 503)
    index_id, served = active
    if method not in served:
        raise QueryRejected(f"The similarity method {METHODS[method].label!r} is not available in the current case "
                            f"library index (available: {', '.join(served)}). An administrator can "
                            "rebuild the index with it.", 409)
    stored, extension, width, height = _normalised_upload(image_data, info.format)
    name = default_storage.save(f"queries/{user.id}/{uuid.uuid4().hex}.{extension}", ContentFile(stored))
    try:
        with transaction.atomic():
            query = Query.objects.create(user=user, image=name, original_name=(filename or "")[:255],
                                         sha256=info.sha256, width=width, height=height, k=k, index_version_id=index_id,
                                         method=method, acquisition=acquisition, search_filter=where.as_json(),
                                         **jobs.enqueued_now())
            audit.record(audit.Action.QUERY_SUBMIT, user=user, obj=query,
                         detail={"sha256": info.sha256, "k": k, "method": method, "index": index_id,
                                 "filtered": not where.empty})
            jobs.enqueue_on_commit(QUERY, query.id, stamped=True)
    except BaseException:
        default_storage.delete(name)
        raise
    return query


def query_run(*, query_id: int, worker: str) -> bool:
    """The worker's part: search the library for the query image. Returns whether this call ran it."""
    query = jobs.claim(QUERY, query_id, worker, related=("index_version__model_version__parent",))
    if query is None:
        logger.info("query %s already claimed, finished or deleted; nothing to do", query_id)
        return False
    try:
        analyse(query, worker)
    except Exception as exc:
        logger.exception("query %s failed", query_id)
        message = str(exc) if isinstance(exc, (ImageRejected, QueryRejected)) else INTERNAL_ERROR.format(id=query_id)
        jobs.fail(QUERY, query_id, message, worker=worker)
    return True


def neighbour_vote_json(labels: list[str]) -> dict:
    """The stored and served neighbour vote (``Query.neighbour_vote``) of neighbours in rank order.

    Everything in it comes from ``retrieval.ml.metrics.neighbour_vote_tally``, the one rule: the
    class with the most neighbours first, ties broken by rank. ``scores`` are the shares
    count / ``n``, ``order`` is the order to show them in, ``top`` its first class. Not a diagnosis.
    """
    from retrieval.ml.metrics import neighbour_vote_tally

    tally = neighbour_vote_tally(labels)
    return {
        "label": "neighbour vote",
        "top": tally.top,
        "order": list(tally.order),
        "n": tally.n,
        "counts": dict(tally.counts),
        "scores": {code: round(share, 4) for code, share in tally.shares.items()},
        "note": VOTE_NOTE,
    }


def analyse(query: Query, worker: str) -> None:
    """The first stage of a claimed query: features, neighbours, vote, OOD score and the saliency
    overlay, written only while ``worker`` holds the query (its run's one seam for tests); the
    query is done then, and its evidence map pairs follow as a job of their own
    (``retrieval.services.evidence``)."""
    from retrieval import methods as m
    from retrieval.ml.features import as_rgb
    from retrieval.ml.methods import method_topk
    from retrieval.ml.search import SearchFilter
    from retrieval.ml.overlay import render_overlay
    from retrieval.services.ood import ood_depth, query_ood

    index = query.index_version
    if index is None or index.status != IndexVersion.Status.DONE:
        raise QueryRejected("The case library index this query was sent to is not available any more. "
                            "Please upload the image again.")
    if query.method not in index_methods(index):
        raise QueryRejected(f"The similarity method {query.method!r} is not available in this case library index.")
    beats = jobs.Beats(QUERY, query.id, worker)  # (a fraction of a second's run writes none)
    encoder = runtime.descriptor_encoder_for(index)
    loaded = runtime.loaded_index(index)
    with query.image.open("rb") as handle, Image.open(handle) as image:
        pixels = np.asarray(as_rgb(image), dtype=np.uint8)
    method = m.get_method(query.method)
    # SE-CBIR always runs: its saliency map is shown for every method, and its search and the
    # saliency pass's logits give the out-of-distribution score (calibrated on SE-CBIR queries).
    encoded = encoder.encode([pixels], needs={m.SECBIR, *method.needs}, packed_masks=False)
    beats.beat()
    depth = max(query.k + SEARCH_MARGIN, ood_depth(index))
    withdrawn = selectors.withdrawn_case_ids(collection=index.collection)
    # The out-of-distribution score is calibrated on unfiltered searches: always run one. With a
    # few cases withdrawn it looks that much deeper, so that it still answers an unfiltered
    # query without them (no second search; see _secbir_neighbours).
    deeper = len(withdrawn) if len(withdrawn) <= WITHDRAWN_SEARCHED_DEEPER else 0
    secbir_ids, secbir_scores = loaded.search(encoded.descriptors[m.SECBIR], depth + deeper)
    where = SearchFilter.from_json(query.search_filter)
    # The clinician's filter, plus the cases withdrawn from the library since the build: no
    # backend and no method may return them.
    searched = where.excluding_cases(withdrawn)
    if method.name == m.SECBIR:
        case_ids, scores = _secbir_neighbours(loaded, encoded.descriptors[m.SECBIR], (secbir_ids[0], secbir_scores[0]),
                                              where, searched, query.k)
    else:
        library = {name: loaded.descriptor(name) for name in method.needs}
        exclude = None
        if not searched.empty:  # the other methods score the whole library: the filter is a row mask
            exclude = ~loaded.metadata().allowed(searched)
        allowed = len(loaded.case_ids) - (0 if exclude is None else int(exclude.sum()))
        if allowed:
            rows, scores = method_topk(method.name, {name: encoded.descriptors[name][0] for name in method.needs},
                                       library, min(depth, allowed), exclude=exclude)
            case_ids = loaded.case_ids[rows]
        else:
            case_ids, scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
    cases = Case.objects.in_bulk(case_ids.tolist())
    found = [(cases[int(c)], float(s)) for c, s in zip(case_ids, scores)
             if int(c) in cases and cases[int(c)].withdrawn_at is None][:query.k]  # (withdrawn meanwhile)
    if not found and not where.empty:
        raise QueryRejected("No library case matches the neighbour filter of this query. Please search again "
                            "with a wider filter or none.")
    if not found:
        raise QueryRejected("The case library is empty, so no similar cases can be shown.")
    saliency = encoded.secbir.saliency[0]
    overlay_name = query.image.name.rsplit(".", 1)[0] + "-saliency.png"
    default_storage.delete(overlay_name)  # a run taken over from a dead worker may have left one
    overlay_name = default_storage.save(overlay_name, ContentFile(render_overlay(saliency, (query.width,
                                                                                             query.height))))
    beats.beat()
    neighbours = [
        QueryNeighbour(query_id=query.id, rank=rank, case=case, similarity=similarity,
                       saliency=_case_overlay(index, loaded, case))
        for rank, (case, similarity) in enumerate(found, start=1)
    ]
    best = float(secbir_scores[0][0]) if len(secbir_scores[0]) else None
    ood = query_ood(index, similarities=secbir_scores[0][:depth], logits=encoded.secbir.logits[0],
                    features=encoded.descriptors[m.SECBIR][0])
    warning = OOD_WARNING if ood["warned"] else ""
    if len(found) < query.k and not where.empty:
        note = (f"Only {len(found)} library case{'s' if len(found) != 1 else ''} match the neighbour filter, "
                f"fewer than the {query.k} asked for.")
        warning = f"{warning} {note}".strip()
    written = [overlay_name]
    try:
        with transaction.atomic():
            # Finished first, by a conditional update that also takes the row's lock: nothing is
            # written when the user deleted the query or a sweep gave it to another worker.
            if not jobs.finish(QUERY, query.id, worker, saliency=overlay_name,
                               predicted=CODES[int(encoded.secbir.predicted[0])], best_similarity=best,
                               warning=warning, ood_score=ood["score"], ood_threshold=ood["threshold"],
                               ood_method=ood["method"], message="",
                               neighbour_vote=neighbour_vote_json([case.dx for case, _ in found])):
                _delete(written)
                return
            QueryNeighbour.objects.filter(query_id=query.id).delete()
            QueryNeighbour.objects.bulk_create(neighbours)
            if settings.QUERY_EVIDENCE_MAPS:  # the second stage, sent once this commits
                written.append(evidence.evidence_create(query=query, saliency=saliency, total=len(neighbours))[1])
    except BaseException:
        _delete(written)
        raise


def _secbir_neighbours(loaded, features: np.ndarray, unfiltered: tuple[np.ndarray, np.ndarray], where,
                       searched, k: int) -> tuple[np.ndarray, np.ndarray]:
    """SE-CBIR's neighbours under ``searched`` (case ids, scores). When the clinician set no
    filter, the unfiltered search that always runs is the answer, less the withdrawn cases, as
    long as as many rows remain as a filtered search would return (or it holds the whole
    library): no second search for a library with a few withdrawn cases. Otherwise (a filter,
    or many withdrawn near the top) the filtered search runs inside the backend."""
    ids, scores = unfiltered
    if where.empty:
        kept = ~np.isin(ids, np.asarray(searched.exclude_case_ids, dtype=np.int64))
        if len(ids) == len(loaded.case_ids) or int(kept.sum()) >= k + SEARCH_MARGIN:
            return ids[kept], scores[kept]
    found_ids, found_scores = loaded.search(features, k + SEARCH_MARGIN, where=searched)
    return found_ids[0], found_scores[0]


def _delete(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def _case_overlay(index: IndexVersion, loaded, case: Case) -> str:
    """The library case's saliency overlay: rendered when its chunk was indexed, or now (cases an
    incremental build took over from an older version), once per index version."""
    from retrieval.ml.overlay import render_overlay
    from retrieval.services.index import case_overlay_name

    name = case_overlay_name(index.id, case.id)
    if not default_storage.exists(name):
        data = render_overlay(np.asarray(loaded.saliency[loaded.row_of(case.id)]), (case.width, case.height))
        saved = default_storage.save(name, ContentFile(data))
        if saved != name:  # another process rendered it at the same time
            default_storage.delete(saved)
    return name


def query_refresh(*, query: Query) -> Query:
    """Re-read a query; re-send it when its message was lost, fail it when it cannot be run
    (``lesionsearch.jobs.services.refresh``: unclaimed for QUERY_PENDING_RESEND_SECONDS it is
    sent again, never picked up in QUERY_PENDING_FAIL_SECONDS it fails, its worker dead it runs
    again, at most JOB_MAX_ATTEMPTS times). A done query's second stage (its evidence maps,
    ``retrieval.services.evidence``) is refreshed the same way while it is unfinished."""
    rows = Query.objects.select_related("index_version", "evidence_job").filter(id=query.id)
    if not query.finished:
        return jobs.refresh(QUERY, query, rows=rows)
    job = selectors.evidence_job_of(query)
    if job is None or job.finished:
        return query
    jobs.refresh(EVIDENCE, job)  # the second stage's message or worker lost: re-sent, or failed
    return rows.get()


def query_delete(*, query: Query, user=None) -> None:
    """Remove a query, its neighbours and its own files (cached library overlays are shared and kept).
    ``user``: who deletes it (the audit log's actor; default: the signed-in user of the request)."""
    names = [name for name in (query.image.name, query.saliency.name) if name]
    names += [name for pair in query.neighbours.values_list("evidence_query", "evidence_case") for name in pair if name]
    names += [name for name in QueryEvidence.objects.filter(query=query).values_list("saliency_map", flat=True) if name]
    with transaction.atomic():
        Query.objects.filter(id=query.id).delete()
        audit.record(audit.Action.QUERY_DELETE, user=user, obj=query, detail={"owner": query.user_id})
        transaction.on_commit(lambda: [default_storage.delete(name) for name in names])
