"""Formatting retrieval results: JSON, a Markdown table in the layout of the thesis's Table 4.I,
a long-format CSV and a plot of AP@k against k. Pure functions, no Django.

``results`` everywhere maps a method name to ``(scores, lesion_aware_scores or None)``; all
scores must share the same cut-offs. A value missing from the scores (a class without
queries, a k no query reached) stays missing: ``None`` in JSON, a dash in Markdown, no row in
the CSV, a gap in the plot.

With an ``uncertainty`` (:class:`retrieval.ml.bootstrap.Uncertainty`) every value gets its
bootstrap interval (JSON ``ci``, Markdown ``value [low, high]``, CSV columns ``ci_low``,
``ci_high``, error bars in the plot), every method its paired comparison with the reference
method (JSON ``vs_reference``, a Markdown table, CSV columns ``difference`` ... ``p``), and
classes with fewer than ``FEW_QUERIES`` test queries are marked (JSON ``few_queries``, a dagger
in Markdown, CSV column ``few_queries``). The CSV's first five columns are unchanged; the new
ones come after them. The decision figures (classifiers and neighbour votes: accuracy, macro
sensitivity, calibration) have their own tables (:func:`decisions_markdown` ...).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from retrieval.ml.bootstrap import Uncertainty
from retrieval.ml.metrics import RetrievalScores

Results = Mapping[str, tuple[RetrievalScores, RetrievalScores | None]]

STANDARD, LESION_AWARE = "standard", "lesion_aware"
MACRO = "macro"
CSV_COLUMNS = ("method", "variant", "class", "k", "value")
#: Appended after CSV_COLUMNS when intervals are known (empty cells otherwise).
CSV_UNCERTAINTY_COLUMNS = ("ci_low", "ci_high", "n_queries", "few_queries", "reference", "difference",
                           "diff_low", "diff_high", "p")
DECISION_CSV_COLUMNS = ("source", "measure", "class", "value", "ci_low", "ci_high", "vs", "difference",
                        "diff_low", "diff_high", "p")
FEW_MARK = "†"
P_DECIMALS = 3
#: The thesis reports two decimals; Markdown is for reading, the CSV/JSON keep full precision.
MARKDOWN_DECIMALS = 2
MISSING = "–"
PLOT_SIZE_INCHES = (6.0, 4.0)
PLOT_DPI = 120
# A little headroom above 1.0 so that markers of perfect scores are not cut by the frame.
PLOT_Y_MAX = 1.05


def to_json(results: Results, uncertainty: Uncertainty | None = None) -> dict:
    """``{"k": [...], "methods": {name: {"n_queries", "ap", "per_class", "ap_lesion_aware"}}}``.

    Cut-offs become string keys (JSON objects have string keys); ``ap_lesion_aware`` is
    ``None`` for a method scored without the lesion-aware variant. With ``uncertainty`` each
    method also has ``n_per_class``, ``few_queries`` (classes under the limit), ``ci``
    (``{"ap", "per_class", "ap_lesion_aware", "per_class_lesion_aware"}``: ``[low, high]`` per k)
    and ``vs_reference`` (``{"reference", "ap", "per_class"}``: ``{"difference", "ci", "p"}`` per
    k; None for the reference), and the document has ``bootstrap`` (how the intervals were made).
    """
    cutoffs = shared_ks(results)
    document = {
        "k": cutoffs,
        "methods": {
            name: {
                "n_queries": scores.n_queries,
                "ap": _by_k(scores.ap, cutoffs),
                "per_class": {code: _by_k(values, cutoffs) for code, values in scores.per_class.items()},
                "ap_lesion_aware": _by_k(lesion_aware.ap, cutoffs) if lesion_aware else None,
            }
            for name, (scores, lesion_aware) in results.items()
        },
    }
    if uncertainty is None:
        return document
    for name, (scores, _) in results.items():
        entry = document["methods"][name]
        entry["n_per_class"] = dict(scores.n_per_class)
        entry["few_queries"] = _few(scores, uncertainty)
        found = uncertainty.methods.get(name)
        if found is None:
            continue
        entry["ci"] = {"ap": _intervals_by_k(found.standard.ap, cutoffs),
                       "per_class": {code: _intervals_by_k(v, cutoffs) for code, v in found.standard.per_class.items()}}
        if found.lesion_aware is not None:
            entry["ci"]["ap_lesion_aware"] = _intervals_by_k(found.lesion_aware.ap, cutoffs)
            entry["ci"]["per_class_lesion_aware"] = {code: _intervals_by_k(v, cutoffs)
                                                     for code, v in found.lesion_aware.per_class.items()}
        entry["vs_reference"] = None if found.vs_reference is None else {
            "reference": uncertainty.reference,
            "ap": {str(k): c.as_dict() for k, c in found.vs_reference["ap"].items()},
            "per_class": {code: {str(k): c.as_dict() for k, c in by_k.items()}
                          for code, by_k in found.vs_reference["per_class"].items()},
        }
    document["bootstrap"] = {**uncertainty.bootstrap, "level": uncertainty.level,
                             "reference": uncertainty.reference, "few_queries_below": uncertainty.few_queries}
    return document


def to_markdown(results: Results, uncertainty: Uncertainty | None = None) -> str:
    """One table, one block per method: P@k of each class, AP@k, then lesion-aware AP@k.

    With ``uncertainty``: each value with its interval, classes with few queries marked, and a
    second table of each method's AP@k minus the reference's (paired, same queries).
    """
    cutoffs = shared_ks(results)
    lines = [
        "| Method | Class | Queries | " + " | ".join(f"k={k}" for k in cutoffs) + " |",
        "|---|---|---:|" + "---:|" * len(cutoffs),
    ]
    notes: list[str] = []
    for name, (scores, lesion_aware) in results.items():
        lines.extend(_markdown_block(name, scores, lesion_aware, cutoffs, uncertainty))
        notes.extend(_partial_notes(name, scores, lesion_aware))
    lines.append("")
    lines.append(
        "P@k: share of the first k neighbours with the query's class, averaged over that class's queries. "
        "AP@k: unweighted mean of P@k over the classes with queries. Lesion-aware: neighbours showing the "
        "query's own lesion are removed before cutting at k."
    )
    if uncertainty is not None:
        b = uncertainty.bootstrap
        lines.append(
            f"[low, high]: {uncertainty.level:.0%} percentile interval of {b.get('replicates', '?')} bootstrap "
            f"replicates resampling the {b.get('n_lesions', '?')} test lesions (all images of a lesion together, "
            f"within their class; seed {b.get('seed', '?')}). {FEW_MARK}: fewer than {uncertainty.few_queries} "
            "test queries in the class, its P@k moves by 1/n with a single query."
        )
        lines.extend(["", *_comparison_markdown(results, uncertainty, cutoffs)])
    lines.extend(notes)
    return "\n".join(lines) + "\n"


def _comparison_markdown(results: Results, uncertainty: Uncertainty, cutoffs: list[int]) -> list[str]:
    if uncertainty.reference is None:
        return []
    lines = [f"| AP@k minus {uncertainty.reference}'s (paired) | " + " | ".join(f"k={k}" for k in cutoffs) + " |",
             "|---|" + "---:|" * len(cutoffs)]
    for name in results:
        found = uncertainty.methods.get(name)
        if found is None or found.vs_reference is None:
            continue
        cells = []
        for k in cutoffs:
            c = found.vs_reference["ap"].get(k)
            cells.append(MISSING if c is None else f"{c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}] "
                                                  f"p={_p(c.p)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Difference of AP@k on the same queries, its {uncertainty.level:.0%} interval from the same "
                 "bootstrap replicates for both methods, and the two-sided bootstrap p of no difference "
                 "(per-class differences: results.json, results.csv).")
    return lines


def _p(p: float) -> str:
    return f"{p:.{P_DECIMALS}f}" if p == p else MISSING


def to_csv(results: Results, uncertainty: Uncertainty | None = None) -> str:
    """Long format ``method,variant,class,k,value``; class ``macro`` is AP@k.

    With ``uncertainty`` the columns :data:`CSV_UNCERTAINTY_COLUMNS` follow: the interval, the
    number of queries (of the class, or all for ``macro``), whether the class has few queries,
    and, on the standard rows of methods other than the reference, the paired difference to the
    reference with its interval and p.
    """
    cutoffs = shared_ks(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + (CSV_UNCERTAINTY_COLUMNS if uncertainty is not None else ()))
    for name, (scores, lesion_aware) in results.items():
        for variant, variant_scores in ((STANDARD, scores), (LESION_AWARE, lesion_aware)):
            if variant_scores is not None:
                writer.writerows(_csv_rows(name, variant, variant_scores, cutoffs, uncertainty))
    return buffer.getvalue()


def plot_precision_vs_k(results: Results, path: Path, uncertainty: Uncertainty | None = None) -> None:
    """Save a PNG of AP@k against k: one line per method, its lesion-aware variant dashed (left
    out, and said in the legend, where it equals the standard one at every k); with
    ``uncertainty`` error bars of the (standard) AP@k intervals, methods shifted slightly apart
    so that the bars do not hide each other. The legend sits beside the axes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    from matplotlib.figure import Figure

    cutoffs = shared_ks(results)
    # A bare Figure, not pyplot: nothing is kept in pyplot's global list of open figures.
    width, height = PLOT_SIZE_INCHES
    figure = Figure(figsize=(width + 2.5, max(height, 1.2 + 0.22 * len(results))))
    axes = figure.subplots()
    palette = matplotlib.colormaps["tab20" if len(results) > 10 else "tab10"].colors
    gap = min(b - a for a, b in zip(cutoffs, cutoffs[1:])) if len(cutoffs) > 1 else 1
    spacing = 0.5 * gap / max(len(results), 1)  # all methods' bars within half the gap between cut-offs
    for number, (name, (scores, lesion_aware)) in enumerate(results.items()):
        colour = palette[number % len(palette)]
        found = uncertainty.methods.get(name) if uncertainty is not None else None
        same = lesion_aware is not None and all(lesion_aware.ap.get(k) == scores.ap.get(k) for k in cutoffs)
        label = f"{name} (lesion-aware identical)" if same else name
        if found is not None:
            shift = (number - (len(results) - 1) / 2) * spacing
            values = _series(scores, cutoffs)
            bounds = [found.standard.ap.get(k) for k in cutoffs]
            below = [v - b.low if b is not None else float("nan") for v, b in zip(values, bounds)]
            above = [b.high - v if b is not None else float("nan") for v, b in zip(values, bounds)]
            axes.errorbar([k + shift for k in cutoffs], values, yerr=[below, above], marker="o", markersize=4,
                          capsize=2, linewidth=1.2, color=colour, label=label)
        else:
            axes.plot(cutoffs, _series(scores, cutoffs), marker="o", color=colour, label=label)
        if lesion_aware is not None and not same:
            axes.plot(cutoffs, _series(lesion_aware, cutoffs), marker="o", linestyle="--",
                      color=colour, label=f"{name} (lesion-aware)")
    axes.set_xticks(cutoffs)
    axes.set_ylim(0.0, PLOT_Y_MAX)
    axes.set_xlabel("k (neighbours)")
    axes.set_ylabel("AP@k (macro mean of per-class P@k)")
    if uncertainty is not None:
        axes.set_title(f"error bars: {uncertainty.level:.0%} lesion-bootstrap intervals", fontsize="small")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=PLOT_DPI)


def shared_ks(results: Results) -> list[int]:
    """The cut-offs common to all scores in ``results``; ``ValueError`` if they differ or none."""
    if not results:
        raise ValueError("no results to report")
    found = {tuple(s.k) for pair in results.values() for s in pair if s is not None}
    if len(found) != 1:
        raise ValueError(f"all methods must be scored at the same cut-offs, got {sorted(found)}")
    return list(found.pop())


def _by_k(values: Mapping[int, float], cutoffs: list[int]) -> dict[str, float | None]:
    return {str(k): values.get(k) for k in cutoffs}


def _markdown_block(
    name: str, scores: RetrievalScores, lesion_aware: RetrievalScores | None, cutoffs: list[int],
    uncertainty: Uncertainty | None = None,
) -> list[str]:
    found = uncertainty.methods.get(name) if uncertainty is not None else None
    few = set(_few(scores, uncertainty)) if uncertainty is not None else set()
    rows = [
        (code + (f" {FEW_MARK}" if code in few else ""), count, scores.per_class.get(code, {}),
         found.standard.per_class.get(code, {}) if found else {})
        for code, count in scores.n_per_class.items()
    ]
    rows.append(("**AP@k**", scores.n_queries, scores.ap, found.standard.ap if found else {}))
    if lesion_aware is not None:
        rows.append(("**AP@k lesion-aware**", lesion_aware.n_queries, lesion_aware.ap,
                     found.lesion_aware.ap if found and found.lesion_aware else {}))
    lines = []
    for index, (label, count, values, bounds) in enumerate(rows):
        method = f"**{name}**" if index == 0 else ""
        cells = " | ".join(_cell(values.get(k), bounds.get(k)) for k in cutoffs)
        lines.append(f"| {method} | {label} | {count} | {cells} |")
    return lines


def _few(scores: RetrievalScores, uncertainty: Uncertainty | None) -> list[str]:
    limit = uncertainty.few_queries if uncertainty is not None else 0
    return [code for code, count in scores.n_per_class.items() if 0 < count < limit]


def _intervals_by_k(values: Mapping, cutoffs: list[int]) -> dict[str, list[float] | None]:
    return {str(k): values[k].as_list() if k in values else None for k in cutoffs}


def _partial_notes(name: str, scores: RetrievalScores, lesion_aware: RetrievalScores | None) -> list[str]:
    """Say so when some cut-offs were computed on fewer queries (too few neighbours)."""
    notes = []
    for variant, variant_scores in (("", scores), (" lesion-aware", lesion_aware)):
        if variant_scores is None:
            continue
        for k, count in variant_scores.n_queries_at_k.items():
            if count != variant_scores.n_queries:
                notes.append(
                    f"{name}{variant}: P@{k} on {count} of {variant_scores.n_queries} queries; "
                    f"the others have fewer than {k} neighbours."
                )
    return notes


def _cell(value: float | None, bounds=None) -> str:
    if value is None:
        return MISSING
    if bounds is None:
        return f"{value:.{MARKDOWN_DECIMALS}f}"
    return f"{value:.{MARKDOWN_DECIMALS}f} [{bounds.low:.{MARKDOWN_DECIMALS}f}, {bounds.high:.{MARKDOWN_DECIMALS}f}]"


def _csv_rows(name: str, variant: str, scores: RetrievalScores, cutoffs: list[int],
              uncertainty: Uncertainty | None = None) -> list[list]:
    series = [(code, values) for code, values in scores.per_class.items()] + [(MACRO, scores.ap)]
    rows = [
        [name, variant, code, k, repr(values[k])]
        for code, values in series
        for k in cutoffs
        if k in values
    ]
    if uncertainty is None:
        return rows
    found = uncertainty.methods.get(name)
    intervals = None
    if found is not None:
        intervals = found.standard if variant == STANDARD else found.lesion_aware
    few = set(_few(scores, uncertainty))
    for row in rows:
        code, k = row[2], row[3]
        bounds = None
        if intervals is not None:
            bounds = intervals.ap.get(k) if code == MACRO else intervals.per_class.get(code, {}).get(k)
        count = scores.n_queries if code == MACRO else scores.n_per_class.get(code, 0)
        row += [repr(bounds.low) if bounds else "", repr(bounds.high) if bounds else "", count,
                "true" if code in few else "false"]
        comparison = None
        if found is not None and found.vs_reference is not None and variant == STANDARD:
            table = found.vs_reference["ap"] if code == MACRO else found.vs_reference["per_class"].get(code, {})
            comparison = table.get(k)
        if comparison is None:
            row += ["", "", "", "", ""]
        else:
            row += [uncertainty.reference, repr(comparison.difference), repr(comparison.low), repr(comparison.high),
                    repr(comparison.p)]
    return rows


# --- Decisions: classifiers and neighbour votes ---------------------------------------------

def decisions_json(decisions: Mapping[str, dict]) -> dict:
    """``{source: {"n", "accuracy", "accuracy_ci", "macro_sensitivity", "macro_sensitivity_ci",
    "sensitivity", "sensitivity_ci", "ece", "ece_ci", "reliability", "vs_3_channel"}}``."""
    out = {}
    for source, d in decisions.items():
        table = d["reliability"]
        out[source] = {
            "n": d["n"], "accuracy": d["accuracy"], "accuracy_ci": d["accuracy_ci"].as_list(),
            "macro_sensitivity": d["macro_sensitivity"], "macro_sensitivity_ci": d["macro_sensitivity_ci"].as_list(),
            "sensitivity": d["sensitivity"],
            "sensitivity_ci": {code: i.as_list() for code, i in d["sensitivity_ci"].items()},
            "ece": d["ece"], "ece_ci": d["ece_ci"].as_list(),
            "reliability": {"scheme": table.scheme, "mean_confidence": table.mean_confidence,
                            "bins": [b.as_dict() for b in table.bins]},
            "vs_3_channel": None if d["vs_3_channel"] is None else {
                measure: c.as_dict() for measure, c in d["vs_3_channel"].items()},
        }
    return out


def decisions_markdown(decisions: Mapping[str, dict], level: float, vote_k: int) -> str:
    """Accuracy, macro sensitivity and ECE of the classifiers and of each neighbour vote, each
    with its interval and (paired) its difference to the 3-channel classifier."""
    lines = ["| Decision | Accuracy | Macro sensitivity | vs 3-channel classifier: accuracy | macro sensitivity | ECE |",
             "|---|---:|---:|---:|---:|---:|"]

    def value(estimate, bounds):
        return f"{estimate:.2f} [{bounds.low:.2f}, {bounds.high:.2f}]"

    def versus(c):
        return MISSING if c is None else f"{c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}] p={_p(c.p)}"

    for source, d in decisions.items():
        vs = d["vs_3_channel"] or {}
        lines.append(f"| {source} | {value(d['accuracy'], d['accuracy_ci'])} | "
                     f"{value(d['macro_sensitivity'], d['macro_sensitivity_ci'])} | {versus(vs.get('accuracy'))} | "
                     f"{versus(vs.get('macro_sensitivity'))} | {value(d['ece'], d['ece_ci'])} |")
    n = next(iter(decisions.values()))["n"] if decisions else 0
    lines += ["", f"On the same {n} test queries. Classifier: the model's own prediction, no retrieval. Vote: the "
              f"class most frequent among the first {vote_k} neighbours (ties by rank), "
              "retrieval.ml.metrics.neighbour_vote_tally. Differences are paired (same bootstrap replicates), "
              f"[low, high] {level:.0%} lesion-bootstrap intervals. ECE: expected calibration error of the top-label "
              "confidence (classifier: top softmax probability, 10 equal bins; vote: the winner's share "
              f"count/{vote_k}, one bin per value); reliability diagram: reliability.png."]
    return "\n".join(lines) + "\n"


def decisions_csv(decisions: Mapping[str, dict]) -> str:
    """Long format: accuracy, macro sensitivity, per-class sensitivity and ECE of each source."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DECISION_CSV_COLUMNS)
    for source, d in decisions.items():
        vs = d["vs_3_channel"] or {}
        for measure, estimate, bounds in (("accuracy", d["accuracy"], d["accuracy_ci"]),
                                          ("macro_sensitivity", d["macro_sensitivity"], d["macro_sensitivity_ci"]),
                                          ("ece", d["ece"], d["ece_ci"])):
            c = vs.get(measure)
            writer.writerow([source, measure, MACRO if measure != "ece" else "", repr(estimate), repr(bounds.low),
                             repr(bounds.high)] + (["3-channel classifier", repr(c.difference), repr(c.low),
                                                    repr(c.high), repr(c.p)] if c else ["", "", "", "", ""]))
        for code, estimate in d["sensitivity"].items():
            bounds = d["sensitivity_ci"][code]
            writer.writerow([source, "sensitivity", code, repr(estimate), repr(bounds.low), repr(bounds.high),
                             "", "", "", "", ""])
    return buffer.getvalue()


#: At most this many lines in the reliability diagram (the rest: decisions.csv and results.json).
RELIABILITY_MAX_LINES = 6
#: The lines kept when there are more: the classifiers, then these methods' votes.
RELIABILITY_PREFERRED_VOTES = ("secbir", "secbir-predicted", "cnn3")


def plot_reliability(decisions: Mapping[str, dict], path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per source (marker
    area ~ queries in the bin), the diagonal for perfect calibration. With more than
    :data:`RELIABILITY_MAX_LINES` sources only the classifiers and the votes of
    :data:`RELIABILITY_PREFERRED_VOTES` are drawn (said in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = list(decisions)
    if len(shown) > RELIABILITY_MAX_LINES:
        preferred = [f"{name} vote" for name in RELIABILITY_PREFERRED_VOTES]
        shown = [s for s in shown if s.endswith("classifier")] + [s for s in preferred if s in decisions]
        shown = shown[:RELIABILITY_MAX_LINES]
    figure = Figure(figsize=(5.5, 5.0))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    palette = matplotlib.colormaps["tab10"].colors
    for number, source in enumerate(shown):
        d = decisions[source]
        bins = [b for b in d["reliability"].bins if b.n]
        colour = palette[number % len(palette)]
        axes.plot([b.confidence for b in bins], [b.accuracy for b in bins], color=colour,
                  label=f"{source} (ECE {d['ece']:.2f})")
        axes.scatter([b.confidence for b in bins], [b.accuracy for b in bins], s=[8 + 2 * b.n for b in bins],
                     color=colour, alpha=0.7)
    if len(shown) < len(decisions):
        axes.set_title(f"{len(decisions) - len(shown)} other votes: decisions.csv, results.json", fontsize="small")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, PLOT_Y_MAX)
    axes.set_xlabel("confidence (top softmax probability / vote share)")
    axes.set_ylabel("accuracy in the bin")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=PLOT_DPI)


def ties_markdown(ties: Mapping[str, dict], cutoffs: list[int]) -> str:
    """How often the seeded tie-break decided a rank, per method."""
    lines = ["| Method | tied ranks (of all ranks <= k_max) | queries with a tied rank | "
             + " | ".join(f"tie at the cut k={k}" for k in cutoffs) + " |",
             "|---|---:|---:|" + "---:|" * len(cutoffs)]
    for name, t in ties.items():
        cuts = " | ".join(str(t["tie_at_cut"].get(str(k), 0)) for k in cutoffs)
        lines.append(f"| {name} | {t['tied_ranks']} of {t['ranks']} | {t['queries_with_tied_rank']} | {cuts} |")
    lines += ["", "A rank is tied when its case scored exactly as another candidate; the order of tied cases is "
              "seeded random (retrieval.ml.methods.method_topk), not library order. A tie at the cut k: the k-th "
              "and (k+1)-th scores are equal, so the tie-break chose which cases are in the top k."]
    return "\n".join(lines) + "\n"


def _series(scores: RetrievalScores, cutoffs: list[int]) -> list[float]:
    # NaN leaves a gap in the line where a cut-off has no value.
    return [scores.ap.get(k, float("nan")) for k in cutoffs]
