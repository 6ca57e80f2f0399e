"""What readers looked at: the views file (written, read back, refused line by line) and the
per-reader summary, on a small example computed by hand."""
from __future__ import annotations

import pytest

from readerstudy.analysis.reads import Read
from readerstudy.analysis.viewing import (
    SUMMARY_NOTE, VIEW_COLUMNS, NeighbourView, ViewsInvalid, parse_views, views_csv, viewing_summary,
)

TRUTH = {"A": "mel", "B": "bcc", "C": "nv"}


def read(reader, case, task, answer, seconds):
    return Read(reader=reader, case=case, truth=TRUTH[case], task=task, answer=answer, confidence=3, seconds=seconds)


def view(reader, case, rank, neighbour_class, after, open_for=1.5):
    return NeighbourView(reader=reader, case=case, task=2, rank=rank, neighbour_class=neighbour_class,
                         seconds_after_shown=after, seconds_open=open_for)


READS = [
    # reader 1: A nv -> mel (answered after 30 s), B bcc -> bcc, C mel -> nv (after 15 s)
    read("reader 1", "A", 1, "nv", 9.0), read("reader 1", "B", 1, "bcc", 8.0), read("reader 1", "C", 1, "mel", 7.0),
    read("reader 1", "A", 2, "mel", 30.0), read("reader 1", "B", 2, "bcc", 20.0), read("reader 1", "C", 2, "nv", 15.0),
    # reader 2: A mel -> nv without a time, B bkl -> bcc (after 12 s)
    read("reader 2", "A", 1, "mel", 5.0), read("reader 2", "B", 1, "bkl", 6.0),
    read("reader 2", "A", 2, "nv", None), read("reader 2", "B", 2, "bcc", 12.0),
    # reader 10: Task 1 only so far
    read("reader 10", "A", 1, "nv", 4.0),
]
VIEWS = [
    view("reader 1", "A", 1, "mel", 5.0),  # before the answer, of the new class: the change counts
    view("reader 1", "A", 2, "nv", 10.0),  # before
    view("reader 1", "A", 3, "mel", 40.0, None),  # after the answer (a revisit), open time unknown
    view("reader 1", "C", 4, "nv", 20.0),  # after the answer: of the new class, but too late
    view("reader 1", "C", 1, "mel", -3.0),  # before: during an earlier showing (reloaded), not the new class
    view("reader 2", "A", 2, "nv", 3.0),  # the read has no time: cannot be placed
    view("reader 2", "B", 5, "bcc", 2.0),  # the same neighbour twice, before the answer, of the new class
    view("reader 2", "B", 5, "bcc", 8.0),
    view("reader 10", "A", 1, "mel", 1.0),  # no Task 2 read yet
]


def counts(cases, untimed, with_enlargement, enlargements, after, changes, untimed_changes, after_viewing,
           per_case, share):
    return {"cases": cases, "untimed_cases": untimed, "cases_with_enlargement": with_enlargement,
            "enlargements": enlargements, "enlargements_after_answer": after, "answer_changes": changes,
            "untimed_changes": untimed_changes, "changes_after_viewing_new_class": after_viewing,
            "enlargements_per_case": per_case, "share_after_viewing_new_class": share}


def test_the_summary_matches_the_hand_computed_example():
    summary = viewing_summary(READS, VIEWS)
    assert summary == {
        "readers": [
            # 3 cases: A (2 before, 1 after), B (none), C (1 before, 1 after); changes A and C, only A after
            # looking at a neighbour of the new class (mel at 5 s < 30 s; C's nv at 20 s > 15 s).
            {"reader": "reader 1", **counts(3, 0, 2, 3, 2, 2, 0, 1, 3 / 3, 1 / 2)},
            # A untimed (left out of the enlargements and of the share), B: 2 enlargements of bcc before it.
            {"reader": "reader 2", **counts(2, 1, 1, 2, 0, 2, 1, 1, 2 / 1, 1 / 1)},
            {"reader": "reader 10", **counts(0, 0, 0, 0, 0, 0, 0, 0, None, None)},
        ],
        "all_readers": counts(5, 1, 3, 5, 2, 4, 1, 2, 5 / 4, 2 / 3),
        "views_without_task2_read": 1,
        "note": SUMMARY_NOTE,
    }


def test_the_summary_does_not_depend_on_the_order_of_reads_and_views():
    assert viewing_summary(READS[::-1], VIEWS[::-1]) == viewing_summary(READS, VIEWS)


def test_an_enlargement_at_the_moment_of_the_answer_is_not_before_it():
    reads = [read("r", "A", 1, "nv", 1.0), read("r", "A", 2, "mel", 30.0)]
    summary = viewing_summary(reads, [view("r", "A", 1, "mel", 30.0)])
    assert summary["readers"][0]["changes_after_viewing_new_class"] == 0
    assert summary["readers"][0]["enlargements_after_answer"] == 1


def test_no_reads_and_no_views_give_zeros_and_nones():
    assert viewing_summary([], []) == {"readers": [], "all_readers": counts(0, 0, 0, 0, 0, 0, 0, 0, None, None),
                                       "views_without_task2_read": 0, "note": SUMMARY_NOTE}


def test_the_summary_refuses_bad_reads_and_views_listing_every_problem():
    bad_views = [NeighbourView("r", "A", 1, 0, "MEL", float("nan"), -1.0),
                 view("r", "A", 1, "nv", 2.0)]  # rank 1 of A is mel above... and nv here: one library case
    with pytest.raises(ValueError) as refused:
        viewing_summary([read("r", "A", 2, "mel", 1.0)], bad_views + [view("r", "A", 1, "mel", 3.0)])
    message = str(refused.value)
    assert "read 1: reader 'r' has Task 2 of case 'A' but no Task 1 read of it" in message
    for problem in ("view 1: task 1 is not 2", "view 1: rank 0 is not a positive integer",
                    "view 1: neighbour_class 'MEL' is not a class code", "codes are lower case without spaces: 'mel'",
                    "view 1: seconds_after_shown nan is not a number",
                    "view 1: seconds_open -1.0 is not a non-negative number",
                    "view 3: case 'A' has neighbour_class 'mel' at rank 1 here but 'nv' on view 2"):
        assert problem in message


# --- The views file ---------------------------------------------------------------------------

def test_views_csv_has_the_columns_and_reads_back_unchanged():
    text = views_csv(VIEWS)
    lines = text.splitlines()
    assert lines[0] == "reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open" == ",".join(VIEW_COLUMNS)
    assert lines[1] == "reader 1,A,2,1,mel,5.0,1.5"
    assert lines[3] == "reader 1,A,2,3,mel,40.0,"  # unknown open time: an empty cell
    assert len(lines) == 1 + len(VIEWS)
    assert parse_views(text) == VIEWS
    odd = [view("a, \"quoted\" reader", "ISIC_1", 2, "df", 0.1 + 0.2, 1 / 3)]
    assert parse_views(views_csv(odd)) == odd  # quoting and floats survive exactly


def test_a_header_alone_is_no_views_and_the_file_may_come_from_a_spreadsheet():
    assert views_csv([]) == ",".join(VIEW_COLUMNS) + "\n"
    assert parse_views(views_csv([])) == []
    text = ("\ufeffSeconds_Open, Reader ,case,TASK,rank,neighbour_class,seconds_after_shown\r\n"
            " 2.5 , r1 , A , 2 , 3 , bkl , 7 \r\n"
            ",,,,,,\r\n"
            ",r1,A,2,4,nv,8.25\r\n")
    assert parse_views(text) == [NeighbourView("r1", "A", 2, 3, "bkl", 7.0, 2.5),
                                 NeighbourView("r1", "A", 2, 4, "nv", 8.25, None)]


def test_a_malformed_views_file_is_refused_with_every_line_named():
    text = "\n".join([
        "reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open",
        "r1,A,2,1,mel,5,1",  # fine
        "r1,A,1,1,mel,5,1",  # 3: Task 1
        ",A,2,x,Mel,soon,-2",  # 4: empty reader, rank, class, both seconds
        "r1,A,2,1",  # 5: too few fields
        "r2,A,2,1,nv,5,",  # 6: rank 1 of A was mel on line 2
        "r2,B,2,2.0,nv,inf,",  # 7: a rank is an integer; infinite seconds
    ])
    with pytest.raises(ViewsInvalid) as refused:
        parse_views(text)
    errors = refused.value.errors
    assert {line for line, _ in errors} == {3, 4, 5, 6, 7}
    assert (3, "task 1 is not 2 (only Task 2 shows neighbours)") in errors
    assert (4, "reader is empty") in errors
    assert (4, "rank 'x' is not a positive integer") in errors
    assert (4, "seconds_after_shown 'soon' is not a number") in errors
    assert (4, "seconds_open -2.0 is not a non-negative number") in errors
    assert any(line == 4 and "neighbour_class 'Mel' is not a class code" in message for line, message in errors)
    assert (5, "has 4 fields but the header has 7") in errors
    assert (6, "case 'A' has neighbour_class 'nv' at rank 1 here but 'mel' on line 2") in errors
    assert (7, "rank '2.0' is not a positive integer") in errors
    assert (7, "seconds_after_shown inf is not a number") in errors
    assert str(refused.value).splitlines()[0].startswith("line 3: ")


@pytest.mark.parametrize(("text", "expected"), [
    ("", (None, "the file is empty; line 1 must be the header: "
                "reader, case, task, rank, neighbour_class, seconds_after_shown, seconds_open")),
    ("reader,case,task,rank,neighbour_class,seconds_after_shown\n",
     (1, "missing column(s): seconds_open; the header must name reader, case, task, rank, neighbour_class, "
         "seconds_after_shown, seconds_open")),
    ("reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open,similarity\n",
     (1, "unknown column(s): similarity; allowed: reader, case, task, rank, neighbour_class, seconds_after_shown, "
         "seconds_open")),
    ("reader,reader,case,task,rank,neighbour_class,seconds_after_shown,seconds_open\n",
     (1, "column(s) given more than once: reader")),
])
def test_a_bad_header_is_refused_on_line_1(text, expected):
    with pytest.raises(ViewsInvalid) as refused:
        parse_views(text)
    assert expected in refused.value.errors
