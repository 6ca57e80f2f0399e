"""One copy of the index per host: FAISS HNSW memory-mapped, shared by worker processes.

Builds (or reuses, from ``--dir``) an index folder like the product's, holding ``--size``
synthetic 1280-d vectors (default 1M; the generator of ``bench/search_backends.py``):
``features.npy``, ``backend/faiss-hnsw/`` (index.faiss + manifest.json) saved by
``FaissHNSWBackend.save``, and the exact top-6 of ``--queries`` held-out queries. Then starts
``--workers`` separate worker processes, one after the other, each loading the folder as the
product's worker does (``retrieval.loaders.load_index_vectors``: features.npy and the FAISS
index memory-mapped) and answering every query one at a time, and, with all of them still
running, reads each one's ``/proc/PID/smaps_rollup`` (Rss, Pss, Shared_Clean, Anonymous) and
its mappings of index.faiss and features.npy from ``/proc/PID/smaps``. Prints per-worker load
time, p50/p99 latency, recall@6 against exact search, memory, and ``index held once per host:
yes/no`` (from PSS: the workers' PSS of index.faiss adds up to one copy, and no worker holds
the index in anonymous memory).

``--qdrant-size N`` (default 20000; 0 skips it) also runs the same kind of vectors through
Qdrant's local mode (``qdrant_client``, in-process, brute force) and compares its top-6 with
the exact search: correctness only, its timings are not a speed figure.

    .venv/bin/python bench/scale.py --dir /tmp/scale-bench [--size 1000000] [--queries 500]
                                    [--workers 2] [--qdrant-size 20000]

The first run at 1M builds the HNSW graph (17-25 min on 2 shared cores) and writes ~10 GB to
``--dir``; later runs with the same ``--dir`` and ``--size`` reuse it (the build's figures are
kept in ``build.json``). Run it with ``nice``: the build uses every core.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.search_backends import (  # noqa: E402
    DIMENSION, K, Generator, exact_topk_chunked, generate_library, latencies_ms, percentiles, recall_at_k, rss_kb,
)

ROOT = Path(__file__).resolve().parent.parent
FULL_SIZE = 1_000_000
MIN_SIZE = 1_000
QDRANT_QUERIES = 100
P99_TARGET_MS = 10.0
RECALL_TARGET = 0.98
#: The workers' PSS of index.faiss may exceed one copy of what they map by this much and still
#: count as held once (page-granular rounding); anonymous memory growing by half the index file
#: or more in a worker would mean a private copy (one is the whole file).
SHARED_SLACK = 1.05
PRIVATE_SHARE = 0.5
FEATURES_FILE = "features.npy"  # as retrieval.loaders names them
BACKEND_DIR = "backend"
KIND = "faiss-hnsw"


def mib(kb: float) -> float:
    return kb / 1024


# --- build (its own process: its 5 GB of graph-building memory is gone before the workers) ---

def part_build(folder: Path, size: int, queries: int) -> dict:
    from retrieval.ml.search import FaissHNSWBackend

    folder.mkdir(parents=True, exist_ok=True)
    made = generate_library(folder / FEATURES_FILE, size, queries)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    backend = FaissHNSWBackend.build(made.library)  # validates every row, the graph, full SHA-256
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    saved = backend.save(folder / BACKEND_DIR)
    save_s = time.perf_counter() - started
    record = {"size": size, "queries": queries, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "generate_s": made.generate_s, "truth_s": made.truth_s, "build_s": build_s, "save_s": save_s,
              "load_average_build_start": load_start, "load_average_build_end": os.getloadavg()[0],
              "cores": os.cpu_count(), "parameters": backend.parameters,
              "index_file_mib": (saved / "index.faiss").stat().st_size / 2**20,
              "features_file_mib": (folder / FEATURES_FILE).stat().st_size / 2**20}
    (folder / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def cached_build(folder: Path, size: int, queries: int) -> dict | None:
    path = folder / "build.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if (record.get("size"), record.get("queries")) != (size, queries):
        raise SystemExit(f"{folder} holds a build of {record.get('size')} vectors and {record.get('queries')} queries, "
                         f"not {size} and {queries}: use another --dir")
    return record


# --- a worker ------------------------------------------------------------------------------

def part_worker(folder: Path) -> None:
    """Load as the product's worker does, search every query, report, wait to be measured."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lesionsearch.settings")
    import django

    django.setup()  # retrieval.loaders imports the models; no database is touched
    from retrieval.loaders import load_index_vectors

    queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    anonymous_before = rss_kb("RssAnon")
    started = time.perf_counter()
    features, backend = load_index_vectors(folder, kind=KIND, faiss_min_vectors=1)
    load_s = time.perf_counter() - started
    # The first pass faults the graph's pages in (from the page cache, or disk when cold);
    # the second is the steady state a long-running worker sees.
    first = latencies_ms(lambda q: backend.search(q, K), queries, warmup=0)
    second = latencies_ms(lambda q: backend.search(q, K), queries)
    found, _ = backend.search(queries, K)
    report = {"pid": os.getpid(), "load_s": load_s, "anonymous_growth_kb": rss_kb("RssAnon") - anonymous_before, "memory_mapped": backend.memory_mapped,
              "features_is_memmap": isinstance(features, np.memmap), "recall_at_6": recall_at_k(found, truth),
              "first_pass": percentiles(first), **percentiles(second)}
    print(json.dumps(report), flush=True)
    sys.stdin.readline()  # stay alive (mappings intact) until the parent has read /proc


def smaps_rollup(pid: int) -> dict:
    """Rss, Pss, Shared_Clean, Private_Clean/Dirty, Anonymous of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def mapping_of(pid: int, path: Path) -> dict:
    """Rss and Pss (kB) of a process's mappings of one file, from /proc/PID/smaps."""
    target, totals, inside = str(path.resolve()), {"Rss": 0, "Pss": 0}, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = line.rstrip().endswith(target)
        elif inside and head and head[0].rstrip(":") in totals:
            totals[head[0].rstrip(":")] += int(head[1])
    return totals


def run_workers(folder: Path, count: int) -> list[dict]:
    workers, reports = [], []
    try:
        for _ in range(count):  # one after the other: each one's latency is its own
            process = subprocess.Popen([sys.executable, __file__, "--part", "worker", "--dir", str(folder)],
                                       cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
            workers.append(process)
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {process.pid} failed (exit {process.wait()})")
            reports.append(json.loads(line))
        index_file = folder / BACKEND_DIR / KIND / "index.faiss"
        for report in reports:  # every worker alive and mapped: PSS splits what they share
            report["smaps"] = smaps_rollup(report["pid"])
            report["index_map"] = mapping_of(report["pid"], index_file)
            report["features_map"] = mapping_of(report["pid"], folder / FEATURES_FILE)
    finally:
        for process in workers:
            if process.poll() is None:
                process.stdin.write("quit\n")
                process.stdin.close()
                process.wait(timeout=60)
    return reports


def held_once(reports: list[dict], index_kb: float) -> tuple[bool, str]:
    pss = sum(r["index_map"]["Pss"] for r in reports)
    rss = max(r["index_map"]["Rss"] for r in reports)
    growth = max(r["anonymous_growth_kb"] for r in reports)
    ok = pss <= SHARED_SLACK * rss and growth <= PRIVATE_SHARE * index_kb
    return ok, (f"workers' PSS of index.faiss {mib(pss):.0f} MiB in all vs {mib(rss):.0f} MiB mapped by one; "
                f"anonymous memory grew by at most {mib(growth):.0f} MiB in a worker's load and searches, "
                f"vs the {mib(index_kb):.0f} MiB file")


# --- Qdrant local mode (correctness) -----------------------------------------------------------

def qdrant_check(size: int) -> dict:
    from qdrant_client import QdrantClient, models

    generator = Generator(size)
    library = np.empty((size, DIMENSION), dtype=np.float32)
    generator.fill(library)
    queries = generator.queries(QDRANT_QUERIES)
    truth, truth_scores = exact_topk_chunked(queries, library, K)
    client = QdrantClient(":memory:")  # local mode; on disk (path=) it pickles every point into SQLite
    try:
        client.create_collection("library", vectors_config=models.VectorParams(size=DIMENSION,
                                                                               distance=models.Distance.COSINE))
        started = time.perf_counter()
        for start in range(0, size, 1000):
            rows = range(start, min(start + 1000, size))
            client.upsert("library", points=models.Batch(ids=list(rows), vectors=library[start:rows.stop].tolist()))
        upsert_s = time.perf_counter() - started
        found, scores, times = [], [], []
        for query in queries:
            started = time.perf_counter()
            points = client.query_points("library", query=query.tolist(), limit=K).points
            times.append((time.perf_counter() - started) * 1000)
            found.append([p.id for p in points])
            scores.append([p.score for p in points])
    finally:
        client.close()
    found, scores = np.array(found), np.array(scores, dtype=np.float32)
    same_sets = float(np.mean([set(f) == set(t) for f, t in zip(found, truth)]))
    return {"size": size, "queries": QDRANT_QUERIES, "same_top6_set": same_sets,
            "same_top6_order": float(np.mean((found == truth).all(axis=1))),
            "recall_at_6": recall_at_k(found, truth), "max_score_difference": float(np.abs(scores - truth_scores).max()),
            "upsert_s": upsert_s, **percentiles(np.array(times))}


# --- main ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="cache folder for the built index (reused)")
    parser.add_argument("--size", type=int, default=FULL_SIZE, help=f"library vectors (default {FULL_SIZE})")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries (latency, recall)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes sharing the index")
    parser.add_argument("--qdrant-size", type=int, default=20_000, help="Qdrant local-mode check size (0: skip)")
    parser.add_argument("--part", choices=("build", "worker"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "worker":
        part_worker(args.dir)
        return
    if args.size < MIN_SIZE or args.queries < 10 or args.workers < 1 or args.qdrant_size < 0:
        parser.error(f"need --size >= {MIN_SIZE}, --queries >= 10, --workers >= 1, --qdrant-size >= 0")
    folder = args.dir / f"hnsw-{args.size}"
    if args.part == "build":
        print(json.dumps(part_build(folder, args.size, args.queries)))
        return

    started = time.perf_counter()
    build = cached_build(folder, args.size, args.queries)
    reused = build is not None
    if not reused:
        out = subprocess.run([sys.executable, __file__, "--part", "build", "--dir", str(args.dir),
                              "--size", str(args.size), "--queries", str(args.queries)], cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"the build failed (exit {out.returncode})")
        build = cached_build(folder, args.size, args.queries)
    load_average = os.getloadavg()[0]
    reports = run_workers(folder, args.workers)
    qdrant = qdrant_check(args.qdrant_size) if args.qdrant_size else None
    index_kb = build["index_file_mib"] * 1024
    once, why = held_once(reports, index_kb)
    results = {"build": build, "build_reused": reused, "load_average_workers": load_average, "workers": reports,
               "held_once": once, "held_once_why": why, "qdrant": qdrant, "total_s": time.perf_counter() - started,
               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    print(json.dumps(results, indent=2))
    report(results)


def report(results: dict) -> None:
    build = results["build"]
    print(f"\n{build['size']} x {DIMENSION} synthetic vectors, {KIND} {build['parameters']}; "
          f"{'reused the build of ' + build['date'] if results['build_reused'] else 'built now'} "
          f"({build['cores']} cores, load average {build['load_average_build_start']:.1f} -> "
          f"{build['load_average_build_end']:.1f}): build {build['build_s']:.0f} s, save {build['save_s']:.1f} s; "
          f"index.faiss {build['index_file_mib']:.0f} MiB, features.npy {build['features_file_mib']:.0f} MiB")
    print(f"Workers started {results['date']}, load average {results['load_average_workers']:.1f}\n")
    rows = [("worker", "load", "p50 / p99 (1st pass)", "p50 / p99", "recall@6", "Rss", "Pss", "Shared_Clean",
             "Anonymous (+load)", "index.faiss Rss/Pss", "features.npy Rss/Pss")]
    for number, r in enumerate(results["workers"], 1):
        s, i, f = r["smaps"], r["index_map"], r["features_map"]
        rows.append((str(number), f"{r['load_s']:.2f} s",
                     f"{r['first_pass']['p50_ms']:.2f} / {r['first_pass']['p99_ms']:.2f} ms",
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms", f"{r['recall_at_6']:.4f}",
                     f"{mib(s['Rss']):.0f} MiB", f"{mib(s['Pss']):.0f} MiB", f"{mib(s['Shared_Clean']):.0f} MiB",
                     f"{mib(s['Anonymous']):.0f} (+{mib(r['anonymous_growth_kb']):.0f}) MiB", f"{mib(i['Rss']):.0f} / {mib(i['Pss']):.0f} MiB",
                     f"{mib(f['Rss']):.0f} / {mib(f['Pss']):.0f} MiB"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    worst_p99 = max(r["p99_ms"] for r in results["workers"])
    worst_recall = min(r["recall_at_6"] for r in results["workers"])
    print(f"\np99 {worst_p99:.2f} ms (target <= {P99_TARGET_MS:g}): {'PASS' if worst_p99 <= P99_TARGET_MS else 'FAIL'}; "
          f"recall@6 {worst_recall:.4f} (target >= {RECALL_TARGET}): {'PASS' if worst_recall >= RECALL_TARGET else 'FAIL'}")
    print(f"index held once per host: {'yes' if results['held_once'] else 'no'} ({results['held_once_why']})")
    q = results["qdrant"]
    if q:
        print(f"\nQdrant local mode, {q['size']} vectors, {q['queries']} queries (correctness, not speed): "
              f"same top-{K} set as exact {q['same_top6_set']:.2f}, same order {q['same_top6_order']:.2f}, "
              f"recall@{K} {q['recall_at_6']:.4f}, largest score difference {q['max_score_difference']:.1e}; "
              f"upsert {q['upsert_s']:.0f} s, query p50 / p99 {q['p50_ms']:.1f} / {q['p99_ms']:.1f} ms "
              "(in-process brute force: not a Qdrant server's speed)")


if __name__ == "__main__":
    main()
