"""PNG figures of the report: confusion heat maps and accuracy per reader (matplotlib, Agg).

Figures are drawn on ``matplotlib.figure.Figure`` directly, never through pyplot, so that
drawing in a web process keeps no global state and two threads do not share a figure.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

DPI = 120
COLOUR_MAP = "Blues"
#: Cells darker than this (row fraction) get white text.
DARK_CELL = 0.5
TASK_TITLES = {1: "Task 1: image alone", 2: "Task 2: image + six SE-CBIR neighbours"}


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """Heat map of a confusion matrix: rows truth, columns answer, colour = share of the row."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap=COLOUR_MAP, vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), labels=classes)
    axes.set_yticks(range(len(classes)), labels=classes)
    axes.set_xlabel("answer")
    axes.set_ylabel("truth")
    axes.set_title(title)
    for row in range(len(classes)):
        for column in range(len(classes)):
            axes.text(column, row, str(int(counts[row, column])), ha="center", va="center", fontsize=9,
                      color="white" if shares[row, column] > DARK_CELL else "black")
    figure.colorbar(image, ax=axes, label="share of the row (truth)")
    return png_bytes(figure)


def accuracy_png(report: dict) -> bytes:
    """Grouped bars per reader: majority vote, Task 1 and Task 2 accuracy in percent."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = report["readers"]
    series = (
        ("SE-CBIR majority vote", [row["majority_vote_accuracy"] for row in rows], "#9e9e9e"),
        ("Task 1 (image alone)", [row["task1"]["accuracy"] for row in rows], "#ef8a62"),
        ("Task 2 (with neighbours)", [row["task2"]["accuracy"] for row in rows], "#2166ac"),
    )
    positions = np.arange(len(rows))
    width = 0.8 / len(series)
    figure = Figure(figsize=(max(6.4, 0.9 * len(rows) + 2), 4.8), layout="constrained")
    axes = figure.add_subplot()
    for i, (label, values, colour) in enumerate(series):
        heights = [100 * v if v is not None else 0.0 for v in values]
        axes.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width, label=label, color=colour)
    axes.set_xticks(positions, labels=[row["reader"] for row in rows], rotation=30, ha="right")
    axes.set_ylim(0, 100)
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Accuracy per reader")
    figure.legend(loc="outside lower center", ncols=len(series), fontsize=8)
    return png_bytes(figure)


def png_bytes(figure) -> bytes:
    """A matplotlib Figure as PNG bytes, drawn on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
