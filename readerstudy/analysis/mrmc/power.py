"""Power and sample size of a planned study from a pilot's OR variance components.

Hillis, Obuchowski & Berbaum (2011) unified approach for the random-readers-random-cases
OR analysis: a planned study with r readers and K cases (per reader in a nested design), pilot
components estimated on K* cases, and a true difference d between two treatments has

    den = Var(T*R) + (K*/K) [Var(Error) - Cov1 + (r - 1) max(Cov2 - Cov3, 0)]
    noncentrality = r d^2 / (2 den)
    ddf = den^2 / ({Var(T*R) + (K*/K) [Var(Error) - Cov1 - max(Cov2 - Cov3, 0)]}^2 / (r - 1))

and power = P(F'(1, ddf, noncentrality) > F(1 - alpha; 1, ddf)). The error variance and
covariances shrink with the number of cases as 1/K; the reader components do not. A negative
Var(T*R) estimate is taken as 0 (Hillis et al. 2011).
"""
from __future__ import annotations

from collections.abc import Sequence

from scipy import stats

REFERENCE = ("Hillis SL, Obuchowski NA, Berbaum KS (2011). Power estimation for multireader ROC methods: an "
             "updated and unified approach. Acad Radiol 18:129-142.")
DEFAULT_POWER = 0.8
DEFAULT_READERS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)
MAX_CASES = 20000


def power(components: dict, *, pilot_cases: int, readers: int, cases: int, effect: float,
          alpha: float = 0.05) -> float:
    """The power of the random-readers-random-cases test for ``readers`` x ``cases``."""
    if readers < 2:
        raise ValueError("a random-reader study needs at least two readers")
    if cases < 1 or pilot_cases < 1:
        raise ValueError("the numbers of cases must be positive")
    var_tr = max(components["var_tr"] or 0.0, 0.0)
    scale = pilot_cases / cases
    excess = max(components["cov2"] - components["cov3"], 0.0)
    base = components["var_error"] - components["cov1"]
    denominator = var_tr + scale * (base + (readers - 1) * excess)
    expected_ms_tr = var_tr + scale * (base - excess)
    if denominator <= 0 or expected_ms_tr <= 0:
        return 1.0 if effect else alpha
    ddf = denominator ** 2 / (expected_ms_tr ** 2 / (readers - 1))
    noncentrality = readers * effect ** 2 / (2 * denominator)
    critical = stats.f.ppf(1 - alpha, 1, ddf)
    return float(stats.ncf.sf(critical, 1, ddf, noncentrality))


def cases_needed(components: dict, *, pilot_cases: int, readers: int, effect: float, target: float = DEFAULT_POWER,
                 alpha: float = 0.05, max_cases: int = MAX_CASES) -> tuple[int | None, float]:
    """The fewest cases giving at least ``target`` power with ``readers`` readers, and that power;
    (None, power at ``max_cases``) when even ``max_cases`` is not enough (the reader variance then
    dominates: more readers are needed, not more cases)."""
    def at(k: int) -> float:
        return power(components, pilot_cases=pilot_cases, readers=readers, cases=k, effect=effect, alpha=alpha)

    if at(max_cases) < target:
        return None, at(max_cases)
    low, high = 1, max_cases  # power grows with cases: bisect for the first that reaches the target
    while low < high:
        middle = (low + high) // 2
        if at(middle) >= target:
            high = middle
        else:
            low = middle + 1
    return low, at(low)


def sample_size_table(components: dict, *, pilot_cases: int, effect: float, target: float = DEFAULT_POWER,
                      alpha: float = 0.05, readers: Sequence[int] = DEFAULT_READERS, nested: bool = False) -> dict:
    """For each number of readers, the cases needed for ``target`` power to detect ``effect``."""
    rows = []
    for r in readers:
        k, achieved = cases_needed(components, pilot_cases=pilot_cases, readers=r, effect=effect, target=target,
                                   alpha=alpha)
        rows.append({"readers": r, "cases": k, "power": achieved})
    return {
        "effect": effect, "target_power": target, "alpha": alpha, "pilot_cases": pilot_cases,
        "cases_are": "per reader (each reader their own cases)" if nested else "read by every reader",
        "rows": rows,
        "method": "random readers and random cases, OR variance components of this study as the pilot",
        "reference": REFERENCE,
    }
