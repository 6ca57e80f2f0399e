"""Starting and stopping a real Celery worker process of this project, as the tests and the
benchmarks do (``scripts/run`` starts the product's own workers)."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class WorkerDidNotStart(RuntimeError):
    """The worker exited or was not ready in time; the message ends with its log's tail."""


def start_worker(*, env: Mapping[str, str], log: Path, queues: str = "inference,light,training",
                 hostname: str = "worker@%h", loglevel: str = "INFO", timeout: float = 120,
                 pool: str = "prefork") -> subprocess.Popen:
    """A ``celery worker`` process (``pool``: one prefork pool process, or ``solo``: the task runs in
    the main process; no gossip or mingle) on ``queues``, its output
    appended to ``log``; returns once it logged ``ready.`` (an INFO line: ``loglevel`` must let it through). Raises :class:`WorkerDidNotStart`
    (after killing it) when it exits or is not ready within ``timeout`` seconds."""
    if loglevel.upper() not in ("DEBUG", "INFO"):
        raise ValueError(f"loglevel {loglevel!r} hides the worker's 'ready.' line; use INFO or DEBUG")
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "lesionsearch", "worker", "-Q", queues, "--pool", pool, "--concurrency", "1",
             "--without-gossip", "--without-mingle", "--loglevel", loglevel, "--hostname", hostname],
            cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while b"ready." not in log.read_bytes()[start:]:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            tail = log.read_bytes()[start:][-3000:].decode(errors="replace")
            raise WorkerDidNotStart(f"the worker did not start (see {log}):\n{tail}")
        time.sleep(0.2)
    return process


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a worker's warm shutdown: it finishes its task), then SIGKILL after ``timeout`` s."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
