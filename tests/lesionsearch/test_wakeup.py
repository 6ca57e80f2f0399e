"""Named-pipe wake-ups between processes of one host (lesionsearch/wakeup.py): the embedded
broker's and the job notifications' transport."""
from __future__ import annotations

import os
import threading
import time

from lesionsearch import wakeup


def test_a_wake_pipe_waits_its_timeout_and_returns_at_once_when_written(tmp_path):
    pipe = wakeup.Pipe(tmp_path / "wake")
    try:
        started = time.monotonic()
        assert pipe.wait(0.2) is False
        assert time.monotonic() - started >= 0.19
        assert wakeup.wake_all(tmp_path / "wake") == 1
        assert wakeup.wake_all(tmp_path / "wake") == 1  # two wake-ups before the consumer looks ...
        started = time.monotonic()
        assert pipe.wait(5) is True
        assert time.monotonic() - started < 0.1
        assert pipe.wait(0.05) is False  # ... are both consumed: the next wait waits again
    finally:
        pipe.close()
    assert not list((tmp_path / "wake").iterdir())


def test_a_producer_removes_the_pipe_of_a_consumer_that_died(tmp_path):
    folder = tmp_path / "wake"
    folder.mkdir()
    os.mkfifo(folder / "12345-dead.wake")  # what a consumer killed with -9 leaves: nobody has it open
    (folder / "notes.txt").write_text("not a pipe")
    live = wakeup.Pipe(folder)
    try:
        assert wakeup.wake_all(folder) == 1
        assert sorted(p.name for p in folder.iterdir()) == sorted(["notes.txt", live.path.name])
    finally:
        live.close()
    assert wakeup.wake_all(tmp_path / "no-such-folder") == 0


def test_a_waiter_on_several_pipes_wakes_for_any_of_them_and_another_thread_can_wake_its_own(tmp_path):
    first, second = wakeup.Pipe(tmp_path / "a"), wakeup.Pipe(tmp_path / "b")
    try:
        assert wakeup.wait_any([first, second], 0.05) is False
        wakeup.wake_all(tmp_path / "b")
        assert wakeup.wait_any([first, second], 5) is True
        assert wakeup.wait_any([first, second], 0.05) is False
        threading.Timer(0.1, first.poke).start()
        started = time.monotonic()
        assert first.wait(5) is True and time.monotonic() - started < 1
    finally:
        first.close()
        second.close()
