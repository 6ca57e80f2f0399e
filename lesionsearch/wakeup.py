"""Wake-ups between the processes of one host, through named pipes (the embedded default's
broker and job notifications; with Redis, messages and ``PUBLISH`` do this).

A waiting process makes its own pipe in a folder (:class:`Pipe`) and waits on it, blocked in
``poll``, instead of sleeping and looking again; whoever has news writes one byte to every
pipe in the folder (:func:`wake_all`). Nothing polls in between, so a wake-up takes the
scheduler's time, not half a polling interval, and an idle waiter costs no CPU. Waiters still
wait with a timeout: a wake-up that does not arrive (the pipe was made just after the news)
only delays them to their next look. A pipe whose process died (``kill -9`` leaves it) has no
reader; the next :func:`wake_all` finds that out and removes it.
"""
from __future__ import annotations

import errno
import os
import select
import uuid
from collections.abc import Iterable
from pathlib import Path

SUFFIX = ".wake"


def wake_all(folder: Path) -> int:
    """Write one byte to every waiter's pipe in ``folder``; remove the pipes no process reads.
    Returns how many were woken. Never raises: a waiter that is not woken looks on its own."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    woken = 0
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        path = Path(folder) / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a pipe with no reader: its process died without removing it
                path.unlink(missing_ok=True)
            continue
        try:
            os.write(fd, b"\0")
            woken += 1
        except BlockingIOError:  # full of unread wake-ups: that waiter is awake anyway
            woken += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return woken


class Pipe:
    """One waiter's named pipe in ``folder``: :meth:`wait` returns when someone writes to it."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}"
        os.mkfifo(self.path, 0o600)
        # Read-write, so that the pipe always has a writer: a read-only pipe whose last writer
        # closed reads as end-of-file, and poll would return at once, forever.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self.fd

    def poke(self) -> None:
        """Wake this pipe's own waiter (from another thread of its process)."""
        try:
            os.write(self.fd, b"\0")
        except OSError:  # full: the wait ends anyway
            pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """True when woken (the pending wake-ups are consumed), False after ``timeout`` seconds."""
        return wait_any([self], timeout)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def wait_any(pipes: Iterable[Pipe], timeout: float) -> bool:
    """Wait until any of ``pipes`` is written to (True; their wake-ups are consumed) or
    ``timeout`` seconds pass (False)."""
    by_fd = {pipe.fd: pipe for pipe in pipes}
    poller = select.poll()  # not select(): a process with over 1024 open files has descriptors it cannot take
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    ready = poller.poll(max(0.0, timeout) * 1000)
    for fd, _ in ready:
        by_fd[fd].drain()
    return bool(ready)
