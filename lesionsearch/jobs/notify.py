"""Wake-ups for readers waiting on a job (the API's ``?wait=`` long-poll, the result page).

A job that finishes or fails says so once its transaction commits (``services.finish`` and
``services.fail`` call :func:`notify`); a waiting reader :func:`watch`-es the kinds it waits for
and re-reads its row when woken, or every ``RECHECK_SECONDS`` in any case (so a lost wake-up
only delays it, and the re-read still notices lost jobs). Polling the database every few
milliseconds instead costs CPU that, on a small machine, the worker's model needs: measured
with ``bench/query_end_to_end.py``, a 5 ms poll made the worker's stage slower than the
notification it was meant to speed up.

Two transports, chosen by the broker:

* embedded default (filesystem broker, one host): a watch makes a named pipe per kind in
  ``JOB_NOTIFY_DIR/<kind>/`` and waits on them in ``poll``; a notify writes a byte to every
  pipe of its kind (``lesionsearch.wakeup``): no polling, no database;
* Redis broker (several hosts): ``PUBLISH`` on a channel per kind, which a watch subscribes to
  before the reader's first read, so nothing sent in between is missed.

A wake-up says only "a job of this kind finished": the reader checks its own row.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from lesionsearch import wakeup

logger = logging.getLogger(__name__)

#: A watching reader re-reads its row at least this often, woken or not.
RECHECK_SECONDS = 0.5
CHANNEL = "lesionsearch:jobs:{kind}"


def _redis():
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))


@lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def _pipe_folder(kind: str) -> Path:
    return Path(settings.JOB_NOTIFY_DIR) / kind


def notify(kind: str) -> None:
    """Wake the readers watching ``kind`` (call once the job's transaction committed). Never
    raises: a reader that misses it re-reads within ``RECHECK_SECONDS``."""
    try:
        if _redis():
            _client(settings.CELERY_BROKER_URL).publish(CHANNEL.format(kind=kind), b"1")
        else:
            wakeup.wake_all(_pipe_folder(kind))
    except Exception:
        logger.warning("could not notify the readers of %s jobs; they re-read within %s s", kind, RECHECK_SECONDS,
                       exc_info=True)


class _PipeWatch:
    def __init__(self, kinds: Iterable[str]) -> None:
        self.pipes: list[wakeup.Pipe] = []
        try:
            for kind in kinds:
                self.pipes.append(wakeup.Pipe(_pipe_folder(kind)))
        except BaseException:
            self.close()
            raise

    def wait(self, timeout: float) -> bool:
        return wakeup.wait_any(self.pipes, timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        self.pipes = []


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
            self.impl = _RedisWatch(kinds) if _redis() else _PipeWatch(kinds)
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
