"""An index build fanned out over worker processes: 1 worker against 2, on a private instance.

Issue 19: the chunks of a build are jobs of their own (``IndexChunk``) that every free worker on
the inference queue takes, so N workers should build in about 1/N of the time. This machine has
2 cores, which bounds what 2 workers can show; so each configuration is timed with the torch
threads of every worker fixed, and the figures say where a speed-up comes from:

* ``1 x 1 thread`` and ``2 x 1 thread``: the fan-out itself (two processes, one core each);
* ``1 x 2 threads``: one process using both cores by intra-op threads (today's ``make run``);
* ``2 x 1 thread`` against ``1 x 2 threads``: what processes give over threads on the same cores.

The instance (SQLite, the filesystem broker, real ``celery worker`` processes as ``make run``
starts them) is set up first: a synthetic library, a brief demo-profile training, a first index.
Each timed build is a full rebuild through ``index_build_request`` (what the admin and the API
do), from the request to the build's DONE row, with the demo's methods (SE-CBIR and every
descriptor it can compute without embeddings).

    .venv/bin/python bench/index_fanout.py [--library 400] [--chunk 16] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import timed_setup  # noqa: E402
from bench.query_end_to_end import setup  # noqa: E402 - the same private instance

#: (worker processes, torch threads each)
LAYOUTS = ((1, 1), (2, 1), (1, 2))


def timed_build(model_version) -> tuple[float, dict]:
    from retrieval.models import IndexChunk, IndexVersion
    from retrieval.services.index import index_build_request

    started = time.perf_counter()
    index = index_build_request(model_version=model_version)
    while True:
        row = IndexVersion.objects.get(id=index.id)
        if row.status in ("done", "failed"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if row.status != "done":
        raise SystemExit(f"build {index.id} failed: {row.message}")
    chunks = IndexChunk.objects.filter(index_id=index.id)
    workers = {}
    for chunk in chunks:
        workers[chunk.worker.split(":")[0]] = workers.get(chunk.worker.split(":")[0], 0) + 1
    return elapsed, {"cases": row.total, "chunks": chunks.count(), "chunks_per_worker": workers,
                     "methods": row.methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=int, default=400, help="synthetic library size")
    parser.add_argument("--chunk", type=int, default=16, help="INDEX_CHUNK_SIZE for the timed builds")
    parser.add_argument("--repeats", type=int, default=1, help="builds per layout (the median is reported)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="lesionsearch-fanout-"))
    base_env = {**os.environ, "LESIONSEARCH_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "lesionsearch.settings",
                "OPENBLAS_NUM_THREADS": "1", "LOG_LEVEL": "warning", "INDEX_CHUNK_SIZE": str(args.chunk),
                "INDEX_CHUNKS_IN_FLIGHT": "4"}
    os.environ.update(base_env)
    import django

    django.setup()
    timed_setup(var, f"library {args.library}, brief demo-profile training", lambda: setup(args.library))

    from lesionsearch.jobs import processes
    from retrieval.services.queries import index_for_queries

    model_version = index_for_queries().model_version
    results = {"library": args.library, "chunk": args.chunk, "cores": os.cpu_count(), "layouts": {}}
    for count, threads in LAYOUTS:
        env = {**base_env, "OMP_NUM_THREADS": str(threads)}  # torch takes its intra-op threads from it
        workers = [processes.start_worker(env=env, log=var / f"worker-{n}.log", queues="inference,light",
                                          hostname=f"bench{n}@%h") for n in range(count)]
        try:
            timed_build(model_version)  # warm-up: each worker loads the models once
            runs = [timed_build(model_version) for _ in range(args.repeats)]
        finally:
            for worker in workers:
                processes.stop_process(worker)
        seconds = statistics.median(elapsed for elapsed, _ in runs)
        name = f"{count} x {threads} thread{'s' if threads > 1 else ''}"
        results["layouts"][name] = {"seconds": seconds, "cases_per_s": runs[0][1]["cases"] / seconds, **runs[-1][1]}
        print(f"{name}: {seconds:.1f} s for {runs[0][1]['cases']} cases in {runs[-1][1]['chunks']} chunks "
              f"({runs[0][1]['cases'] / seconds:.1f} cases/s; chunks per worker {runs[-1][1]['chunks_per_worker']})",
              flush=True)
    layouts = results["layouts"]
    one, two, threaded = (layouts[f] for f in ("1 x 1 thread", "2 x 1 thread", "1 x 2 threads"))
    results["speed_up_2_workers"] = one["seconds"] / two["seconds"]
    results["speed_up_2_threads"] = one["seconds"] / threaded["seconds"]
    results["processes_over_threads"] = threaded["seconds"] / two["seconds"]
    print(f"speed-up of 2 workers over 1 (one thread each): {results['speed_up_2_workers']:.2f}x (ideal 2x on 2 cores)")
    print(f"speed-up of 1 worker with 2 threads over 1 thread: {results['speed_up_2_threads']:.2f}x")
    print(f"2 workers x 1 thread against 1 worker x 2 threads: {results['processes_over_threads']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
