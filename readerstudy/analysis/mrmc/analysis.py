"""Obuchowski-Rockette (OR) analysis with Hillis's degrees of freedom, and the DBM view.

For t treatments and r readers with figures of merit theta[i, j] (``fom.py``) and their error
covariance (jackknife or DeLong), the OR model (Obuchowski & Rockette 1995) is
``theta_ij = mu + tau_i + R_j + (tau R)_ij + e_ij`` with error variance Var(Error) and the
error covariances Cov1 (same reader, different treatments), Cov2 (different readers, same
treatment) and Cov3 (different readers and treatments), estimated by averaging the matching
entries of the covariance matrix. Three analyses, as OR-DBM MRMC 2.51 and MRMCaov print them:

1. Random readers and random cases (Hillis 2007): F = MS(T) / [MS(T*R) + r max(Cov2 - Cov3, 0)]
   with ddf = [MS(T*R) + r max(Cov2 - Cov3, 0)]^2 / {MS(T*R)^2 / [(t-1)(r-1)]}.
2. Fixed readers, random cases: chi2 = (t-1) MS(T) / [Var(Error) - Cov1 + (r-1) max(Cov2 - Cov3, 0)].
3. Random readers, fixed cases: F = MS(T) / MS(T*R) on (t-1, (t-1)(r-1)) degrees of freedom.

Variance components: Var(T*R) = MS(T*R) - Var(Error) + Cov1 + Cov2 - Cov3 and
Var(R) = [MS(R) - MS(T*R)] / t - Cov1 + Cov3 (Hillis 2014; unconstrained, as OR-DBM MRMC 2.51
prints them). In a design with cases nested within readers, Cov2 = Cov3 = 0 by design.

The DBM view (Dorfman, Berbaum & Metz 1992; Hillis, Berbaum & Metz 2008) analyses the jackknife
pseudovalues Y_ijk = N theta_ij - (N-1) theta_ij(-k) by a three-way ANOVA; with jackknife
covariance its random-readers-random-cases F equals the OR one (Hillis et al. 2005).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

from readerstudy.analysis.mrmc import fom as figures
from readerstudy.analysis.mrmc.data import DESIGNS, FACTORIAL, Rating, Study

DEFAULT_ALPHA = 0.05
METHOD = (
    "Obuchowski-Rockette ANOVA of the reader-level figures of merit with Hillis's denominator degrees of "
    "freedom (random readers and random cases), plus fixed-reader and fixed-case analyses; DBM "
    "pseudovalue ANOVA as the equivalent second view"
)
REFERENCES = (
    "Obuchowski NA, Rockette HE (1995). Hypothesis testing of diagnostic accuracy for multiple readers and "
    "multiple tests: an ANOVA approach with dependent observations. Commun Stat Simul Comput 24:285-308.",
    "Hillis SL (2007). A comparison of denominator degrees of freedom methods for multiple observer ROC "
    "analysis. Stat Med 26:596-619.",
    "Hillis SL, Obuchowski NA, Schartz KM, Berbaum KS (2005). A comparison of the Dorfman-Berbaum-Metz and "
    "Obuchowski-Rockette methods for receiver operating characteristic (ROC) data. Stat Med 24:1579-1607.",
    "Hillis SL, Berbaum KS, Metz CE (2008). Recent developments in the Dorfman-Berbaum-Metz procedure for "
    "multireader ROC study analysis. Acad Radiol 15:647-661.",
    "Hillis SL (2014). A marginal-mean ANOVA approach for analyzing multireader multicase radiological "
    "imaging data. Stat Med 33:330-360.",
    "Dorfman DD, Berbaum KS, Metz CE (1992). Receiver operating characteristic rating analysis: "
    "generalization to the population of readers and patients with the jackknife method. Invest Radiol "
    "27:723-731.",
    "DeLong ER, DeLong DM, Clarke-Pearson DL (1988). Comparing the areas under two or more correlated "
    "receiver operating characteristic curves: a nonparametric approach. Biometrics 44:837-845.",
    "Checked against the published VanDyke output of MRMCaov (Smith BJ, Hillis SL, 2020, Proc SPIE 11316) "
    "and OR-DBM MRMC 2.51 (University of Iowa).",
)


def analyse(ratings: Iterable[Rating], *, fom: str = "auc", covariance: str = "jackknife",
            alpha: float = DEFAULT_ALPHA, threshold: float = figures.DEFAULT_THRESHOLD) -> dict:
    """The whole analysis as one JSON-ready dict (floats or None, never NaN).

    Sensitivity is analysed on the positive cases only and specificity on the negative ones (the
    other cases do not enter the figure, so they are not jackknifed either; as MRMCaov does).
    Raises ``DesignRefused`` (a design, figure of merit or covariance it cannot analyse, with the
    reason) or ``RatingsInvalid`` (duplicated or contradictory ratings).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    ratings = list(ratings)
    if fom in figures.TRUTH_OF:
        Study.from_ratings(ratings)  # refuse contradictions among all ratings before taking a part
        ratings = [r for r in ratings if r.truth == figures.TRUTH_OF[fom]]
    study = Study.from_ratings(ratings)
    figures.check(study, fom, covariance)
    theta, jack = figures.figures_and_jackknife(study, fom, threshold)
    cov = figures.covariance(study, jack, covariance)
    model = _OR(study, theta, cov, alpha)
    treatments_rrrc = model.single_treatments_random_readers()
    treatments_frrc = model.single_treatments_fixed_readers()
    summary = treatments_rrrc if model.r > 1 else treatments_frrc
    return {
        "figure_of_merit": fom,
        "figure_of_merit_definition": figures.FIGURES_OF_MERIT[fom],
        **({"threshold": threshold} if fom in ("sensitivity", "specificity") else {}),
        "covariance": covariance,
        "covariance_definition": figures.COVARIANCES[covariance],
        "design": study.design,
        "design_definition": DESIGNS[study.design],
        "alpha": alpha,
        "method": METHOD,
        "references": list(REFERENCES),
        "n_treatments": len(study.treatments),
        "n_readers": len(study.readers),
        "n_cases": study.n_cases,
        "n_positive": int(study.truth.sum()),
        "n_negative": int(len(study.truth) - study.truth.sum()),
        "cases_per_reader": {reader: int(len(rc.cases)) for reader, rc in zip(study.readers, study.by_reader)},
        "treatments": {name: {key: summary[name][key] for key in ("fom", "se", "ci95", "df")}
                       for name in study.treatments},
        "treatments_analysis": "random_readers_random_cases" if model.r > 1 else "fixed_readers_random_cases",
        "readers": {reader: {treatment: _float(theta[i, j]) for i, treatment in enumerate(study.treatments)}
                    for j, reader in enumerate(study.readers)},
        "random_readers_random_cases": {**model.random_readers_random_cases(), "treatments": treatments_rrrc},
        "fixed_readers_random_cases": {**model.fixed_readers_random_cases(), "treatments": treatments_frrc},
        "random_readers_fixed_cases": model.random_readers_fixed_cases(),
        "variance_components": model.variance_components(),
        "mean_squares": model.mean_squares(),
        "dbm": dbm(study, theta, jack, alpha) if study.design == FACTORIAL else {
            "note": "the DBM pseudovalue ANOVA is given for factorial designs; see the OR analysis"},
    }


class _OR:
    """The OR quantities of one analysis: mean squares, covariance averages, the three tests."""

    def __init__(self, study: Study, theta: np.ndarray, cov: np.ndarray, alpha: float):
        self.study, self.theta, self.cov, self.alpha = study, theta, cov, alpha
        self.t, self.r = theta.shape
        self.names = study.treatments
        t, r = self.t, self.r
        treatment = np.repeat(np.arange(t), r)
        reader = np.tile(np.arange(r), t)
        same_t = treatment[:, None] == treatment[None, :]
        same_r = reader[:, None] == reader[None, :]
        self.var_error = float(np.mean(np.diag(cov)))
        self.cov1 = _mean(cov[~same_t & same_r])
        self.cov2 = _mean(cov[same_t & ~same_r])
        self.cov3 = _mean(cov[~same_t & ~same_r])
        self.var_i = [float(np.mean(np.diag(cov)[treatment == i])) for i in range(t)]
        self.cov2_i = [_mean(cov[(treatment[:, None] == i) & (treatment[None, :] == i) & ~same_r]) for i in range(t)]
        self.mean_i = theta.mean(axis=1)
        grand = theta.mean()
        self.ms_t = r * float(np.sum((self.mean_i - grand) ** 2)) / (t - 1)
        self.ms_r = t * float(np.sum((theta.mean(axis=0) - grand) ** 2)) / (r - 1) if r > 1 else None
        interaction = theta - self.mean_i[:, None] - theta.mean(axis=0)[None, :] + grand
        self.ms_tr = float(np.sum(interaction ** 2)) / ((t - 1) * (r - 1)) if r > 1 else None
        self.ms_r_i = [float(np.var(theta[i], ddof=1)) if r > 1 else None for i in range(t)]

    def pairs(self):
        return list(itertools.combinations(range(self.t), 2))

    def variance_components(self) -> dict:
        var_tr = var_r = None
        if self.r > 1:
            var_tr = self.ms_tr - self.var_error + self.cov1 + self.cov2 - self.cov3
            var_r = (self.ms_r - self.ms_tr) / self.t - self.cov1 + self.cov3
        return {"var_r": _float(var_r), "var_tr": _float(var_tr), "cov1": self.cov1, "cov2": self.cov2,
                "cov3": self.cov3, "var_error": self.var_error,
                "correlations": {f"r{k}": _float(c / self.var_error) if self.var_error > 0 else None
                                 for k, c in ((1, self.cov1), (2, self.cov2), (3, self.cov3))}}

    def mean_squares(self) -> dict:
        return {"ms_t": self.ms_t, "ms_r": _float(self.ms_r), "ms_tr": _float(self.ms_tr),
                "ms_r_per_treatment": {name: _float(v) for name, v in zip(self.names, self.ms_r_i)}}

    def _differences(self, se: float | None, df: float | None) -> list[dict]:
        return [difference(self.names[a], self.names[b], float(self.mean_i[a] - self.mean_i[b]), se, df, self.alpha)
                for a, b in self.pairs()]

    def random_readers_random_cases(self) -> dict:
        if self.r < 2:
            return _unavailable(self.t, "needs at least two readers (readers are the random factor)")
        denominator = self.ms_tr + self.r * max(self.cov2 - self.cov3, 0.0)
        ddf = denominator ** 2 / (self.ms_tr ** 2 / ((self.t - 1) * (self.r - 1))) if self.ms_tr > 0 else None
        f, p = _f_test(self.ms_t, denominator, self.t - 1, ddf)
        se = math.sqrt(2 * denominator / self.r)
        return {"F": f, "ndf": self.t - 1, "ddf": _float(ddf), "p": p, "denominator": denominator,
                "error_term": "MS(T*R) + r * max(Cov2 - Cov3, 0)", "differences": self._differences(se, ddf)}

    def fixed_readers_random_cases(self) -> dict:
        denominator = self.var_error - self.cov1 + (self.r - 1) * max(self.cov2 - self.cov3, 0.0)
        chi2 = (self.t - 1) * self.ms_t / denominator if denominator > 0 else None
        p = float(stats.chi2.sf(chi2, self.t - 1)) if chi2 is not None else None
        se = math.sqrt(2 * denominator / self.r) if denominator > 0 else 0.0
        per_reader = []
        for j, reader in enumerate(self.study.readers):
            for a, b in self.pairs():
                ia, ib = a * self.r + j, b * self.r + j
                variance = self.cov[ia, ia] + self.cov[ib, ib] - 2 * self.cov[ia, ib]
                per_reader.append({"reader": reader, **difference(
                    self.names[a], self.names[b], float(self.theta[a, j] - self.theta[b, j]),
                    math.sqrt(max(variance, 0.0)), None, self.alpha)})
        single = [{"reader": reader, "treatment": name, "fom": _float(self.theta[i, j]),
                   **_fom_interval(float(self.theta[i, j]),
                                   math.sqrt(max(self.cov[i * self.r + j, i * self.r + j], 0.0)), None, self.alpha)}
                  for j, reader in enumerate(self.study.readers) for i, name in enumerate(self.names)]
        return {"chi2": chi2, "df": self.t - 1, "p": p, "denominator": denominator,
                "error_term": "Var(Error) - Cov1 + (r - 1) * max(Cov2 - Cov3, 0)",
                "differences": self._differences(se, None), "per_reader": per_reader, "single_reader": single}

    def random_readers_fixed_cases(self) -> dict:
        if self.r < 2:
            return _unavailable(self.t, "needs at least two readers (readers are the random factor)")
        ddf = (self.t - 1) * (self.r - 1)
        f, p = _f_test(self.ms_t, self.ms_tr, self.t - 1, ddf)
        se = math.sqrt(2 * self.ms_tr / self.r)
        treatments = {name: {"fom": float(self.mean_i[i]), **_fom_interval(
            float(self.mean_i[i]), math.sqrt(self.ms_r_i[i] / self.r), self.r - 1, self.alpha)}
            for i, name in enumerate(self.names)}
        return {"F": f, "ndf": self.t - 1, "ddf": ddf, "p": p, "denominator": self.ms_tr, "error_term": "MS(T*R)",
                "differences": self._differences(se, ddf), "treatments": treatments}

    def single_treatments_random_readers(self) -> dict:
        result = {}
        for i, name in enumerate(self.names):
            if self.r < 2:
                result[name] = {"fom": float(self.mean_i[i]), "se": None, "ci95": None, "df": None,
                                "note": "needs at least two readers"}
                continue
            ms_r = self.ms_r_i[i]
            denominator = ms_r + self.r * max(self.cov2_i[i], 0.0)
            df = denominator ** 2 / (ms_r ** 2 / (self.r - 1)) if ms_r > 0 else None
            result[name] = {"fom": float(self.mean_i[i]), **_fom_interval(
                float(self.mean_i[i]), math.sqrt(denominator / self.r), df, self.alpha),
                "ms_r": ms_r, "cov2": self.cov2_i[i]}
        return result

    def single_treatments_fixed_readers(self) -> dict:
        return {name: {"fom": float(self.mean_i[i]), **_fom_interval(
            float(self.mean_i[i]), math.sqrt(max(self.var_i[i] + (self.r - 1) * max(self.cov2_i[i], 0.0), 0.0) / self.r),
            None, self.alpha), "var_error": self.var_i[i], "cov2": self.cov2_i[i]}
            for i, name in enumerate(self.names)}


def dbm(study: Study, theta: np.ndarray, jack: np.ndarray, alpha: float) -> dict:
    """The DBM pseudovalue ANOVA (factorial designs): mean squares, variance components, three F tests."""
    n = study.n_cases
    y = n * theta[None, :, :] - (n - 1) * jack  # [case, treatment, reader]
    n_cases, t, r = y.shape
    grand = y.mean()
    m_t, m_r, m_c = y.mean(axis=(0, 2)), y.mean(axis=(0, 1)), y.mean(axis=(1, 2))
    m_tr, m_tc, m_rc = y.mean(axis=0), y.mean(axis=2), y.mean(axis=1)  # [t, r], [c, t], [c, r]
    ss = {
        "T": r * n_cases * np.sum((m_t - grand) ** 2),
        "R": t * n_cases * np.sum((m_r - grand) ** 2),
        "C": t * r * np.sum((m_c - grand) ** 2),
        "TR": n_cases * np.sum((m_tr - m_t[:, None] - m_r[None, :] + grand) ** 2),
        "TC": r * np.sum((m_tc - m_c[:, None] - m_t[None, :] + grand) ** 2),
        "RC": t * np.sum((m_rc - m_c[:, None] - m_r[None, :] + grand) ** 2),
    }
    residual = (y - m_tr[None, :, :] - m_tc[:, :, None] - m_rc[:, None, :] + m_t[None, :, None]
                + m_r[None, None, :] + m_c[:, None, None] - grand)
    ss["TRC"] = np.sum(residual ** 2)
    df = {"T": t - 1, "R": r - 1, "C": n_cases - 1, "TR": (t - 1) * (r - 1), "TC": (t - 1) * (n_cases - 1),
          "RC": (r - 1) * (n_cases - 1), "TRC": (t - 1) * (r - 1) * (n_cases - 1)}
    ms = {key: float(ss[key] / df[key]) if df[key] else None for key in ss}
    result = {"mean_squares": ms, "df": df}
    if r > 1:
        tc_excess = max(ms["TC"] - ms["TRC"], 0.0)
        denominator = ms["TR"] + tc_excess
        ddf = denominator ** 2 / (ms["TR"] ** 2 / df["TR"]) if ms["TR"] > 0 else None
        f, p = _f_test(ms["T"], denominator, t - 1, ddf)
        result["random_readers_random_cases"] = {"F": f, "ndf": t - 1, "ddf": _float(ddf), "p": p,
                                                 "error_term": "MS(T*R) + max(MS(T*C) - MS(T*R*C), 0)"}
        f, p = _f_test(ms["T"], ms["TR"], t - 1, df["TR"])
        result["random_readers_fixed_cases"] = {"F": f, "ndf": t - 1, "ddf": df["TR"], "p": p,
                                                "error_term": "MS(T*R)"}
        result["variance_components"] = {
            "var_r": (ms["R"] - ms["TR"] - ms["RC"] + ms["TRC"]) / (t * n_cases),
            "var_c": (ms["C"] - ms["TC"] - ms["RC"] + ms["TRC"]) / (t * r),
            "var_tr": (ms["TR"] - ms["TRC"]) / n_cases,
            "var_tc": (ms["TC"] - ms["TRC"]) / r,
            "var_rc": (ms["RC"] - ms["TRC"]) / t,
            "var_error": ms["TRC"],
        }
    f, p = _f_test(ms["T"], ms["TC"], t - 1, df["TC"])
    result["fixed_readers_random_cases"] = {"F": f, "ndf": t - 1, "ddf": df["TC"], "p": p, "error_term": "MS(T*C)"}
    del alpha
    return result


def difference(a: str, b: str, estimate: float, se: float | None, df: float | None, alpha: float) -> dict:
    """``a - b`` with its standard error, a t (df given) or z (df None: normal) test and interval."""
    result = {"a": a, "b": b, "difference": estimate, "se": se, "df": df}
    if se is None:
        return {**result, "statistic": None, "p": None, "ci95": None}
    if se == 0:
        return {**result, "statistic": None, "p": 1.0 if estimate == 0 else 0.0, "ci95": [estimate, estimate]}
    statistic = estimate / se
    distribution = stats.norm if df is None else stats.t(df)
    p = float(2 * distribution.sf(abs(statistic)))  # two-sided
    return {**result, "statistic": statistic, "p": p, **_interval(estimate, se, df, alpha, with_se=False)}


def _interval(estimate: float, se: float | None, df: float | None, alpha: float, *, with_se: bool = True,
              bounds: tuple[float, float] = (-1.0, 1.0)) -> dict:
    """The two-sided 1 - alpha interval (t with ``df``, normal when df is None), cut to ``bounds``
    (a figure of merit lies in [0, 1], a difference of two in [-1, 1])."""
    quantile = float((stats.norm if df is None else stats.t(df)).ppf(1 - alpha / 2))
    interval = {"ci95": [max(bounds[0], estimate - quantile * se), min(bounds[1], estimate + quantile * se)]
                if se is not None else None}
    return {"se": se, "df": df, **interval} if with_se else interval


def _fom_interval(estimate: float, se: float | None, df: float | None, alpha: float) -> dict:
    return _interval(estimate, se, df, alpha, bounds=(0.0, 1.0))


def _f_test(numerator: float, denominator: float, ndf: int, ddf: float | None) -> tuple[float | None, float | None]:
    """F and its p; ddf None is an infinite ddf (chi-square / ndf)."""
    if denominator <= 0:
        return None, None
    f = numerator / denominator
    p = stats.chi2.sf(f * ndf, ndf) if ddf is None else stats.f.sf(f, ndf, ddf)
    return f, float(p)


def _unavailable(t: int, note: str) -> dict:
    return {"F": None, "ndf": t - 1, "ddf": None, "p": None, "differences": [], "note": note}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def _float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def sorted_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """The (a, b) pairs of the differences, in the order of the treatments."""
    return list(itertools.combinations(names, 2))
