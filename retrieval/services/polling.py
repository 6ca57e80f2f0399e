"""What a page or API read of queries and index builds does first: notice lost jobs.

A query or build whose task message or worker was lost is re-sent or failed by its refresh
service (``queries.query_refresh``, ``index.index_refresh``); the views call these before they
read through ``retrieval.selectors``, which never write. A finished job is returned as it is.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from retrieval import selectors
from retrieval.models import IndexVersion, Query
from retrieval.services.index import index_refresh
from retrieval.services.queries import query_refresh

#: Longest a read waits for a query to finish (``query_wait``), whatever the caller asks.
MAX_WAIT_SECONDS = 30.0
FINAL_QUERY = (Query.Status.DONE, Query.Status.FAILED)
UNFINISHED_BUILD = (IndexVersion.Status.PENDING, IndexVersion.Status.RUNNING)


def queries_refresh(*, queries: Iterable[Query]) -> list[Query]:
    """Each query refreshed (``query_refresh``), in the order given."""
    return [query if query.status in FINAL_QUERY else query_refresh(query=query) for query in queries]


def query_wait(*, query: Query, timeout: float, interval: float = 0.02) -> Query:
    """Refresh the query until it is done or failed, or ``timeout`` (at most ``MAX_WAIT_SECONDS``)
    has passed (the API's ``?wait=`` long-poll)."""
    deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT_SECONDS)
    query = query_refresh(query=query)
    while query.status not in FINAL_QUERY and time.monotonic() < deadline:
        time.sleep(interval)
        query = query_refresh(query=query)
    return query


def index_builds_refresh(*, collection: str | None = None) -> None:
    """Refresh the unfinished builds among those the index status lists
    (``selectors.index_builds_recent``), before it is read."""
    for index in selectors.index_builds_recent(collection=collection):
        if index.status in UNFINISHED_BUILD:
            index_refresh(index=index)
