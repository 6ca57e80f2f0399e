"""The washout as the dashboard and the reader's help show it (not Python's '1 day, 0:00:00')."""
from __future__ import annotations

from datetime import timedelta

import pytest

from readerstudy.models import Study


@pytest.mark.parametrize("washout, text", [
    (timedelta(hours=24), "24 hours"), (timedelta(hours=1), "1 hour"), (timedelta(minutes=2), "2 minutes"),
    (timedelta(minutes=90), "90 minutes"), (timedelta(seconds=90), "90 seconds"), (timedelta(seconds=1), "1 second"),
    (timedelta(0), "none"),
])
def test_the_washout_reads_in_hours_minutes_or_seconds(washout, text):
    assert Study(washout=washout).washout_text == text
