"""The PDF report of a finished query: the one way the page and the API hand it out.

``query_report_export`` checks that the query is done, reads what to print
(``retrieval.selectors.query_report_data``), renders it (``retrieval.report``) and writes the
export to the audit log: a report leaves the system with a patient's image in it, so who took
one, and when, is recorded as for a query's submission and deletion.
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from lesionsearch.audit import services as audit
from retrieval import selectors
from retrieval.models import Query
from retrieval.report import ReportUnavailable, render_query_report

NOT_READY = ("The report is made once the search is done; query #{id} is still {status}. "
             "Wait for the result, then try again.")
QUERY_FAILED = "Query #{id} failed, so there are no similar cases to report: {message}"


@transaction.atomic
def query_report_export(*, query: Query, user) -> tuple[str, bytes]:
    """The PDF report of ``query`` for ``user`` (its owner; the caller checked who may see it), the
    export written to the audit log. Returns the file name and the PDF's bytes.

    ReportUnavailable (409) with code ``not_ready`` (pending or running), ``query_failed``,
    ``image_missing`` or ``image_unreadable`` (a stored image is gone or damaged): nothing is
    exported and no event is written."""
    if query.status == Query.Status.FAILED:
        raise ReportUnavailable(QUERY_FAILED.format(id=query.id, message=query.message or "no reason was stored."),
                                "query_failed")
    if query.status != Query.Status.DONE:
        raise ReportUnavailable(NOT_READY.format(id=query.id, status=query.get_status_display().lower()),
                                "not_ready")
    now = timezone.now()
    data = render_query_report(selectors.query_report_data(query, generated=now))
    audit.record(audit.Action.QUERY_REPORT, user=user, obj=query,
                 detail={"owner": query.user_id, "neighbours": query.neighbours.count(), "bytes": len(data)})
    return f"lesionsearch-query-{query.id}-{timezone.localtime(now):%Y%m%d-%H%M}.pdf", data
