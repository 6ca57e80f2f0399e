"""The library check as a job kind: a check whose message was lost is re-sent by the sweep and
then run; before the job framework it had no enqueued time, was in no sweep, and stayed PENDING."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from lesionsearch.jobs.worker import sweep_unfinished_jobs
from retrieval.models import LibraryCheck
from retrieval.services import library_check_request, library_check_run
from tests.conftest import real_metadata_rows, write_ham_folder

pytestmark = pytest.mark.django_db


def test_a_lost_library_check_message_is_re_sent_by_the_sweep_and_the_check_runs(
        tmp_path, media_root, sent_jobs, settings, django_capture_on_commit_callbacks):
    write_ham_folder(tmp_path / "ham", real_metadata_rows(4))
    call_command("import_ham10000", str(tmp_path / "ham"), verbosity=0)
    with django_capture_on_commit_callbacks(execute=True):
        check = library_check_request(collection="ham10000")
    assert sent_jobs["library_check"] == [check.id]

    # The message is lost (Redis restarted): nothing runs it. Within the re-send period the
    # sweep leaves it alone; after it, the sweep sends it again, once.
    LibraryCheck.objects.filter(id=check.id).update(enqueued_at=timezone.now())  # what the real send records
    assert sweep_unfinished_jobs() == 1 and sent_jobs["library_check"] == [check.id]
    LibraryCheck.objects.filter(id=check.id).update(
        enqueued_at=timezone.now() - timedelta(seconds=settings.QUERY_PENDING_RESEND_SECONDS + 1))
    sweep_unfinished_jobs()
    sweep_unfinished_jobs()
    assert sent_jobs["library_check"] == [check.id, check.id]

    assert library_check_run(check_id=check.id, worker="w1")
    check.refresh_from_db()
    assert (check.status, check.done, check.total, check.problems, check.attempts) == ("done", 4, 4, [], 1)
