"""End-to-end API query latency against the query pipeline's own compute, measured in one run (CPU).

Sets up a private instance in a temporary folder (SQLite, filesystem broker, media): a
synthetic library, a demo-profile ``secbir-lite0-fast`` model trained briefly on it (its
weights do not change the compute), and its index. Starts a real Celery worker and the web
server as separate processes, like ``make run``. Then, for each of the library's test images:

* end to end: ``POST /api/v1/queries/`` (multipart upload, token auth) until the
  ``GET /api/v1/queries/{id}/?wait=30`` long-poll returns ``done`` JSON;
* pipeline compute, in this process with the same model and index: open + resize, saliency
  and 4-channel features, top-k search, query overlay rendering.

Prints medians and the ratio (target: end to end <= 1.5x the pipeline compute).

    .venv/bin/python bench/query_end_to_end.py [--library 300] [--queries 20] [--port N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, token: str, *, data: bytes | None = None, content_type: str | None = None) -> dict:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=int, default=300, help="synthetic library size")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--port", type=int, default=0, help="web server port (default: a free one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, here and in the worker")
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
    print(f"Setting up a private instance in {var} (library {args.library}, brief demo-profile training) ...",
          flush=True)
    started = time.monotonic()
    setup(args.library)
    print(f"  ready in {time.monotonic() - started:.0f} s", flush=True)

    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from lesionsearch.roles import CLINICIAN
    from retrieval.models import Case
    from retrieval.services.queries import index_for_queries

    user = get_user_model().objects.create_user("bench", password=uuid.uuid4().hex)
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name=CLINICIAN))
    token = Token.objects.create(user=user).key
    index = index_for_queries()
    images = [case.image.path for case in Case.objects.filter(split="test").order_by("id")[:args.queries]]

    log = open(var / "processes.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "lesionsearch", "worker", "-Q", "inference,light",
                               "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    web = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"],
                           cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    try:
        _wait_http(f"{base}/healthz", web)

        def end_to_end(path: str) -> float:
            data = Path(path).read_bytes()
            body, content_type = _multipart("image", Path(path).name, data)
            start = time.perf_counter()
            created = _request(f"{base}/api/v1/queries/", token, data=body, content_type=content_type)
            result = created
            for _ in range(10):  # the first query waits for the worker to load the model
                result = _request(f"{base}/api/v1/queries/{created['id']}/?wait=30", token)
                if result["status"] in ("done", "failed"):
                    break
            elapsed = time.perf_counter() - start
            if result["status"] != "done" or len(result["neighbours"]) != 6:
                raise SystemExit(f"query {created['id']} ended {result['status']}: {result['error']}")
            return elapsed

        for path in images[:3]:  # warm-up: the worker loads the model and the index on its first query
            end_to_end(path)
            pipeline_compute(index, path, 6)
        e2e, compute = [], []
        for path in images:  # interleaved, so a change in machine load affects both alike
            e2e.append(end_to_end(path))
            compute.append(pipeline_compute(index, path, 6))
    finally:
        for process in (web, worker):
            process.terminate()
            process.wait(timeout=30)
    e2e_ms, compute_ms = statistics.median(e2e) * 1000, statistics.median(compute) * 1000
    ratio = e2e_ms / compute_ms
    from retrieval.ml.configs import get_config

    config = get_config(index.model_version.config)
    print(f"\nEnd-to-end API query vs pipeline compute, {len(images)} queries, {args.threads} threads, "
          f"{config.name} @ {config.input_size} px, library {index.size} vectors")
    print(f"  pipeline compute   median {compute_ms:7.1f} ms")
    print(f"  end to end (HTTP)  median {e2e_ms:7.1f} ms   p90 {sorted(e2e)[int(0.9 * (len(e2e) - 1))] * 1000:7.1f} ms")
    print(f"  ratio              {ratio:7.2f}x   (target <= 1.5x: {'PASS' if ratio <= 1.5 else 'FAIL'})")


if __name__ == "__main__":
    main()
