"""Reader-study scenario fixtures: a study prepared on the tiny real index, readers, a signed-in client."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import _user


@pytest.fixture
def study_index(tiny_models, settings):
    """The tiny library with a larger test split (every third lesion: a dozen query candidates),
    indexed in-process. The index holds every case outside the test split, as in production."""
    from retrieval import runtime
    from retrieval.classes import TEST, TRAIN
    from retrieval.models import Case
    from tests.conftest import build_active_index_here

    lesions = sorted(set(Case.objects.filter(collection="synthetic").values_list("lesion_id", flat=True)))
    Case.objects.filter(collection="synthetic", split=TEST).update(split=TRAIN)
    Case.objects.filter(collection="synthetic", lesion_id__in=lesions[::3]).update(split=TEST)
    yield build_active_index_here(settings, tiny_models["4ch"], chunk_size=32)
    runtime.forget()


@pytest.fixture
def make_study(study_index, study_admin):
    """Create and prepare (in-process, as the worker does) a study on the tiny index."""
    from readerstudy.models import Study
    from readerstudy.services import study_create, study_prepare

    def make(name="Pilot", **options):
        options.setdefault("cases_per_reader", 5)
        options.setdefault("washout", timedelta(hours=24))
        study = study_create(user=study_admin, name=name, index_version=study_index, **options)
        assert study_prepare(study_id=study.id, worker="test")
        study.refresh_from_db()
        assert study.status == Study.Status.DRAFT, study.message
        return study
    return make


@pytest.fixture
def readers(db, django_user_model):
    from lesionsearch.roles import READER

    return [_user(django_user_model, f"reader_{i}", READER) for i in (1, 2, 3)]


@pytest.fixture
def open_study(make_study, readers):
    """An open study of 5 cases per reader with three assigned readers."""
    from readerstudy.services import study_assign, study_open

    study = make_study()
    study_assign(study=study, readers=readers)
    study_open(study=study)
    return study


@pytest.fixture
def active_index(rows_only_study, media_root):
    """The rows-only study's index, made the active one (for pages and API calls that search)."""
    from retrieval.models import IndexVersion

    IndexVersion.objects.filter(id=rows_only_study.index_version_id).update(active=True)
    return rows_only_study.index_version


def signed_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def rows_only_study(db, readers):
    """An open study built from database rows alone (no images, no model): for tests of answer
    bookkeeping that never touch the images, e.g. concurrency on PostgreSQL."""
    from readerstudy.models import Study, StudyCase, StudyNeighbour
    from readerstudy.services import study_assign
    from retrieval.models import Case, IndexVersion, ModelVersion

    def case(i, split):
        return Case.objects.create(collection="rows", image=f"cases/rows-{i}.jpg", sha256=f"{i:064x}", width=4,
                                   height=3, image_id=f"ROW_{i}", lesion_id=f"LES_{i}", dx="nv", dx_type="histo",
                                   split=split)

    rgb = ModelVersion.objects.create(config="tiny", stage="3ch", collection="rows", checkpoint="models/a.pt",
                                      checkpoint_sha256="a", data_fingerprint="x")
    wide = ModelVersion.objects.create(config="tiny", stage="4ch", parent=rgb, collection="rows",
                                       checkpoint="models/b.pt", checkpoint_sha256="b", data_fingerprint="x")
    index = IndexVersion.objects.create(model_version=wide, collection="rows", status="done")
    study = Study.objects.create(name="Rows", collection="rows", index_version=index, status=Study.Status.DRAFT,
                                 cases_per_reader=3, washout=timedelta(0))
    library = [case(100 + i, "train") for i in range(6)]
    for position in range(1, 4):
        study_case = StudyCase.objects.create(study=study, case=case(position, "test"), position=position,
                                              majority_vote="nv")
        StudyNeighbour.objects.bulk_create([StudyNeighbour(study_case=study_case, rank=r, case=c, similarity=1 - r / 10)
                                            for r, c in enumerate(library, start=1)])
    study_assign(study=study, readers=readers)
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    study.refresh_from_db()
    return study
