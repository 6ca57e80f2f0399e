"""Per-query scoring cost of the similarity measures of papers 000/001 on a 10,000-case library (CPU).

Run: ``.venv/bin/python bench/measures.py [--library 10000] [--queries 50] [--threads 2]``.

A synthetic library with the sizes an index stores (``retrieval/ml/measures.py``): 3-channel
pooled CNN features 1280-d float32 (non-negative, as after the backbone's last activation),
style vectors projected to P=256 float32, 64x64 lesion masks (random ellipses) bit-packed to
512 bytes. Each figure is the wall time of one query against the whole library: the component
scores (with the per-query d_max / L_max normalisation), the I1 harmonic mean where there is one,
and the top-6 (``measures.top_k``); median and p99 over the queries. Descriptors of the query are
given (the network pass that computes them is not part of the scoring).

Baselines for style (target: <= 200 ms per query):
* naive: the query's Gram matrices compared with each library image's, computed at query time
  from stored feature maps of EfficientNet-Lite0's seven stages at 224 px (16..320 channels,
  112..7 px): timed on a sample of library images and scaled to the library size;
* exact compact: the full 80,712-d Gram vectors without the projection (a squared Euclidean
  distance per row; 3.2 GB as float32 for 10k rows, so also timed on a sample and scaled).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive-sample", type=int, default=20, help="library images timed for the naive baseline")
    parser.add_argument("--k", type=int, default=6)
    return parser.parse_args()


ARGS = _arguments()
# BLAS reads its thread count when NumPy is first imported: set it before that import.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retrieval.ml import measures  # noqa: E402

CNN_DIM, STYLE_DIM, MASK_SIZE = 1280, 256, 64
TARGET_MS = 200.0
LITE0_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
LITE0_SIDES = (112, 56, 28, 14, 14, 7, 7)  # stage outputs at 224 px


def ellipse_masks(rng: np.random.Generator, n: int) -> np.ndarray:
    yy, xx = np.mgrid[:MASK_SIZE, :MASK_SIZE].astype(np.float32)
    cy, cx = rng.uniform(16, 48, (2, n, 1, 1)).astype(np.float32)
    ry, rx = rng.uniform(4, 28, (2, n, 1, 1)).astype(np.float32)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def descriptors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "cnn": np.abs(rng.normal(size=(n, CNN_DIM))).astype(np.float32),
        "style": rng.normal(size=(n, STYLE_DIM)).astype(np.float32),
        "mask": ellipse_masks(rng, n),
    }


def components(query: dict, library: dict) -> dict:
    return {
        "euclidean": lambda: measures.euclidean_scores(query["cnn"], library["cnn"]),
        "cosine": lambda: measures.cosine_scores(query["cnn"], library["cnn"]),
        "style": lambda: measures.style_scores(query["style"], library["style"]),
        "dice": lambda: measures.dice_scores(query["mask"], library["mask"]),
    }


def run_measure(name: str, query: dict, library: dict, k: int):
    parts = components(query, library)
    if name in parts:
        scores = parts[name]()
    else:
        scores = measures.i1(*[parts[part]() for part in measures.I1_COMPONENTS[name]])
    return measures.top_k(scores, k)


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - started))
    return times


def naive_style_ms(rng: np.random.Generator, sample: int, library_size: int) -> float:
    """Per query, scaled to the library: Gram of each library image's stored stage maps + loss."""
    weights = [1.0 / c for c in LITE0_CHANNELS]
    query_grams = [torch.from_numpy(rng.normal(size=(c, c)).astype(np.float32)) for c in LITE0_CHANNELS]
    shapes = [(c, s * s) for c, s in zip(LITE0_CHANNELS, LITE0_SIDES)]
    maps = [[torch.from_numpy(rng.normal(size=shape).astype(np.float32)) for shape in shapes] for _ in range(sample)]

    def loss(image) -> float:
        return sum(float(((w * q - w * (f @ f.T) / f.shape[1]) ** 2).sum())
                   for q, f, w in zip(query_grams, image, weights))

    loss(maps[0])  # warm-up
    started = time.perf_counter()
    losses = np.array([loss(image) for image in maps])
    elapsed = 1000 * (time.perf_counter() - started)
    top_k = measures.top_k(1.0 - losses / losses.max(), min(ARGS.k, sample))  # noqa: F841  (negligible)
    return elapsed / sample * library_size


def exact_compact_ms(rng: np.random.Generator, sample: int, library_size: int, repeat: int = 5) -> float:
    dim = sum(c * (c + 1) // 2 for c in LITE0_CHANNELS)
    rows = rng.normal(size=(sample, dim)).astype(np.float32)
    query = rng.normal(size=dim).astype(np.float32)
    return float(np.median(timed(lambda: measures.style_scores(query, rows), repeat))) / sample * library_size


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    rng = np.random.default_rng(0)
    n = ARGS.library
    started = time.perf_counter()
    library = descriptors(rng, n)
    library["mask"] = measures.pack_masks(library["mask"])
    queries = descriptors(rng, ARGS.queries)
    queries = [{key: value[i] for key, value in queries.items()} for i in range(ARGS.queries)]
    print(f"library {n:,} cases: cnn {library['cnn'].shape} float32, style {library['style'].shape} float32, "
          f"masks {library['mask'].shape} uint8 (packed {MASK_SIZE}x{MASK_SIZE}); built in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"{ARGS.queries} queries, top-{ARGS.k}, {ARGS.threads} torch/BLAS threads, "
          f"torch {torch.__version__}, numpy {np.__version__}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs (other processes share them: figures vary with the load)")
    names = ["euclidean", "cosine", "style", "dice", *measures.I1_COMPONENTS]
    for name in names:  # warm-up (first-call allocations, lookup tables)
        run_measure(name, queries[0], library, ARGS.k)
    print()
    print(f"{'measure':<10} {'parts':<28} {'median ms':>10} {'p99 ms':>8} {'/ 200 ms':>9}")
    results = {}
    for name in names:
        times = [timed(lambda q=query: run_measure(name, q, library, ARGS.k), 1)[0] for query in queries]
        median, p99 = float(np.median(times)), float(np.percentile(times, 99))
        results[name] = median
        parts = "+".join(measures.I1_COMPONENTS.get(name, (name,)))
        print(f"{name:<10} {parts:<28} {median:>10.2f} {p99:>8.2f} {median / TARGET_MS:>8.3f}x")
    print(f"(load average after the table: {os.getloadavg()[0]:.2f})")

    print()
    naive = naive_style_ms(rng, ARGS.naive_sample, n)
    compact = exact_compact_ms(rng, 500, n)
    style = results["style"]
    print(f"style target {TARGET_MS:.0f} ms per query: projected style {style:.2f} ms "
          f"= {style / TARGET_MS:.3f}x the target")
    print(f"naive style (Gram per library image at query time, Lite0 7 stages at 224 px, "
          f"{ARGS.naive_sample} images scaled to {n:,}): {naive:,.0f} ms per query = {naive / TARGET_MS:,.1f}x the "
          f"target; projected style is {naive / style:,.0f}x faster")
    print(f"exact compact style (80,712-d Gram vectors, no projection, 500 rows scaled to {n:,}): "
          f"{compact:,.0f} ms per query = {compact / TARGET_MS:.2f}x the target; "
          f"projected is {compact / style:,.0f}x faster")


if __name__ == "__main__":
    main()
