"""Scoring external retrieval runs: RUN.csv validation, score_run, the report formats and the
evaluate_retrieval command. No database is touched."""
from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from retrieval.ml.metrics import precision_at_k
from retrieval.ml.report import shared_ks, to_csv, to_json, to_markdown
from retrieval.ml.runs import RunError, load_metadata, parse_run, score_run
from tests.conftest import real_metadata_rows

METADATA_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
# Seven images: m1 and m2 show the same melanoma (lesion L1).
METADATA = [
    ("L1", "m1", "mel"), ("L1", "m2", "mel"), ("L2", "m3", "mel"),
    ("L3", "n1", "nv"), ("L4", "n2", "nv"), ("L5", "n3", "nv"),
    ("L6", "b1", "bkl"),
]
# Run A: m1 -> m2 (own lesion), n2, m3, b1; n1 -> n2, m3, n3, b1.
RUN_A = [("m1", 1, "m2"), ("m1", 2, "n2"), ("m1", 3, "m3"), ("m1", 4, "b1"),
         ("n1", 1, "n2"), ("n1", 2, "m3"), ("n1", 3, "n3"), ("n1", 4, "b1")]
# Run B: three neighbours each; m1's own lesion (m2) at rank 2.
RUN_B = [("m1", 1, "m3"), ("m1", 2, "m2"), ("m1", 3, "n2"),
         ("n1", 1, "n3"), ("n1", 2, "n2"), ("n1", 3, "m1")]


def write_metadata(path: Path, rows=METADATA) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        writer.writerows([lesion, image, dx, "histo", "50", "female", "back"] for lesion, image, dx in rows)
    return path


def write_run(path: Path, rows, header=("query_id", "rank", "neighbour_id")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def files(tmp_path):
    return {
        "metadata": write_metadata(tmp_path / "meta.csv"),
        "A": write_run(tmp_path / "a.csv", RUN_A),
        "B": write_run(tmp_path / "b.csv", RUN_B),
    }


def evaluate(*args: str, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("evaluate_retrieval", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def runs_args(files, *names: str) -> list[str]:
    args = []
    for name in names:
        args += ["--run", f"{name}={files[name]}"]
    return args + ["--metadata", str(files["metadata"])]


def rounded(tree, digits: int = 9):
    """Floats rounded, so that 2/3 computed two ways compares equal."""
    if isinstance(tree, dict):
        return {key: rounded(value, digits) for key, value in tree.items()}
    if isinstance(tree, list):
        return [rounded(value, digits) for value in tree]
    return round(tree, digits) if isinstance(tree, float) else tree


# ---------------------------------------------------------------- run parsing

PROBLEM_RUN = [
    ("m1", "1", "m2"),      # line 2: fine
    ("m1", "2", "n2"),      # line 3: fine
    ("m1", "two", "n3"),    # line 4: rank not a number
    ("m1", "0", "n3"),      # line 5: rank below 1
    ("m1", "2", "n3"),      # line 6: rank 2 again
    ("m1", "3", "zz"),      # line 7: unknown neighbour -> rank 3 missing for m1
    ("qq", "1", "m1"),      # line 8: unknown query
    ("n1", "1", "n1"),      # line 9: itself -> n1 has no rank 1
    ("n1", "2", "n2"),      # line 10
    ("m1", "4", "b1"),      # line 11: after the gap at rank 3
    ("m1", "5", "m2"),      # line 12: m2 again for m1
    ("n2", "1", "n3", "x"),  # line 13: one field too many
    ("n2", "1", "n3"),      # line 14: fine
]


def test_parse_run_reports_each_problem_with_its_line(tmp_path):
    path = write_run(tmp_path / "run.csv", PROBLEM_RUN)

    parsed = parse_run(path, "X", {image for _, image, _ in METADATA})

    assert parsed.problems == [
        "line 4: rank 'two' is not a whole number, skipped",
        "line 5: rank 0 is below 1 (ranks start at 1), skipped",
        "line 6: duplicate rank 2 for query m1 (first on line 3), skipped",
        "line 7: neighbour_id 'zz' is not in the metadata, skipped",
        "line 8: query_id 'qq' is not in the metadata, skipped",
        "line 9: query n1 lists itself as its own neighbour (rank 1), skipped",
        "line 12: neighbour m2 listed again for query m1 (first on line 2), skipped",
        "line 13: wrong number of fields, skipped",
        "query m1: rank 3 is missing (after rank 2 on line 3, next is rank 4 on line 11); "
        "its neighbours from rank 4 on are ignored",
        "query n1: rank 1 is missing (at the start, next is rank 2 on line 10); "
        "its neighbours from rank 2 on are ignored",
    ]
    assert parsed.name == "X"
    # n1 keeps its place although none of its rows is usable: it is reported, not lost.
    assert parsed.queries == ["m1", "n1", "n2"]
    assert parsed.neighbours == {"m1": ["m2", "n2"], "n1": [], "n2": ["n3"]}


@pytest.mark.parametrize(
    ("header", "missing"),
    [(("query", "rank", "neighbour_id"), "query_id"), (("query_id", "score"), "rank, neighbour_id")],
)
def test_missing_columns_are_fatal(tmp_path, header, missing):
    path = write_run(tmp_path / "run.csv", [], header=header)

    with pytest.raises(RunError, match=f"header lacks column\\(s\\) {missing}; expected query_id,rank,neighbour_id"):
        parse_run(path, "X", {"m1"})


def test_score_column_is_accepted(tmp_path):
    path = write_run(tmp_path / "run.csv", [("m1", 1, "m3", 0.9)], header=("query_id", "rank", "neighbour_id", "score"))

    parsed = parse_run(path, "X", {"m1", "m3"})

    assert parsed.problems == [] and parsed.neighbours == {"m1": ["m3"]}


def test_score_run_leaves_short_queries_out_of_that_k_only(tmp_path):
    rows, _ = load_metadata(write_metadata(tmp_path / "meta.csv"))
    parsed = parse_run(write_run(tmp_path / "run.csv", PROBLEM_RUN), "X", rows.keys())
    # usable neighbours: m1 [m2 mel, n2 nv], n1 [], n2 [n3 nv]

    scores, problems = score_run(parsed, rows, ks=(1, 2), lesion_aware=False)

    assert problems == [
        "P@1: 1 of 3 queries have fewer than 1 neighbours and are left out of P@1: n1 (0)",
        "P@2: 2 of 3 queries have fewer than 2 neighbours and are left out of P@2: n1 (0), n2 (1)",
    ]
    # k=1 on m1 (mel, 1/1) and n2 (nv, 1/1); k=2 on m1 only (mel, 1/2)
    assert scores.per_class == {"mel": {1: 1.0, 2: 0.5}, "nv": {1: 1.0}}
    assert scores.ap == {1: 1.0, 2: 0.5}
    assert scores.n_queries == 2 and scores.n_queries_at_k == {1: 2, 2: 1}


def test_score_run_lesion_aware_can_leave_a_k_without_queries(tmp_path):
    rows, _ = load_metadata(write_metadata(tmp_path / "meta.csv"))
    parsed = parse_run(write_run(tmp_path / "run.csv", PROBLEM_RUN), "X", rows.keys())
    # without own-lesion images: m1 [n2 nv] (m2 is lesion L1 too), n1 [], n2 [n3 nv]

    scores, problems = score_run(parsed, rows, ks=(1, 2), lesion_aware=True)

    assert problems[1] == (
        "lesion-aware P@2: 3 of 3 queries have fewer than 2 neighbours left after removing their own "
        "lesion's images and are left out of P@2: m1 (1), n1 (0), n2 (1)"
    )
    assert scores.ap == {1: 0.5}  # (mel 0/1 + nv 1/1) / 2; nothing at k=2
    assert scores.k == [1, 2] and scores.n_queries_at_k == {1: 2, 2: 0}


def test_score_run_refuses_a_run_with_nothing_to_score(tmp_path):
    rows, _ = load_metadata(write_metadata(tmp_path / "meta.csv"))
    parsed = parse_run(write_run(tmp_path / "run.csv", [("m1", 1, "m3")]), "X", rows.keys())

    with pytest.raises(RunError, match="run 'X': no query has 2 usable neighbour"):
        score_run(parsed, rows, ks=(2, 3), lesion_aware=False)


def test_load_metadata_reports_bad_rows(tmp_path):
    path = write_metadata(tmp_path / "meta.csv", METADATA + [("L7", "x1", "melanoma")])

    rows, problems = load_metadata(path)

    assert len(rows) == len(METADATA)
    assert problems == ["metadata row 9 (x1): unknown class 'melanoma' (expected one of akiec, bcc, bkl, df, mel, nv, vasc), skipped"]


# ---------------------------------------------------------------- report formats

def test_report_formats_refuse_mixed_cutoffs():
    one = precision_at_k(["nv"], [["nv", "nv"]], ks=(1,))
    two = precision_at_k(["nv"], [["nv", "nv"]], ks=(1, 2))

    with pytest.raises(ValueError, match="same cut-offs"):
        shared_ks({"a": (one, None), "b": (two, None)})


def test_report_without_lesion_aware_scores():
    scores = precision_at_k(["nv", "mel"], [["nv", "mel"], ["nv", "mel"]], ks=(1, 2))
    results = {"S": (scores, None)}

    assert to_json(results) == {
        "k": [1, 2],
        "methods": {"S": {
            "n_queries": 2,
            "ap": {"1": 0.5, "2": 0.5},  # nv 1/1 and 1/2, mel 0/1 and 1/2
            "per_class": {"mel": {"1": 0.0, "2": 0.5}, "nv": {"1": 1.0, "2": 0.5}},
            "ap_lesion_aware": None,
        }},
    }
    assert to_csv(results).splitlines() == [
        "method,variant,class,k,value",
        "S,standard,mel,1,0.0", "S,standard,mel,2,0.5",
        "S,standard,nv,1,1.0", "S,standard,nv,2,0.5",
        "S,standard,macro,1,0.5", "S,standard,macro,2,0.5",
    ]
    markdown = to_markdown(results)
    assert "| **S** | akiec | 0 | – | – |" in markdown
    assert "|  | **AP@k** | 2 | 0.50 | 0.50 |" in markdown
    assert "lesion-aware**" not in markdown


# ---------------------------------------------------------------- the command

EXPECTED_JSON = {
    "k": [1, 3],
    "methods": {
        "A": {
            "n_queries": 2,
            # m1 (mel): [m2 mel] 1/1, [m2 mel, n2 nv, m3 mel] 2/3; n1 (nv): [n2] 1/1, [n2, m3, n3] 2/3
            "ap": {"1": 1.0, "3": 2 / 3},
            "per_class": {"mel": {"1": 1.0, "3": 2 / 3}, "nv": {"1": 1.0, "3": 2 / 3}},
            # without m2 (m1's own lesion), m1 sees [n2 nv, m3 mel, b1 bkl]: 0/1 and 1/3;
            # AP = (0 + 1)/2 = 0.5 and (1/3 + 2/3)/2 = 0.5
            "ap_lesion_aware": {"1": 0.5, "3": 0.5},
        },
        "B": {
            "n_queries": 2,
            # m1: [m3 mel, m2 mel, n2 nv] -> 1/1, 2/3; n1: [n3 nv, n2 nv, m1 mel] -> 1/1, 2/3
            "ap": {"1": 1.0, "3": 2 / 3},
            "per_class": {"mel": {"1": 1.0, "3": 2 / 3}, "nv": {"1": 1.0, "3": 2 / 3}},
            # lesion-aware, m1 keeps [m3, n2]: P@1 1/1, too short for P@3, so AP@3 is nv's 2/3 alone
            "ap_lesion_aware": {"1": 1.0, "3": 2 / 3},
        },
    },
}
B_SHORT = (
    "B: lesion-aware P@3: 1 of 2 queries have fewer than 3 neighbours left after removing their own "
    "lesion's images and are left out of P@3: m1 (2)"
)


def test_command_json_has_the_exact_shape_and_values(files):
    out, err = evaluate(*runs_args(files, "A", "B"), "--k", "1", "3", "--format", "json")

    assert rounded(json.loads(out)) == rounded(EXPECTED_JSON)
    assert err.splitlines() == [B_SHORT]


def test_command_markdown_is_the_default(files):
    out, _ = evaluate(*runs_args(files, "A"), "--k", "1", "3")

    lines = out.splitlines()
    assert lines[:2] == ["| Method | Class | Queries | k=1 | k=3 |", "|---|---|---:|---:|---:|"]
    assert lines[2:11] == [
        "| **A** | akiec | 0 | – | – |",
        "|  | bcc | 0 | – | – |",
        "|  | bkl | 0 | – | – |",
        "|  | df | 0 | – | – |",
        "|  | mel | 1 | 1.00 | 0.67 |",
        "|  | nv | 1 | 1.00 | 0.67 |",
        "|  | vasc | 0 | – | – |",
        "|  | **AP@k** | 2 | 1.00 | 0.67 |",
        "|  | **AP@k lesion-aware** | 2 | 0.50 | 0.50 |",
    ]


def test_command_csv(files):
    out, _ = evaluate(*runs_args(files, "A"), "--k", "1", "3", "--format", "csv")

    rows = list(csv.DictReader(StringIO(out)))
    assert len(rows) == 12  # 2 variants x (mel, nv, macro) x 2 cut-offs
    macro = {(r["variant"], r["k"]): float(r["value"]) for r in rows if r["class"] == "macro"}
    assert macro == pytest.approx({("standard", "1"): 1.0, ("standard", "3"): 2 / 3,
                                   ("lesion_aware", "1"): 0.5, ("lesion_aware", "3"): 0.5})


def test_command_out_writes_the_four_files(files, tmp_path):
    target = tmp_path / "results" / "run1"

    out, _ = evaluate(*runs_args(files, "A", "B"), "--k", "1", "3", "--format", "json", "--out", str(target))

    assert sorted(p.name for p in target.iterdir()) == [
        "precision_at_k.png", "results.csv", "results.json", "results.md",
    ]
    assert json.loads((target / "results.json").read_text()) == json.loads(out)
    assert (target / "results.csv").read_text().startswith("method,variant,class,k,value\nA,standard,mel,1,1.0\n")
    assert "|  | **AP@k lesion-aware** | 2 | 0.50 | 0.50 |" in (target / "results.md").read_text()
    with Image.open(target / "precision_at_k.png") as image:
        image.verify()
        assert image.format == "PNG" and image.width > 0 and image.height > 0


def test_command_reports_run_problems_prefixed_with_the_run_name(files, tmp_path):
    bad = write_run(tmp_path / "bad.csv", RUN_A + [("m1", 5, "m3"), ("n1", "x", "b1")])

    out, err = evaluate("--run", f"bad={bad}", "--metadata", str(files["metadata"]), "--k", "1", "--format", "json")

    assert err.splitlines() == [
        "bad: line 10: neighbour m3 listed again for query m1 (first on line 4), skipped",
        "bad: line 11: rank 'x' is not a whole number, skipped",
    ]
    assert json.loads(out)["methods"]["bad"]["ap"] == {"1": 1.0}


def test_command_default_cutoffs_on_real_metadata_rows(tmp_path):
    # The first 20 real rows: all bkl, in pairs of images of one lesion (with the 'dataset' column).
    rows = real_metadata_rows(20)
    metadata = tmp_path / "real.csv"
    with open(metadata, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    images = [row["image_id"] for row in rows]
    query, others = images[0], images[1:11]  # images[1] shows the query's lesion
    assert rows[0]["lesion_id"] == rows[1]["lesion_id"] and {row["dx"] for row in rows} == {"bkl"}
    run = write_run(tmp_path / "run.csv", [(query, rank, image) for rank, image in enumerate(others, start=1)])

    out, err = evaluate("--run", f"real={run}", "--metadata", str(metadata), "--format", "json")

    assert err == ""
    result = json.loads(out)
    # 10 bkl neighbours, 9 after removing the query's lesion: enough for k = 9 in both variants.
    assert result == {"k": [1, 3, 6, 9], "methods": {"real": {
        "n_queries": 1,
        "ap": {"1": 1.0, "3": 1.0, "6": 1.0, "9": 1.0},
        "per_class": {"bkl": {"1": 1.0, "3": 1.0, "6": 1.0, "9": 1.0}},
        "ap_lesion_aware": {"1": 1.0, "3": 1.0, "6": 1.0, "9": 1.0},
    }}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("A", "expected NAME=RUN.csv"),
        ("=a.csv", "expected NAME=RUN.csv"),
        ("A=", "expected NAME=RUN.csv"),
        ("a|b=a.csv", "run name 'a|b' may use letters, digits"),
        ("A=does-not-exist.csv", "run file does-not-exist.csv not found"),
    ],
)
def test_command_refuses_bad_run_arguments(files, spec, message):
    with pytest.raises(CommandError, match=message.replace("|", r"\|")):
        evaluate("--run", spec, "--metadata", str(files["metadata"]))


def test_command_refuses_duplicate_run_names(files):
    with pytest.raises(CommandError, match="run name 'A' is used twice"):
        evaluate("--run", f"A={files['A']}", "--run", f"A={files['B']}", "--metadata", str(files["metadata"]))


def test_command_needs_usable_metadata(files, tmp_path):
    with pytest.raises(CommandError, match="--metadata META.csv is needed"):
        evaluate("--run", f"A={files['A']}")
    bad = write_run(tmp_path / "bad_meta.csv", [("L1", "m1")], header=("lesion_id", "image_id"))
    with pytest.raises(CommandError, match="header lacks column"):
        evaluate("--run", f"A={files['A']}", "--metadata", str(bad))


def test_command_turns_a_bad_run_file_into_a_command_error(files, tmp_path):
    bad = write_run(tmp_path / "bad.csv", [("m1", "m2")], header=("query_id", "neighbour_id"))

    with pytest.raises(CommandError, match="run 'A': .*header lacks column\\(s\\) rank"):
        evaluate("--run", f"A={bad}", "--metadata", str(files["metadata"]))


def test_command_refuses_bad_cutoffs(files):
    with pytest.raises(CommandError, match="--k: duplicate cut-offs"):
        evaluate(*runs_args(files, "A"), "--k", "3", "3")


# ---------------------------------------------------------------- intervals in the report formats

def _uncertain_results():
    """A hand-made case: method A retrieves every query's class (its intervals are [1, 1]);
    B is a copy of A (difference 0, p = 1); C misses every melanoma."""
    from retrieval.classes import CODES
    from retrieval.ml.bootstrap import LesionBootstrap, retrieval_uncertainty
    from retrieval.ml.metrics import query_precision

    labels = ["nv", "nv", "nv", "mel", "mel"]
    lesions = ["L1", "L1", "L2", "L3", "L4"]
    hit = [[q, q] for q in labels]
    miss = [[q, q] if q == "nv" else ["nv", "nv"] for q in labels]
    neighbours = {"A": hit, "B": hit, "C": miss}
    results = {name: (precision_at_k(labels, ranked, ks=(1, 2)), None) for name, ranked in neighbours.items()}
    draw = LesionBootstrap(lesions, labels, replicates=400, seed=0)
    hits = {name: (query_precision(labels, ranked, (1, 2)), None) for name, ranked in neighbours.items()}
    return results, retrieval_uncertainty(draw, labels, [1, 2], hits, classes=CODES, reference="A")


def test_report_formats_carry_intervals_paired_differences_and_few_query_marks(tmp_path):
    from retrieval.ml.report import plot_precision_vs_k

    results, uncertainty = _uncertain_results()
    document = to_json(results, uncertainty)
    a, b, c = (document["methods"][name] for name in "ABC")
    assert a["ci"]["ap"] == {"1": [1.0, 1.0], "2": [1.0, 1.0]}
    assert a["ci"]["per_class"]["nv"] == {"1": [1.0, 1.0], "2": [1.0, 1.0]}
    assert a["vs_reference"] is None and a["few_queries"] == ["mel", "nv"]  # 2 and 3 queries, both under 10
    assert b["vs_reference"]["ap"]["1"] == {"difference": 0.0, "ci": [0.0, 0.0], "p": 1.0}
    # C: melanoma P@k 0 in every replicate, so AP@k = (0 + 1) / 2 exactly, 0.5 below A in all of them
    assert c["ap"] == {"1": 0.5, "2": 0.5} and c["ci"]["ap"]["1"] == [0.5, 0.5]
    assert c["vs_reference"]["ap"]["2"] == {"difference": -0.5, "ci": [-0.5, -0.5], "p": pytest.approx(2 / 401)}
    assert c["vs_reference"]["per_class"]["nv"]["1"]["difference"] == 0.0
    assert document["bootstrap"]["replicates"] == 400 and document["bootstrap"]["n_lesions"] == 4

    markdown = to_markdown(results, uncertainty)
    assert "|  | mel † | 2 | 1.00 [1.00, 1.00] | 1.00 [1.00, 1.00] |" in markdown
    assert "| C | -0.50 [-0.50, -0.50] p=0.005 |" in markdown and "| B | +0.00 [+0.00, +0.00] p=1.000 |" in markdown

    rows = to_csv(results, uncertainty).splitlines()
    assert rows[0] == ("method,variant,class,k,value,ci_low,ci_high,n_queries,few_queries,reference,difference,"
                       "diff_low,diff_high,p")
    assert "A,standard,macro,1,1.0,1.0,1.0,5,false,,,,," in rows
    assert "C,standard,mel,2,0.0,0.0,0.0,2,true,A,-1.0,-1.0,-1.0,0.004987531172069825" in rows
    plot_precision_vs_k(results, tmp_path / "p.png", uncertainty)
    assert (tmp_path / "p.png").stat().st_size > 0
