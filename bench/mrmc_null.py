"""Error rates of the MRMC analysis on simulated studies (Roe & Metz 1997 model).

Run: ``.venv/bin/python bench/mrmc_null.py [--studies 2000] [--seed 1]``.

For each configuration: the share of null studies (equal treatments) in which the random-readers-
random-cases OR test (Hillis ddf, jackknife) rejects at alpha 0.05, with its exact binomial 95 %
CI, and the share of studies under an alternative whose 95 % CI of the difference covers the true
reader-averaged AUC difference (``RoeMetz.true_auc``). Also the accuracy endpoint the reader study
uses (ratings dichotomised at 0.75 of the positive mean, correct = called right), null only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from readerstudy.analysis.mrmc import Rating, analyse  # noqa: E402
from readerstudy.analysis.mrmc.simulation import REFERENCE, RoeMetz  # noqa: E402

CONFIGURATIONS = (  # readers, negatives, positives
    (5, 50, 50),
    (10, 25, 25),
    (4, 100, 100),
)
MU, MU_ALTERNATIVE = 1.5, 1.9
ALPHA = 0.05


def correctness(ratings: list[Rating], cut: float) -> list[Rating]:
    """A binary "diagnosis" from each rating (positive above ``cut``), scored 1 when right."""
    return [Rating(r.reader, r.treatment, r.case, 1, float((r.rating > cut) == bool(r.truth))) for r in ratings]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    model = RoeMetz()
    rng = np.random.default_rng(args.seed)
    print(f"Roe-Metz model {model} ({REFERENCE})")
    print(f"null: mu = {MU} in both treatments (AUC {model.true_auc(MU):.4f}); alternative mu = {MU}, "
          f"{MU_ALTERNATIVE} (true difference {model.true_auc(MU) - model.true_auc(MU_ALTERNATIVE):+.4f})")
    for readers, negatives, positives in CONFIGURATIONS:
        started = time.perf_counter()
        rejected = rejected_accuracy = covered = 0
        truth = model.true_auc(MU) - model.true_auc(MU_ALTERNATIVE)
        for _ in range(args.studies):
            null = model.study(rng, mu=(MU, MU), readers=readers, negatives=negatives, positives=positives)
            rejected += analyse(null)["random_readers_random_cases"]["p"] < ALPHA
            rejected_accuracy += analyse(correctness(null, 0.75 * MU), fom="accuracy")[
                "random_readers_random_cases"]["p"] < ALPHA
            alternative = model.study(rng, mu=(MU, MU_ALTERNATIVE), readers=readers, negatives=negatives,
                                      positives=positives)
            d = analyse(alternative)["random_readers_random_cases"]["differences"][0]
            covered += d["ci95"][0] <= truth <= d["ci95"][1]
        n = args.studies
        for label, count in (("type I error (AUC)", rejected), ("type I error (accuracy)", rejected_accuracy),
                             ("95 % CI coverage (AUC)", covered)):
            low, high = stats.binomtest(count, n).proportion_ci(0.95)
            print(f"{readers} readers x ({negatives} + {positives}) cases: {label} {count}/{n} = {count / n:.4f} "
                  f"(95 % CI {low:.4f}-{high:.4f})")
        print(f"  {3 * n} analyses in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
