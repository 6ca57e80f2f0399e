"""Wake-ups for readers waiting on a job (the API's ``?wait=`` long-poll, the result page).

A job that finishes or fails says so once its transaction commits (``services.finish`` and
``services.fail`` call :func:`notify`); a waiting reader :func:`watch`-es the kinds it waits for
and re-reads its row when woken, or every ``RECHECK_SECONDS`` in any case (so a lost wake-up
only delays it, and the re-read still notices lost jobs). Polling the database every few
milliseconds instead costs CPU that, on a small machine, the worker's model needs: measured
with ``bench/query_end_to_end.py``, a 5 ms poll made the worker's stage slower than the
notification it was meant to speed up.

Two transports, chosen by the broker:

* embedded default (filesystem broker, one host): one signal file per kind under
  ``JOB_NOTIFY_DIR``, whose modification time a notify moves; a watch looks at it (``stat``,
  microseconds, no database) every ``FILE_POLL_SECONDS``;
* Redis broker (several hosts): ``PUBLISH`` on a channel per kind, which a watch subscribes to
  before the reader's first read, so nothing sent in between is missed.

A wake-up says only "a job of this kind finished": the reader checks its own row.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

#: A watching reader re-reads its row at least this often, woken or not.
RECHECK_SECONDS = 0.5
#: How often a file watch looks at its signal files.
FILE_POLL_SECONDS = 0.002
CHANNEL = "lesionsearch:jobs:{kind}"


def _redis():
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))


@lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def _signal_file(kind: str) -> Path:
    return Path(settings.JOB_NOTIFY_DIR) / f"{kind}.signal"


def notify(kind: str) -> None:
    """Wake the readers watching ``kind`` (call once the job's transaction committed). Never
    raises: a reader that misses it re-reads within ``RECHECK_SECONDS``."""
    try:
        if _redis():
            _client(settings.CELERY_BROKER_URL).publish(CHANNEL.format(kind=kind), b"1")
        else:
            path = _signal_file(kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path)  # a new modification time, also when the file existed
    except Exception:
        logger.warning("could not notify the readers of %s jobs; they re-read within %s s", kind, RECHECK_SECONDS,
                       exc_info=True)


class _FileWatch:
    def __init__(self, kinds: Iterable[str]) -> None:
        self.paths = [_signal_file(kind) for kind in kinds]
        self.marks = self._marks()

    def _marks(self) -> list[int]:
        marks = []
        for path in self.paths:
            try:
                marks.append(path.stat().st_mtime_ns)
            except FileNotFoundError:
                marks.append(0)
        return marks

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            marks = self._marks()
            if marks != self.marks:
                self.marks = marks
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(FILE_POLL_SECONDS, left))

    def close(self) -> None:
        pass


class _RedisWatch:
    def __init__(self, kinds: Iterable[str]) -> None:
        self.pubsub = _client(settings.CELERY_BROKER_URL).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*[CHANNEL.format(kind=kind) for kind in kinds])

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while (left := deadline - time.monotonic()) > 0:
            if self.pubsub.get_message(timeout=left) is not None:
                return True
        return False

    def close(self) -> None:
        self.pubsub.close()


class Watch:
    """What a waiting reader holds: ``wait(timeout)`` returns True when a job of a watched kind
    finished since the watch began (or since the last True), False after ``timeout`` seconds.
    Begin it before the first read of the row. A broker that cannot be reached degrades to
    waiting out the timeout (the reader then re-reads on its own rhythm)."""

    def __init__(self, kinds: Iterable[str]) -> None:
        kinds = list(kinds)
        self.impl = None
        try:
            self.impl = _RedisWatch(kinds) if _redis() else _FileWatch(kinds)
        except Exception:
            logger.warning("cannot watch %s jobs; re-reading every %s s", kinds, RECHECK_SECONDS, exc_info=True)

    def wait(self, timeout: float) -> bool:
        if self.impl is None:
            time.sleep(max(0.0, timeout))
            return False
        try:
            return self.impl.wait(timeout)
        except Exception:
            logger.warning("lost the job notifications; re-reading every %s s", RECHECK_SECONDS, exc_info=True)
            self.impl = None
            return False

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        if self.impl is not None:
            try:
                self.impl.close()
            except Exception:
                pass


def watch(kinds: Iterable[str]) -> Watch:
    return Watch(kinds)
