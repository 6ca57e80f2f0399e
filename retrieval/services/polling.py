"""What a page or API read of queries and index builds does first: notice lost jobs.

A query or build whose task message or worker was lost is re-sent or failed by its refresh
service (``queries.query_refresh``, ``index.index_refresh``); the views call these before they
read through ``retrieval.selectors``, which never write. A finished job is returned as it is.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from lesionsearch.jobs import notify
from retrieval import selectors
from retrieval.models import IndexVersion, Query
from retrieval.selectors import evidence_settled
from retrieval.services.index import index_refresh
from retrieval.services.queries import query_refresh
from retrieval.tasks import EVIDENCE, QUERY

#: Longest a read waits for a query to finish (``query_wait``), whatever the caller asks.
MAX_WAIT_SECONDS = 30.0
FINAL_QUERY = (Query.Status.DONE, Query.Status.FAILED)
UNFINISHED_BUILD = (IndexVersion.Status.PENDING, IndexVersion.Status.RUNNING)
#: What a long-poll waits for: the query finished (its neighbours), or its evidence maps too.
UNTIL_DONE, UNTIL_EVIDENCE = "done", "evidence"
UNTIL = (UNTIL_DONE, UNTIL_EVIDENCE)


def queries_refresh(*, queries: Iterable[Query]) -> list[Query]:
    """Each query refreshed (``query_refresh``), in the order given."""
    return [query if query.status in FINAL_QUERY else query_refresh(query=query) for query in queries]


def query_wait(*, query: Query, timeout: float, until: str = UNTIL_DONE) -> Query:
    """Refresh the query until it is done or failed (``until="done"``; with ``"evidence"``: and its
    evidence maps are settled too, ``evidence.evidence_settled``), or ``timeout`` (at most
    ``MAX_WAIT_SECONDS``) has passed (the API's ``?wait=`` long-poll). Re-reads the row when a
    query (or evidence) job finishes (``lesionsearch.jobs.notify``: named pipes on the embedded
    default, Redis pub/sub otherwise) and at least every ``notify.RECHECK_SECONDS``, so a waiting
    client learns of ``done`` within a few ms of its commit (``bench/query_end_to_end.py``
    measures the gap) without polling the database while the worker computes."""
    if until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL}, not {until!r}")
    settled = evidence_settled if until == UNTIL_EVIDENCE else (lambda row: row.status in FINAL_QUERY)
    deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
    with notify.watch([QUERY.name, EVIDENCE.name]) as watch:  # before the first read: no wake-up is missed
        query = query_refresh(query=query)
        while not settled(query) and (left := deadline - time.monotonic()) > 0:
            watch.wait(min(left, notify.RECHECK_SECONDS))
            query = query_refresh(query=query)
    return query


def index_builds_refresh(*, collection: str | None = None) -> None:
    """Refresh the unfinished builds among those the index status lists
    (``selectors.index_builds_recent``), before it is read."""
    for index in selectors.index_builds_recent(collection=collection):
        if index.status in UNFINISHED_BUILD:
            index_refresh(index=index)
