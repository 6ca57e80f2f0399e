"""The same answer posted twice at the same moment stores one row (the database constraint, not
luck), and so does the same batch of Task 2 enlargements (the page's fetch and its beacon). Runs on the embedded SQLite and, in CI's real-services run, on PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from readerstudy import services
from readerstudy.models import Answer, NeighbourView

# transaction: the threads' requests run on connections of their own; serialized_rollback: the
# flush keeps the roles (see tests/browser).
pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture(autouse=True)
def _a_database_threads_share(django_db_setup):
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith(("file:memorydb", ":memory:")):
        pytest.skip("threads need a database they can share")


def _post_at_once(monkeypatch, study, reader, payloads, url: str | None = None,
                  service: str = "answer_submit") -> list[int]:
    """Posts ``payloads`` from one thread each and returns the sorted statuses. The requests meet
    at the service the view calls (a barrier in front of ``readerstudy.services.<service>``), so
    both are inside their request when either starts to write: on a busy 2-core machine a thread
    could otherwise start only after the other had finished, and the race would not be run."""
    url = url or reverse("readerstudy:task", args=[study.id, 1])
    meeting = threading.Barrier(len(payloads))
    original = getattr(services, service)

    def met(*args, **kwargs):
        meeting.wait(timeout=10)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, service, met)
    statuses: list[int] = []
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def post(data):
        from django.db import connections

        client = Client()
        client.force_login(reader)
        try:
            started = time.perf_counter()
            statuses.append(client.post(url, data, HTTP_ACCEPT="application/json").status_code)
            spans.append((started, time.perf_counter()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    # Really at once: every request started before any of them had finished.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    monkeypatch.setattr(services, service, original)
    return sorted(statuses)


def test_the_same_answer_posted_twice_at_once_stores_one_row(monkeypatch, rows_only_study, readers):
    data = {"position": 1, "answer": "bkl", "confidence": 4}
    for attempt in range(5):  # several rounds: each must store exactly one row per case
        statuses = _post_at_once(monkeypatch, rows_only_study, readers[0], [{**data, "position": attempt % 3 + 1}] * 2)
        assert statuses == [200, 200]
    assert Answer.objects.filter(item__assignment__reader=readers[0]).count() == 3


def test_two_different_answers_at_once_keep_exactly_one(monkeypatch, rows_only_study, readers):
    statuses = _post_at_once(monkeypatch, rows_only_study, readers[1], [
        {"position": 1, "answer": "bkl", "confidence": 4}, {"position": 1, "answer": "mel", "confidence": 2}])
    assert statuses == [200, 409]
    assert Answer.objects.filter(item__assignment__reader=readers[1]).count() == 1


def test_the_same_enlargements_posted_twice_at_once_are_stored_once(monkeypatch, rows_only_study, readers):
    import json

    from readerstudy.models import Assignment

    assignment = Assignment.objects.get(study=rows_only_study, reader=readers[2])
    for position in (1, 2, 3):
        services.answer_submit(assignment=assignment, task=1, position=position, answer="nv", confidence=3)
    url = reverse("readerstudy:case_views", args=[rows_only_study.id, 1])
    for attempt in range(5):
        views = [{"id": f"{attempt}-{rank}", "rank": rank, "seconds_after_shown": float(rank)} for rank in (1, 2)]
        statuses = _post_at_once(monkeypatch, rows_only_study, readers[2], [{"views": json.dumps(views)}] * 2, url=url,
                                 service="neighbour_views_record")
        assert statuses == [200, 200]
    assert NeighbourView.objects.filter(item__assignment=assignment).count() == 10
