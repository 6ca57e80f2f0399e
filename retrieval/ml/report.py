"""Formatting retrieval results: JSON, a Markdown table in the layout of the thesis's Table 4.I,
a long-format CSV and a plot of AP@k against k. Pure functions, no Django.

``results`` everywhere maps a method name to ``(scores, lesion_aware_scores or None)``; all
scores must share the same cut-offs. A value missing from the scores (a class without
queries, a k no query reached) stays missing: ``None`` in JSON, a dash in Markdown, no row in
the CSV, a gap in the plot.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from retrieval.ml.metrics import RetrievalScores

Results = Mapping[str, tuple[RetrievalScores, RetrievalScores | None]]

STANDARD, LESION_AWARE = "standard", "lesion_aware"
MACRO = "macro"
CSV_COLUMNS = ("method", "variant", "class", "k", "value")
#: The thesis reports two decimals; Markdown is for reading, the CSV/JSON keep full precision.
MARKDOWN_DECIMALS = 2
MISSING = "–"
PLOT_SIZE_INCHES = (6.0, 4.0)
PLOT_DPI = 120
# A little headroom above 1.0 so that markers of perfect scores are not cut by the frame.
PLOT_Y_MAX = 1.05


def to_json(results: Results) -> dict:
    """``{"k": [...], "methods": {name: {"n_queries", "ap", "per_class", "ap_lesion_aware"}}}``.

    Cut-offs become string keys (JSON objects have string keys); ``ap_lesion_aware`` is
    ``None`` for a method scored without the lesion-aware variant.
    """
    cutoffs = shared_ks(results)
    return {
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


def to_markdown(results: Results) -> str:
    """One table, one block per method: P@k of each class, AP@k, then lesion-aware AP@k."""
    cutoffs = shared_ks(results)
    lines = [
        "| Method | Class | Queries | " + " | ".join(f"k={k}" for k in cutoffs) + " |",
        "|---|---|---:|" + "---:|" * len(cutoffs),
    ]
    notes: list[str] = []
    for name, (scores, lesion_aware) in results.items():
        lines.extend(_markdown_block(name, scores, lesion_aware, cutoffs))
        notes.extend(_partial_notes(name, scores, lesion_aware))
    lines.append("")
    lines.append(
        "P@k: share of the first k neighbours with the query's class, averaged over that class's queries. "
        "AP@k: unweighted mean of P@k over the classes with queries. Lesion-aware: neighbours showing the "
        "query's own lesion are removed before cutting at k."
    )
    lines.extend(notes)
    return "\n".join(lines) + "\n"


def to_csv(results: Results) -> str:
    """Long format ``method,variant,class,k,value``; class ``macro`` is AP@k."""
    cutoffs = shared_ks(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, (scores, lesion_aware) in results.items():
        for variant, variant_scores in ((STANDARD, scores), (LESION_AWARE, lesion_aware)):
            if variant_scores is not None:
                writer.writerows(_csv_rows(name, variant, variant_scores, cutoffs))
    return buffer.getvalue()


def plot_precision_vs_k(results: Results, path: Path) -> None:
    """Save a PNG of AP@k against k: one line per method, its lesion-aware variant dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    from matplotlib.figure import Figure

    cutoffs = shared_ks(results)
    # A bare Figure, not pyplot: nothing is kept in pyplot's global list of open figures.
    figure = Figure(figsize=PLOT_SIZE_INCHES)
    axes = figure.subplots()
    for name, (scores, lesion_aware) in results.items():
        (line,) = axes.plot(cutoffs, _series(scores, cutoffs), marker="o", label=name)
        if lesion_aware is not None:
            axes.plot(cutoffs, _series(lesion_aware, cutoffs), marker="o", linestyle="--",
                      color=line.get_color(), label=f"{name} (lesion-aware)")
    axes.set_xticks(cutoffs)
    axes.set_ylim(0.0, PLOT_Y_MAX)
    axes.set_xlabel("k (neighbours)")
    axes.set_ylabel("AP@k (macro mean of per-class P@k)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left")
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
    name: str, scores: RetrievalScores, lesion_aware: RetrievalScores | None, cutoffs: list[int]
) -> list[str]:
    rows = [
        (code, count, scores.per_class.get(code, {})) for code, count in scores.n_per_class.items()
    ]
    rows.append(("**AP@k**", scores.n_queries, scores.ap))
    if lesion_aware is not None:
        rows.append(("**AP@k lesion-aware**", lesion_aware.n_queries, lesion_aware.ap))
    lines = []
    for index, (label, count, values) in enumerate(rows):
        method = f"**{name}**" if index == 0 else ""
        cells = " | ".join(_cell(values.get(k)) for k in cutoffs)
        lines.append(f"| {method} | {label} | {count} | {cells} |")
    return lines


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


def _cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.{MARKDOWN_DECIMALS}f}"


def _csv_rows(name: str, variant: str, scores: RetrievalScores, cutoffs: list[int]) -> list[list]:
    series = [(code, values) for code, values in scores.per_class.items()] + [(MACRO, scores.ap)]
    return [
        [name, variant, code, k, repr(values[k])]
        for code, values in series
        for k in cutoffs
        if k in values
    ]


def _series(scores: RetrievalScores, cutoffs: list[int]) -> list[float]:
    # NaN leaves a gap in the line where a cut-off has no value.
    return [scores.ap.get(k, float("nan")) for k in cutoffs]
