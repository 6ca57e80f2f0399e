"""Files the standard MRMC tools read, written from ratings and read back.

- **MRMCaov / RJafroc long format** (CSV): one row per rating with the columns
  ``reader,treatment,case,truth,rating`` (MRMCaov's VanDyke data frame; R:
  ``mrmc(empirical_auc(truth, rating), treatment, reader, case, data = read.csv(FILE))``).
- **iMRMC** (``.imrmc``, Gallas et al., iMRMC user manual "Input file format"; read by the iMRMC
  Java application and by RJafroc's ``DfReadDataFile(format = "iMRMC")``): free text, then the
  study description ``NR:`` readers, ``N0:`` negative cases, ``N1:`` positive cases, ``NM:``
  modalities, a line ``BEGIN DATA:``, then comma-separated ``readerID,caseID,modalityID,score``
  rows: one truth row per case with reader ``-1``, modality ``0`` and score 0 or 1, then one
  row per rating. Case identifiers are written as the integers 1..K (RJafroc requires integer case
  ids); ``case_key`` says which case each number is.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from readerstudy.analysis.mrmc.data import COLUMNS, Rating, RatingsInvalid, parse_ratings
from readerstudy.analysis.reads import natural_key

TRUTH_READER = "-1"
TRUTH_MODALITY = "0"
BEGIN_DATA = "BEGIN DATA:"
HEADER_KEYS = ("NR", "N0", "N1", "NM")


def long_csv(ratings: Sequence[Rating]) -> str:
    """MRMCaov's long format: header ``reader,treatment,case,truth,rating``, one row per rating."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([r.reader, r.treatment, r.case, r.truth, _number(r.rating)] for r in ratings)
    return buffer.getvalue()


def read_long_csv(text: str) -> list[Rating]:
    return parse_ratings(text)


def case_numbers(ratings: Sequence[Rating]) -> dict[str, int]:
    """Case name -> the integer it has in an iMRMC file (1..K in natural order of the names)."""
    return {case: i for i, case in enumerate(sorted({r.case for r in ratings}, key=natural_key), start=1)}


def imrmc(ratings: Sequence[Rating], description: str) -> str:
    """An iMRMC input file of ``ratings`` (see the module's docstring)."""
    numbers = case_numbers(ratings)
    truth = {r.case: r.truth for r in ratings}
    for name in {r.reader for r in ratings} | {r.treatment for r in ratings}:
        if "," in name or name.strip() != name or name in (TRUTH_READER,):
            raise ValueError(f"{name!r} cannot be an iMRMC reader or modality identifier")
    if TRUTH_MODALITY in {r.treatment for r in ratings}:
        raise ValueError(f"a treatment named {TRUTH_MODALITY!r} would clash with iMRMC's truth modality")
    lines = [line for line in description.splitlines()] or ["LesionSearch MRMC export"]
    lines += [
        "",
        f"NR: {len({r.reader for r in ratings})}",
        f"N0: {sum(1 for t in truth.values() if t == 0)}",
        f"N1: {sum(1 for t in truth.values() if t == 1)}",
        f"NM: {len({r.treatment for r in ratings})}",
        "",
        BEGIN_DATA,
    ]
    lines += [f"{TRUTH_READER},{numbers[case]},{TRUTH_MODALITY},{truth[case]}"
              for case in sorted(numbers, key=numbers.get)]
    lines += [f"{r.reader},{numbers[r.case]},{r.treatment},{_number(r.rating)}" for r in ratings]
    return "\n".join(lines) + "\n"


def read_imrmc(text: str) -> list[Rating]:
    """The ratings of an iMRMC file (case names are its integer ids); ``RatingsInvalid`` on a bad file."""
    lines = text.splitlines()
    header: dict[str, int] = {}
    errors: list[tuple[int | None, str]] = []
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip() == BEGIN_DATA)
    except StopIteration:
        raise RatingsInvalid([(None, f"no line {BEGIN_DATA!r}")]) from None
    for number, line in enumerate(lines[:begin], start=1):
        key, _, value = line.partition(":")
        if key.strip() in HEADER_KEYS:
            try:
                header[key.strip()] = int(value)
            except ValueError:
                errors.append((number, f"{key.strip()} {value.strip()!r} is not a whole number"))
    missing = [key for key in HEADER_KEYS if key not in header]
    if missing:
        errors.append((None, f"the study description lacks {', '.join(missing)}"))
    truth: dict[str, int] = {}
    rows: list[tuple[int, str, str, str, str]] = []
    for number, line in enumerate(lines[begin + 1:], start=begin + 2):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 4:
            errors.append((number, f"has {len(cells)} fields, not readerID,caseID,modalityID,score"))
            continue
        reader, case, modality, score = cells
        if reader == TRUTH_READER:
            if score not in ("0", "1"):
                errors.append((number, f"truth {score!r} of case {case!r} is not 0 or 1"))
            elif case in truth:
                errors.append((number, f"case {case!r} has a second truth row"))
            else:
                truth[case] = int(score)
        else:
            rows.append((number, reader, case, modality, score))
    ratings = []
    for number, reader, case, modality, score in rows:
        if case not in truth:
            errors.append((number, f"case {case!r} has no truth row"))
            continue
        try:
            ratings.append(Rating(reader, modality, case, truth[case], float(score)))
        except ValueError:
            errors.append((number, f"score {score!r} is not a number"))
    if not errors:
        found = {"NR": len({r.reader for r in ratings}), "N0": sum(1 for t in truth.values() if t == 0),
                 "N1": sum(1 for t in truth.values() if t == 1), "NM": len({r.treatment for r in ratings})}
        errors += [(None, f"{key} is {header[key]} but the data have {found[key]}")
                   for key in HEADER_KEYS if header[key] != found[key]]
    if errors:
        raise RatingsInvalid(errors)
    return ratings


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
