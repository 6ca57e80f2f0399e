"""Writes: the only place that changes rows and files. Views, commands and tasks call these.

``library`` imports, splits and checks the case library; ``training`` trains models on it (in
the caller's process, or as a background TrainingJob); ``index`` builds and activates the
retrieval index, ``cleanup`` removes the index versions nothing needs any more; ``queries`` runs
clinicians' queries; ``polling`` is what a page or API read calls first (re-send or fail lost
queries and builds) before it reads through the selectors, which never write.
"""
from retrieval.services.library import (  # noqa: F401
    ImportReport, SplitReport, WithdrawalError, case_create, case_restore, case_withdraw, library_check_request,
    library_check_run, library_import, library_split,
)
from retrieval.services.training import (  # noqa: F401
    embedding_train, model_train, training_items, training_plan, training_queue, training_run,
)
