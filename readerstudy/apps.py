from __future__ import annotations

from lesionsearch.jobs import kinds


class ReaderStudyConfig(kinds.JobAppConfig):
    """Reader studies; registers its job kinds (``readerstudy.tasks.JOB_KINDS``) at start-up."""

    name = "readerstudy"
    verbose_name = "Reader studies"
