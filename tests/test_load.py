"""A short load test on loopback (bench/load.py's, against the tiny test index): clinicians upload
while others browse, through gunicorn (several processes and threads, production settings) to a
real Celery worker. No query is lost or duplicated, and page and API reads keep p99 under 300 ms
while the worker is busy. The long version runs by hand: `python bench/load.py --duration 120`.

Runs in CI's real-services run (PostgreSQL + Redis, the production stack); it skips on the
embedded SQLite default.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection

from bench.load import (READ_KINDS, database_check, free_port, report, run_load, start_gunicorn, stop,
                        worker_busy_share)
from tests.conftest import REPO, _user, start_worker, stop_worker

pytestmark = [pytest.mark.services, pytest.mark.slow,
              pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
                                 reason="needs PostgreSQL: run `make test-services`")]  # before the fixtures

# Enough queries to keep the worker busy all along: a query (both stages) takes a few hundred ms here.
CLINICIANS, BROWSERS, DURATION, MAX_QUERIES = 3, 4, 30, 200
#: Seconds a clinician waits between a result and the next upload: short, so that three of them keep the
#: worker busy (a query's two stages take ~0.15 s of worker time here; with 1 s the worker was 30 % busy).
CLINICIAN_THINK = 0.25
#: The requirement is 300 ms; LOAD_MAX_P99_MS only for a machine shared with other heavy jobs.
MAX_P99_MS = float(os.environ.get("LOAD_MAX_P99_MS", 300))


def test_uploads_and_browsing_at_once_lose_nothing_and_reads_stay_fast(
        transactional_db, django_db_serialized_rollback, ready_index, media_root, django_user_model, tmp_path, capsys):
    from lesionsearch.roles import CLINICIAN
    from retrieval.models import Case, Query

    accounts = []
    hasher = PBKDF2PasswordHasher()
    for name in [f"clinician{i}" for i in range(CLINICIANS)] + [f"browser{i}" for i in range(BROWSERS)]:
        user = _user(django_user_model, name, CLINICIAN)
        # gunicorn runs the production settings, whose hashers do not include the tests' MD5
        user.password = hasher.encode("pw-" + name, hasher.salt(), iterations=1000)
        user.save(update_fields=["password"])
        accounts.append((name, "pw-" + name))
    images = [case.image.read() for case in Case.objects.filter(split="test").order_by("id")]
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url,
           "MEDIA_ROOT": str(media_root), "DJANGO_SETTINGS_MODULE": "lesionsearch.settings", "DEBUG": "false",
           "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "warning",
           "STATIC_ROOT": str(tmp_path / "static"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"], cwd=REPO, env=env,
                   check=True)
    port = free_port()
    worker = start_worker(media_root, log=tmp_path / "worker.log", extra_env={"OMP_NUM_THREADS": "1"})
    try:
        web = start_gunicorn(port, env, tmp_path / "web.log", workers=3, threads=4)
        try:
            result = run_load(f"http://127.0.0.1:{port}", clinicians=accounts[:CLINICIANS],
                              browsers=accounts[CLINICIANS:], images=images, duration=DURATION,
                              max_queries=MAX_QUERIES, drain=60, clinician_think=CLINICIAN_THINK)
        finally:
            stop(web)
    finally:
        stop_worker(worker)
    result.problems += database_check(result.submissions)
    with capsys.disabled():
        failed = report(result, max_p99_ms=MAX_P99_MS, title=f"tests/test_load.py ({os.cpu_count()} CPUs, load average "
                                                       f"{os.getloadavg()[0]:.2f})")
    stats = result.stats()
    assert len(result.submissions) >= CLINICIANS * 3, "too few queries to say anything"
    assert Query.objects.filter(status="done").count() == len(result.submissions)
    assert all(stats[kind]["n"] >= 10 for kind in ("page_library", "api_queries", "api_methods", "api_index"))
    assert stats["all_reads"]["n"] >= 300
    busy = worker_busy_share(result.submissions, result.duration)
    assert busy > 0.3, f"the worker was busy only {busy:.0%} of the time: the reads were not measured under load"
    assert set(READ_KINDS) <= set(stats)
    assert not failed, failed

