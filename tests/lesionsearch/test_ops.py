"""The operations page (/ops/) and the Prometheus endpoint (/metrics), on real rows: workers'
beats, jobs of several kinds, models, an index, and queries with known latencies. /metrics is read
back with prometheus_client's own parser (the reference for the text format)."""
from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops_scenario import make_operations

pytestmark = pytest.mark.django_db


@pytest.fixture
def operations(clinician, media_root, settings):
    return make_operations(clinician, settings)


def test_the_operations_page_is_for_operators(client, clinician, study_admin, admin_user, django_user_model):
    from django.contrib.auth.models import Permission

    assert client.get("/ops/")["Location"].startswith("/accounts/login/")
    for user in (clinician, study_admin):  # a study admin is staff, but not an operator
        client.force_login(user)
        assert client.get("/ops/").status_code == 403
        assert 'href="/ops/"' not in client.get("/methods/").content.decode()
    operator = django_user_model.objects.create_user(username="operator", password="pw", is_staff=True)
    operator.user_permissions.add(Permission.objects.get(codename="view_workerbeat"))
    for user in (operator, admin_user):
        client.force_login(user)
        assert client.get("/ops/").status_code == 200
        assert 'href="/ops/"' in client.get("/methods/").content.decode()


def test_the_operations_page_shows_workers_jobs_models_indexes_and_disk(client, admin_user, operations):
    client.force_login(admin_user)
    page = client.get("/ops/").content.decode()
    assert '<meta http-equiv="refresh" content="10">' in page
    workers = page[page.index('id="workers"'):page.index('id="queues"')]
    assert "worker@alive:1" in workers and "alive" in workers
    assert f'training #{operations["training"].id}</a> (75 %)' in workers  # what it runs now
    assert "worker@gone:1" in workers and "no beat" in workers
    assert re.search(r"inference</strong> \d+ waiting", page) and re.search(r"light</strong> \d+ waiting", page)
    jobs = page[page.index('id="jobs"'):page.index('id="models"')]
    assert '<progress max="4" value="3"' in jobs and "4ch epoch 1 of 2" in jobs
    assert "The check was interrupted several times" in jobs and "long ago" not in jobs  # only recent failures
    assert "library check" in jobs and "query #" in jobs  # the failed query
    models = page[page.index('id="models"'):page.index('id="indexes"')]
    assert "accuracy 0.750, macro sensitivity 0.500" in models and "AP@6 0.410" in models
    assert "P@1 0.60 P@6 0.40" in models and 'points="5.0,16.6 115.0,23.4"' in models
    indexes = page[page.index('id="indexes"'):page.index('id="disk"')]
    assert "<strong>active</strong>" in indexes and "2 (secbir, cnn3)" in indexes and "2.0\xa0KB" in indexes
    disk = page[page.index('id="disk"'):]
    assert "<strong>indexes</strong> 2.0\xa0KB" in disk and "<strong>queries</strong>" in disk


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_in_the_prometheus_text_format_with_hand_computed_values(client, operations):
    response = client.get("/metrics")  # the test client is 127.0.0.1
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = _families(response.content.decode())

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for s in families["lesionsearch_query_duration_seconds"].samples}
    done = lambda name, **labels: samples[(name, tuple(sorted({"outcome": "done", **labels}.items())))]  # noqa: E731
    # two done queries, 0.3 s and 2.0 s: none under 0.25, one under 0.5 and 1, both from 2.5
    assert [done("lesionsearch_query_duration_seconds_bucket", le=le) for le in ("0.25", "0.5", "1.0", "2.5", "+Inf")
            ] == [0, 1, 1, 2, 2]
    assert done("lesionsearch_query_duration_seconds_count") == 2
    assert done("lesionsearch_query_duration_seconds_sum") == pytest.approx(2.3)
    failed = {le: samples[("lesionsearch_query_duration_seconds_bucket", (("le", le), ("outcome", "failed")))]
              for le in ("60.0", "300.0")}
    assert failed == {"60.0": 0, "300.0": 1}

    jobs = {(s.labels["kind"], s.labels["status"]): s.value for s in families["lesionsearch_jobs"].samples}
    assert jobs[("training", "running")] == 1 and jobs[("library_check", "failed")] == 2
    assert jobs[("query", "done")] == 2 and jobs[("query", "failed")] == 1 and jobs[("index_build", "done")] == 1
    assert jobs[("study_preparation", "pending")] == 0  # every kind and status, zeros included
    up = {s.labels["worker"]: s.value for s in families["lesionsearch_worker_up"].samples}
    assert up == {"worker@alive:1": 1, "worker@gone:1": 0}
    assert families["lesionsearch_workers_alive"].samples[0].value == 1
    queues = {s.labels["queue"]: s.value for s in families["lesionsearch_queue_messages"].samples}
    assert set(queues) == {"inference", "light", "training"} and all(depth >= 0 for depth in queues.values())  # the broker read


def test_metrics_from_elsewhere_need_the_token(client, settings, operations):
    elsewhere = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/metrics", **elsewhere).status_code == 403  # no token configured: loopback only
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403  # a local proxy relays it
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", **elsewhere).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **elsewhere).status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **elsewhere)
    assert response.status_code == 200 and "lesionsearch_jobs" in response.content.decode()
