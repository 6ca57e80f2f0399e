"""The input of an MRMC analysis: one rating of one case by one reader under one treatment.

Plain values, no Django. ``parse_ratings`` reads the CSV that MRMCaov and the command take
(``reader,treatment,case,truth,rating``); ``Study.from_ratings`` checks the ratings as a whole
and finds the design:

- **factorial** (fully crossed): every reader rates every case under every treatment;
- **nested within readers**: every reader rates their own cases (no case is rated by two
  readers) under every treatment (the thesis's reader study).

Anything else (cases nested within treatments, partially paired or overlapping samples) is
refused with a message that says what was found and which designs are taken.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from readerstudy.analysis.csvtable import table_rows
from readerstudy.analysis.reads import natural_key

COLUMNS = ("reader", "treatment", "case", "truth", "rating")
FACTORIAL = "factorial"
NESTED_WITHIN_READERS = "nested_within_readers"
DESIGNS = {
    FACTORIAL: "factorial (fully crossed): every reader rates every case under every treatment",
    NESTED_WITHIN_READERS: "cases nested within readers: each reader rates their own cases under every treatment",
}
#: At most this many offending lines are named in one message of a design problem.
MAX_NAMED = 5


class RatingsInvalid(ValueError):
    """The ratings were refused; ``errors`` holds every (line number or None, message)."""

    def __init__(self, errors: Sequence[tuple[int | None, str]]):
        self.errors = sorted(errors, key=lambda error: -1 if error[0] is None else error[0])
        super().__init__("\n".join(message if line is None else f"line {line}: {message}"
                                   for line, message in self.errors))


class DesignRefused(ValueError):
    """The ratings are well formed but their design (or figure of merit) cannot be analysed."""


@dataclass(frozen=True)
class Rating:
    """One reader's rating of one case under one treatment (MRMCaov's long format)."""

    reader: str
    treatment: str
    case: str
    truth: int  # 1 positive (diseased), 0 negative
    rating: float  # larger = more suspicious; for accuracy 1 correct, 0 wrong


def parse_ratings(text: str) -> list[Rating]:
    """The ratings of a CSV's text (header on line 1, any column order, case-insensitive names);
    raises ``RatingsInvalid`` listing every offending line. Unknown columns are refused."""
    errors: list[tuple[int | None, str]] = []
    ratings, lines = [], []
    for line, values in table_rows(text, required=COLUMNS, errors=errors, invalid=RatingsInvalid):
        rating, problems = _parse_row(values)
        errors += [(line, message) for message in problems]
        if rating is not None:
            ratings.append(rating)
            lines.append(line)
    if not ratings and not errors:
        errors.append((None, "no ratings: the file has a header but no rows"))
    errors += consistency_problems(ratings, lines)
    if errors:
        raise RatingsInvalid(errors)
    return ratings


def _parse_row(values: dict[str, str]) -> tuple[Rating | None, list[str]]:
    problems = [f"{name} is empty" for name in ("reader", "treatment", "case") if not values[name]]
    truth = values["truth"]
    if truth not in ("0", "1"):
        problems.append(f"truth {truth!r} is not 0 or 1")
    try:
        rating = float(values["rating"])
        if not math.isfinite(rating):
            raise ValueError
    except ValueError:
        problems.append(f"rating {values['rating']!r} is not a finite number")
        rating = None
    if problems:
        return None, problems
    return Rating(values["reader"], values["treatment"], values["case"], int(truth), rating), []


def consistency_problems(ratings: Sequence[Rating], positions: Sequence[int] | None = None,
                         where: str = "line") -> list[tuple[int, str]]:
    """Duplicated (reader, treatment, case) rows and cases whose truth differs between rows."""
    positions = list(positions) if positions is not None else list(range(1, len(ratings) + 1))
    problems = []
    seen: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    truth: dict[str, tuple[int, int]] = {}
    for rating, position in zip(ratings, positions):
        seen[rating.reader, rating.treatment, rating.case].append(position)
        if rating.case not in truth:
            truth[rating.case] = (rating.truth, position)
        elif truth[rating.case][0] != rating.truth:
            known, first = truth[rating.case]
            problems.append((position, f"case {rating.case!r} has truth {rating.truth} here but {known} on "
                                       f"{where} {first}"))
    for (reader, treatment, case), found in seen.items():
        for position in found if len(found) > 1 else ():
            others = ", ".join(str(p) for p in found if p != position)
            problems.append((position, f"reader {reader!r} rated case {case!r} under treatment {treatment!r} "
                                       f"more than once (also {where} {others})"))
    return sorted(problems)


@dataclass(frozen=True)
class ReaderCases:
    """One reader's cases (indices into ``Study.cases``) and ratings[treatment, case]."""

    cases: np.ndarray  # int indices into Study.cases
    ratings: np.ndarray  # float, shape (treatments, len(cases))


@dataclass(frozen=True)
class Study:
    """Ratings arranged for the analysis: sorted names, the design, each reader's rating matrix."""

    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    cases: tuple[str, ...]
    truth: np.ndarray  # int 0/1 per case
    design: str
    by_reader: tuple[ReaderCases, ...]

    @classmethod
    def from_ratings(cls, ratings: Iterable[Rating]) -> Study:
        """Check ``ratings`` as a whole and find the design; ``DesignRefused`` says why not."""
        ratings = list(ratings)
        problems = consistency_problems(ratings, where="rating")
        if problems:
            raise RatingsInvalid(problems)
        if not ratings:
            raise DesignRefused("there are no ratings")
        treatments = tuple(sorted({r.treatment for r in ratings}, key=natural_key))
        readers = tuple(sorted({r.reader for r in ratings}, key=natural_key))
        if len(treatments) < 2:
            raise DesignRefused(f"an MRMC comparison needs at least two treatments; the ratings have one "
                                f"({treatments[0]!r})")
        cases = tuple(sorted({r.case for r in ratings}, key=natural_key))
        case_index = {case: i for i, case in enumerate(cases)}
        truth = np.zeros(len(cases), dtype=int)
        rated: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        for r in ratings:
            truth[case_index[r.case]] = r.truth
            rated[r.reader, r.treatment][case_index[r.case]] = r.rating
        reader_cases = []
        for reader in readers:
            sets = {treatment: set(rated.get((reader, treatment), {})) for treatment in treatments}
            union = set().union(*sets.values())
            for treatment in treatments:
                lacking = sorted(union - sets[treatment])
                if lacking:
                    named = ", ".join(repr(cases[i]) for i in lacking[:MAX_NAMED])
                    more = f" and {len(lacking) - MAX_NAMED} more" if len(lacking) > MAX_NAMED else ""
                    raise DesignRefused(
                        f"reader {reader!r} rated {len(lacking)} case(s) under another treatment but not under "
                        f"{treatment!r} ({named}{more}): every reader must rate each of their cases under every "
                        f"treatment. {_designs_taken()}")
            reader_cases.append(sorted(union))
        design = _design(readers, reader_cases, cases)
        by_reader = tuple(
            ReaderCases(np.asarray(mine, dtype=int),
                        np.asarray([[rated[reader, t][i] for i in mine] for t in treatments], dtype=float))
            for reader, mine in zip(readers, reader_cases))
        return cls(treatments, readers, cases, truth, design, by_reader)

    @property
    def n_cases(self) -> int:
        return len(self.cases)


def _design(readers: Sequence[str], reader_cases: Sequence[list[int]], cases: Sequence[str]) -> str:
    first = set(reader_cases[0])
    if all(set(mine) == first for mine in reader_cases):
        return FACTORIAL
    owner: dict[int, str] = {}
    for reader, mine in zip(readers, reader_cases):
        for i in mine:
            if i in owner:
                shared = sum(1 for j in mine if owner.get(j) == owner[i])
                raise DesignRefused(
                    f"readers {owner[i]!r} and {reader!r} share {shared} case(s) (e.g. {cases[i]!r}) but do not "
                    "rate the same cases: the design is neither fully crossed nor nested within readers. "
                    + _designs_taken())
            owner[i] = reader
    return NESTED_WITHIN_READERS


def _designs_taken() -> str:
    return "The analysis takes these designs: " + "; ".join(DESIGNS.values()) + "."
