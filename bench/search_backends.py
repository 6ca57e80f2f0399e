"""Speed and recall of the search backends (retrieval/ml/search.py) on synthetic 1280-d features.

Prints figures measured in this one run, next to their targets:

* exact search (NumPy matrix product) on 10k x 1280 vectors: single-query latency p50/p99
  (target <= 5 ms), once with one BLAS thread and once with NumPy's default thread count,
  each in a fresh process (OpenBLAS reads its thread count at start-up);
* FAISS on 1M x 1280 vectors (``--quick``: 100k): build time, index memory, single-query
  latency p50/p99 (target p99 <= 10 ms) and recall@6 against exact search (target >= 0.98)
  for the shipped parameters and a sweep of the search effort (efSearch / nprobe), save and
  load (a worker's restart) times; and exact search on the same vectors for comparison.

Ground truth is exact brute force (``cosine_topk``) for ``--queries`` held-out queries.

The vectors are a hierarchical Gaussian mixture on the unit sphere shaped like pooled CNN
features (see ``generate``): a shared positive mean direction, a power-law variance spectrum,
appearance clusters, lesions with several photos each, per-photo noise. Its statistics were
matched to 400 Lite0 SE-CBIR features of the synthetic demo library (docs/retrieval.md).

    .venv/bin/python bench/search_backends.py [--quick] [--vectors N] [--queries 500]
                                              [--faiss faiss-hnsw,faiss-ivf] [--only exact|faiss]
                                              [--workdir DIR]

A full run (1M vectors, HNSW) builds a 5.4 GB index; with the rest it took 21-26 minutes on 2
shared cores; ``--quick`` (100k vectors, HNSW and IVF) took 4-8 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from retrieval.ml.search import (  # noqa: E402
    FAISS_HNSW, FAISS_IVF, FAISS_KINDS, build_backend, cosine_topk, load_backend,
)

ROOT = Path(__file__).resolve().parent.parent
DIMENSION = 1280  # EfficientNet-Lite0's pooled features: the product's default feature size
K = 6  # neighbours shown to the clinician
EXACT_LIBRARY = 10_000
EXACT_TARGET_MS = 5.0
FAISS_P99_TARGET_MS = 10.0
RECALL_TARGET = 0.98
FULL_VECTORS = 1_000_000
QUICK_VECTORS = 100_000
MIN_VECTORS = 1_000  # the feature statistics sample 400 vectors
MIN_QUERIES = 10
WARMUP = 20
SWEEP = {FAISS_HNSW: ("ef_search", (64, 128, 256, 512)), FAISS_IVF: ("nprobe", (8, 16, 32, 64))}

# The generator (fractions of the non-mean variance; matched to Lite0 features, see docs).
SPECTRUM_EXPONENT = 0.8  # variance of dimension i ~ i^-0.8: 23/51/69 % in the top 10/50/100
MEAN_NORM = 0.5  # shared positive direction: median random-pair cosine ~0.29, as Lite0's 0.28
CLUSTER_SCALE, LESION_SCALE, PHOTO_SCALE = 0.55, 0.35, 0.45
VECTORS_PER_CLUSTER = 500
PHOTOS_PER_LESION = 1.35  # HAM10000: 10015 images of 7470 lesions
_GEN_CHUNK = 50_000


class Generator:
    """Unit vectors x = normalise(mu + cluster + lesion + photo), each term Gaussian.

    Why this shape: pooled ReLU/ReLU6 CNN features are non-negative, so they share a mean
    direction (random pairs are far from orthogonal); their variance is concentrated in a few
    hundred directions (a power-law spectrum, not isotropic noise, which would make every
    neighbour equally far and search artificially hard); images group into appearance
    clusters, and a lesion's photos are near-duplicates. Per-dimension variances follow the
    spectrum; all three random terms share it. Blocks are generated from their own seeds, so
    any block can be regenerated without the others.
    """

    def __init__(self, size: int, dimension: int = DIMENSION, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 0])
        variance = np.arange(1, dimension + 1, dtype=np.float64) ** -SPECTRUM_EXPONENT
        self.scale = np.sqrt(variance / variance.sum()).astype(np.float32)
        mean = np.abs(rng.standard_normal(dimension)).astype(np.float32)
        self.mean = mean * (MEAN_NORM / np.linalg.norm(mean))
        self.clusters = max(1, size // VECTORS_PER_CLUSTER)
        self.centres = rng.standard_normal((self.clusters, dimension), dtype=np.float32) * (self.scale * CLUSTER_SCALE)
        self.seed, self.dimension = seed, dimension

    def block(self, start: int, count: int, stream: int = 1) -> np.ndarray:
        """``count`` vectors; lesions are runs of consecutive rows, each in one cluster."""
        rng = np.random.default_rng([self.seed, stream, start])
        photos = rng.geometric(1 / PHOTOS_PER_LESION, count)
        lesion = np.repeat(np.arange(count), photos)[:count]
        lesions = int(lesion[-1]) + 1
        cluster = rng.integers(0, self.clusters, lesions)
        offsets = rng.standard_normal((lesions, self.dimension), dtype=np.float32) * (self.scale * LESION_SCALE)
        x = self.mean + self.centres[cluster[lesion]] + offsets[lesion]
        x += rng.standard_normal((count, self.dimension), dtype=np.float32) * (self.scale * PHOTO_SCALE)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def fill(self, out: np.ndarray, stream: int = 1) -> None:
        for start in range(0, len(out), _GEN_CHUNK):
            count = min(_GEN_CHUNK, len(out) - start)
            out[start:start + count] = self.block(start, count, stream)

    def queries(self, count: int) -> np.ndarray:
        """Held-out vectors: new lesions (another seed stream) in the library's clusters."""
        return self.block(0, count, stream=2)


def statistics_of(vectors: np.ndarray, neighbour_scores: np.ndarray) -> dict:
    """The figures compared with real Lite0 features in docs/retrieval.md."""
    sample = vectors[np.sort(np.random.default_rng(1).choice(len(vectors), 400, replace=False))]
    pairs = (sample @ sample.T)[np.triu_indices(len(sample), 1)]
    spectrum = np.linalg.eigvalsh(np.cov(sample.T))[::-1]
    return {
        "random_pair_cosine_median": float(np.median(pairs)),
        "random_pair_cosine_p10_p90": [float(v) for v in np.percentile(pairs, [10, 90])],
        "mean_vector_norm": float(np.linalg.norm(sample.mean(axis=0))),
        "variance_top10_50_100": [float(spectrum[:n].sum() / spectrum.sum()) for n in (10, 50, 100)],
        "query_top1_top6_cosine_median": [float(np.median(neighbour_scores[:, 0])),
                                          float(np.median(neighbour_scores[:, K - 1]))],
    }


def exact_topk_chunked(queries: np.ndarray, library: np.ndarray, k: int, rows: int = 100_000):
    """Exact top-k over a large (memory-mapped) library, block by block, merged like cosine_topk."""
    indices, scores = [], []
    for start in range(0, len(library), rows):
        i, s = cosine_topk(queries, library[start:start + rows], min(k, len(library) - start))
        indices.append(i + start)
        scores.append(s)
    indices, scores = np.concatenate(indices, axis=1), np.concatenate(scores, axis=1)
    order = np.lexsort((indices, -scores), axis=1)[:, :k]
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(scores, order, axis=1)


def latencies_ms(search, queries: np.ndarray, warmup: int = WARMUP) -> np.ndarray:
    """Wall time of each single-query call (after a warm-up), in milliseconds."""
    for i in range(min(warmup, len(queries))):
        search(queries[i:i + 1])
    times = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        search(queries[i:i + 1])
        times[i] = time.perf_counter() - start
    return times * 1000


def percentiles(times_ms: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(times_ms, 50)), "p99_ms": float(np.percentile(times_ms, 99))}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def rss_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in kB (RssAnon, VmHWM...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# --- parts, each run in its own process ---------------------------------------------------

def part_exact(queries: int) -> dict:
    generator = Generator(EXACT_LIBRARY)
    library = np.empty((EXACT_LIBRARY, DIMENSION), dtype=np.float32)
    generator.fill(library)
    backend = build_backend(library, "exact", faiss_min_vectors=EXACT_LIBRARY + 1)
    times = latencies_ms(lambda q: backend.search(q, K), generator.queries(queries))
    return {"size": EXACT_LIBRARY, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
            **percentiles(times)}


def backend_search(backend):
    """One query's search, timed by ``latencies_ms`` (a function of its own: ``part_faiss``
    deletes its backend before loading the saved copy)."""
    return lambda q: backend.search(q, K)


def part_faiss(kind: str, workdir: Path) -> dict:
    library = np.load(workdir / "library.npy", mmap_mode="r")
    queries = np.load(workdir / "queries.npy")
    truth = np.load(workdir / "truth.npy")
    anon_before = rss_kb("RssAnon")
    start = time.perf_counter()
    backend = build_backend(library, kind, faiss_min_vectors=1)
    build_s = time.perf_counter() - start
    index_mb = (rss_kb("RssAnon") - anon_before) / 1024
    result = {"kind": kind, "size": backend.size, "build_s": build_s, "index_memory_mb": index_mb,
              "parameters": dict(backend.parameters)}

    found, _ = backend.search(queries, K)
    result.update(recall_at_6=recall_at_k(found, truth),
                  **percentiles(latencies_ms(backend_search(backend), queries)))

    name, values = SWEEP[kind]
    shipped = backend.parameters[name]
    sweep = []
    for value in values:
        backend.parameters[name] = value
        found, _ = backend.search(queries, K)
        sweep.append({name: value, "recall_at_6": recall_at_k(found, truth),
                      **percentiles(latencies_ms(backend_search(backend), queries))})
    backend.parameters[name] = shipped
    result["sweep"] = sweep

    reference = backend.search(queries, K)
    saved = workdir / "saved"
    start = time.perf_counter()
    folder = backend.save(saved)
    result["save_s"] = time.perf_counter() - start
    result["file_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    del backend
    start = time.perf_counter()
    loaded = load_backend(saved, library, kind, faiss_min_vectors=1)
    result["load_s"] = time.perf_counter() - start  # read + validate + SHA-256 of the vectors
    again = loaded.search(queries, K)
    result["loaded_identical"] = bool(np.array_equal(again[0], reference[0]) and np.array_equal(again[1], reference[1]))
    shutil.rmtree(saved)
    return result


def run_part(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"bench part {args} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class GeneratedLibrary:
    library: np.ndarray  # memory-mapped, (size, DIMENSION)
    queries: np.ndarray
    truth: np.ndarray  # the queries' exact top-K rows
    scores: np.ndarray  # and their cosine similarities
    clusters: int
    generate_s: float
    truth_s: float


def generate_library(library_path: Path, size: int, queries: int) -> GeneratedLibrary:
    """``size`` synthetic vectors written to the memory-mapped ``library_path``, ``queries`` held-out
    queries and their exact top-K (saved beside it as queries.npy and truth.npy), each step timed."""
    start = time.perf_counter()
    generator = Generator(size)
    library = np.lib.format.open_memmap(library_path, mode="w+", dtype=np.float32, shape=(size, DIMENSION))
    generator.fill(library)
    library.flush()
    query_vectors = generator.queries(queries)
    np.save(library_path.parent / "queries.npy", query_vectors)
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    truth, scores = exact_topk_chunked(query_vectors, library, K)
    np.save(library_path.parent / "truth.npy", truth)
    return GeneratedLibrary(library, query_vectors, truth, scores, generator.clusters, generate_s,
                            time.perf_counter() - start)


def prepare(workdir: Path, size: int, queries: int) -> dict:
    """Library (memory-mapped file), held-out queries, their exact top-6 and exact latency at this size."""
    made = generate_library(workdir / "library.npy", size, queries)
    exact_big = build_backend(made.library, "exact", faiss_min_vectors=size + 1)
    exact_ms = latencies_ms(lambda q: exact_big.search(q, K), made.queries[:5], warmup=1)  # slow: a few
    return {"size": size, "generate_s": made.generate_s, "truth_s": made.truth_s,
            "exact_p50_ms": float(np.median(exact_ms)), "clusters": made.clusters,
            "statistics": statistics_of(made.library, made.scores)}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_VECTORS} vectors, HNSW and IVF")
    parser.add_argument("--vectors", type=int,
                        help=f"library size for FAISS (default {FULL_VECTORS}, quick {QUICK_VECTORS})")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries for latency and recall")
    parser.add_argument("--faiss", help="comma-separated FAISS kinds (default faiss-hnsw; quick: both)")
    parser.add_argument("--workdir", type=Path, help="where the memory-mapped library goes (default: a temp dir)")
    parser.add_argument("--only", choices=("exact", "faiss"),
                        help="run one half (e.g. to re-measure on a quieter machine)")
    parser.add_argument("--part", choices=("exact", *FAISS_KINDS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part == "exact":
        print(json.dumps(part_exact(args.queries)))
        return
    if args.part:
        print(json.dumps(part_faiss(args.part, args.workdir)))
        return

    size = args.vectors or (QUICK_VECTORS if args.quick else FULL_VECTORS)
    if size < MIN_VECTORS:
        parser.error(f"--vectors must be at least {MIN_VECTORS}")
    if args.queries < MIN_QUERIES:
        parser.error(f"--queries must be at least {MIN_QUERIES}")
    kinds = args.faiss.split(",") if args.faiss else ([FAISS_HNSW, FAISS_IVF] if args.quick else [FAISS_HNSW])
    unknown = set(kinds) - set(FAISS_KINDS)
    if unknown:
        parser.error(f"unknown FAISS kinds {sorted(unknown)}; choose from {', '.join(FAISS_KINDS)}")
    import faiss

    results: dict = {"cores": os.cpu_count(), "load_average_start": os.getloadavg(), "faiss": faiss.__version__,
                     "faiss_threads": faiss.omp_get_max_threads()}
    started = time.perf_counter()
    results["exact"], results["faiss_runs"] = [], []
    if args.only != "faiss":
        exact = ["--part", "exact", "--queries", str(args.queries)]
        results["exact"] = [run_part(exact, {"OPENBLAS_NUM_THREADS": "1"}), run_part(exact)]
    if args.only != "exact":
        own_workdir = args.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="search-bench-")) if own_workdir else args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results["data"] = prepare(workdir, size, args.queries)
            results["faiss_runs"] = [run_part(["--part", kind, "--workdir", str(workdir)]) for kind in kinds]
        finally:
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started
    print(json.dumps(results, indent=2))
    report(results)


def report(results: dict) -> None:
    print(f"\nMachine: {results['cores']} cores, load average {results['load_average_start'][0]:.1f} at start, "
          f"{results['load_average_end'][0]:.1f} at end; FAISS {results['faiss']} "
          f"({results['faiss_threads']} threads); whole run {results['total_s'] / 60:.1f} min")
    data = results.get("data")
    if data:
        print(f"Data: {data['size']} x {DIMENSION} synthetic unit vectors in {data['clusters']} clusters, "
              f"generated in {data['generate_s']:.0f} s; exact top-{K} of the queries in {data['truth_s']:.0f} s; "
              f"exact search over all of them: {data['exact_p50_ms']:.0f} ms per query (median of 5)")
    rows = [("figure", "measured", "target", "")]
    for run in results["exact"]:
        label = f"exact, {run['size'] // 1000}k x {DIMENSION}, BLAS threads {run['blas_threads']}"
        rows.append((f"{label}: p50", f"{run['p50_ms']:.2f} ms", f"<= {EXACT_TARGET_MS:g} ms",
                     verdict(run["p50_ms"] <= EXACT_TARGET_MS)))
        rows.append((f"{label}: p99", f"{run['p99_ms']:.2f} ms", f"(<= {EXACT_TARGET_MS:g} ms)",
                     verdict(run["p99_ms"] <= EXACT_TARGET_MS)))
    for run in results["faiss_runs"]:
        label = f"{run['kind']}, {run['size'] // 1000}k x {DIMENSION}"
        rows.append((f"{label}: single query p50 / p99", f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f} ms",
                     f"p99 <= {FAISS_P99_TARGET_MS:g} ms", verdict(run["p99_ms"] <= FAISS_P99_TARGET_MS)))
        rows.append((f"{label}: recall@{K} vs exact", f"{run['recall_at_6']:.4f}", f">= {RECALL_TARGET}",
                     verdict(run["recall_at_6"] >= RECALL_TARGET)))
        rows.append((f"{label}: build", f"{run['build_s']:.0f} s", "", ""))
        rows.append((f"{label}: index memory / file",
                     f"{run['index_memory_mb']:.0f} / {run['file_mb']:.0f} MiB", "", ""))
        rows.append((f"{label}: save / load (+ verify)", f"{run['save_s']:.1f} / {run['load_s']:.1f} s", "same results",
                     verdict(run["loaded_identical"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for run in results["faiss_runs"]:
        name = SWEEP[run["kind"]][0]
        print(f"\n{run['kind']} search effort ({', '.join(f'{k}={v}' for k, v in run['parameters'].items())} shipped):")
        for point in run["sweep"]:
            print(f"  {name}={point[name]:<4} recall@{K} {point['recall_at_6']:.4f}  "
                  f"p50 {point['p50_ms']:.2f} ms  p99 {point['p99_ms']:.2f} ms")
    if not data:
        return
    stats = data["statistics"]
    print(f"\nGenerated features: random-pair cosine median {stats['random_pair_cosine_median']:.3f} "
          f"(p10-p90 {stats['random_pair_cosine_p10_p90'][0]:.2f}-{stats['random_pair_cosine_p10_p90'][1]:.2f}), "
          f"mean-vector norm {stats['mean_vector_norm']:.2f}, variance in top 10/50/100 directions "
          f"{'/'.join(f'{v:.2f}' for v in stats['variance_top10_50_100'])}; query top-1/top-{K} cosine "
          f"{stats['query_top1_top6_cosine_median'][0]:.3f}/{stats['query_top1_top6_cosine_median'][1]:.3f}")


if __name__ == "__main__":
    main()
