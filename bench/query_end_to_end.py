"""End-to-end query latency against the query pipeline's own compute, measured in one run (CPU):
issue 18's targets for a query in two stages (neighbours first, evidence map pairs after).

Sets up a private instance in a temporary folder (SQLite, filesystem broker, media): a
synthetic library, a demo-profile ``secbir-lite0-fast`` model trained briefly on it (its
weights do not change the compute), and its index. Starts a real Celery worker and gunicorn
as separate processes, as ``make run`` does. Then, for each of the library's test images
(one query at a time, as one clinician works):

* end to end: ``POST /api/v1/queries/`` (multipart upload, token auth) until the
  ``GET /api/v1/queries/{id}/?wait=30`` long-poll returns ``done`` JSON (the first stage:
  neighbours, similarities, vote, the query's saliency overlay), on one HTTP/1.1 connection
  kept alive as an integration's client session keeps it; the same image again with a new
  connection per request (urllib), printed beside it;
* the notification gap: when that JSON arrived minus when ``done`` was stored (``finished_at``);
* evidence: from ``done`` until ``?wait=30&until=evidence`` returns every pair ready;
* pipeline compute, in this process with the same model and index: open + resize, saliency
  and 4-channel features, top-k search, query overlay rendering.

Then ``--browser`` queries through the search page in Chromium (Playwright, Debian's
/usr/bin/chromium): from the click on "Search similar cases" to six neighbours on the page.

Prints medians, ``ratio N.NNx`` (target: end to end <= 1.5x the pipeline compute), the
evidence ratio (target: <= 2x after ``done``), the gap (target: <= 50 ms) and ``time to first
neighbours`` in the browser.

    .venv/bin/python bench/query_end_to_end.py [--library 300] [--queries 20] [--browser 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import timed_setup  # noqa: E402


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, token: str, *, data: bytes | None = None, content_type: str | None = None) -> dict:
    """One request on a connection of its own (urllib: connect, ``Connection: close``)."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class Session:
    """Requests on one HTTP/1.1 connection kept alive, as an integration's client session keeps
    it (``requests.Session``, ``httpx.Client``); reopened when it has been idle for a second
    (gunicorn closes idle keep-alive connections after 2 s), so no request is ever retried."""

    def __init__(self, base: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base)
        self.host, self.port, self.token = parts.hostname, parts.port, token
        self.connection: http.client.HTTPConnection | None = None
        self.used = 0.0

    def __call__(self, url: str, token: str | None = None, *, data: bytes | None = None,
                 content_type: str | None = None) -> dict:
        if self.connection is None or time.monotonic() - self.used > 1.0:
            if self.connection is not None:
                self.connection.close()
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        headers = {"Authorization": f"Token {token or self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        path = urllib.parse.urlsplit(url)
        self.connection.request("POST" if data is not None else "GET", path.path + (f"?{path.query}" if path.query else ""),
                                body=data, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        self.used = time.monotonic()
        if response.status >= 400:
            raise SystemExit(f"{url}: HTTP {response.status}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def setup(library: int) -> None:
    """The private instance's database and data: a synthetic library of ``library`` images, split;
    the demo profile's 3- and 4-channel models trained one epoch on the CPU; their index. Also
    what bench/load.py and bench/methods_end_to_end.py set up."""
    from django.conf import settings
    from django.core.management import call_command

    from retrieval.ml.profiles import get_profile
    from retrieval.services import model_train

    call_command("migrate", verbosity=0)
    call_command("make_synthetic_library", "--limit", str(library), verbosity=0)
    call_command("split_library", "--collection", "synthetic", "--seed", "71", verbosity=0)
    profile = get_profile("demo")
    options = profile.stage_options(["3ch", "4ch"], epochs=1, device="cpu", progress=False)
    model_train(config_name=profile.config, stages=["3ch", "4ch"], collection="synthetic", options=options,
                work_dir=Path(settings.MEDIA_ROOT) / "training")
    call_command("build_index", "--here", verbosity=0)


def pipeline_compute(index, image_path: str, k: int) -> float:
    """Seconds of the worker's compute for one query, in this process."""
    from PIL import Image

    from retrieval import runtime
    from retrieval.ml.features import resize_rgb
    from retrieval.ml.overlay import render_overlay

    encoder = runtime.encoder_for(index.model_version)
    loaded = runtime.loaded_index(index)
    start = time.perf_counter()
    with Image.open(image_path) as image:
        size = image.size
        pixels = resize_rgb(image, encoder.config.input_size)
    encoded = encoder.encode(pixels[None])
    loaded.search(encoded.features, k)
    render_overlay(encoded.saliency[0], size)
    return time.perf_counter() - start


def browser_queries(base: str, username: str, password: str, images: list[str]) -> list[float]:
    """Seconds from the click on "Search similar cases" to six neighbours on the result page, per image."""
    from playwright.sync_api import sync_playwright

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        raise SystemExit("--browser needs Debian's chromium at /usr/bin/chromium (never `playwright install`)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # this process's ORM is synchronous; Playwright's loop is not
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = browser.new_context(base_url=base, viewport={"width": 1366, "height": 768}).new_page()
        page.goto("/accounts/login/")
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=Sign out")
        for path in images:
            page.goto("/search/")
            page.get_by_label("Dermoscopic image").set_input_files(path)
            started = time.perf_counter()
            page.get_by_role("button", name="Search similar cases").click()
            page.wait_for_function("document.querySelectorAll('#neighbours > li.neighbour').length >= 6",
                                   timeout=60_000, polling="raf")
            times.append(time.perf_counter() - started)
            # the evidence pairs arrive next; let them, so the next query does not queue behind them
            page.wait_for_function("document.querySelectorAll('details.evidence[data-evidence=\"pending\"]')"
                                   ".length === 0", timeout=60_000)
        browser.close()
    return times


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def _p90_ms(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=int, default=300, help="synthetic library size")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--browser", type=int, default=5, help="queries through the page in Chromium (0: none)")
    parser.add_argument("--port", type=int, default=0, help="web server port (default: a free one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, here and in the worker")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo"], help="the worker's Celery pool")
    args = parser.parse_args()

    if not args.port:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]
    var = Path(tempfile.mkdtemp(prefix="lesionsearch-bench-"))
    env = {**os.environ, "LESIONSEARCH_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "lesionsearch.settings",
           "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": "1", "LOG_LEVEL": "warning"}
    os.environ.update(env)
    import django
    import torch

    torch.set_num_threads(args.threads)
    django.setup()
    timed_setup(var, f"library {args.library}, brief demo-profile training", lambda: setup(args.library))

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from lesionsearch.jobs import processes
    from lesionsearch.roles import CLINICIAN
    from retrieval.models import Case, Query, QueryEvidence
    from retrieval.services.queries import index_for_queries

    password = uuid.uuid4().hex
    user = get_user_model().objects.create_user("bench", password=password)
    user.groups.add(Group.objects.get(name=CLINICIAN))
    token = Token.objects.create(user=user).key
    index = index_for_queries()
    test_images = [case.image.path for case in Case.objects.filter(split="test").order_by("id")]
    images = test_images[:args.queries]

    worker = processes.start_worker(env=env, log=var / "worker.log", queues="inference,light",
                                    hostname="bench@%h", pool=args.pool)
    web_log = open(var / "web.log", "ab")
    # As make run serves: gunicorn, 2 processes x 4 threads (scripts/run).
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "lesionsearch.wsgi:application", "--bind",
                            f"127.0.0.1:{args.port}", "--workers", "2", "--threads", "4", "--timeout", "60"],
                           cwd=REPO, env=env, stdout=web_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        _wait_http(f"{base}/healthz", web)

        session = Session(base, token)

        def end_to_end(path: str, request=session) -> dict:
            data = Path(path).read_bytes()
            body, content_type = _multipart("image", Path(path).name, data)
            start = time.perf_counter()
            created = request(f"{base}/api/v1/queries/", token, data=body, content_type=content_type)
            posted = time.perf_counter()
            result = created
            for _ in range(10):  # the first query waits for the worker to load the model
                result = request(f"{base}/api/v1/queries/{created['id']}/?wait=30", token)
                if result["status"] in ("done", "failed"):
                    break
            done = time.perf_counter()
            arrived = datetime.now(timezone.utc)
            if result["status"] != "done" or len(result["neighbours"]) != 6:
                raise SystemExit(f"query {created['id']} ended {result['status']}: {result['error']}")
            for _ in range(10):
                result = request(f"{base}/api/v1/queries/{created['id']}/?wait=30&until=evidence", token)
                if all(n["evidence"]["status"] != "pending" for n in result["neighbours"]):
                    break
            evidence = time.perf_counter()
            if any(n["evidence"]["status"] != "ready" for n in result["neighbours"]):
                raise SystemExit(f"query {created['id']}: evidence {[n['evidence'] for n in result['neighbours']]}")
            row = Query.objects.get(id=created["id"])
            job = QueryEvidence.objects.get(query=row)
            return {"upload": posted - start, "done": done - start, "evidence_after_done": evidence - done,
                    "gap": (arrived - row.finished_at).total_seconds(),
                    "queue": (row.started_at - row.enqueued_at).total_seconds(),
                    "stage1_worker": (row.finished_at - row.started_at).total_seconds(),
                    "stage2_worker": (job.finished_at - job.started_at).total_seconds()}

        for path in images[:3]:  # warm-up: the worker loads the model and the index on its first query
            end_to_end(path)
            pipeline_compute(index, path, 6)
        for path in images:  # interleaved, so a change in machine load affects all alike
            rows.append({**end_to_end(path), "compute": pipeline_compute(index, path, 6),
                         "done_new_connections": end_to_end(path, request=_request)["done"]})
        session.close()
        browser = (browser_queries(base, "bench", password, test_images[-args.browser:] * 1)
                   if args.browser else [])
    finally:
        for process in (web, worker):
            processes.stop_process(process)
    column = {name: [row[name] for row in rows] for name in rows[0]}
    compute_ms, done_ms = _median_ms(column["compute"]), _median_ms(column["done"])
    evidence_ms, gap_ms = _median_ms(column["evidence_after_done"]), _median_ms(column["gap"])
    ratio, evidence_ratio = done_ms / compute_ms, evidence_ms / compute_ms
    from retrieval.ml.configs import get_config

    config = get_config(index.model_version.config)
    print(f"\nQueries in two stages vs pipeline compute, {len(rows)} queries, {args.threads} threads, "
          f"{config.name} @ {config.input_size} px, library {index.size} vectors, gunicorn + 1 worker ({args.pool})")
    print(f"  pipeline compute            median {compute_ms:7.1f} ms")
    print(f"  upload -> done JSON (API)   median {done_ms:7.1f} ms   p90 {_p90_ms(column['done']):7.1f} ms")
    print(f"    of which: POST {_median_ms(column['upload']):.1f} ms, queue {_median_ms(column['queue']):.1f} ms, "
          f"worker stage 1 {_median_ms(column['stage1_worker']):.1f} ms (medians)")
    print(f"  ratio {ratio:.2f}x   (target <= 1.5x: {'PASS' if ratio <= 1.5 else 'FAIL'})")
    fresh_ms = _median_ms(column["done_new_connections"])
    print(f"    (one keep-alive connection, as a client session; with a new connection per request, "
          f"urllib: {fresh_ms:.1f} ms, {fresh_ms / compute_ms:.2f}x)")
    print(f"  done stored -> JSON received  median {gap_ms:6.1f} ms   max {max(column['gap']) * 1000:6.1f} ms   "
          f"(target <= 50 ms: {'PASS' if max(column['gap']) <= 0.05 else 'FAIL'})")
    print(f"  done -> evidence pairs ready  median {evidence_ms:6.1f} ms   (worker stage 2 "
          f"{_median_ms(column['stage2_worker']):.1f} ms)   evidence ratio {evidence_ratio:.2f}x "
          f"(target <= 2x: {'PASS' if evidence_ratio <= 2 else 'FAIL'})")
    figures = {"queries": len(rows), "compute_ms": compute_ms, "done_ms": done_ms, "ratio": ratio,
               "done_ms_new_connections": fresh_ms,
               "gap_ms_median": gap_ms, "gap_ms_max": max(column["gap"]) * 1000,
               "evidence_after_done_ms": evidence_ms, "evidence_ratio": evidence_ratio}
    if browser:
        first = _median_ms(browser)
        print(f"  time to first neighbours (Chromium, click -> 6 neighbours shown)  median {first:7.1f} ms "
              f"over {len(browser)} queries ({first / compute_ms:.2f}x the compute)")
        figures["browser_first_neighbours_ms"] = first
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
