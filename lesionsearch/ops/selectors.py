"""Reads for operations: workers, queues, jobs of every kind, models, indexes, disk, query latency.

Everything here reads (rows, the broker's queue sizes, the media folder's sizes); nothing writes.
The operations page and ``/metrics`` render what these return.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from lesionsearch.jobs.kinds import registered
from lesionsearch.jobs.models import FINAL, UNFINISHED, JobStatus, WorkerBeat
from lesionsearch.jobs.services import worker_beat_timeout

#: Failed jobs younger than this are listed (older ones are in the admin).
RECENT_FAILURES_HOURS = 24
#: At most this many rows per job kind on the page (the admin lists them all).
JOBS_PER_KIND = 50
#: Upper bounds (seconds) of the query-latency histogram, upload to answer.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: How long the media folder's sizes are cached (walking it costs a stat per file).
DISK_CACHE_SECONDS = 60


def workers() -> list[dict]:
    """Every worker seen recently: alive or not, its queues, its last beat and what it runs now."""
    now = timezone.now()
    timeout = worker_beat_timeout()
    running = running_jobs()
    out = []
    for beat in WorkerBeat.objects.all():
        age = (now - beat.beat_at).total_seconds()
        out.append({
            "name": beat.name, "hostname": beat.hostname, "pid": beat.pid, "queues": beat.queues,
            "started_at": beat.started_at, "beat_at": beat.beat_at, "beat_age": age,
            "stopped_at": beat.stopped_at, "alive": beat.stopped_at is None and age <= timeout,
            "running": [job for job in running if job["worker"].startswith(beat.hostname)],
        })
    return out


def running_jobs() -> list[dict]:
    """Jobs a worker holds now (RUNNING with a heartbeat), of every kind."""
    out = []
    for kind in registered():
        for job in kind.model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__isnull=False):
            out.append(_job_row(kind, job))
    return out


def jobs_needing_attention() -> list[dict]:
    """Every unfinished job and every job failed in the last ``RECENT_FAILURES_HOURS``, newest
    first, of every kind (queries included: stuck or failed ones are what an operator looks for)."""
    since = timezone.now() - timedelta(hours=RECENT_FAILURES_HOURS)
    rows = []
    for kind in registered():
        wanted = Q(status__in=UNFINISHED) | Q(status=JobStatus.FAILED, finished_at__gte=since)
        for job in kind.model.objects.filter(wanted).order_by("-created_at")[:JOBS_PER_KIND]:
            rows.append(_job_row(kind, job))
    return sorted(rows, key=lambda row: row["created_at"], reverse=True)


def _job_row(kind, job) -> dict:
    percent = round(100 * job.done / job.total) if job.total else None
    return {"kind": kind.name, "label": kind.label or kind.name, "id": job.id, "status": job.status,
            "done": job.done, "total": job.total, "percent": percent, "message": job.message,
            "worker": job.worker, "attempts": job.attempts, "created_at": job.created_at,
            "heartbeat_at": job.heartbeat_at, "finished_at": job.finished_at,
            "admin_url": f"/admin/{job._meta.app_label}/{job._meta.model_name}/{job.id}/change/"}


def job_counts() -> list[tuple[str, str, int]]:
    """(kind, status, number of jobs) for every registered kind and every status (zeros included)."""
    out = []
    for kind in registered():
        counts = dict(kind.model.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        out.extend((kind.name, status, counts.get(status, 0)) for status in JobStatus.values)
    return out


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each of the worker queues (None when the broker cannot be read)."""
    from lesionsearch.celery import app

    depths: dict[str, int | None] = {}
    queues = (settings.CELERY_QUEUE_INFERENCE, settings.CELERY_QUEUE_LIGHT, settings.CELERY_QUEUE_TRAINING)
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.default_channel
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except Exception:  # a queue nobody declared yet holds nothing
                    depths[queue] = 0
    except Exception:
        return {queue: None for queue in queues}
    return depths


def model_versions(limit: int = 20) -> list[dict]:
    """The newest model versions with their validation figures (and P@k where there is one)."""
    from retrieval.models import ModelVersion

    out = []
    for version in ModelVersion.objects.order_by("-created_at", "-id")[:limit]:
        metrics = version.metrics or {}
        precision = [(int(key.rsplit("_", 1)[1]), value) for key, value in metrics.items()
                     if key.startswith("precision_at_") and isinstance(value, (int, float))]
        out.append({"id": version.id, "name": str(version), "stage": version.stage, "config": version.config,
                    "collection": version.collection, "created_at": version.created_at, "epochs": version.epochs,
                    "accuracy": metrics.get("accuracy"), "macro_sensitivity": metrics.get("macro_sensitivity"),
                    "ap_at_6": metrics.get("ap_at_6"), "precision_at_k": sorted(precision),
                    "pk_points": _plot_points([p for _, p in sorted(precision)]),
                    "history": [h.get("macro_sensitivity", h.get("ap_at_6")) for h in metrics.get("history", [])]})
    return out


def _plot_points(values: list[float], width: int = 120, height: int = 40) -> str:
    """SVG polyline points of values in [0, 1], evenly spaced from left to right."""
    if not values:
        return ""
    step = (width - 10) / max(len(values) - 1, 1)
    return " ".join(f"{5 + i * step:.1f},{height - 3 - value * (height - 6):.1f}" for i, value in enumerate(values))


def index_versions(limit: int = 20) -> list[dict]:
    """The newest index versions: size, methods, OOD calibration and disk use."""
    from retrieval.models import IndexVersion
    from retrieval.selectors import index_ood_summary

    out = []
    sizes = disk_usage()["indexes_by_id"]
    for index in IndexVersion.objects.select_related("model_version").order_by("-created_at", "-id")[:limit]:
        out.append({"id": index.id, "collection": index.collection, "status": index.status, "active": index.active,
                    "size": index.size, "methods": index.methods, "model": str(index.model_version),
                    "ood": index_ood_summary(index) if index.status == JobStatus.DONE else None,
                    "disk_bytes": sizes.get(str(index.id), 0), "created_at": index.created_at})
    return out


def disk_usage() -> dict:
    """Bytes under the media folder by top-level folder (cases, masks, queries, indexes, models, ...),
    each index's folder, and the free space of its file system; cached ``DISK_CACHE_SECONDS``."""
    cached = cache.get("ops:disk_usage")
    if cached is not None:
        return cached
    root = Path(settings.MEDIA_ROOT)
    folders: dict[str, int] = {}
    indexes: dict[str, int] = {}
    if root.is_dir():
        for entry in root.iterdir():
            size = _tree_bytes(entry)
            folders[entry.name] = size
            if entry.name == "indexes" and entry.is_dir():
                indexes = {child.name: _tree_bytes(child) for child in entry.iterdir() if child.is_dir()}
    stat = os.statvfs(root) if root.is_dir() else None
    usage = {"media_root": str(root), "folders": dict(sorted(folders.items())), "total": sum(folders.values()),
             "indexes_by_id": indexes, "free": stat.f_bavail * stat.f_frsize if stat else None}
    cache.set("ops:disk_usage", usage, DISK_CACHE_SECONDS)
    return usage


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we walked
                pass
    return total


def query_latency() -> dict[str, dict]:
    """Per outcome (done, failed): how many queries, the sum of their upload-to-answer seconds and
    the cumulative count at each of ``LATENCY_BUCKETS`` (a Prometheus histogram), from the rows."""
    from retrieval.models import Query

    finished = Query.objects.filter(status__in=FINAL, finished_at__isnull=False).annotate(
        latency=F("finished_at") - F("created_at"))
    out = {}
    for outcome in FINAL:
        rows = finished.filter(status=outcome)
        aggregates = {f"le_{i}": Count("id", filter=Q(latency__lte=timedelta(seconds=bound)))
                      for i, bound in enumerate(LATENCY_BUCKETS)}
        values = rows.aggregate(count=Count("id"), total=Sum("latency"), **aggregates)
        total = values["total"]
        out[str(outcome)] = {
            "count": values["count"], "sum": total.total_seconds() if total is not None else 0.0,
            "buckets": [(bound, values[f"le_{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]}
    return out
