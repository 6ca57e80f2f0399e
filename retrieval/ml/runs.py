"""Scoring external retrieval runs: a RUN.csv of ranked neighbours plus HAM10000 metadata.

A run file has one row per (query, neighbour) pair::

    query_id,rank,neighbour_id[,score]
    ISIC_0027419,1,ISIC_0025030,0.93

Ids are HAM10000 ``image_id`` values; ranks start at 1 and must have no gaps. The optional
``score`` is accepted and not used: P@k only needs the order. Pure Python/NumPy, no Django.

Every row that cannot be used is skipped and reported with its CSV line number, never
dropped silently. Queries with fewer than k usable neighbours are reported and left out of
P@k for that k only (they still count for the smaller cut-offs).
"""
from __future__ import annotations

import csv
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from retrieval.ham10000 import MetadataError, MetadataRow, RowError, read_metadata
from retrieval.ml.metrics import (
    RetrievalScores,
    combine_scores,
    precision_at_k,
    remove_same_lesion,
    validate_ks,
)

RUN_COLUMNS = ("query_id", "rank", "neighbour_id")
OPTIONAL_RUN_COLUMNS = ("score",)
FIRST_RANK = 1
#: How many query ids a "too few neighbours" report names before summarising the rest.
MAX_LISTED_QUERIES = 10
#: Longest id echoed back in a problem message (ids come from an untrusted file).
MAX_SHOWN_ID = 80


class RunError(Exception):
    """The run file as a whole cannot be used (missing, not CSV, required columns missing)."""


@dataclass
class ParsedRun:
    """A run's usable content: queries in order of first appearance, neighbours in rank order."""

    name: str
    queries: list[str]
    neighbours: dict[str, list[str]]
    problems: list[str]


@dataclass(frozen=True)
class _Entry:
    line: int
    rank: int
    neighbour_id: str


def load_metadata(path: Path) -> tuple[dict[str, MetadataRow], list[str]]:
    """The usable metadata rows by ``image_id``, and one problem line per rejected row.

    Raises :class:`~retrieval.ham10000.MetadataError` when the file is unusable or has no
    usable row at all.
    """
    rows: dict[str, MetadataRow] = {}
    problems: list[str] = []
    for item in read_metadata(path):
        if isinstance(item, RowError):
            problems.append(f"metadata {item}, skipped")
        else:
            rows[item.image_id] = item
    if not rows:
        raise MetadataError(f"{path}: no usable metadata rows")
    return rows, problems


def parse_run(path: Path, name: str, known_ids: Collection[str]) -> ParsedRun:
    """Read and validate a run file; ``known_ids`` are the image ids of the metadata.

    Raises :class:`RunError` for a file that cannot be used at all. Row-level problems
    (bad or duplicate ranks, unknown ids, self-matches, gaps) go to ``problems``.
    """
    entries: dict[str, dict[int, _Entry]] = {}
    problems: list[str] = []
    for line, record in _records(path):
        query_id = (record.get("query_id") or "").strip()
        if query_id in known_ids:
            # Registered before the row checks so that a query whose rows are all invalid
            # is still scored (and reported as short of neighbours), not silently lost.
            entries.setdefault(query_id, {})
        parsed = _check_row(line, record, known_ids)
        if isinstance(parsed, str):
            problems.append(parsed)
            continue
        query_id, entry = parsed
        duplicate = _duplicate_problem(line, query_id, entry, entries[query_id])
        if duplicate:
            problems.append(duplicate)
            continue
        entries[query_id][entry.rank] = entry
    neighbours = {query_id: _ranked_until_gap(query_id, by_rank, problems) for query_id, by_rank in entries.items()}
    return ParsedRun(name=name, queries=list(entries), neighbours=neighbours, problems=problems)


def score_run(
    parsed: ParsedRun, metadata: Mapping[str, MetadataRow], ks: Sequence[int], lesion_aware: bool
) -> tuple[RetrievalScores, list[str]]:
    """P@k / AP@k of a parsed run, and the problems found while scoring.

    ``metadata`` maps image ids to their rows (see :func:`load_metadata`). For each k, the
    queries with fewer than k usable neighbours (after removing the query's own lesion in the
    lesion-aware variant) are reported and left out of P@k for that k. Raises
    :class:`RunError` when no query can be scored at any k.
    """
    cutoffs = validate_ks(ks)
    _check_ids_in_metadata(parsed, metadata)
    labels = [metadata[query_id].dx for query_id in parsed.queries]
    lesions = [metadata[query_id].lesion_id for query_id in parsed.queries]
    neighbour_labels = [[metadata[n].dx for n in parsed.neighbours[q]] for q in parsed.queries]
    neighbour_lesions = [[metadata[n].lesion_id for n in parsed.neighbours[q]] for q in parsed.queries]
    usable = remove_same_lesion(lesions, neighbour_labels, neighbour_lesions) if lesion_aware else neighbour_labels
    available = [len(ranked) for ranked in usable]
    parts: list[RetrievalScores] = []
    problems: list[str] = []
    for k in cutoffs:
        eligible = [index for index, count in enumerate(available) if count >= k]
        if len(eligible) < len(parsed.queries):
            problems.append(_short_problem(parsed, available, k, lesion_aware))
        if eligible:
            parts.append(precision_at_k(
                [labels[i] for i in eligible], [neighbour_labels[i] for i in eligible], ks=(k,),
                query_lesions=[lesions[i] for i in eligible],
                neighbour_lesions=[neighbour_lesions[i] for i in eligible], lesion_aware=lesion_aware,
            ))
    if not parts:
        raise RunError(f"run {parsed.name!r}: no query has {cutoffs[0]} usable neighbour(s); nothing to score")
    combined = combine_scores(parts)
    # Keep every requested k, so that a k nobody reached shows as missing rather than vanishing.
    return replace(combined, k=cutoffs, n_queries_at_k={k: combined.n_queries_at_k.get(k, 0) for k in cutoffs}), problems


def _records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a run file whose header has the required columns."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise RunError(f"cannot open run file {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [column.strip() for column in (reader.fieldnames or [])]
            missing = [column for column in RUN_COLUMNS if column not in header]
            if missing:
                raise RunError(
                    f"{path}: header lacks column(s) {', '.join(missing)}; expected "
                    f"{','.join(RUN_COLUMNS)} and optionally {','.join(OPTIONAL_RUN_COLUMNS)}"
                )
            reader.fieldnames = header
            for record in reader:
                yield reader.line_num, record
        except UnicodeDecodeError:
            raise RunError(f"{path} is not a UTF-8 text file") from None
        except csv.Error as exc:
            raise RunError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from None


def _check_row(line: int, record: dict[str, str], known_ids: Collection[str]) -> tuple[str, _Entry] | str:
    """The row's (query id, entry), or a problem message naming the line."""
    if None in record or any(record.get(column) is None for column in RUN_COLUMNS):
        return f"line {line}: wrong number of fields, skipped"
    query_id, neighbour_id = record["query_id"].strip(), record["neighbour_id"].strip()
    rank_text = record["rank"].strip()
    if not query_id or not neighbour_id:
        return f"line {line}: empty query_id or neighbour_id, skipped"
    try:
        rank = int(rank_text)
    except ValueError:
        return f"line {line}: rank {_shown(rank_text)} is not a whole number, skipped"
    if rank < FIRST_RANK:
        return f"line {line}: rank {rank} is below {FIRST_RANK} (ranks start at {FIRST_RANK}), skipped"
    for role, image_id in (("query_id", query_id), ("neighbour_id", neighbour_id)):
        if image_id not in known_ids:
            return f"line {line}: {role} {_shown(image_id)} is not in the metadata, skipped"
    if query_id == neighbour_id:
        return f"line {line}: query {query_id} lists itself as its own neighbour (rank {rank}), skipped"
    return query_id, _Entry(line, rank, neighbour_id)


def _duplicate_problem(line: int, query_id: str, entry: _Entry, by_rank: dict[int, _Entry]) -> str | None:
    first = by_rank.get(entry.rank)
    if first is not None:
        return f"line {line}: duplicate rank {entry.rank} for query {query_id} (first on line {first.line}), skipped"
    # The same image twice would be counted twice in P@k.
    for other in by_rank.values():
        if other.neighbour_id == entry.neighbour_id:
            return (
                f"line {line}: neighbour {entry.neighbour_id} listed again for query {query_id} "
                f"(first on line {other.line}), skipped"
            )
    return None


def _ranked_until_gap(query_id: str, by_rank: dict[int, _Entry], problems: list[str]) -> list[str]:
    """Neighbour ids in rank order, cut at the first missing rank (later ranks are unreliable)."""
    ranked = [by_rank[rank] for rank in sorted(by_rank)]
    for position, entry in enumerate(ranked):
        expected = FIRST_RANK + position
        if entry.rank != expected:
            before = f"after rank {ranked[position - 1].rank} on line {ranked[position - 1].line}" if position else "at the start"
            problems.append(
                f"query {query_id}: rank {expected} is missing ({before}, next is rank {entry.rank} on "
                f"line {entry.line}); its neighbours from rank {entry.rank} on are ignored"
            )
            return [kept.neighbour_id for kept in ranked[:position]]
    return [entry.neighbour_id for entry in ranked]


def _short_problem(parsed: ParsedRun, available: list[int], k: int, lesion_aware: bool) -> str:
    short = [(query_id, count) for query_id, count in zip(parsed.queries, available) if count < k]
    listed = ", ".join(f"{query_id} ({count})" for query_id, count in short[:MAX_LISTED_QUERIES])
    more = f" and {len(short) - MAX_LISTED_QUERIES} more" if len(short) > MAX_LISTED_QUERIES else ""
    variant = "lesion-aware " if lesion_aware else ""
    after = " left after removing their own lesion's images" if lesion_aware else ""
    return (
        f"{variant}P@{k}: {len(short)} of {len(parsed.queries)} queries have fewer than {k} neighbours{after} "
        f"and are left out of P@{k}: {listed}{more}"
    )


def _check_ids_in_metadata(parsed: ParsedRun, metadata: Mapping[str, MetadataRow]) -> None:
    ids = set(parsed.queries) | {n for ranked in parsed.neighbours.values() for n in ranked}
    missing = sorted(ids - metadata.keys())
    if missing:
        shown = ", ".join(missing[:MAX_LISTED_QUERIES])
        raise RunError(f"run {parsed.name!r} was parsed against other metadata: {len(missing)} id(s) unknown here ({shown})")


def _shown(value: str) -> str:
    return repr(value[:MAX_SHOWN_ID])
