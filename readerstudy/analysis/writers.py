"""The report's files: JSON, Markdown, CSV tables, an XLSX workbook, PNG figures, MRMC input.

``render_files`` makes every file in memory (name -> bytes); ``write_report`` writes them into a
folder and ``report_archive`` zips them, so the in-app download and the command's folder hold
the same files. The CSV and XLSX outputs come from the same tables (``tables``).
"""
from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from readerstudy.analysis import endpoints
from readerstudy.analysis.figures import TASK_TITLES, accuracy_png, confusion_png
from readerstudy.analysis.mrmc import formats as mrmc_formats
from readerstudy.analysis.mrmc import report as mrmc_report
from readerstudy.analysis.reads import TASKS, Read, RelevanceRating
from readerstudy.analysis.responses import COLUMNS, format_responses
from readerstudy.analysis.viewing import VIEWS_FILE, NeighbourView, views_csv

FORMATS = ("json", "md", "csv", "xlsx", "png", "mrmc")
JSON_INDENT = 2
#: Significant digits of floats in CSV cells (fractions, confidences, p-values).
CSV_DIGITS = 6
AVERAGE = "Average"
STANDARD_DEVIATION = "Standard deviation"
ALL_READERS = "All readers"
MISSING = "–"
#: The MRMC analyses of an endpoint, in the order of OR-DBM MRMC's output.
MRMC_ANALYSES = ("random_readers_random_cases", "fixed_readers_random_cases", "random_readers_fixed_cases")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same report zips to the same bytes

Table = tuple[list[str], list[list]]  # header, rows of raw values (None where undefined)

SHEETS = {  # table name -> XLSX sheet title
    "table4": "Table 4.II",
    "confusion_task1": "Confusion task 1",
    "confusion_task2": "Confusion task 2",
    "per_class": "Per class",
    "changes": "Changes",
    "statistics": "Statistics",
    "mcnemar": "McNemar",
    "mrmc": "MRMC",
    "mrmc_variance": "MRMC variance",
    "kappa": "Kappa",
    "reads": "Reads",
    "relevance": "Relevance",
    "ratings": "Ratings",
    "viewing": "Viewing",
}
PERCENT_COLUMNS = ("accuracy", "sensitivity", "specificity", "ndcg")


def write_report(
    report: dict, reads: Sequence[Read], out_dir: Path, *, formats: Iterable[str] = FORMATS,
    ratings: Sequence[RelevanceRating] = (), views: Sequence[NeighbourView] | None = None,
) -> list[Path]:
    """Write the report's files into ``out_dir`` (created if missing); return their paths."""
    files = render_files(report, reads, formats=formats, ratings=ratings, views=views)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        path = out_dir / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def report_archive(
    report: dict, reads: Sequence[Read], *, formats: Iterable[str] = FORMATS, ratings: Sequence[RelevanceRating] = (),
    views: Sequence[NeighbourView] | None = None,
) -> bytes:
    """A zip of the same files as ``write_report`` writes (the in-app "one download")."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in render_files(report, reads, formats=formats, ratings=ratings, views=views).items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def check_formats(formats: Iterable[str]) -> list[str]:
    """``formats`` in FORMATS order, without repeats; ``ValueError`` naming the valid ones."""
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s): {', '.join(map(repr, unknown))}; valid: {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no format given; valid: {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in formats]


def render_files(
    report: dict, reads: Sequence[Read], *, formats: Iterable[str] = FORMATS, ratings: Sequence[RelevanceRating] = (),
    views: Sequence[NeighbourView] | None = None,
) -> dict[str, bytes]:
    """File name -> content for each requested format, in FORMATS order (``views``: the Task 2
    enlargements, written beside the reads as ``views.csv``)."""
    files: dict[str, bytes] = {}
    all_tables = None
    for output_format in check_formats(formats):
        if output_format in ("csv", "xlsx") and all_tables is None:
            all_tables = tables(report, reads, ratings)
        if output_format == "json":
            files["report.json"] = (json.dumps(report, indent=JSON_INDENT, ensure_ascii=False) + "\n").encode()
        elif output_format == "md":
            files["report.md"] = markdown(report).encode()
        elif output_format == "csv":
            for name, table in all_tables.items():
                # reads.csv is a responses file that parse_responses reads back unchanged
                files[f"{name}.csv"] = (format_responses(reads) if name == "reads" else _csv(table)).encode()
            if views is not None:
                files[VIEWS_FILE] = views_csv(views).encode()
        elif output_format == "xlsx":
            files["report.xlsx"] = workbook(all_tables)
        elif output_format == "png":
            classes = report["confusion"]["classes"]
            for task in TASKS:
                files[f"confusion_task{task}.png"] = confusion_png(
                    report["confusion"][f"task{task}"], classes, f"Confusion matrix, {TASK_TITLES[task]}")
            files["accuracy_per_reader.png"] = accuracy_png(report)
            files.update(mrmc_figures(report, reads))
        elif output_format == "mrmc":
            files.update(mrmc_files(report, reads))
    return files


# --- tables (CSV and XLSX) -------------------------------------------------------------------


def tables(report: dict, reads: Sequence[Read], ratings: Sequence[RelevanceRating] = ()) -> dict[str, Table]:
    """Every table of the report, by name (the CSV file's stem); relevance ones only with ratings."""
    classes = report["confusion"]["classes"]
    result = {
        "table4": _table4(report),
        **{f"confusion_task{task}": (["truth", *classes], [[code, *counts] for code, counts in
                                                             zip(classes, report["confusion"][f"task{task}"])])
           for task in TASKS},
        "per_class": (
            ["class", *[f"task{t}_{k}" for t in TASKS for k in ("sensitivity", "specificity", "n")]],
            [[code, *[report["per_class"][f"task{t}"][code][k] for t in TASKS
                      for k in ("sensitivity", "specificity", "n")]] for code in classes],
        ),
        "changes": _changes(report["changes"]),
        "statistics": _statistics(report),
        "mcnemar": _mcnemar(report["statistics"]["mcnemar"]),
        "mrmc": _mrmc_differences(report["mrmc"]),
        "mrmc_variance": _mrmc_variance(report["mrmc"]),
        "kappa": (["reader_a", "reader_b", "task", "n_shared", "kappa"],
                  [[row["reader_a"], row["reader_b"], row["task"], row["n_shared"], row["kappa"]]
                   for row in report["statistics"]["kappa"]]),
        "reads": (list(COLUMNS), [[r.reader, r.case, r.truth, r.task, r.answer, r.confidence, r.majority_vote,
                                   r.seconds] for r in reads]),
    }
    if report.get("relevance"):
        relevance = report["relevance"]
        ndcg = f"ndcg_at_{relevance['ndcg_at']}"
        result["relevance"] = (
            ["reader", "method", ndcg, "n_cases"],
            [[row["reader"], row["method"], row["ndcg"], row["n_cases"]] for row in relevance["per_reader"]]
            + [[ALL_READERS, row["method"], row["ndcg"], row["n_cases"]] for row in relevance["per_method"]],
        )
    if ratings:
        result["ratings"] = (["reader", "case", "method", "rank", "rating"],
                             [[r.reader, r.case, r.method, r.rank, r.rating] for r in ratings])
    if report.get("viewing"):
        result["viewing"] = _viewing(report["viewing"])
    return result


VIEWING_COLUMNS = ("cases", "cases_with_enlargement", "enlargements", "enlargements_per_case",
                   "enlargements_after_answer", "answer_changes", "changes_after_viewing_new_class",
                   "share_after_viewing_new_class", "untimed_cases", "untimed_changes")


def _viewing(viewing: dict) -> Table:
    rows = [[row["reader"], *[row[c] for c in VIEWING_COLUMNS]] for row in viewing["readers"]]
    rows.append([ALL_READERS, *[viewing["all_readers"][c] for c in VIEWING_COLUMNS]])
    return ["reader", *VIEWING_COLUMNS], rows


def _table4(report: dict) -> Table:
    task_columns = ("accuracy", "confidence", "confidence_correct", "confidence_wrong")
    header = ["reader", "n_cases", "majority_vote_accuracy", *[f"task{t}_{c}" for t in TASKS for c in task_columns]]
    rows = [[row["reader"], row["n_cases"], row["majority_vote_accuracy"],
             *[row[f"task{t}"][c] for t in TASKS for c in task_columns]] for row in report["readers"]]
    summary = report["summary"]
    rows.append([AVERAGE, None, summary["majority_vote_accuracy"]["mean"],
                 *[summary[f"task{t}"]["accuracy"]["mean"] if c == "accuracy" else summary[f"task{t}"][c]
                   for t in TASKS for c in task_columns]])
    rows.append([STANDARD_DEVIATION, None, summary["majority_vote_accuracy"]["std"],
                 *[summary[f"task{t}"]["accuracy"]["std"] if c == "accuracy" else None
                   for t in TASKS for c in task_columns]])
    return header, rows


def _changes(changes: dict) -> Table:
    return (["change", "pairs", "task2_answer_is_majority_vote", "majority_vote_was_task1_answer"], [
        ["wrong_to_right", changes["wrong_to_right"], changes["wrong_to_right_agreeing_with_majority_vote"],
         changes["wrong_to_right_majority_vote_agreed_with_task1"]],
        ["right_to_wrong", changes["right_to_wrong"], changes["right_to_wrong_agreeing_with_majority_vote"],
         changes["right_to_wrong_majority_vote_agreed_with_task1"]],
    ])


def _mcnemar(mcnemar: dict) -> Table:
    columns = ["n_pairs", "wrong_to_right", "right_to_wrong", "p_value"]
    return ["reader", *columns], [[row["reader"], *[row[c] for c in columns]] for row in mcnemar["per_reader"]]


def _statistics(report: dict) -> Table:
    """Long format ``statistic,key,value`` for the single-number results."""
    stats = report["statistics"]
    difference = stats["accuracy_difference"]
    rows = [["melanoma_false_positives", f"task{t}", report["melanoma_false_positives"][f"task{t}"]] for t in TASKS]
    rows += [["accuracy_difference", key, difference[key]] for key in ("estimate", "n_pairs", "n_readers", "note")]
    for row in stats["wilcoxon_confidence"]["per_reader"]:
        rows += [[f"wilcoxon_confidence:{row['reader']}", key, row[key]]
                 for key in ("n_pairs", "n_nonzero", "statistic", "p_value", "median_difference", "note")]
    rows.append(["per_reader_tests", "note", stats["note"]])
    return ["statistic", "key", "value"], rows


def _mrmc_differences(mrmc: dict) -> Table:
    """One row per endpoint, analysis and difference (``a - b``, as the MRMC tools print it)."""
    header = ["endpoint", "figure_of_merit", "analysis", "a", "b", "difference", "se", "df", "p", "ci95_low",
              "ci95_high", "test_statistic", "test_df", "test_p", "design", "refused"]
    rows = []
    for endpoint in endpoints.ENDPOINTS:
        result = mrmc[endpoint]
        if "refused" in result:
            rows.append([endpoint, None, None, None, None, None, None, None, None, None, None, None, None, None,
                         None, result["refused"]])
            continue
        for analysis in MRMC_ANALYSES:
            test = result[analysis]
            statistic = test.get("F", test.get("chi2"))
            test_df = test.get("ddf", test.get("df"))
            for d in test["differences"]:
                ci = d["ci95"] or [None, None]
                rows.append([endpoint, result["figure_of_merit"], analysis, d["a"], d["b"], d["difference"], d["se"],
                             d["df"], d["p"], ci[0], ci[1], statistic, test_df, test["p"], result["design"], None])
    return header, rows


def _mrmc_variance(mrmc: dict) -> Table:
    keys = ("var_r", "var_tr", "cov1", "cov2", "cov3", "var_error")
    rows = [[endpoint, *[mrmc[endpoint]["variance_components"][k] for k in keys]]
            for endpoint in endpoints.ENDPOINTS if "refused" not in mrmc[endpoint]]
    return ["endpoint", *keys], rows


def mrmc_files(report: dict, reads: Sequence[Read]) -> dict[str, bytes]:
    """For each endpoint, the ratings analysed as MRMCaov/RJafroc long CSV and as iMRMC input."""
    paired, _ = endpoints.paired_reads(reads, report["mrmc"].get("study_design"))
    files = {}
    for endpoint, spec in endpoints.ENDPOINTS.items():
        ratings = endpoints.endpoint_ratings(paired, endpoint)
        files[f"mrmc_{endpoint}.csv"] = mrmc_formats.long_csv(ratings).encode()
        description = (f"LesionSearch reader study, endpoint {endpoint}: {spec['label']}. Modalities: "
                       + ", ".join(f"{k} = {v}" for k, v in endpoints.TREATMENT_LABELS.items()) + ".")
        if spec["positive"] is None:
            description += " Truth is 1 for every case and the score 1 correct / 0 wrong (percent correct)."
        else:
            description += f" Truth 1: {', '.join(spec['positive'])}. Score: {endpoints.SUSPICION_SCALE}."
        if ratings:
            files[f"mrmc_{endpoint}.imrmc"] = mrmc_formats.imrmc(ratings, description).encode()
    return files


def mrmc_figures(report: dict, reads: Sequence[Read], only: str | None = None) -> dict[str, bytes]:
    """ROC curves of the AUC endpoints and forest plots of every analysed endpoint (``only``: just
    the figure of that file name, if it exists)."""
    paired, _ = endpoints.paired_reads(reads, report["mrmc"].get("study_design"))
    files = {}
    labels = endpoints.TREATMENT_LABELS
    for endpoint, spec in endpoints.ENDPOINTS.items():
        result = report["mrmc"][endpoint]
        if "refused" in result:
            continue
        roc, forest = f"mrmc_roc_{endpoint}.png", f"mrmc_forest_{endpoint}.png"
        if result["figure_of_merit"] == "auc" and only in (None, roc):
            files[roc] = mrmc_report.roc_png(endpoints.endpoint_ratings(paired, endpoint), result,
                                             treatment_labels=labels, title=f"ROC curves, {spec['label'].split(',')[0]}")
        if only in (None, forest):
            files[forest] = mrmc_report.forest_png(result, treatment_labels=labels, flip=True,
                                                   title=f"{endpoint}: reader and MRMC differences")
    return files


def _csv(table: Table) -> str:
    header, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(value) for value in row] for row in rows])
    return buffer.getvalue()


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{CSV_DIGITS}g}"
    return str(value)


def workbook(all_tables: dict[str, Table]) -> bytes:
    """One sheet per table; fractions shown as percentages, header row frozen and bold."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)
    for name, (header, rows) in all_tables.items():
        sheet = book.create_sheet(SHEETS[name])
        sheet.append(header)
        for row in rows:
            sheet.append(row)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        sheet.freeze_panes = "A2"
        for index, title in enumerate(header, start=1):
            letter = get_column_letter(index)
            sheet.column_dimensions[letter].width = max(10, min(40, len(title) + 2))
            if name != "reads" and any(word in title for word in PERCENT_COLUMNS):
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = "0.0%"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


# --- Markdown ------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    """The report for people: Table 4.II in percent like the thesis, then the other figures."""
    summary = report["summary"]
    lines = [
        "# Reader study report",
        "",
        f"{report['n_readers']} readers, {report['n_cases']} cases, {report['n_reads']} reads "
        f"({summary['task1']['n']} Task 1, {summary['task2']['n']} Task 2).",
        "",
        "## Accuracy and confidence per reader (thesis Table 4.II)",
        "",
        "Accuracies in percent. Confidence: mean Likert rating (1 not confident at all .. 5 completely "
        "confident), in brackets over the correct / wrong answers. Average: mean ± standard deviation over "
        "readers for accuracies; confidences pooled over all reads.",
        "",
        "| Reader | Majority vote | Task 1 acc. | Task 1 conf. (correct / wrong) | Task 2 acc. "
        "| Task 2 conf. (correct / wrong) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["readers"]:
        lines.append(_md_row([_md_text(row["reader"]), _percent(row["majority_vote_accuracy"]),
                              *[cell for t in TASKS for cell in (_percent(row[f"task{t}"]["accuracy"]),
                                                                 _confidences(row[f"task{t}"]))]]))
    lines.append(_md_row([f"**{AVERAGE}**", _percent_mean_std(summary["majority_vote_accuracy"]),
                          *[cell for t in TASKS for cell in (_percent_mean_std(summary[f"task{t}"]["accuracy"]),
                                                             _confidences(summary[f"task{t}"]))]]))
    changes = report["changes"]
    lines += [
        "",
        "## Changes of diagnosis from Task 1 to Task 2",
        "",
        f"Over {changes['n_pairs']} (reader, case) pairs read in both tasks.",
        "",
        "| Change | Pairs | Task 2 answer = the neighbours' majority vote | Majority vote = the Task 1 answer |",
        "|---|---:|---:|---:|",
        f"| wrong → right | {changes['wrong_to_right']} | {changes['wrong_to_right_agreeing_with_majority_vote']} "
        f"| {changes['wrong_to_right_majority_vote_agreed_with_task1']} |",
        f"| right → wrong | {changes['right_to_wrong']} | {changes['right_to_wrong_agreeing_with_majority_vote']} "
        f"| {changes['right_to_wrong_majority_vote_agreed_with_task1']} |",
        "",
        "The last column of right → wrong is the thesis's count (8 of its 20): the reader changed a correct "
        "diagnosis although the majority vote agreed with it.",
        "",
        "## False positives of melanoma",
        "",
        "Answer melanoma where the truth is another class: "
        + ", ".join(f"Task {t}: {report['melanoma_false_positives'][f'task{t}']}" for t in TASKS) + ".",
        "",
        "## Confusion matrices",
        "",
        "Rows: truth; columns: answer; counts of reads.",
    ]
    classes = report["confusion"]["classes"]
    for task in TASKS:
        lines += ["", f"### {TASK_TITLES[task]}", "", _md_row(["truth \\ answer", *classes]),
                  "|---|" + "---:|" * len(classes)]
        lines += [_md_row([code, *map(str, counts)])
                  for code, counts in zip(classes, report["confusion"][f"task{task}"])]
    lines += ["", "## Sensitivity and specificity per class (percent)", "",
              "| Class | Task 1 sens. | Task 1 spec. | Task 1 n | Task 2 sens. | Task 2 spec. | Task 2 n |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for code in classes:
        lines.append(_md_row([code, *[cell for t in TASKS for cell in (
            _percent(report["per_class"][f"task{t}"][code]["sensitivity"]),
            _percent(report["per_class"][f"task{t}"][code]["specificity"]),
            str(report["per_class"][f"task{t}"][code]["n"]))]]))
    lines += _md_mrmc(report["mrmc"])
    lines += _md_statistics(report["statistics"])
    if report.get("relevance"):
        lines += _md_relevance(report["relevance"])
    if report.get("viewing"):
        lines += _md_viewing(report["viewing"])
    return "\n".join(lines) + "\n"


def _md_viewing(viewing: dict) -> list[str]:
    lines = ["", "## What readers looked at (Task 2)", "", viewing["note"], "",
             "| Reader | Cases | With an enlargement | Enlargements per case | Answer changes | "
             "After viewing a case of the new class |", "|---|---:|---:|---:|---:|---:|"]
    for row in [*viewing["readers"], {"reader": f"**{ALL_READERS}**", **viewing["all_readers"]}]:
        per_case = MISSING if row["enlargements_per_case"] is None else f"{row['enlargements_per_case']:.2f}"
        share = "" if row["share_after_viewing_new_class"] is None else \
            f" ({_percent(row['share_after_viewing_new_class'])} %)"
        lines.append(_md_row([row["reader"] if row["reader"].startswith("**") else _md_text(row["reader"]),
                              str(row["cases"]), str(row["cases_with_enlargement"]), per_case,
                              str(row["answer_changes"]), f"{row['changes_after_viewing_new_class']}{share}"]))
    return lines


def _md_mrmc(mrmc: dict) -> list[str]:
    """The MRMC result next to Table 4.II: one line per endpoint, then each analysis in full."""
    labels = mrmc["treatment_labels"]
    lines = ["", "## Does retrieval help? Multi-reader multi-case analysis (Task 2 vs Task 1)", "",
             "Readers and cases as random samples (Obuchowski-Rockette with Hillis's degrees of freedom). The "
             "difference is Task 2 − Task 1: positive means readers did better with the similar cases.", "",
             "| Endpoint | Task 1 | Task 2 | Difference | 95 % CI | p |", "|---|---:|---:|---:|---|---:|"]
    for endpoint in endpoints.ENDPOINTS:
        result = mrmc[endpoint]
        if "refused" in result:
            lines.append(_md_row([endpoint, MISSING, MISSING, MISSING, MISSING, MISSING]))
            continue
        task1, task2 = (result["treatments"][t]["fom"] for t in ("task1", "task2"))
        d = helped(result)
        lines.append(_md_row([endpoint, f"{task1:.3f}", f"{task2:.3f}",
                              MISSING if d is None else f"{d['difference']:+.3f}",
                              MISSING if d is None or d["ci95"] is None else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]",
                              MISSING if d is None else _p(d["p"])]))
    refused = [(e, mrmc[e]["refused"]) for e in endpoints.ENDPOINTS if "refused" in mrmc[e]]
    lines += [""] + [f"- {endpoint}: not analysed: {reason}" for endpoint, reason in refused]
    pairs = mrmc.get("pairs")
    if pairs:
        lines.append(f"\n{pairs['analysed_pairs']} (reader, case) pairs analysed; {pairs['unpaired_left_out']} read in "
                     f"one task only and {pairs['not_common_left_out']} not read by every reader were left out.")
    for endpoint in endpoints.ENDPOINTS:
        if "refused" not in mrmc[endpoint]:
            lines += ["", mrmc_report.markdown(mrmc[endpoint], title=f"MRMC: {endpoint} ({mrmc[endpoint]['label']})",
                                               level=3, treatment_labels=labels).rstrip("\n")]
    return lines


def helped(result: dict) -> dict | None:
    """The random-readers-random-cases difference as Task 2 − Task 1 (the tools print task1 − task2)."""
    test = result["random_readers_random_cases"] if result["random_readers_random_cases"]["F"] is not None \
        else result["fixed_readers_random_cases"]
    for d in test["differences"]:
        if (d["a"], d["b"]) == ("task1", "task2"):
            ci = None if d["ci95"] is None else [-d["ci95"][1], -d["ci95"][0]]
            return {**d, "difference": -d["difference"], "ci95": ci, "a": "task2", "b": "task1"}
    return None


def _md_statistics(stats: dict) -> list[str]:
    mcnemar, difference, wilcoxon = stats["mcnemar"], stats["accuracy_difference"], stats["wilcoxon_confidence"]
    lines = [
        "", "## Per-reader statistics (descriptive)", "",
        stats["note"][0].upper() + stats["note"][1:] + ".", "",
        "### McNemar's exact test per reader (Task 1 vs Task 2 correctness)", "",
        "Two-sided binomial test on the reader's discordant pairs.", "",
        "| Reader | Pairs | Wrong → right | Right → wrong | p |", "|---|---:|---:|---:|---:|",
    ]
    for row in mcnemar["per_reader"]:
        lines.append(_md_row([_md_text(row["reader"]), str(row["n_pairs"]), str(row["wrong_to_right"]),
                              str(row["right_to_wrong"]), _p(row["p_value"])]))
    lines += ["", "### Accuracy difference (Task 2 − Task 1), mean over pairs", ""]
    if difference["estimate"] is None:
        lines.append("No (reader, case) pair was read in both tasks.")
    else:
        lines.append(f"{_points(difference['estimate'])} percentage points over {difference['n_pairs']} pairs of "
                     f"{difference['n_readers']} readers ({difference['note']}).")
    lines += ["", "### Wilcoxon signed-rank test of confidence per reader (Task 2 − Task 1)", "",
              "| Reader | Pairs | Changed | Median difference | W | p |", "|---|---:|---:|---:|---:|---:|"]
    for row in wilcoxon["per_reader"]:
        lines.append(_md_row([_md_text(row["reader"]), str(row["n_pairs"]), str(row["n_nonzero"]),
                              MISSING if row["median_difference"] is None else f"{row['median_difference']:+g}",
                              MISSING if row["statistic"] is None else f"{row['statistic']:g}",
                              _p(row["p_value"]) if row["p_value"] is not None else (row["note"] or MISSING)]))
    lines += ["", "### Inter-reader agreement (Cohen's kappa on shared cases)", ""]
    shared = [row for row in stats["kappa"] if row["n_shared"]]
    if shared:
        lines += ["| Reader A | Reader B | Task | Shared cases | κ |", "|---|---|---:|---:|---:|"]
        lines += [_md_row([_md_text(row["reader_a"]), _md_text(row["reader_b"]), str(row["task"]),
                           str(row["n_shared"]), MISSING if row["kappa"] is None else f"{row['kappa']:.3f}"])
                  for row in shared]
    unshared = len(stats["kappa"]) - len(shared)
    if unshared or not shared:
        lines += ["", f"{unshared} (reader pair, task) combinations share no cases."]
    return lines


def _md_relevance(relevance: dict) -> list[str]:
    at = relevance["ndcg_at"]
    lines = ["", f"## Relevance of the neighbours (nDCG@{at})", "",
             "Ideal ordering over the pooled ratings of all methods' neighbours for the reader and case.", "",
             f"| Reader | Method | nDCG@{at} | Cases |", "|---|---|---:|---:|"]
    lines += [_md_row([_md_text(row["reader"]), _md_text(row["method"]), _ratio(row["ndcg"]), str(row["n_cases"])])
              for row in relevance["per_reader"]]
    lines += [_md_row([f"**{ALL_READERS}**", _md_text(row["method"]), _ratio(row["ndcg"]), str(row["n_cases"])])
              for row in relevance["per_method"]]
    return lines


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_text(text: str) -> str:
    return text.replace("|", "\\|")


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _percent_mean_std(figures: dict) -> str:
    if figures["mean"] is None:
        return MISSING
    return _percent(figures["mean"]) + ("" if figures["std"] is None else f" ± {100 * figures['std']:.1f}")


def _confidences(figures: dict) -> str:
    def number(value):
        return MISSING if value is None else f"{value:.2f}"

    if figures["confidence"] is None:
        return MISSING
    return f"{number(figures['confidence'])} ({number(figures['confidence_correct'])} / " \
           f"{number(figures['confidence_wrong'])})"


def _points(fraction: float) -> str:
    return f"{100 * fraction:+.1f}"


def _ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3g}"


def summary_lines(report: dict) -> list[str]:
    """A few plain-text lines: counts, the Table 4.II averages and the MRMC result (for a command)."""
    summary, changes = report["summary"], report["changes"]
    tasks = "; ".join(
        f"Task {t} {_percent_mean_std(summary[f'task{t}']['accuracy'])} %, "
        f"confidence {_confidences(summary[f'task{t}'])}" for t in TASKS
    )
    lines = [
        f"{report['n_readers']} readers, {report['n_cases']} cases, {report['n_reads']} reads.",
        f"Majority vote {_percent_mean_std(summary['majority_vote_accuracy'])} %; {tasks}.",
        f"Changes: {changes['wrong_to_right']} wrong -> right, {changes['right_to_wrong']} right -> wrong.",
    ]
    primary = report["mrmc"][endpoints.PRIMARY]
    if "refused" in primary:
        lines.append(f"MRMC ({endpoints.PRIMARY}): not analysed: {primary['refused']}")
    else:
        d = helped(primary)
        ci = "" if d["ci95"] is None else f", 95 % CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        lines.append(f"MRMC ({endpoints.PRIMARY}, Task 2 - Task 1): {d['difference']:+.3f}{ci}, p = {_p(d['p'])}.")
    return lines
