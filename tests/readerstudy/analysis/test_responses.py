"""The responses CSV validator: every kind of error with its line numbers."""
from __future__ import annotations

import pytest

from readerstudy.analysis.reads import Read
from readerstudy.analysis.responses import ResponsesInvalid, format_responses, parse_responses
from tests.readerstudy.analysis.scenario import study_reads

HEADER = "reader,case,truth,task,answer,confidence"


def errors_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ResponsesInvalid) as refused:
        parse_responses(text)
    return refused.value.errors


def lines_of(text: str) -> list[int | None]:
    return [line for line, _ in errors_of(text)]


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def test_a_valid_file_gives_its_reads_in_file_order():
    text = csv_text("alice,c1,mel,1,nv,2,mel,12.5", "alice,c1,mel,2,mel,4,mel,",
                    header=HEADER + ",majority_vote,seconds")
    assert parse_responses(text) == [
        Read("alice", "c1", "mel", 1, "nv", 2, "mel", 12.5),
        Read("alice", "c1", "mel", 2, "mel", 4, "mel", None),
    ]


def test_optional_columns_may_be_left_out_and_columns_come_in_any_order():
    text = csv_text("4,mel,2,c1,mel,alice", "2,nv,1,c1,mel,alice", header="confidence,answer,task,case,truth,Reader")
    assert parse_responses(text) == [Read("alice", "c1", "mel", 2, "mel", 4), Read("alice", "c1", "mel", 1, "nv", 2)]


def test_format_responses_round_trips():
    reads = study_reads()
    assert parse_responses(format_responses(reads)) == reads


def test_bom_crlf_spaces_and_blank_rows_are_accepted():
    text = "\ufeff" + HEADER + "\r\n alice , c1 , mel , 1 , nv , 2 \r\n\r\n,,,,,\r\nbob,c1,mel,1,mel,5\r\n"
    assert parse_responses(text) == [Read("alice", "c1", "mel", 1, "nv", 2), Read("bob", "c1", "mel", 1, "mel", 5)]


def test_line_numbers_count_skipped_blank_lines():
    assert lines_of(csv_text("alice,c1,mel,1,nv,2", "", "alice,c2,xx,1,nv,2")) == [4]


def test_empty_file_and_header_only_are_refused():
    assert errors_of("")[0][0] is None
    assert "empty" in errors_of(" \n\n")[0][1]
    assert errors_of("\ufeff" + HEADER + "\r\n") == [(None, "no reads: the file has a header but no rows")]


def test_missing_columns_are_a_header_error_on_line_1():
    errors = errors_of(csv_text("alice,c1,mel,1,nv", header="reader,case,truth,task,answer"))
    assert errors == [(1, "missing column(s): confidence; the header must name reader, case, truth, task, "
                          "answer, confidence (optionally majority_vote, seconds)")]


def test_unknown_and_duplicate_columns_are_refused():
    assert errors_of(csv_text("alice,c1,mel,1,nv,2,x", header=HEADER + ",notes")) == \
        [(1, "unknown column(s): notes; allowed: reader, case, truth, task, answer, confidence, majority_vote, "
             "seconds")]
    assert errors_of(csv_text("a,c1,mel,1,nv,2,3", header=HEADER + ",confidence"))[0][1] == \
        "column(s) given more than once: confidence"


def test_unknown_classes_are_refused_with_a_hint_for_upper_case():
    errors = errors_of(csv_text("alice,c1,melanoma,1,nv,2,mel", "alice,c2,nv,1,NV,2,nv", "alice,c3,nv,1,nv,2,bad",
                                header=HEADER + ",majority_vote"))
    assert errors == [
        (2, "truth 'melanoma' is not a class code (one of akiec, bcc, bkl, df, mel, nv, vasc)"),
        (3, "answer 'NV' is not a class code (one of akiec, bcc, bkl, df, mel, nv, vasc); codes are lower case "
            "without spaces: 'nv'"),
        (4, "majority_vote 'bad' is not a class code (one of akiec, bcc, bkl, df, mel, nv, vasc)"),
    ]


@pytest.mark.parametrize("confidence", ["0", "6", "3.5", "three", ""])
def test_confidence_must_be_an_integer_from_1_to_5(confidence):
    errors = errors_of(csv_text(f"alice,c1,mel,1,nv,{confidence}"))
    assert errors == [(2, f"confidence {int(confidence) if confidence.isdigit() else confidence!r} "
                          "is not an integer from 1 to 5")]


@pytest.mark.parametrize("task", ["0", "3", "one", ""])
def test_task_must_be_1_or_2(task):
    assert errors_of(csv_text(f"alice,c1,mel,{task},nv,2"))[0] == \
        (2, f"task {int(task) if task.isdigit() else task!r} is not 1 or 2")


def test_reader_and_case_must_not_be_empty():
    assert errors_of(csv_text(",c1,mel,1,nv,2", "alice, ,mel,1,nv,2")) == [(2, "reader is empty"),
                                                                           (3, "case is empty")]


def test_seconds_must_be_a_non_negative_number():
    errors = errors_of(csv_text("a,c1,mel,1,nv,2,-1", "a,c2,mel,1,nv,2,soon", "a,c3,mel,1,nv,2,nan",
                                header=HEADER + ",seconds"))
    assert [line for line, _ in errors] == [2, 3, 4]
    assert errors[1] == (3, "seconds 'soon' is not a non-negative number")


def test_a_repeated_read_is_reported_on_both_lines():
    errors = errors_of(csv_text("alice,c1,mel,1,nv,2", "bob,c1,mel,1,nv,2", "alice,c1,mel,1,mel,3"))
    assert errors == [
        (2, "reader 'alice' has Task 1 of case 'c1' more than once (also line 4)"),
        (4, "reader 'alice' has Task 1 of case 'c1' more than once (also line 2)"),
    ]


def test_task_2_needs_its_task_1_read_anywhere_in_the_file():
    text = csv_text("alice,c1,mel,2,mel,4", "alice,c1,mel,1,nv,2", "bob,c1,mel,2,mel,4")
    assert errors_of(text) == [(4, "reader 'bob' has Task 2 of case 'c1' but no Task 1 read of it")]


def test_a_task_1_read_with_a_bad_field_still_counts_for_its_task_2_read():
    assert lines_of(csv_text("alice,c1,mel,1,nv,9", "alice,c1,mel,2,mel,4")) == [2]


def test_a_case_keeps_one_truth_and_one_majority_vote():
    text = csv_text("alice,c1,mel,1,nv,2,mel", "bob,c1,nv,1,nv,2,mel", "carol,c1,mel,1,nv,2,",
                    "dave,c1,mel,1,nv,2,nv", header=HEADER + ",majority_vote")
    assert errors_of(text) == [
        (3, "case 'c1' has truth 'nv' here but 'mel' on line 2"),
        (5, "case 'c1' has majority_vote 'nv' here but 'mel' on line 2"),
    ]


def test_wrong_field_count_is_refused():
    assert errors_of(csv_text("alice,c1,mel,1,nv", "alice,c2,mel,1,nv,2,extra")) == [
        (2, "has 5 fields but the header has 6"),
        (3, "has 7 fields but the header has 6"),
    ]


def test_every_error_is_listed_at_once_in_line_order():
    text = csv_text(
        "alice,c1,mel,1,nv,2",
        "alice,c1,MEL,3,nv,7",  # three problems on one line
        ",c2,nv,1,nv,2",
        "alice,c3,nv,2,nv,2",
        "alice,c1,mel,1,nv,2",
    )
    refused = errors_of(text)
    assert [line for line, _ in refused] == [2, 3, 3, 3, 4, 5, 6]
    with pytest.raises(ResponsesInvalid) as error:
        parse_responses(text)
    lines = str(error.value).splitlines()
    assert len(lines) == 7
    assert lines[0] == "line 2: reader 'alice' has Task 1 of case 'c1' more than once (also line 6)"
    assert lines[1].startswith("line 3: truth 'MEL' is not a class code")
    assert lines[4] == "line 4: reader is empty"
    assert lines[5] == "line 5: reader 'alice' has Task 2 of case 'c3' but no Task 1 read of it"
