"""A query's second stage: the evidence map pairs of its neighbours (paper 004), a job of its own.

The first stage (``queries.analyse``) stores the neighbours, their similarities, the query's
saliency overlay and the neighbour vote, marks the query done and, in the same transaction,
creates its ``QueryEvidence`` job, sent once committed. The page and the API show the
neighbours at once and each pair when it is ready. The job runs on the inference queue right
after the first stage, so a pair is usually ready before a clinician opens it; a clinician
who never opens one never waits for it (nothing of the first stage waits for it).

Like every job (``lesionsearch.jobs``) it is claimed by a conditional update, so a redelivered
message does nothing; a worker killed during it is replaced by a takeover after
``JOB_STALE_SECONDS``; its results are written only while its worker holds it, so a run that
lost its claim, or a query deleted meanwhile, leaves no row and no file. A neighbour whose
library image cannot be read fails alone (its ``evidence_error``); the others are stored.
"""
from __future__ import annotations

import io
import logging

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from lesionsearch.jobs import services as jobs
from retrieval import loaders, runtime
from retrieval.models import IndexVersion, Query, QueryEvidence, QueryNeighbour
from retrieval.tasks import EVIDENCE

logger = logging.getLogger(__name__)

#: A failed job's message (the neighbours and the vote are not affected).
EVIDENCE_FAILED = ("The evidence maps of this query could not be computed because of an internal error "
                   "(reference: query #{id}). The similar cases are not affected.")
CASE_UNREADABLE = "The library image of this case could not be read, so its evidence maps were not computed."


def saliency_map_name(query: Query) -> str:
    return query.image.name.rsplit(".", 1)[0] + "-saliency-map.npy"


def evidence_create(*, query: Query, saliency: np.ndarray, total: int) -> tuple[QueryEvidence, str]:
    """The second stage of a query the first stage is finishing: its saliency map (uint8, the
    index's storage precision) saved for the SE-CBIR pairs, and its job row, sent on commit.
    Call inside the transaction that marks the query done. Returns the job and the file name
    written (for the caller to delete if that transaction does not commit)."""
    from retrieval.ml.overlay import to_uint8

    buffer = io.BytesIO()
    np.save(buffer, to_uint8(saliency), allow_pickle=False)
    name = saliency_map_name(query)
    default_storage.delete(name)  # a first stage taken over from a dead worker may have left one
    name = default_storage.save(name, ContentFile(buffer.getvalue()))
    job = QueryEvidence.objects.create(query=query, saliency_map=name, total=total, **jobs.enqueued_now())
    jobs.enqueue_on_commit(EVIDENCE, job.id, stamped=True)
    return job, name


def evidence_run(*, evidence_id: int, worker: str) -> bool:
    """The worker's part: render the pairs of a claimed job. Returns whether this call ran it."""
    job = jobs.claim(EVIDENCE, evidence_id, worker, related=("query__index_version",))
    if job is None:
        logger.info("evidence %s already claimed, finished or deleted; nothing to do", evidence_id)
        return False
    written: list[str] = []
    try:
        results = pairs_compute(job, written)
    except Exception:
        logger.exception("evidence of query %s failed", job.query_id)
        _delete(written)
        jobs.fail(EVIDENCE, evidence_id, EVIDENCE_FAILED.format(id=job.query_id), worker=worker)
        return True
    with transaction.atomic():
        if not jobs.held(EVIDENCE, evidence_id, worker).select_for_update().exists():  # query deleted, or taken over
            _delete(written)
            return True
        for neighbour_id, (query_map, case_map, error) in results.items():
            QueryNeighbour.objects.filter(id=neighbour_id).update(evidence_query=query_map, evidence_case=case_map,
                                                                  evidence_error=error)
        jobs.finish(EVIDENCE, evidence_id, worker, done=len(results))
    return True


def pairs_compute(job: QueryEvidence, written: list[str]) -> dict[int, tuple[str, str, str]]:
    """Query-result activation map pairs (paper 004, eq. 2) of the network the query's method
    compares with, rendered as overlays: per neighbour row id, (query map, case map, "") or
    ("", "", why it failed). Appends each file it saves to ``written``."""
    from retrieval.methods import SECBIR, get_method
    from retrieval.ml.measures import activation_map_pair, normalise_map
    from retrieval.ml.overlay import EVIDENCE_MAX_SIDE, render_overlay

    query = job.query
    index = query.index_version
    if index is None or index.status != IndexVersion.Status.DONE:
        raise RuntimeError(f"query {query.id}: its index is not available any more")
    method = get_method(query.method).name
    encoder = runtime.descriptor_encoder_for(index)
    # Every image is resized to the network's input next: JPEGs may decode at a reduced scale.
    network = encoder.embeddings.get(method)
    side = network.config.input_size if network is not None else encoder.size
    neighbours = list(QueryNeighbour.objects.filter(query=query).select_related("case").order_by("rank"))
    results: dict[int, tuple[str, str, str]] = {}
    readable, images = [], [loaders.load_rgb(query.image.path, at_least=side)]
    for row in neighbours:
        try:
            images.append(loaders.load_rgb(row.case.image.path, at_least=side))
            readable.append(row)
        except (OSError, ValueError):
            logger.warning("query %s: library case %s unreadable for its evidence maps", query.id, row.case_id)
            results[row.id] = ("", "", CASE_UNREADABLE)
    if not readable:
        return results
    maps_saliency = None
    if method == SECBIR:
        loaded = runtime.loaded_index(index)
        with default_storage.open(job.saliency_map, "rb") as handle:
            own = np.load(handle, allow_pickle=False)
        stored = [loaded.saliency[loaded.row_of(row.case_id)] for row in readable]
        maps_saliency = np.stack([own] + stored).astype(np.float32) / 255.0
    g = encoder.feature_maps(method, images, maps_saliency)
    stem = query.image.name.rsplit(".", 1)[0]
    for position, row in enumerate(readable, start=1):
        a_q, a_r = activation_map_pair(g[0], g[position])
        pair = []
        for side, heat, size in (("q", a_q, (query.width, query.height)),
                                 ("r", a_r, (row.case.width, row.case.height))):
            name = f"{stem}-evidence-{row.rank}{side}.png"
            default_storage.delete(name)  # left by a run that was taken over
            name = default_storage.save(name, ContentFile(render_overlay(normalise_map(heat), size, EVIDENCE_MAX_SIDE)))
            written.append(name)
            pair.append(name)
        results[row.id] = (pair[0], pair[1], "")
    return results


def _delete(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)
