"""Statistical building blocks of the reader-study report: plain numbers in, plain numbers out.

Every function returns Python floats or ``None`` (never NaN), so results go into JSON as they are.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

#: nDCG cut-off: the six neighbours shown in Task 2.
NDCG_AT = 6


def mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (ddof=1; ``None`` with fewer than two values)."""
    return {
        "mean": mean(values),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
    }


def mcnemar_exact(wrong_to_right: int, right_to_wrong: int) -> float:
    """Exact McNemar p-value: two-sided binomial test of the discordant pairs against 1/2.

    1.0 when there are no discordant pairs (nothing speaks against equal accuracies).
    """
    discordant = wrong_to_right + right_to_wrong
    if discordant == 0:
        return 1.0
    return float(stats.binomtest(wrong_to_right, discordant, 0.5, alternative="two-sided").pvalue)


def cohen_kappa(answers_a: Sequence[Hashable], answers_b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' paired categorical answers; ``None`` when undefined.

    Undefined when there are no pairs or when chance agreement is 1 (both raters always gave
    the one same category), where kappa is 0/0.
    """
    if len(answers_a) != len(answers_b):
        raise ValueError("the two raters must answer the same items")
    n = len(answers_a)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(answers_a, answers_b)) / n
    counts_a, counts_b = Counter(answers_a), Counter(answers_b)
    chance = sum(counts_a[c] * counts_b[c] for c in counts_a) / (n * n)
    if math.isclose(chance, 1.0):
        return None
    return float((observed - chance) / (1.0 - chance))


def wilcoxon_signed_rank(differences: Sequence[float]) -> dict:
    """Wilcoxon signed-rank test of paired differences (scipy defaults: zeros dropped, 'wilcox').

    ``statistic`` and ``p_value`` are ``None``, with a ``note`` saying why, when there are no
    pairs or all differences are zero.
    """
    values = [float(d) for d in differences]
    result = {
        "n_pairs": len(values),
        "n_nonzero": sum(1 for d in values if d != 0),
        "statistic": None,
        "p_value": None,
        "median_difference": float(np.median(values)) if values else None,
        "note": None,
    }
    if not values:
        result["note"] = "no paired reads"
    elif result["n_nonzero"] == 0:
        result["note"] = "all paired differences are zero: the test is undefined"
    else:
        test = stats.wilcoxon(values, zero_method="wilcox", alternative="two-sided")
        result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def dcg(ratings_by_rank: Mapping[int, int], at: int = NDCG_AT) -> float:
    """Discounted cumulative gain: sum of rating / log2(rank + 1) over ranks 1..at."""
    return float(sum(rating / math.log2(rank + 1) for rank, rating in ratings_by_rank.items() if rank <= at))


def ideal_dcg(pooled_ratings: Sequence[int], at: int = NDCG_AT) -> float:
    """DCG of the best possible ordering of ``pooled_ratings``, cut at ``at``."""
    best = sorted(pooled_ratings, reverse=True)[:at]
    return dcg({rank: rating for rank, rating in enumerate(best, start=1)}, at)


def ndcg(ratings_by_rank: Mapping[int, int], pooled_ratings: Sequence[int], at: int = NDCG_AT) -> float:
    """DCG over the ideal DCG of the pooled ratings; 0 when nothing in the pool is relevant."""
    ideal = ideal_dcg(pooled_ratings, at)
    return dcg(ratings_by_rank, at) / ideal if ideal > 0 else 0.0
