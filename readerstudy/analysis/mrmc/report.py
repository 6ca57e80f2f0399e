"""The MRMC result for people: Markdown in the layout of OR-DBM MRMC's output, and PNG figures
(empirical ROC curves per treatment, a forest plot of reader-level differences)."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from readerstudy.analysis.figures import png_bytes
from readerstudy.analysis.mrmc.data import Rating, Study

FOM_NAMES = {"auc": "AUC", "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity"}
MISSING = "–"
FPR_GRID = np.linspace(0.0, 1.0, 201)


def markdown(result: dict, *, title: str | None = None, level: int = 1,
             treatment_labels: dict[str, str] | None = None) -> str:
    """The analysis as Markdown; ``level`` is the heading level of the title."""
    h = "#" * level
    fom = FOM_NAMES[result["figure_of_merit"]]
    labels = treatment_labels or {}

    def name(treatment: str) -> str:
        return labels.get(treatment, treatment)

    treatments = list(result["treatments"])
    lines = [f"{h} {title or f'MRMC analysis of the {fom}'}", "",
             f"- Figure of merit: {result['figure_of_merit_definition']}"
             + (f" (threshold {result['threshold']:g})" if "threshold" in result else "") + ".",
             f"- Design: {result['design_definition']}.",
             f"- Covariance: {result['covariance_definition']}.",
             f"- Data: {result['n_readers']} readers, {result['n_treatments']} treatments, {result['n_cases']} cases "
             f"({result['n_positive']} positive, {result['n_negative']} negative).",
             f"- Method: {result['method']}.", ""]
    if labels:
        lines += ["Treatments: " + "; ".join(f"{t} = {labels[t]}" for t in treatments if t in labels) + ".", ""]
    lines += [f"{h}# {fom} per reader and treatment", "",
              _row(["Reader", *map(name, treatments)]), "|---|" + "---:|" * len(treatments)]
    lines += [_row([reader, *[_num(values[t]) for t in treatments]]) for reader, values in result["readers"].items()]
    lines.append(_row(["**Average**", *[_num(result["treatments"][t]["fom"]) for t in treatments]]))
    vc = result["variance_components"]
    lines += ["", f"{h}# OR variance components", "",
              "| Var(R) | Var(T*R) | Cov1 | Cov2 | Cov3 | Var(Error) |", "|---:|---:|---:|---:|---:|---:|",
              _row([_num(vc[k]) for k in ("var_r", "var_tr", "cov1", "cov2", "cov3", "var_error")]), "",
              "Correlations: " + ", ".join(f"{k} = {_num(v, 4)}" for k, v in vc["correlations"].items()) + "."]

    rrrc, frrc, rrfc = (result["random_readers_random_cases"], result["fixed_readers_random_cases"],
                        result["random_readers_fixed_cases"])
    lines += ["", f"{h}# Analysis 1: random readers and random cases", "",
              "(Results apply to the population of readers and cases.)", ""]
    if rrrc["F"] is None:
        lines.append(f"Not available: {rrrc.get('note', 'undefined')}.")
    else:
        lines += [f"a) Test of H0: the treatments have the same {fom}.", "",
                  "| Source | DF | Mean square | F | p |", "|---|---:|---:|---:|---:|",
                  _row(["Treatment", str(rrrc["ndf"]), _num(result["mean_squares"]["ms_t"]), _num(rrrc["F"], 4),
                        _p(rrrc["p"])]),
                  _row(["Error", _num(rrrc["ddf"], 2), _num(rrrc["denominator"]), "", ""]), "",
                  f"Error term: {rrrc['error_term']}; its degrees of freedom as Hillis (2007).", "",
                  f"b) {int(100 * (1 - result['alpha']))} % confidence intervals and tests of the differences.", "",
                  *_differences(rrrc["differences"], name, "t"), "",
                  f"c) Each treatment alone ({int(100 * (1 - result['alpha']))} % CI).", "",
                  *_singles(rrrc["treatments"], name)]
    lines += ["", f"{h}# Analysis 2: fixed readers and random cases", "",
              "(Results apply to the population of cases, for these readers only.)", ""]
    if frrc["chi2"] is None:
        lines.append("Not available: the error term is not positive.")
    else:
        lines += [f"a) Chi-square test: chi2 = {_num(frrc['chi2'], 4)} on {frrc['df']} df, p = {_p(frrc['p'])} "
                  f"(error term {frrc['error_term']} = {_num(frrc['denominator'])}).", "",
                  "b) Differences (normal approximation).", "", *_differences(frrc["differences"], name, "z"), "",
                  "c) Each treatment alone.", "", *_singles(frrc["treatments"], name), "",
                  "d) Each reader alone (differences).", "",
                  "| Reader | Comparison | Estimate | Std error | z | p | CI |", "|---|---|---:|---:|---:|---:|---|"]
        lines += [_row([d["reader"], f"{name(d['a'])} − {name(d['b'])}", _num(d["difference"]), _num(d["se"]),
                        _num(d["statistic"], 3), _p(d["p"]), _ci(d["ci95"])]) for d in frrc["per_reader"]]
    lines += ["", f"{h}# Analysis 3: random readers and fixed cases", "",
              "(Results apply to the population of readers, for these cases only.)", ""]
    if rrfc["F"] is None:
        lines.append(f"Not available: {rrfc.get('note', 'undefined')}.")
    else:
        lines += [f"a) F = {_num(rrfc['F'], 4)} on ({rrfc['ndf']}, {rrfc['ddf']}) df, p = {_p(rrfc['p'])} "
                  f"(error term {rrfc['error_term']}).", "", "b) Differences.", "",
                  *_differences(rrfc["differences"], name, "t"), "", "c) Each treatment alone.", "",
                  *_singles(rrfc["treatments"], name)]
    lines += _dbm(result["dbm"], h)
    if result.get("sample_size"):
        lines += _sample_size(result["sample_size"], h, fom)
    lines += ["", f"{h}# References", ""] + [f"- {reference}" for reference in result["references"]]
    return "\n".join(lines) + "\n"


def _differences(differences: list[dict], name, statistic: str) -> list[str]:
    lines = [f"| Comparison | Estimate | Std error | DF | {statistic} | p | CI |", "|---|---:|---:|---:|---:|---:|---|"]
    lines += [_row([f"{name(d['a'])} − {name(d['b'])}", _num(d["difference"]), _num(d["se"]),
                    _num(d["df"], 2) if d["df"] is not None else MISSING, _num(d["statistic"], 3), _p(d["p"]),
                    _ci(d["ci95"])]) for d in differences]
    return lines


def _singles(treatments: dict, name) -> list[str]:
    lines = ["| Treatment | Estimate | Std error | DF | CI |", "|---|---:|---:|---:|---|"]
    lines += [_row([name(t), _num(v["fom"]), _num(v["se"]), _num(v["df"], 2) if v.get("df") is not None else MISSING,
                    _ci(v["ci95"])]) for t, v in treatments.items()]
    return lines


def _dbm(dbm: dict, h: str) -> list[str]:
    lines = ["", f"{h}# DBM view (pseudovalue ANOVA)", ""]
    if "note" in dbm:
        return lines + [dbm["note"][0].upper() + dbm["note"][1:] + "."]
    ms = dbm["mean_squares"]
    lines += ["| Source | DF | Mean square |", "|---|---:|---:|"]
    lines += [_row([key, str(dbm["df"][key]), _num(value)]) for key, value in ms.items()]
    for key, title in (("random_readers_random_cases", "Random readers and random cases"),
                       ("fixed_readers_random_cases", "Fixed readers and random cases"),
                       ("random_readers_fixed_cases", "Random readers and fixed cases")):
        if key in dbm and dbm[key]["F"] is not None:
            test = dbm[key]
            lines.append(f"\n{title}: F = {_num(test['F'], 4)} on ({test['ndf']}, {_num(test['ddf'], 2)}) df, "
                         f"p = {_p(test['p'])} (error term {test['error_term']}).")
    return lines


def _sample_size(table: dict, h: str, fom: str) -> list[str]:
    lines = ["", f"{h}# Planning the next study", "",
             f"Cases needed for {int(100 * table['target_power'])} % power to detect a difference of "
             f"{table['effect']:.3f} in {fom} at alpha {table['alpha']:g} (two-sided), with this study's variance "
             f"components as the pilot ({table['pilot_cases']} cases; cases {table['cases_are']}).", "",
             "| Readers | Cases | Power |", "|---:|---:|---:|"]
    lines += [_row([str(row["readers"]), str(row["cases"]) if row["cases"] else "more readers needed",
                    f"{row['power']:.3f}"]) for row in table["rows"]]
    return lines + ["", f"Method: {table['method']}; {table['reference']}"]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _num(value, digits: int = 8) -> str:
    """``digits`` decimals (OR-DBM MRMC prints estimates and variance components with eight)."""
    return MISSING if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    return MISSING if value is None else ("< 0.0001" if value < 1e-4 else f"{value:.4f}")


def _ci(interval) -> str:
    return MISSING if interval is None else f"({interval[0]:.4f}, {interval[1]:.4f})"


# --- figures ------------------------------------------------------------------------------------


def roc_png(ratings: Sequence[Rating], result: dict, *, title: str = "",
            treatment_labels: dict[str, str] | None = None) -> bytes:
    """Empirical ROC curves: each reader (thin) and the reader average (vertical average, thick)
    per treatment."""
    from matplotlib.figure import Figure

    labels = treatment_labels or {}
    study = Study.from_ratings(ratings)
    figure = Figure(figsize=(6.0, 6.0), layout="constrained")
    axes = figure.add_subplot()
    colours = ["#ef8a62", "#2166ac", "#1b7837", "#762a83", "#e08214"]
    for i, treatment in enumerate(study.treatments):
        colour = colours[i % len(colours)]
        curves = []
        for rc in study.by_reader:
            truth = study.truth[rc.cases].astype(bool)
            fpr, tpr = empirical_roc(rc.ratings[i][truth], rc.ratings[i][~truth])
            axes.plot(fpr, tpr, color=colour, alpha=0.3, linewidth=0.8)
            curves.append(np.interp(FPR_GRID, fpr, tpr))
        auc = result["treatments"][treatment]["fom"]
        axes.plot(FPR_GRID, np.mean(curves, axis=0), color=colour, linewidth=2.4,
                  label=f"{labels.get(treatment, treatment)}: reader-averaged AUC {auc:.3f}")
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=0.8)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.set_xlabel("1 − specificity (false positive fraction)")
    axes.set_ylabel("sensitivity (true positive fraction)")
    axes.set_title(title or "Empirical ROC curves (thin: each reader)")
    axes.legend(loc="lower right", fontsize=8)
    return png_bytes(figure)


def empirical_roc(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Operating points (FPR, TPR) of calling ratings >= each threshold positive, from (0,0) to (1,1)."""
    thresholds = np.unique(np.concatenate([positive, negative]))[::-1]
    tpr = [0.0] + [float(np.mean(positive >= t)) for t in thresholds]
    fpr = [0.0] + [float(np.mean(negative >= t)) for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def forest_png(result: dict, *, title: str = "", treatment_labels: dict[str, str] | None = None,
               flip: bool = False) -> bytes:
    """Each reader's difference (fixed-reader CIs) and the MRMC difference (random readers and
    cases) with their confidence intervals, for every pair of treatments; ``flip`` draws b - a
    instead of a - b (the reader study shows Task 2 - Task 1)."""
    from matplotlib.figure import Figure

    labels = treatment_labels or {}
    sign = -1.0 if flip else 1.0
    rows = []
    for overall in result["random_readers_random_cases"]["differences"] or result["fixed_readers_random_cases"][
            "differences"]:
        pair = (overall["a"], overall["b"])
        rows += [(f"reader {d['reader']}", d, False) for d in result["fixed_readers_random_cases"]["per_reader"]
                 if (d["a"], d["b"]) == pair]
        kind = "MRMC (random readers, cases)" if result["random_readers_random_cases"]["F"] is not None else \
            "MRMC (fixed readers)"
        rows.append((kind, overall, True))
    figure = Figure(figsize=(6.4, max(2.5, 0.38 * len(rows) + 1.4)), layout="constrained")
    axes = figure.add_subplot()
    for y, (label, d, bold) in enumerate(reversed(rows)):
        if d["ci95"] is not None:
            axes.plot([sign * v for v in d["ci95"]], [y, y], color="#b2182b" if bold else "#4d4d4d",
                      linewidth=2.2 if bold else 1.2)
        axes.plot([sign * d["difference"]], [y], marker="D" if bold else "o", color="#b2182b" if bold else "#4d4d4d")
    axes.axvline(0.0, color="#999999", linestyle=":", linewidth=0.8)
    axes.set_yticks(range(len(rows)), labels=[label for label, _, _ in reversed(rows)])
    first = rows[-1][1] if rows else None
    comparison = ""
    if first:
        a, b = (first["b"], first["a"]) if flip else (first["a"], first["b"])
        comparison = f"{labels.get(a, a)} − {labels.get(b, b)}"
    axes.set_xlabel(f"difference in {FOM_NAMES[result['figure_of_merit']]} ({comparison})")
    axes.set_title(title or "Reader-level differences and the MRMC difference (95 % CI)", fontsize=10)
    return png_bytes(figure)


# --- the command's files ---------------------------------------------------------------------------

FORMATS = ("json", "md", "csv", "png")
ANALYSES = ("random_readers_random_cases", "fixed_readers_random_cases", "random_readers_fixed_cases")


def render_files(result: dict, ratings: Sequence[Rating], formats: Sequence[str] = FORMATS, *,
                 title: str | None = None) -> dict[str, bytes]:
    """File name -> content: ``mrmc.json``, ``mrmc.md``, the CSV tables and the PNG figures."""
    import json

    files: dict[str, bytes] = {}
    for output_format in formats:
        if output_format == "json":
            files["mrmc.json"] = (json.dumps(result, indent=2, ensure_ascii=False) + "\n").encode()
        elif output_format == "md":
            files["mrmc.md"] = markdown(result, title=title).encode()
        elif output_format == "csv":
            files.update({f"mrmc_{name}.csv": _csv(table).encode() for name, table in tables(result).items()})
        elif output_format == "png":
            if result["figure_of_merit"] == "auc":
                files["mrmc_roc.png"] = roc_png(ratings, result)
            files["mrmc_forest.png"] = forest_png(result)
        else:
            raise ValueError(f"unknown format {output_format!r}; one of {', '.join(FORMATS)}")
    return files


def tables(result: dict) -> dict[str, tuple[list[str], list[list]]]:
    """The result as flat tables: differences of every analysis, treatments, readers, components."""
    differences = []
    for analysis in ANALYSES:
        for d in result[analysis]["differences"]:
            ci = d["ci95"] or [None, None]
            differences.append([analysis, d["a"], d["b"], d["difference"], d["se"], d["df"], d["statistic"], d["p"],
                                ci[0], ci[1]])
    for d in result["fixed_readers_random_cases"]["per_reader"]:
        ci = d["ci95"] or [None, None]
        differences.append([f"reader {d['reader']} (fixed readers)", d["a"], d["b"], d["difference"], d["se"], None,
                            d["statistic"], d["p"], ci[0], ci[1]])
    treatments = []
    for analysis in ANALYSES:
        for name, v in result[analysis]["treatments"].items() if "treatments" in result[analysis] else ():
            ci = v["ci95"] or [None, None]
            treatments.append([analysis, name, v["fom"], v["se"], v.get("df"), ci[0], ci[1]])
    readers = [[reader, treatment, value] for reader, values in result["readers"].items()
               for treatment, value in values.items()]
    vc = result["variance_components"]
    components = [[key, vc[key]] for key in ("var_r", "var_tr", "cov1", "cov2", "cov3", "var_error")]
    components += [[key, value] for key, value in vc["correlations"].items()]
    tests = []
    for analysis in ANALYSES:
        test = result[analysis]
        tests.append([analysis, "chi2" if "chi2" in test else "F", test.get("F", test.get("chi2")), test.get("ndf",
                      test.get("df")), test.get("ddf"), test["p"]])
    return {
        "tests": (["analysis", "statistic", "value", "ndf", "ddf", "p"], tests),
        "differences": (["analysis", "a", "b", "difference", "se", "df", "statistic", "p", "ci95_low", "ci95_high"],
                        differences),
        "treatments": (["analysis", "treatment", "fom", "se", "df", "ci95_low", "ci95_high"], treatments),
        "readers": (["reader", "treatment", "fom"], readers),
        "variance_components": (["component", "estimate"], components),
    }


def _csv(table) -> str:
    import csv

    header, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if value is None else repr(value) if isinstance(value, float) else value for value in row]
                      for row in rows])
    return buffer.getvalue()
