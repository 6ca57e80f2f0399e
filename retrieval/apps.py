from __future__ import annotations

from lesionsearch.jobs import kinds


class RetrievalConfig(kinds.JobAppConfig):
    """Case library and retrieval; registers its job kinds (``retrieval.tasks.JOB_KINDS``) at start-up."""

    name = "retrieval"
    verbose_name = "Case library and retrieval"
