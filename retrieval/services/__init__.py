"""Writes: the only place that changes rows and files. Views, commands and tasks call these.

``library`` imports, splits, checks and trains on the case library; ``index`` builds and
activates the retrieval index; ``queries`` runs clinicians' queries.
"""
from retrieval.services.library import (  # noqa: F401
    ImportReport, SplitReport, case_create, library_check_request, library_check_run, library_import, library_split,
    model_train, training_items,
)
