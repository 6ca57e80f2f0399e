"""A small study whose every figure is worked out by hand in the tests.

Five cases (truth, the neighbours' majority vote):
    c1 mel (vote mel), c2 nv (nv), c3 bcc (bkl, wrong), c4 mel (nv, wrong), c5 bkl (bkl).
Alice reads c1-c4 in both tasks, Bob c1, c2, c5 in both tasks, Carol c3, c4 in Task 1 only.

    reader case  Task 1 answer (conf)   Task 2 answer (conf)
    alice  c1    nv  (2) wrong          mel (4) right   wrong -> right, agrees with the vote
    alice  c2    nv  (4) right          nv  (5) right
    alice  c3    bcc (3) right          bkl (3) wrong   right -> wrong, agrees with the vote
    alice  c4    nv  (3) wrong          mel (4) right   wrong -> right, against the vote (nv)
    bob    c1    mel (5) right          mel (5) right
    bob    c2    mel (2) wrong          nv  (4) right   wrong -> right, agrees
    bob    c5    nv  (1) wrong          bkl (3) right   wrong -> right, agrees
    carol  c3    bcc (4) right
    carol  c4    nv  (2) wrong
"""
from __future__ import annotations

from readerstudy.analysis.reads import Read, RelevanceRating
from readerstudy.analysis.responses import format_responses

TRUTH = {"c1": "mel", "c2": "nv", "c3": "bcc", "c4": "mel", "c5": "bkl"}
VOTE = {"c1": "mel", "c2": "nv", "c3": "bkl", "c4": "nv", "c5": "bkl"}

_ANSWERS = [  # reader, case, (task 1 answer, confidence), (task 2 answer, confidence) or None
    ("alice", "c1", ("nv", 2), ("mel", 4)),
    ("alice", "c2", ("nv", 4), ("nv", 5)),
    ("alice", "c3", ("bcc", 3), ("bkl", 3)),
    ("alice", "c4", ("nv", 3), ("mel", 4)),
    ("bob", "c1", ("mel", 5), ("mel", 5)),
    ("bob", "c2", ("mel", 2), ("nv", 4)),
    ("bob", "c5", ("nv", 1), ("bkl", 3)),
    ("carol", "c3", ("bcc", 4), None),
    ("carol", "c4", ("nv", 2), None),
]


def study_reads() -> list[Read]:
    reads = []
    for task in (1, 2):
        for reader, case, first, second in _ANSWERS:
            given = first if task == 1 else second
            if given is not None:
                reads.append(Read(reader=reader, case=case, truth=TRUTH[case], task=task, answer=given[0],
                                  confidence=given[1], majority_vote=VOTE[case], seconds=10.0 * task))
    return reads


def study_csv() -> str:
    return format_responses(study_reads())


def study_ratings() -> list[RelevanceRating]:
    """Alice rates c1 and c2 for two methods, Bob c1 for one (see test_relevance)."""
    given = [
        ("alice", "c1", "secbir", [3, 2, 0]),
        ("alice", "c1", "cnn3", [1, 3, 0]),
        ("alice", "c2", "secbir", [0, 0]),
        ("alice", "c2", "cnn3", [0]),
        ("bob", "c1", "secbir", [2]),
    ]
    return [RelevanceRating(reader, case, method, rank, rating)
            for reader, case, method, ratings in given for rank, rating in enumerate(ratings, start=1)]
