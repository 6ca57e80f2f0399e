"""Load on loopback: clinicians upload query images while others browse; latency per request kind.

N clinicians each loop: upload an image (``POST /api/v1/queries/``), poll its result
(``GET /api/v1/queries/{id}/`` every ``--poll`` seconds) until done, open its page
(``/queries/{id}/``), think, upload the next. M others browse at the same time with a short think
time: the library, the search page (the query list), their query pages, and the API reads
``/api/v1/queries/``, ``/api/v1/methods/`` and ``/api/v1/index/``. Every request goes through a real
WSGI server (gunicorn, several processes and threads, as the Dockerfile runs it) to a real Celery
worker that runs every model pass, so the web tier's latency is measured while the worker is busy.

Reports requests, throughput and latency p50/p95/p99/max per request kind, then checks that no
query was lost or duplicated: every accepted upload reaches ``done`` exactly once, each clinician's
query list holds exactly what they submitted, no result repeats a neighbour, and (with database
access) the Query rows equal the submissions. Exits 1 when a check fails or a page/API read's p99
is over ``--max-p99-ms`` (300).

    .venv/bin/python bench/load.py --duration 120 --clinicians 4 --browsers 8 --clinician-think 0.25
        a private instance in a temporary folder (SQLite, filesystem broker; or PostgreSQL + Redis
        when run under scripts/with-services): a synthetic library, a Lite0 model trained one
        epoch on it, its index, then gunicorn + one Celery worker (about 3 minutes of setup)
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --login clinician:PASSWORD
        a running instance (make run, docker compose); the accounts need the clinician role

tests/test_load.py runs a short version in CI against the tiny test index.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
#: Request kinds that must stay fast while the worker is busy (the web tier never runs inference).
READ_KINDS = ("page_library", "page_search", "page_query", "api_queries", "api_methods", "api_index",
              "api_query_poll")
FINAL = ("done", "failed")


# --- HTTP ------------------------------------------------------------------------------------
class Recorder:
    """Latencies (seconds) and statuses per request kind, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[str, list[tuple[float, int]]] = {}
        self.unexpected: list[str] = []

    def add(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.samples.setdefault(kind, []).append((seconds, status))

    def fail(self, message: str) -> None:
        with self.lock:
            self.unexpected.append(message)


class Session:
    """One virtual user: its own cookies (session, CSRF), a new loopback connection per request."""

    def __init__(self, base: str, recorder: Recorder) -> None:
        url = urlparse(base)
        self.host, self.port = url.hostname, url.port or 80
        self.recorder = recorder
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, kind: str | None, body: bytes | None = None,
                headers: dict | None = None, expect=(200,)) -> tuple[int, bytes, http.client.HTTPResponse]:
        # As the TLS-terminating proxy in front of production sends it (production settings
        # redirect plain HTTP and check the origin of unsafe requests).
        headers = {"X-Forwarded-Proto": "https", **(headers or {})}
        if method != "GET":
            headers.setdefault("Origin", f"https://{self.host}:{self.port}")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if method != "GET" and "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        start = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            if kind:
                self.recorder.add(kind, time.perf_counter() - start, 0)
            self.recorder.fail(f"{method} {path}: {exc.__class__.__name__}: {exc}")
            return 0, b"", None
        finally:
            connection.close()
        if kind:
            self.recorder.add(kind, time.perf_counter() - start, response.status)
        for cookie in response.msg.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.status not in expect:
            self.recorder.fail(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
        return response.status, data, response

    def login(self, username: str, password: str) -> None:
        _, page, _ = self.request("GET", "/accounts/login/", kind=None)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not token:
            raise RuntimeError("no CSRF token on the login page")
        form = f"csrfmiddlewaretoken={token.group(1).decode()}&username={username}&password={password}".encode()
        status, _, _ = self.request("POST", "/accounts/login/", kind=None, body=form, expect=(302,),
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        if status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"could not sign in as {username!r} (HTTP {status})")

    def json(self, path: str, kind: str) -> dict | None:
        status, data, _ = self.request("GET", path, kind=kind)
        return json.loads(data) if status == 200 else None


def multipart(field_values: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in field_values.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- The load ----------------------------------------------------------------------------------
@dataclass
class Submission:
    user: str
    id: int
    submitted: float
    finished: float | None = None
    status: str = "pending"
    timed: bool = True


@dataclass
class Result:
    duration: float
    samples: dict[str, list[tuple[float, int]]]
    submissions: list[Submission]
    unexpected: list[str]
    problems: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, dict]:
        out = {}
        for kind, rows in sorted(self.samples.items()):
            out[kind] = _row(rows, self.duration)
        reads = [row for kind, rows in self.samples.items() if kind in READ_KINDS for row in rows]
        if reads:
            out["all_reads"] = _row(reads, self.duration)
        done = sorted(s.finished - s.submitted for s in self.submissions if s.finished is not None and s.timed)
        if done:
            out["query_end_to_end"] = {"n": len(done), "errors": sum(1 for s in self.submissions if s.status != "done"),
                                       "per_s": len(done) / self.duration, "p50_ms": _pct(done, 50) * 1000,
                                       "p95_ms": _pct(done, 95) * 1000, "p99_ms": _pct(done, 99) * 1000,
                                       "max_ms": done[-1] * 1000}
        return out


def _row(rows: list[tuple[float, int]], duration: float) -> dict:
    times = sorted(seconds for seconds, _ in rows)
    return {"n": len(rows), "errors": sum(1 for _, s in rows if s == 0 or s >= 500), "per_s": len(rows) / duration,
            "p50_ms": _pct(times, 50) * 1000, "p95_ms": _pct(times, 95) * 1000, "p99_ms": _pct(times, 99) * 1000,
            "max_ms": times[-1] * 1000}


def _pct(sorted_values: list[float], percentile: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(percentile / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def run_load(base: str, *, clinicians: list[tuple[str, str]], browsers: list[tuple[str, str]], images: list[bytes],
             duration: float, max_queries: int | None = None, poll: float = 0.25, clinician_think: float = 1.0,
             browser_think: float = 0.5, drain: float = 120.0, warmup: float = 180.0) -> Result:
    """Run the load for ``duration`` seconds (clinicians stop uploading after ``max_queries`` in all),
    wait up to ``drain`` seconds for the last queries, then check them through the API. First one
    warm-up query (not timed, but checked like the others) lets the worker load its model."""
    recorder = Recorder()
    submissions: list[Submission] = []
    lock = threading.Lock()
    image_cycle = itertools.cycle(images)
    budget = itertools.count()
    clock = {"start": time.monotonic(), "deadline": time.monotonic() + duration}

    def go() -> None:  # the clock starts once everyone is signed in
        clock["start"] = time.monotonic()
        clock["deadline"] = clock["start"] + duration

    ready = threading.Barrier(len(clinicians) + len(browsers) + 1, action=go)
    mine: dict[int, Session] = {}

    def signed_in(username: str, password: str) -> Session:
        session = Session(base, recorder)
        try:
            session.login(username, password)
        except BaseException:
            ready.abort()  # nobody waits for a user that cannot sign in
            raise
        ready.wait()
        return session

    def clinician(username: str, password: str) -> None:
        session = signed_in(username, password)
        while time.monotonic() < clock["deadline"] and (max_queries is None or next(budget) < max_queries):
            with lock:
                data = next(image_cycle)
            body, content_type = multipart({"k": "6"}, f"load-{uuid.uuid4().hex[:8]}.jpg", data)
            status, raw, response = session.request("POST", "/api/v1/queries/", kind="upload", body=body,
                                                    headers={"Content-Type": content_type}, expect=(202, 429))
            if status == 429:  # the per-user limit: honour it like a client should
                time.sleep(float(response.getheader("Retry-After") or 1))
                continue
            if status != 202:
                continue
            sub = Submission(username, json.loads(raw)["id"], time.monotonic())
            with lock:
                submissions.append(sub)
                mine[sub.id] = session
            while time.monotonic() < clock["deadline"] + drain:
                result = session.json(f"/api/v1/queries/{sub.id}/", "api_query_poll")
                if result and result["status"] in FINAL:
                    sub.status, sub.finished = result["status"], time.monotonic()
                    break
                time.sleep(poll)
            session.request("GET", f"/queries/{sub.id}/", kind="page_query")
            time.sleep(clinician_think)

    def browser(username: str, password: str) -> None:
        session = signed_in(username, password)
        own: list[int] = []
        steps = itertools.cycle(["page_library", "api_queries", "page_search", "api_methods", "page_query",
                                 "api_index", "page_library", "api_queries"])
        while time.monotonic() < clock["deadline"]:
            kind = next(steps)
            if kind == "page_library":
                session.request("GET", "/library/", kind=kind)
            elif kind == "page_search":
                session.request("GET", "/search/", kind=kind)
            elif kind == "page_query":
                if own:
                    session.request("GET", f"/queries/{own[0]}/", kind=kind)
            elif kind == "api_queries":
                listed = session.json("/api/v1/queries/", kind)
                own = [row["id"] for row in (listed or {}).get("results", [])] or own
            elif kind == "api_methods":
                session.json("/api/v1/methods/", kind)
            elif kind == "api_index":
                session.json("/api/v1/index/", kind)
            time.sleep(browser_think)

    if warmup:  # the worker loads the model and the index on its first query: not part of the load
        session = Session(base, recorder)
        session.login(*clinicians[0])
        body, content_type = multipart({"k": "6"}, "warm-up.jpg", images[0])
        _, raw, _ = session.request("POST", "/api/v1/queries/", kind=None, body=body, expect=(202,),
                                    headers={"Content-Type": content_type})
        sub = Submission(clinicians[0][0], json.loads(raw)["id"], time.monotonic(), timed=False)
        for _ in range(int(warmup / 5)):
            result = session.json(f"/api/v1/queries/{sub.id}/?wait=5", kind=None)
            if result and result["status"] in FINAL:
                sub.status, sub.finished = result["status"], time.monotonic()
                break
        submissions.append(sub)
        mine[sub.id] = session
    threads = [threading.Thread(target=clinician, args=account, daemon=True) for account in clinicians]
    threads += [threading.Thread(target=browser, args=account, daemon=True) for account in browsers]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"a virtual user could not sign in: {recorder.unexpected[:3]}") from None
    for thread in threads:
        thread.join(timeout=duration + drain + 60)
    elapsed = time.monotonic() - clock["start"]
    result = Result(duration=elapsed, samples=recorder.samples, submissions=submissions,
                    unexpected=list(recorder.unexpected))
    result.problems += [f"{thread.name} did not finish" for thread in threads if thread.is_alive()]
    result.problems += check_queries(base, clinicians, submissions, mine, recorder)
    return result


def check_queries(base: str, clinicians: list[tuple[str, str]], submissions: list[Submission],
                  sessions: dict[int, Session], recorder: Recorder) -> list[str]:
    """No lost or duplicated query, through the API: each submission done, listed once for its user."""
    problems = []
    ids = [s.id for s in submissions]
    if len(ids) != len(set(ids)):
        problems.append("the API gave two uploads the same query id")
    for sub in submissions:
        if sub.status != "done":
            problems.append(f"query {sub.id} of {sub.user} ended {sub.status!r}")
            continue
        result = sessions[sub.id].json(f"/api/v1/queries/{sub.id}/", kind=None)
        ranks = [n["rank"] for n in result["neighbours"]]
        cases = [n["case_id"] for n in result["neighbours"]]
        if ranks != list(range(1, result["k"] + 1)) or len(set(cases)) != len(cases):
            problems.append(f"query {sub.id}: neighbours ranks {ranks}, cases {cases}")
    for username, password in dict(clinicians).items():
        session = Session(base, recorder)
        session.login(username, password)
        listed, path = [], "/api/v1/queries/"
        while path:
            page = session.json(path, kind=None)
            listed += [row["id"] for row in page["results"]]
            path = urlparse(page["next"]).path + "?" + urlparse(page["next"]).query if page["next"] else None
        submitted = {s.id for s in submissions if s.user == username}
        if len(listed) != len(set(listed)):
            problems.append(f"{username}'s query list repeats a query")
        if not submitted <= set(listed):
            problems.append(f"{username}'s queries {sorted(submitted - set(listed))} are missing from their list")
    return problems


def report(result: Result, *, max_p99_ms: float, title: str = "") -> list[str]:
    """Print the table; return the failed checks (p99 of reads, lost/duplicated queries, 5xx)."""
    stats = result.stats()
    print(f"\n{title}\n{'kind':18} {'n':>6} {'err':>4} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")
    for kind, row in stats.items():
        print(f"{kind:18} {row['n']:6d} {row['errors']:4d} {row['per_s']:7.2f} {row['p50_ms']:8.1f} "
              f"{row['p95_ms']:8.1f} {row['p99_ms']:8.1f} {row['max_ms']:8.1f}")
    total = sum(len(rows) for rows in result.samples.values())
    done = sum(1 for s in result.submissions if s.status == "done")
    print(f"{total} requests in {result.duration:.1f} s ({total / result.duration:.1f}/s); "
          f"{len(result.submissions)} queries submitted, {done} done")
    failed = list(result.problems)
    # p99 of every page and API read together, and of each kind with enough requests for its p99
    # not to be just its slowest one (100)
    failed += [f"{kind}: p99 {row['p99_ms']:.0f} ms > {max_p99_ms:.0f} ms" for kind, row in stats.items()
               if (kind == "all_reads" or kind in READ_KINDS and row["n"] >= 100) and row["p99_ms"] > max_p99_ms]
    failed += [f"{kind}: {row['errors']} server errors or dropped connections" for kind, row in stats.items()
               if row["errors"] and kind not in ("query_end_to_end", "all_reads")]
    failed += result.unexpected[:20]
    return failed


# --- Servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    target = urlparse(url)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=2)
            connection.request("GET", target.path, headers={"X-Forwarded-Proto": "https"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def start_gunicorn(port: int, env: dict[str, str], log: Path, *, workers: int = 3,
                   threads: int = 4) -> subprocess.Popen:
    """gunicorn as the Dockerfile runs it (with threads: several requests per process at once)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "lesionsearch.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(threads), "--timeout", "60"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
    except BaseException:
        stop(process)
        raise
    return process


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    from lesionsearch.jobs import processes

    return processes.start_worker(env=env, log=log, queues="inference,light", hostname="load@%h")


def stop(process: subprocess.Popen) -> None:
    from lesionsearch.jobs import processes

    processes.stop_process(process)


# --- A private instance ---------------------------------------------------------------------------
def setup_instance(library: int, clinicians: int, browsers: int) -> tuple[list, list, list[bytes]]:
    """Library, split, a Lite0 (demo profile) model trained one epoch, its index, users. Returns the
    clinician and browser accounts and the query images (the test split's)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from bench.query_end_to_end import setup
    from lesionsearch.roles import CLINICIAN
    from retrieval.models import Case

    setup(library)  # the same library, split, model and index as the end-to-end benchmark
    call_command("collectstatic", "--no-input", verbosity=0)
    group = Group.objects.get(name=CLINICIAN)
    accounts = []
    for name in [f"load-clinician-{i}" for i in range(clinicians)] + [f"load-browser-{i}" for i in range(browsers)]:
        password = secrets.token_urlsafe(12)
        get_user_model().objects.create_user(name, password=password).groups.add(group)
        accounts.append((name, password))
    images = [case.image.read() for case in Case.objects.filter(split="test").order_by("id")]
    return accounts[:clinicians], accounts[clinicians:], images


def worker_busy_share(submissions: list[Submission], duration: float) -> float:
    """Share of the run during which the worker was running a query or its second stage (the
    evidence pairs), from the rows' own start and finish times (needs database access)."""
    from retrieval.models import Query, QueryEvidence

    timed = [s.id for s in submissions if s.timed]  # not the warm-up query, before the clock
    spans = sorted([(q.started_at, q.finished_at) for q in Query.objects.filter(
                       id__in=timed, started_at__isnull=False, finished_at__isnull=False)]
                   + [(e.started_at, e.finished_at) for e in QueryEvidence.objects.filter(
                       query_id__in=timed, started_at__isnull=False, finished_at__isnull=False)])
    busy, end = 0.0, None
    for started, finished in spans:  # the union of the spans: the worker runs one job at a time
        if end is None or started > end:
            busy += (finished - started).total_seconds()
            end = finished
        elif finished > end:
            busy += (finished - end).total_seconds()
            end = finished
    return busy / duration


def database_check(submissions: list[Submission]) -> list[str]:
    """Query rows equal submissions; each done once with one row per rank."""
    from django.db.models import Count

    from retrieval.models import Query, QueryNeighbour

    problems = []
    rows = Query.objects.count()
    if rows != len(submissions):
        problems.append(f"{rows} Query rows for {len(submissions)} accepted uploads")
    ids = [s.id for s in submissions]
    reruns = list(Query.objects.filter(id__in=ids, attempts__gt=1).values_list("id", flat=True))
    if reruns:
        problems.append(f"queries run more than once: {reruns}")
    repeated = (QueryNeighbour.objects.filter(query_id__in=ids).values("query_id", "rank")
                .annotate(n=Count("id")).filter(n__gt=1).count())
    if repeated:
        problems.append(f"{repeated} neighbour ranks stored twice")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--clinicians", type=int, default=4, help="clinicians uploading (default 4)")
    parser.add_argument("--browsers", type=int, default=8, help="users browsing pages and the API (default 8)")
    parser.add_argument("--max-queries", type=int, help="stop uploading after this many queries in all")
    parser.add_argument("--clinician-think", type=float, default=1.0,
                        help="seconds a clinician waits between a result and the next upload (default 1; "
                             "0.25 keeps one worker saturated)")
    parser.add_argument("--max-p99-ms", type=float, default=300)
    parser.add_argument("--url", help="load a running instance instead of setting one up")
    parser.add_argument("--login", action="append", default=[], metavar="USER:PASSWORD",
                        help="with --url: clinician-role accounts, used in turn by the virtual users")
    parser.add_argument("--images", type=Path, help="with --url: a folder of JPEG query images")
    parser.add_argument("--library", type=int, default=300, help="synthetic library size of the private instance")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn processes (default 3)")
    parser.add_argument("--web-threads", type=int, default=4, help="gunicorn threads per process (default 4)")
    parser.add_argument("--worker-threads", type=int, default=1, help="torch threads in the Celery worker")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    processes = []
    if args.url:
        if not args.login or not args.images:
            parser.error("--url needs --login USER:PASSWORD and --images DIR")
        logins = [tuple(login.split(":", 1)) for login in args.login]
        accounts = [logins[i % len(logins)] for i in range(args.clinicians + args.browsers)]
        clinicians, browsers = accounts[:args.clinicians], accounts[args.clinicians:]
        images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))][:50]
        base = args.url.rstrip("/")
    else:
        var = Path(tempfile.mkdtemp(prefix="lesionsearch-load-"))
        env = {**os.environ, "LESIONSEARCH_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "lesionsearch.settings",
               "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1,localhost",
               "OMP_NUM_THREADS": str(args.worker_threads), "OPENBLAS_NUM_THREADS": "1", "LOG_LEVEL": "warning"}
        os.environ.update(env)
        import django

        from bench._common import timed_setup

        django.setup()
        clinicians, browsers, images = timed_setup(
            var, f"library {args.library}", lambda: setup_instance(args.library, args.clinicians, args.browsers))
        port = free_port()
        processes.append(start_worker(env, var / "worker.log"))
        processes.append(start_gunicorn(port, env, var / "web.log", workers=args.web_workers,
                                        threads=args.web_threads))
        base = f"http://127.0.0.1:{port}"
    try:
        print(f"{args.clinicians} clinicians uploading, {args.browsers} browsing, {args.duration:.0f} s ...", flush=True)
        result = run_load(base, clinicians=clinicians, browsers=browsers, images=images, duration=args.duration,
                          max_queries=args.max_queries, clinician_think=args.clinician_think)
        busy = None
        if not args.url:
            result.problems += database_check(result.submissions)
            busy = worker_busy_share(result.submissions, result.duration)
    finally:
        for process in reversed(processes):
            stop(process)
    failed = report(result, max_p99_ms=args.max_p99_ms,
                    title=f"load average {os.getloadavg()[0]:.2f} at the end; {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({"stats": result.stats(), "failed": failed, "worker_busy": busy}, indent=1))
    if busy is not None:
        print(f"worker busy {busy:.0%} of the run (queries and their evidence stage)")
    print("\n".join(["FAILED:"] + failed) if failed else "all checks held")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
