"""``mrmc_analysis``: the MRMC analysis of a ratings CSV collected anywhere, and nothing from a bad one."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from PIL import Image

from lesionsearch.audit.models import AuditEvent

VANDYKE = Path(__file__).parent / "analysis" / "data" / "vandyke.csv"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("mrmc_analysis", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_writes_the_analysis_of_the_van_dyke_study(tmp_path):
    out = tmp_path / "vd"
    printed = run("--ratings", str(VANDYKE), "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "mrmc.json", "mrmc.md", "mrmc_tests.csv", "mrmc_differences.csv", "mrmc_treatments.csv", "mrmc_readers.csv",
        "mrmc_variance_components.csv", "mrmc_roc.png", "mrmc_forest.png"])
    result = json.loads((out / "mrmc.json").read_text(encoding="utf-8"))
    assert round(result["random_readers_random_cases"]["F"], 6) == 4.456319
    assert result["sample_size"]["effect"] == pytest.approx(0.04380032, abs=1e-8)
    assert "Random readers and cases: F(1, 15.26) = 4.4563, p = 0.05167" in printed
    text = (out / "mrmc.md").read_text(encoding="utf-8")
    assert "## Analysis 1: random readers and random cases" in text
    assert "| 1 − 2 | -0.04380032 | 0.02074862 | 15.26 | -2.111 | 0.0517 | (-0.0880, 0.0004) |" in text
    for name in ("mrmc_roc.png", "mrmc_forest.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    event = AuditEvent.objects.get()
    assert (event.action, event.object_id) == (AuditEvent.Action.STUDY_EXPORT, "vandyke.csv")


@pytest.mark.django_db
def test_options_choose_the_figure_of_merit_covariance_and_files(tmp_path):
    run("--ratings", str(VANDYKE), "--out", str(tmp_path / "out"), "--format", "json", "--covariance", "delong",
        "--alpha", "0.1", "--effect", "0.05", "--power", "0.9")
    result = json.loads((tmp_path / "out" / "mrmc.json").read_text(encoding="utf-8"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mrmc.json"]
    assert (result["covariance"], result["alpha"]) == ("delong", 0.1)
    assert (result["sample_size"]["effect"], result["sample_size"]["target_power"]) == (0.05, 0.9)
    run("--ratings", str(VANDYKE), "--out", str(tmp_path / "sens"), "--format", "json", "--fom", "sensitivity",
        "--threshold", "3")
    sensitivity = json.loads((tmp_path / "sens" / "mrmc.json").read_text(encoding="utf-8"))
    assert round(sensitivity["random_readers_random_cases"]["F"], 6) == 6.689493


@pytest.mark.django_db
def test_a_malformed_file_is_refused_with_every_bad_line_and_nothing_written(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("reader,treatment,case,truth,rating\n1,A,c1,0,2\n1,A,c2,yes,3\n2,A,c1,0,high\n1,A,c1,0,2\n",
                   encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        run("--ratings", str(bad), "--out", str(tmp_path / "out"))
    message = str(refused.value)
    assert "was refused (4 problems); nothing was written" in message
    for line in ("line 3: truth 'yes' is not 0 or 1", "line 4: rating 'high' is not a finite number",
                 "line 2: reader '1' rated case 'c1' under treatment 'A' more than once (also line 5)",
                 "line 5: reader '1' rated case 'c1' under treatment 'A' more than once (also line 2)"):
        assert line in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_design_it_cannot_analyse_is_refused_with_the_reason(tmp_path):
    partial = tmp_path / "partial.csv"
    lines = VANDYKE.read_text(encoding="utf-8").splitlines()
    partial.write_text("\n".join(line for line in lines if line != "2,2,7,0,2") + "\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"cannot be analysed; nothing was written: reader '2' rated 1 case"):
        run("--ratings", str(partial), "--out", str(tmp_path / "out"))
    with pytest.raises(CommandError, match="--format: unknown 'pdf'"):
        run("--ratings", str(VANDYKE), "--out", str(tmp_path / "out"), "--format", "json,pdf")
    assert not (tmp_path / "out").exists()


def test_both_report_commands_work_without_a_migrated_database(tmp_path):
    """On a checkout whose database is not migrated (or does not exist) the commands write their
    files and say that the audit log was not written, instead of dying on the missing table."""
    from tests.readerstudy.analysis.scenario import study_csv

    responses = tmp_path / "responses.csv"
    responses.write_text(study_csv(), encoding="utf-8")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "lesionsearch.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}", "LESIONSEARCH_VAR_DIR": str(tmp_path / "var")}
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    for command in (["readerstudy_report", "--responses", str(responses), "--out", str(tmp_path / "report"),
                     "--format", "json"],
                    ["mrmc_analysis", "--ratings", str(VANDYKE), "--out", str(tmp_path / "mrmc"), "--format",
                     "json"]):
        done = subprocess.run([sys.executable, manage, *command], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Not recorded in the audit log: the database has no audit log table (run `python manage.py " \
               "migrate`)." in done.stdout
    assert (tmp_path / "report" / "report.json").exists() and (tmp_path / "mrmc" / "mrmc.json").exists()
    shutil.rmtree(tmp_path / "var", ignore_errors=True)
