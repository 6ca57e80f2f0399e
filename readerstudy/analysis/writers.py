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

from readerstudy.analysis.figures import TASK_TITLES, accuracy_png, confusion_png
from readerstudy.analysis.reads import TASKS, Read, RelevanceRating
from readerstudy.analysis.responses import COLUMNS, format_responses

FORMATS = ("json", "md", "csv", "xlsx", "png", "mrmc")
JSON_INDENT = 2
#: Significant digits of floats in CSV cells (fractions, confidences, p-values).
CSV_DIGITS = 6
AVERAGE = "Average"
STANDARD_DEVIATION = "Standard deviation"
ALL_READERS = "All readers"
MISSING = "–"
#: MRMC modalities: Task 1 is the unaided read, Task 2 the CBIR-aided one.
MRMC_COLUMNS = ("reader", "case", "modality", "score")
MRMC_MODALITIES = {1: "task1", 2: "task2"}
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
    "kappa": "Kappa",
    "reads": "Reads",
    "relevance": "Relevance",
    "ratings": "Ratings",
}
PERCENT_COLUMNS = ("accuracy", "sensitivity", "specificity", "ndcg")


def write_report(
    report: dict, reads: Sequence[Read], out_dir: Path, *, formats: Iterable[str] = FORMATS,
    ratings: Sequence[RelevanceRating] = (),
) -> list[Path]:
    """Write the report's files into ``out_dir`` (created if missing); return their paths."""
    files = render_files(report, reads, formats=formats, ratings=ratings)
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
) -> bytes:
    """A zip of the same files as ``write_report`` writes (the in-app "one download")."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in render_files(report, reads, formats=formats, ratings=ratings).items():
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
) -> dict[str, bytes]:
    """File name -> content for each requested format, in FORMATS order."""
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
        elif output_format == "xlsx":
            files["report.xlsx"] = workbook(all_tables)
        elif output_format == "png":
            classes = report["confusion"]["classes"]
            for task in TASKS:
                files[f"confusion_task{task}.png"] = confusion_png(
                    report["confusion"][f"task{task}"], classes, f"Confusion matrix, {TASK_TITLES[task]}")
            files["accuracy_per_reader.png"] = accuracy_png(report)
        elif output_format == "mrmc":
            files["mrmc.csv"] = mrmc(reads).encode()
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
    return result


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
    return (["change", "pairs", "agreeing_with_majority_vote"], [
        ["wrong_to_right", changes["wrong_to_right"], changes["wrong_to_right_agreeing_with_majority_vote"]],
        ["right_to_wrong", changes["right_to_wrong"], changes["right_to_wrong_agreeing_with_majority_vote"]],
    ])


def _mcnemar(mcnemar: dict) -> Table:
    columns = ["n_pairs", "wrong_to_right", "right_to_wrong", "p_value"]
    rows = [[row["reader"], *[row[c] for c in columns]] for row in mcnemar["per_reader"]]
    rows.append([ALL_READERS, *[mcnemar["pooled"][c] for c in columns]])
    return ["reader", *columns], rows


def _statistics(report: dict) -> Table:
    """Long format ``statistic,key,value`` for the single-number results."""
    stats = report["statistics"]
    difference = stats["accuracy_difference"]
    ci95 = difference["ci95"] or [None, None]
    rows = [["melanoma_false_positives", f"task{t}", report["melanoma_false_positives"][f"task{t}"]] for t in TASKS]
    rows += [["mcnemar_pooled", key, value] for key, value in stats["mcnemar"]["pooled"].items()]
    rows += [["accuracy_difference", key, difference[key]] for key in ("estimate", "n_pairs", "n_readers")]
    rows += [["accuracy_difference", "ci95_low", ci95[0]], ["accuracy_difference", "ci95_high", ci95[1]]]
    rows += [["accuracy_difference", key, difference[key]] for key in ("n_bootstrap", "seed", "method")]
    rows += [["wilcoxon_confidence", key, value] for key, value in stats["wilcoxon_confidence"].items()]
    return ["statistic", "key", "value"], rows


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


def mrmc(reads: Sequence[Read]) -> str:
    """``reader,case,modality,score``: one row per read, score 1 correct and 0 wrong."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MRMC_COLUMNS)
    writer.writerows([read.reader, read.case, MRMC_MODALITIES[read.task], int(read.correct)] for read in reads)
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
        "| Change | Pairs | Of which the Task 2 answer is the majority vote |",
        "|---|---:|---:|",
        f"| wrong → right | {changes['wrong_to_right']} | {changes['wrong_to_right_agreeing_with_majority_vote']} |",
        f"| right → wrong | {changes['right_to_wrong']} | {changes['right_to_wrong_agreeing_with_majority_vote']} |",
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
    lines += _md_statistics(report["statistics"])
    if report.get("relevance"):
        lines += _md_relevance(report["relevance"])
    return "\n".join(lines) + "\n"


def _md_statistics(stats: dict) -> list[str]:
    mcnemar, difference, wilcoxon = stats["mcnemar"], stats["accuracy_difference"], stats["wilcoxon_confidence"]
    pooled = mcnemar["pooled"]
    lines = [
        "", "## Statistics", "",
        "### McNemar's exact test (Task 1 vs Task 2 correctness)", "",
        "Two-sided binomial test on the discordant pairs.", "",
        "| Reader | Pairs | Wrong → right | Right → wrong | p |", "|---|---:|---:|---:|---:|",
    ]
    for row in mcnemar["per_reader"]:
        lines.append(_md_row([_md_text(row["reader"]), str(row["n_pairs"]), str(row["wrong_to_right"]),
                              str(row["right_to_wrong"]), _p(row["p_value"])]))
    lines.append(_md_row([f"**{ALL_READERS}**", str(pooled["n_pairs"]), str(pooled["wrong_to_right"]),
                          str(pooled["right_to_wrong"]), _p(pooled["p_value"])]))
    lines += ["", "### Accuracy difference (Task 2 − Task 1)", ""]
    if difference["estimate"] is None:
        lines.append("No (reader, case) pair was read in both tasks.")
    else:
        low, high = difference["ci95"]
        lines.append(f"{_points(difference['estimate'])} percentage points over {difference['n_pairs']} pairs of "
                     f"{difference['n_readers']} readers; 95 % CI [{_points(low)}, {_points(high)}] "
                     f"({difference['method']}; {difference['n_bootstrap']} resamples, seed {difference['seed']}).")
    lines += ["", "### Wilcoxon signed-rank test of confidence (Task 2 − Task 1)", ""]
    if wilcoxon["statistic"] is None:
        lines.append(f"Not computed: {wilcoxon['note']} ({wilcoxon['n_pairs']} pairs).")
    else:
        lines.append(f"{wilcoxon['n_pairs']} pairs ({wilcoxon['n_nonzero']} with a change), median difference "
                     f"{wilcoxon['median_difference']:+g}, W = {wilcoxon['statistic']:g}, "
                     f"p = {_p(wilcoxon['p_value'])}.")
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
    """A few plain-text lines: counts and the Table 4.II averages (for a command's output)."""
    summary, changes = report["summary"], report["changes"]
    tasks = "; ".join(
        f"Task {t} {_percent_mean_std(summary[f'task{t}']['accuracy'])} %, "
        f"confidence {_confidences(summary[f'task{t}'])}" for t in TASKS
    )
    return [
        f"{report['n_readers']} readers, {report['n_cases']} cases, {report['n_reads']} reads.",
        f"Majority vote {_percent_mean_std(summary['majority_vote_accuracy'])} %; {tasks}.",
        f"Changes: {changes['wrong_to_right']} wrong -> right, {changes['right_to_wrong']} right -> wrong; "
        f"McNemar (pooled) p = {_p(report['statistics']['mcnemar']['pooled']['p_value'])}.",
    ]
