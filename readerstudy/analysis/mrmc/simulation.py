"""Roe & Metz (1997) simulated MRMC studies, to check the analysis's error rates.

A continuous rating of case k (truth d) by reader j under treatment i is

    X = mu_i * d + R_j^(d) + (tau R)_ij^(d) + C_k + (tau C)_ik + (R C)_jk + E_ijk

with independent zero-mean normal terms; the reader terms are drawn separately for negative and
positive cases, as in Roe & Metz. The reader-averaged AUC the OR analysis estimates is then
exactly ``true_auc(mu_i)`` = Phi(mu_i / sqrt(2 (var_c + var_tc + var_rc + var_e + var_r + var_tr))).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from readerstudy.analysis.mrmc.data import Rating

REFERENCE = ("Roe CA, Metz CE (1997). Dorfman-Berbaum-Metz method for statistical analysis of multireader, "
             "multimodality receiver operating characteristic data: validation with computer simulation. "
             "Acad Radiol 4:298-303.")


@dataclass(frozen=True)
class RoeMetz:
    """Variance components of the model (the case-level ones sum to 1, as in Roe & Metz)."""

    var_r: float = 0.011
    var_tr: float = 0.011
    var_c: float = 0.3
    var_tc: float = 0.1
    var_rc: float = 0.2
    var_e: float = 0.4

    def true_auc(self, mu: float) -> float:
        total = self.var_c + self.var_tc + self.var_rc + self.var_e + self.var_r + self.var_tr
        return float(stats.norm.cdf(mu / math.sqrt(2 * total)))

    def study(self, rng: np.random.Generator, *, mu: tuple[float, ...], readers: int, negatives: int,
              positives: int) -> list[Rating]:
        """One simulated fully crossed study as ratings (treatments "1", "2", ...)."""
        t, cases = len(mu), negatives + positives
        truth = np.r_[np.zeros(negatives, int), np.ones(positives, int)]
        normal = rng.standard_normal
        reader = np.sqrt(self.var_r) * normal((2, readers))  # [truth, reader]
        treatment_reader = np.sqrt(self.var_tr) * normal((2, t, readers))
        case = np.sqrt(self.var_c) * normal(cases)
        treatment_case = np.sqrt(self.var_tc) * normal((t, cases))
        reader_case = np.sqrt(self.var_rc) * normal((readers, cases))
        error = np.sqrt(self.var_e) * normal((t, readers, cases))
        x = (np.asarray(mu)[:, None, None] * truth[None, None, :] + reader[truth].T[None, :, :]
             + treatment_reader[truth].transpose(1, 2, 0) + case[None, None, :] + treatment_case[:, None, :]
             + reader_case[None, :, :] + error)
        return [Rating(str(j + 1), str(i + 1), str(k + 1), int(truth[k]), float(x[i, j, k]))
                for i in range(t) for j in range(readers) for k in range(cases)]
