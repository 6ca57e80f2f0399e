"""Reading the analysis's CSV inputs (responses, enlargements, MRMC ratings) one way.

A header on line 1 names the columns, in any order and any case; every problem is collected
with its line number so that a file is refused with all of them at once. Unknown columns are
refused rather than ignored (a misspelt optional column would otherwise lose its data).
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence

BOM = "\ufeff"
HEADER_LINE = 1

Errors = list[tuple[int | None, str]]
_DIGITS = re.compile(r"[0-9]+")


def table_rows(text: str, *, required: Sequence[str], optional: Sequence[str] = (), errors: Errors,
               invalid: Callable[[Errors], Exception]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, column -> stripped cell)`` for every non-blank row of a CSV's text.

    Problems of the header and rows of the wrong length go into ``errors`` (the caller adds its
    own and decides); an empty file, a header that leaves the rows unreadable (a missing or
    repeated column) and text that is not CSV raise ``invalid(errors)`` at once. Accepts a leading
    UTF-8 byte order mark and CRLF line ends; rows whose cells are all empty are skipped but still
    counted in line numbers.
    """
    if text.startswith(BOM):
        text = text[len(BOM):]
    columns_said = ", ".join(required) + (f" (optionally {', '.join(optional)})" if optional else "")
    if not text.strip():
        raise invalid([(None, f"the file is empty; line 1 must be the header: {columns_said}")])
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(rows)]
        columns, problems = _columns(header, required, optional, columns_said)
        errors += [(HEADER_LINE, message) for message in problems]
        if columns is None:
            raise invalid(errors)
        last_line = rows.line_num
        for cells in rows:
            line, last_line = last_line + 1, rows.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                errors.append((line, f"has {len(cells)} fields but the header has {len(header)}"))
                continue
            yield line, {name: cells[i].strip() for name, i in columns.items()}
    except csv.Error as exc:
        errors.append((rows.line_num, f"not readable as CSV: {exc}"))
        raise invalid(errors) from None


def _columns(header: list[str], required: Sequence[str], optional: Sequence[str], columns_said: str
             ) -> tuple[dict[str, int] | None, list[str]]:
    """Column name -> index (None when the rows cannot be read) and the header's problems."""
    allowed = (*required, *optional)
    problems = []
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        problems.append(f"column(s) given more than once: {', '.join(duplicates)}")
    missing = [name for name in required if name not in header]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}; the header must name {columns_said}")
    unknown = [name or "(empty)" for name in header if name not in allowed]
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if duplicates or missing:
        return None, problems
    return {name: header.index(name) for name in allowed if name in header}, problems


def integer_or_text(value: str) -> int | str:
    """A cell of digits as an int; anything else as it is, for the checks to name."""
    return int(value) if _DIGITS.fullmatch(value) else value


def number_or_text(value: str) -> float | str | None:
    """An empty cell as None, a number as a float; anything else as it is, for the checks to name."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return value
