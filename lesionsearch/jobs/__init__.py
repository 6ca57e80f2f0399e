"""One framework for every kind of background work (grand-challenge's ``ComponentJob`` pattern).

- ``models.Job``: the abstract job row (status, attempts, worker, heartbeat, when it was
  enqueued, started and finished, a message, progress done/total) that every job model extends.
- ``kinds.JobKind``: what the framework needs to know of a kind of job (its model, its Celery
  task, its timeouts and messages); apps register theirs in ``AppConfig.ready()``.
- ``services``: the one implementation of the life cycle: enqueue on commit, claim by
  conditional update (a redelivered message does nothing), heartbeat, progress, finish and fail
  that only the claiming worker can write, stale detection with heartbeat takeover, retry limits,
  and the sweep every worker runs (``sweep``).

This package imports no app: apps import it, and the Celery app calls ``services.sweep``.
"""
