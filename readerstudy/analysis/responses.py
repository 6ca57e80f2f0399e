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
from collections.abc import Sequence

from readerstudy.analysis.csvtable import integer_or_text, number_or_text, table_rows
from readerstudy.analysis.reads import Read, ReadFields, consistency_problems, field_problems

REQUIRED_COLUMNS = ("reader", "case", "truth", "task", "answer", "confidence")
OPTIONAL_COLUMNS = ("majority_vote", "seconds")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


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
    errors: list[tuple[int | None, str]] = []
    reads: list[Read] = []
    fields: list[ReadFields] = []
    for line, cells in table_rows(text, required=REQUIRED_COLUMNS, optional=OPTIONAL_COLUMNS, errors=errors,
                                  invalid=ResponsesInvalid):
        read, read_fields, problems = _parse_row(line, cells)
        errors += [(line, message) for message in problems]
        fields.append(read_fields)
        if read is not None:
            reads.append(read)
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


def _parse_row(line: int, cells: dict[str, str]) -> tuple[Read | None, ReadFields, list[str]]:
    task = integer_or_text(cells["task"])
    confidence = integer_or_text(cells["confidence"])
    majority_vote = cells.get("majority_vote") or None
    seconds = number_or_text(cells.get("seconds", ""))
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
