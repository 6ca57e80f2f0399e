"""evaluate_retrieval on external runs: exact values, problems reported with line numbers, outputs."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

METADATA = """lesion_id,image_id,dx,dx_type,age,sex,localization
L1,Q1,mel,histo,50,male,back
L1,N1,mel,histo,50,male,back
L2,N2,mel,histo,40,female,face
L3,N3,nv,follow_up,30,male,trunk
L4,Q2,nv,follow_up,30,male,trunk
L5,N4,nv,follow_up,35,female,back
"""


def run_command(tmp_path, run_text, *extra):
    (tmp_path / "meta.csv").write_text(METADATA)
    (tmp_path / "run.csv").write_text(run_text)
    out, err = StringIO(), StringIO()
    call_command("evaluate_retrieval", "--run", f"mine={tmp_path / 'run.csv'}", "--metadata", str(tmp_path / "meta.csv"),
                 "--k", "1", "2", *extra, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_exact_values_and_json_shape(tmp_path):
    run = "query_id,rank,neighbour_id,score\nQ1,1,N1,0.9\nQ1,2,N3,0.8\nQ1,3,N2,0.7\nQ2,1,N4,0.9\nQ2,2,N1,0.5\nQ2,3,N3,0.4\n"
    out, err = run_command(tmp_path, run, "--format", "json")
    document = json.loads(out)
    mine = document["methods"]["mine"]
    assert document["k"] == [1, 2] and mine["n_queries"] == 2
    # Q1 (mel): N1 mel, N3 nv -> P@1 1, P@2 0.5 ; Q2 (nv): N4 nv, N1 mel -> P@1 1, P@2 0.5
    assert mine["ap"] == {"1": 1.0, "2": 0.5}
    assert mine["per_class"] == {"mel": {"1": 1.0, "2": 0.5}, "nv": {"1": 1.0, "2": 0.5}}
    # lesion-aware: Q1 loses N1 (same lesion L1) -> N3 nv, N2 mel -> P@1 0, P@2 0.5
    assert mine["ap_lesion_aware"] == {"1": 0.5, "2": 0.5}
    assert err == ""


def test_problems_are_reported_with_line_numbers_and_rows_skipped(tmp_path):
    run = ("query_id,rank,neighbour_id\n"
           "Q1,1,N1\n"        # line 2
           "Q1,1,N2\n"        # line 3: duplicate rank
           "Q1,x,N2\n"        # line 4: rank not a number
           "Q1,2,NOPE\n"      # line 5: unknown id
           "Q1,2,Q1\n"        # line 6: query lists itself
           "Q2,1,N4\n"        # line 7
           "Q2,3,N3\n")       # line 8: rank 2 missing
    out, err = run_command(tmp_path, run)
    for expected in ["mine: line 3: duplicate rank 1 for query Q1 (first on line 2), skipped",
                     "mine: line 4: rank 'x' is not a whole number, skipped",
                     "mine: line 5: neighbour_id 'NOPE' is not in the metadata, skipped",
                     "mine: line 6: query Q1 lists itself as its own neighbour (rank 2), skipped",
                     "mine: query Q2: rank 2 is missing",
                     "fewer than 2 neighbours"]:
        assert expected in err, expected
    assert "| mine" in out or "mine" in out


def test_outputs_written_with_out(tmp_path):
    run = "query_id,rank,neighbour_id\nQ1,1,N2\nQ1,2,N1\nQ2,1,N3\nQ2,2,N4\n"
    run_command(tmp_path, run, "--out", str(tmp_path / "results"))
    folder = tmp_path / "results"
    assert json.loads((folder / "results.json").read_text())["methods"]["mine"]["ap"] == {"1": 1.0, "2": 1.0}
    assert "method,variant,class,k,value" in (folder / "results.csv").read_text().splitlines()[0].replace(" ", "")
    assert "mine" in (folder / "results.md").read_text()
    with Image.open(folder / "precision_at_k.png") as plot:
        assert plot.size[0] > 100


@pytest.mark.parametrize(("args", "message"), [
    (["--run", "broken"], "expected NAME=RUN.csv"),
    (["--run", "a=/nonexistent.csv"], "not found"),
])
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_retrieval", *args)


def test_missing_columns_are_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="header lacks column"):
        run_command(tmp_path, "query,neighbour\nQ1,N1\n")
