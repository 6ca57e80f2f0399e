"""`prepare_demo`'s last step: an open demo study for the demo reader, created once."""
from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from readerstudy.models import Assignment, Study


def test_prepare_demo_opens_one_demo_study_for_the_demo_reader(study_index, settings):
    from retrieval.management.commands.prepare_demo import DEMO_STUDY, Command

    settings.DEBUG = True
    call_command("setup_demo", stdout=StringIO())
    command = Command(stdout=StringIO())
    command._demo_study()
    study = Study.objects.get(name=DEMO_STUDY)
    assert study.status == Study.Status.OPEN and study.curation["query_set"] > 0
    assignment = Assignment.objects.get(study=study)
    assert assignment.reader.username == "reader"
    assert assignment.items.count() == min(20, study.curation["query_set"])
    command._demo_study()  # idempotent
    assert Study.objects.count() == 1 and Assignment.objects.count() == 1
