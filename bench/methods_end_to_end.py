"""Per-query cost of each retrieval method, end to end in the worker's code path (CPU), measured in one run.

Sets up a private instance in a temporary folder (as ``bench/query_end_to_end.py`` does): a
synthetic library, a demo-profile ``secbir-lite0-fast`` model, contrastive and triplet
embeddings trained briefly (their weights do not change the compute) and an index that serves
every method. Then, for each method and each of the library's test images, submits a query
(``query_submit``) and times ``query_run`` in this process: image decode and resize, SE-CBIR
saliency and features (always computed: the saliency overlay and the out-of-distribution check),
the method's own descriptors, scoring against the whole index, the overlays and the evidence
map pairs, and the database writes. Methods are interleaved per image, so a change in machine
load affects all alike. Prints median / p90 per method and the ratio to SE-CBIR (the default).

With ``--evaluate DIR`` it also runs ``evaluate_retrieval --methods all --out DIR`` on the same
instance (every method scored on the same split; with this brief training the figures show the
pipeline working, not what the methods can reach).

    .venv/bin/python bench/methods_end_to_end.py [--library 300] [--queries 10] [--threads 2] [--evaluate DIR]
                                                 [--reuse DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import timed_setup  # noqa: E402


def setup(library: int) -> None:
    from django.core.management import call_command

    from bench.query_end_to_end import setup as setup_secbir

    setup_secbir(library)  # library, split, 3- and 4-channel models, an SE-CBIR index
    for stage in ("contrastive", "triplet"):
        call_command("train_model", "--profile", "demo", "--stage", stage, "--epochs", "1", "--device", "cpu",
                     verbosity=0)
    call_command("build_index", "--here", verbosity=0)  # now with both embeddings: all thirteen methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", type=int, default=300, help="synthetic library size")
    parser.add_argument("--queries", type=int, default=10, help="test images, each queried with every method")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="an instance folder a previous run set up (its path is printed): skip the setup")
    parser.add_argument("--evaluate", type=Path, metavar="DIR",
                        help="also write evaluate_retrieval --methods all's tables into DIR")
    args = parser.parse_args()

    var = args.reuse.resolve() if args.reuse else Path(tempfile.mkdtemp(prefix="lesionsearch-bench-methods-"))
    os.environ.update({"LESIONSEARCH_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "lesionsearch.settings",
                       "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": "1", "LOG_LEVEL": "warning"})
    import django
    import torch

    torch.set_num_threads(args.threads)
    django.setup()
    if args.reuse:
        print(f"Reusing the instance in {var}", flush=True)
    else:
        timed_setup(var, f"library {args.library}, brief training", lambda: setup(args.library))

    from django.contrib.auth import get_user_model

    from retrieval.methods import DEFAULT_METHOD, METHODS
    from retrieval.models import Case, Query
    from retrieval.services import queries as services

    services._enqueue = lambda query_id: None  # this process runs each query itself
    index = services.index_for_queries()
    methods = services.index_methods(index)
    missing = sorted(set(METHODS) - set(methods))
    if missing:
        raise SystemExit(f"the index does not serve {', '.join(missing)}")
    user = get_user_model().objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
    images = [case.image.read() for case in Case.objects.filter(split="test").order_by("id")[:args.queries + 1]]

    def run(data: bytes, method: str) -> float:
        query = services.query_submit(user=user, image_data=data, method=method)
        start = time.perf_counter()
        services.query_run(query_id=query.id, worker="bench")
        elapsed = time.perf_counter() - start
        query = Query.objects.get(id=query.id)
        if query.status != "done" or query.neighbours.count() != 6:
            raise SystemExit(f"{method} query {query.id} ended {query.status}: {query.message}")
        return elapsed

    for method in methods:  # warm-up: models, index files and descriptor memory maps load on first use
        run(images[0], method)
    times: dict[str, list[float]] = {method: [] for method in methods}
    for data in images[1:]:
        for method in methods:
            times[method].append(run(data, method))

    if args.evaluate:
        from django.core.management import call_command

        call_command("evaluate_retrieval", "--methods", "all", "--out", str(args.evaluate.resolve()), verbosity=0)
        print(f"evaluate_retrieval --methods all: tables in {args.evaluate}")

    base = statistics.median(times[DEFAULT_METHOD])
    print(f"\nEnd-to-end query cost per method (query_run in process), {len(images) - 1} queries each, "
          f"{args.threads} torch threads, {index.model_version.config}, library {index.size} cases; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'method':<12} {'median ms':>10} {'p90 ms':>8} {'x secbir':>9}")
    for method in methods:
        values = sorted(times[method])
        median = statistics.median(values)
        print(f"{method:<12} {median * 1000:10.0f} {values[int(0.9 * (len(values) - 1))] * 1000:8.0f} "
              f"{median / base:9.2f}")


if __name__ == "__main__":
    main()
