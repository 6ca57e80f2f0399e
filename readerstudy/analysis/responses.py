"""The responses CSV: one row per read, refused as a whole with every offending line listed.

Format (header on line 1, any column order)::

    reader,case,truth,task,answer,confidence[,majority_vote][,seconds]

Cells are stripped of surrounding spaces; header names are case-insensitive; class codes are
not (``mel``, not ``MEL``: the message says so). Rows whose cells are all empty (spreadsheet
leftovers) are skipped. Unknown columns are refused rather than ignored, so that a misspelt
optional column (``majority vote``) cannot silently drop its data.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

from readerstudy.analysis.reads import Read, ReadFields, consistency_problems, field_problems

REQUIRED_COLUMNS = ("reader", "case", "truth", "task", "answer", "confidence")
OPTIONAL_COLUMNS = ("majority_vote", "seconds")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
HEADER_LINE = 1
BOM = "\ufeff"
_DIGITS = re.compile(r"[0-9]+")


class ResponsesInvalid(ValueError):
    """The responses file was refused; ``errors`` holds every (line number or None, message)."""

    def __init__(self, errors: Sequence[tuple[int | None, str]]):
        self.errors = sorted(errors, key=lambda error: -1 if error[0] is None else error[0])
        super().__init__("\n".join(message if line is None else f"line {line}: {message}"
                                   for line, message in self.errors))


def parse_responses(text: str) -> list[Read]:
    """The reads in a responses CSV's text, in file order; raises ``ResponsesInvalid``.

    Accepts a leading UTF-8 byte order mark and CRLF line ends.
    """
    if text.startswith(BOM):
        text = text[len(BOM):]
    if not text.strip():
        raise ResponsesInvalid([(None, f"the file is empty; line 1 must be the header: {', '.join(REQUIRED_COLUMNS)}"
                                       f" (optionally {', '.join(OPTIONAL_COLUMNS)})")])
    errors: list[tuple[int | None, str]] = []
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(rows)]
        columns, header_errors = _check_header(header)
        errors += [(HEADER_LINE, message) for message in header_errors]
        if columns is None:
            raise ResponsesInvalid(errors)
        reads: list[Read] = []
        fields: list[ReadFields] = []
        last_line = rows.line_num
        for cells in rows:
            line, last_line = last_line + 1, rows.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                errors.append((line, f"has {len(cells)} fields but the header has {len(header)}"))
                continue
            read, read_fields, problems = _parse_row(line, {name: cells[i].strip() for name, i in columns.items()})
            errors += [(line, message) for message in problems]
            fields.append(read_fields)
            if read is not None:
                reads.append(read)
    except csv.Error as exc:
        errors.append((rows.line_num, f"not readable as CSV: {exc}"))
        raise ResponsesInvalid(errors) from None
    if not fields and not errors:
        errors.append((None, "no reads: the file has a header but no rows"))
    errors += consistency_problems(fields)
    if errors:
        raise ResponsesInvalid(errors)
    return reads


def format_responses(reads: Sequence[Read]) -> str:
    """``reads`` as a responses CSV (all columns) that ``parse_responses`` reads back unchanged."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for read in reads:
        writer.writerow([read.reader, read.case, read.truth, read.task, read.answer, read.confidence,
                         read.majority_vote or "", "" if read.seconds is None else repr(float(read.seconds))])
    return buffer.getvalue()


def _check_header(header: list[str]) -> tuple[dict[str, int] | None, list[str]]:
    """Column name -> index (None when the rows cannot be read) and the header's problems."""
    problems = []
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        problems.append(f"column(s) given more than once: {', '.join(duplicates)}")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}; the header must name "
                        f"{', '.join(REQUIRED_COLUMNS)} (optionally {', '.join(OPTIONAL_COLUMNS)})")
    unknown = [name or "(empty)" for name in header if name not in COLUMNS]
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
    if duplicates or missing:
        return None, problems
    return {name: header.index(name) for name in COLUMNS if name in header}, problems


def _parse_row(line: int, cells: dict[str, str]) -> tuple[Read | None, ReadFields, list[str]]:
    task = _integer_or_text(cells["task"])
    confidence = _integer_or_text(cells["confidence"])
    majority_vote = cells.get("majority_vote") or None
    seconds = _number_or_text(cells.get("seconds", ""))
    problems = field_problems(reader=cells["reader"], case=cells["case"], truth=cells["truth"], task=task,
                              answer=cells["answer"], confidence=confidence, majority_vote=majority_vote,
                              seconds=seconds)
    fields = ReadFields.keeping_valid(line, reader=cells["reader"], case=cells["case"], task=task,
                                      truth=cells["truth"], majority_vote=majority_vote)
    if problems:
        return None, fields, problems
    read = Read(reader=cells["reader"], case=cells["case"], truth=cells["truth"], task=task, answer=cells["answer"],
                confidence=confidence, majority_vote=majority_vote, seconds=seconds)
    return read, fields, problems


def _integer_or_text(value: str) -> int | str:
    return int(value) if _DIGITS.fullmatch(value) else value


def _number_or_text(value: str) -> float | str | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return value
