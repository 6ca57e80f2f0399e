"""The Prometheus text exposition format (version 0.0.4) of what ``selectors`` read.

Metrics (all read from the database and the broker at scrape time, so every web process
answers the same):

* ``lesionsearch_queries`` (gauge, by ``outcome``): finished queries in the database;
  ``lesionsearch_query_duration_seconds`` (histogram, by ``outcome``): upload to answer. Both come
  from the rows, so a query a clinician deleted leaves them (Prometheus sees a smaller value);
* ``lesionsearch_queue_messages`` (gauge, by ``queue``): messages waiting for a worker;
* ``lesionsearch_jobs`` (gauge, by ``kind`` and ``status``): job rows of every kind;
* ``lesionsearch_worker_up`` (gauge, by ``worker``) and ``lesionsearch_worker_last_beat_age_seconds``;
  ``lesionsearch_workers_alive`` (gauge).
"""
from __future__ import annotations

from lesionsearch.ops import selectors

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, value, **labels) -> str:
    inside = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
    number = "NaN" if value is None else (repr(float(value)) if isinstance(value, float) else str(value))
    return f"{name}{{{inside}}} {number}" if inside else f"{name} {number}"


def _family(name: str, kind: str, text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples]


def exposition() -> str:
    lines: list[str] = []
    latency = selectors.query_latency()
    lines += _family("lesionsearch_queries", "gauge", "Finished queries in the database, by outcome.",
                     [_sample("lesionsearch_queries", data["count"], outcome=outcome)
                      for outcome, data in latency.items()])
    histogram = []
    for outcome, data in latency.items():
        histogram += [_sample("lesionsearch_query_duration_seconds_bucket", count, outcome=outcome, le=bound)
                      for bound, count in data["buckets"]]
        histogram += [_sample("lesionsearch_query_duration_seconds_bucket", data["count"], outcome=outcome,
                              le="+Inf"),
                      _sample("lesionsearch_query_duration_seconds_sum", float(data["sum"]), outcome=outcome),
                      _sample("lesionsearch_query_duration_seconds_count", data["count"], outcome=outcome)]
    lines += _family("lesionsearch_query_duration_seconds", "histogram",
                     "Seconds from upload to answer of finished queries, by outcome.", histogram)
    lines += _family("lesionsearch_queue_messages", "gauge",
                     "Messages waiting in a worker queue (NaN: the broker could not be read).",
                     [_sample("lesionsearch_queue_messages", depth, queue=queue)
                      for queue, depth in selectors.queue_depths().items()])
    lines += _family("lesionsearch_jobs", "gauge", "Background jobs in the database, by kind and status.",
                     [_sample("lesionsearch_jobs", count, kind=kind, status=status)
                      for kind, status, count in selectors.job_counts()])
    workers = selectors.workers()
    lines += _family("lesionsearch_worker_up", "gauge", "1 while a worker process sends its beats.",
                     [_sample("lesionsearch_worker_up", int(w["alive"]), worker=w["name"]) for w in workers])
    lines += _family("lesionsearch_worker_last_beat_age_seconds", "gauge", "Seconds since a worker's last beat.",
                     [_sample("lesionsearch_worker_last_beat_age_seconds", round(w["beat_age"], 3),
                              worker=w["name"]) for w in workers])
    lines += _family("lesionsearch_workers_alive", "gauge", "Worker processes sending their beats.",
                     [_sample("lesionsearch_workers_alive", sum(w["alive"] for w in workers))])
    return "\n".join(lines) + "\n"
