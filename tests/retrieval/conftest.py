"""Retrieval fixtures: finished queries built from database rows (no model), and a small rendered
synthetic library to train on."""
from __future__ import annotations

import itertools

import pytest
from django.core.management import call_command
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.conftest import jpeg_bytes
from tests.retrieval.isic_folders import isic_rows


@pytest.fixture(scope="session")
def isic_source_rows() -> list[dict[str, str]]:
    """42 rows of the real HAM10000 metadata, 6 of each class, to build ISIC folders from
    (tests/retrieval/isic_folders.py)."""
    return isic_rows(6)


@pytest.fixture
def small_library(request, tmp_path, media_root):
    """A small synthetic library imported and split (train/val/test), to train on: 60 images, or
    the test module's ``SMALL_LIBRARY_SIZE``."""
    size = getattr(request.module, "SMALL_LIBRARY_SIZE", 60)
    call_command("make_synthetic_library", "--limit", str(size), "--seed", "4", "--workers", "2",
                 "--out", str(tmp_path / "syn"), verbosity=0)
    call_command("split_library", "--seed", "71", verbosity=0)


#: Issue 15's neighbours (rank 1 first): the search list said nv (count) while the result page
#: listed mel first (1/rank-weighted shares).
ISSUE_15_LABELS = ["mel", "nv", "nv", "bkl", "bkl", "akiec"]
#: What the worker stored for them before the vote was count-based: shares weighted by 1/rank
#: (mel 1, nv 1/2 + 1/3, bkl 1/4 + 1/5, akiec 1/6, over 49/20), keys in class-code order.
ISSUE_15_OLD_VOTE = {
    "label": "neighbour vote", "top": "nv",
    "scores": {"akiec": 0.068, "bkl": 0.1837, "mel": 0.4082, "nv": 0.3401},
    "counts": {"akiec": 1, "bkl": 2, "mel": 1, "nv": 2},
    "note": "The share of the similar cases per class, weighted by rank. It is not a diagnosis.",
}


@pytest.fixture
def stored_done_query(db, media_root):
    """Factory: a DONE query of ``user`` whose stored neighbours have the diagnoses ``labels``
    (rank 1 first), with the vote the worker stores for them, or ``vote`` when given (an old
    row); or, with ``cases``, whose neighbours are these library cases (labels: their diagnoses).
    Rows only: no model, no index, no worker."""
    from retrieval.models import Case, Query, QueryNeighbour
    from retrieval.services.queries import neighbour_vote_json

    serial = itertools.count(1)

    def make(user, labels: list[str] | None = None, *, vote: dict | None = None, cases=None):
        number = next(serial)
        labels = [case.dx for case in cases] if cases is not None else labels
        name = default_storage.save(f"queries/{user.id}/vote-{number}.jpg", ContentFile(jpeg_bytes(number)))
        query = Query.objects.create(user=user, image=name, original_name=f"vote-{number}.jpg",
                                     sha256=f"{number:064x}", width=60, height=45, k=len(labels),
                                     status=Query.Status.DONE,
                                     neighbour_vote=neighbour_vote_json(labels) if vote is None else vote)
        for rank, dx in enumerate(labels, start=1):
            key = 1000 * number + rank
            if cases is not None:
                QueryNeighbour.objects.create(query=query, rank=rank, case=cases[rank - 1], similarity=1 - rank / 10)
                continue
            case = Case.objects.create(collection="votes", image=f"cases/vote-{key}.jpg", sha256=f"c{key:063x}",
                                       width=4, height=3, image_id=f"VOTE_{key}", lesion_id=f"LES_{key}", dx=dx,
                                       dx_type="histo", split="train")
            QueryNeighbour.objects.create(query=query, rank=rank, case=case, similarity=1 - rank / 10)
        return query

    return make


@pytest.fixture
def encoded(monkeypatch) -> list[int]:
    """The case ids every ``retrieval.services.index.encode_cases`` call was given, in order (an index
    build's chunks encode each case once)."""
    seen: list[int] = []
    from retrieval.services import index as index_services

    real = index_services.encode_cases

    def counting(index, ids, **options):
        seen.extend(ids)
        return real(index, ids, **options)

    monkeypatch.setattr(index_services, "encode_cases", counting)
    return seen
