"""Paired lesion-bootstrap comparison of two evaluate_retrieval runs on the same split.

``evaluate_retrieval --out DIR`` writes ``DIR/queries.csv`` (one row per query and method: P@k,
the neighbour vote, the classifiers' predictions). Two runs of *different models* on the same
test split (two stem initialisations, vanilla vs integrated-gradient maps) can then be compared
on the same queries with the same bootstrap replicates, as evaluate_retrieval compares the
methods of one model:

    .venv/bin/python bench/paired_runs.py DIR_A DIR_B [--method secbir] [--method-b secbir]
                                          [--bootstrap 2000] [--seed 0]

Prints AP@k of each run with its interval and the difference A - B with its interval and the
two-sided bootstrap p, then the same for the vote's and the 4-channel classifier's accuracy and
macro sensitivity. No Django, no model: only the two CSV files.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def read(folder: Path, method: str) -> dict:
    with open(folder / "queries.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["method"] == method]
    if not rows:
        raise SystemExit(f"{folder / 'queries.csv'} has no rows of method {method!r}")
    ks = [int(name[5:]) for name in rows[0] if name.startswith("p_at_") and not name.endswith("lesion_aware")]
    rows.sort(key=lambda row: row["image_id"])
    return {
        "ids": [row["image_id"] for row in rows], "lesions": [row["lesion_id"] for row in rows],
        "labels": [row["dx"] for row in rows], "ks": ks,
        "hits": np.array([[float(row[f"p_at_{k}"]) for k in ks] for row in rows]),
        "vote": np.array([row["vote"] == row["dx"] for row in rows], dtype=float),
        "classifier4": np.array([row["predicted_4ch"] == row["dx"] for row in rows], dtype=float),
    }


def main() -> None:
    from retrieval.classes import CODES
    from retrieval.ml.bootstrap import LesionBootstrap, compare, interval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--method", default="secbir", help="method of run A (default secbir)")
    parser.add_argument("--method-b", help="method of run B (default: the same as A's)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a, b = read(args.run_a, args.method), read(args.run_b, args.method_b or args.method)
    if a["ids"] != b["ids"] or a["ks"] != b["ks"]:
        raise SystemExit("the two runs are not on the same queries and cut-offs; compare runs of one split")
    draw = LesionBootstrap(a["lesions"], a["labels"], replicates=args.bootstrap, seed=args.seed)
    name_a, name_b = f"{args.run_a.name}:{args.method}", f"{args.run_b.name}:{args.method_b or args.method}"
    print(f"{len(a['ids'])} queries, {draw.n_lesions} lesions, {args.bootstrap} replicates, seed {args.seed}\n")
    print("| figure | " + name_a + " | " + name_b + " | A - B [95 % CI], p |\n|---|---:|---:|---:|")

    def row(label, first, second, column=0):
        (ia,), (ib,) = interval(first[1][:, [column]]), interval(second[1][:, [column]])
        (c,) = compare(first[0][column], first[1][:, column], second[0][column], second[1][:, column])
        print(f"| {label} | {first[0][column]:.3f} [{ia.low:.3f}, {ia.high:.3f}] | "
              f"{second[0][column]:.3f} [{ib.low:.3f}, {ib.high:.3f}] | "
              f"{c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}], p={c.p:.3f} |")

    _, macro_a = draw.class_means(a["hits"], a["labels"], CODES)
    _, macro_b = draw.class_means(b["hits"], b["labels"], CODES)
    for column, k in enumerate(a["ks"]):
        row(f"AP@{k}", macro_a, macro_b, column)
    for key, label in (("vote", "vote"), ("classifier4", "4-channel classifier")):
        row(f"{label} accuracy", draw.mean(a[key]), draw.mean(b[key]))
        row(f"{label} macro sensitivity", draw.class_means(a[key], a["labels"], CODES)[1],
            draw.class_means(b[key], b["labels"], CODES)[1])


if __name__ == "__main__":
    main()
