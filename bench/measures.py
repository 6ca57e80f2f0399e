"""Per-query scoring cost of every similarity measure against a 10,000-case library (CPU).

Run: ``.venv/bin/python bench/measures.py [--library 10000] [--queries 50] [--threads 2]``.
Descriptors are as an index stores them (3-channel features 1280-d float32, style vectors
projected to STYLE_COMPONENTS=256 float32, 64x64 masks bit-packed); the time per query includes
the per-query d_max / L_max normalisation and the top-6. The baseline is the naive style search
the compact form replaces: comparing the query's Gram matrices with each library image's
(EfficientNet-Lite0's seven stages at 224 px), measured on a sample and scaled to the library.
Target: style <= 200 ms per query.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from retrieval.methods import METHODS
    from retrieval.ml.measures import pack_masks
    from retrieval.ml.methods import method_topk

    rng = np.random.default_rng(0)
    n = args.library
    library = {
        "cnn3": rng.normal(size=(n, 1280)).astype(np.float32),
        "style": rng.normal(size=(n, 256)).astype(np.float32),
        "mask": pack_masks(rng.random((n, 64, 64)) < 0.3),
    }
    queries = [{"cnn3": rng.normal(size=1280).astype(np.float32), "style": rng.normal(size=256).astype(np.float32),
                "mask": rng.random((64, 64)) < 0.3} for _ in range(args.queries)]
    print(f"{n} library cases, {args.queries} queries, {args.threads} threads")
    print(f"{'method':<10} {'median ms':>10} {'p99 ms':>8}")
    results = {}
    for name, method in METHODS.items():
        if not set(method.needs) <= set(library):
            continue
        times = []
        for query in queries:
            started = time.perf_counter()
            method_topk(name, query, library, 6)
            times.append(1000 * (time.perf_counter() - started))
        results[name] = (float(np.median(times)), float(np.percentile(times, 99)))
        print(f"{name:<10} {results[name][0]:>10.2f} {results[name][1]:>8.2f}")

    # Naive baseline: Gram matrices of the seven Lite0 stages compared per library image.
    channels, sides = [16, 24, 40, 80, 112, 192, 320], [112, 56, 28, 14, 14, 7, 7]
    query_grams = [torch.randn(c, c) for c in channels]
    sample = 20
    started = time.perf_counter()
    for _ in range(sample):
        maps = [torch.randn(c, s * s) for c, s in zip(channels, sides)]
        sum(float(((q - (f @ f.T) / f.shape[1]) ** 2).sum()) for q, f in zip(query_grams, maps))
    naive = 1000 * (time.perf_counter() - started) / sample * n
    print(f"naive style (Gram per library image, stored feature maps): {naive:,.0f} ms per query (scaled from {sample})")
    style = results["style"][0]
    print(f"style: {style:.1f} ms per query = {style / 200:.2f}x the 200 ms target; {naive / style:,.0f}x faster "
          "than the naive search")


if __name__ == "__main__":
    main()
