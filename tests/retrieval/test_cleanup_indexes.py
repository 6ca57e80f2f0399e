"""cleanup_indexes: which index versions are removable, the dry run, the removal of rows and
files (and only the index's own files), a stale list, the admin action, and a real built index."""
from __future__ import annotations

import os
from datetime import timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from lesionsearch.audit.models import AuditEvent
from readerstudy.models import Study
from retrieval import loaders, runtime
from retrieval.models import IndexVersion, ModelVersion, Query
from retrieval.selectors import index_referencing_relations, index_removable_list
from retrieval.services.cleanup import index_versions_remove
from tests.conftest import build_index_here, signed_in

pytestmark = pytest.mark.django_db

S = IndexVersion.Status


@pytest.fixture
def make_index(db, media_root):
    """Factory: an IndexVersion row (no build) whose folder holds a few small files of known size,
    and one cached overlay; created one minute apart, oldest first."""
    media_root.mkdir(parents=True, exist_ok=True)
    rgb = ModelVersion.objects.create(config="tiny", stage="3ch", collection="rows", checkpoint="models/a.pt",
                                      checkpoint_sha256="a", data_fingerprint="x")
    wide = ModelVersion.objects.create(config="tiny", stage="4ch", parent=rgb, collection="rows",
                                       checkpoint="models/b.pt", checkpoint_sha256="b", data_fingerprint="x")
    start = timezone.now() - timedelta(days=1)
    made = []

    def make(*, status=S.DONE, active=False, collection="rows", base=None, directory=None, files=True):
        index = IndexVersion.objects.create(model_version=wide, collection=collection, status=status,
                                            active=active, base=base)
        index.directory = f"indexes/{index.id}" if directory is None else directory
        index.save(update_fields=["directory"])
        IndexVersion.objects.filter(id=index.id).update(created_at=start + timedelta(minutes=len(made)))
        index.refresh_from_db()
        if files and directory is None:
            folder = media_root / index.directory
            (folder / "backend").mkdir(parents=True)
            (folder / "features.npy").write_bytes(b"f" * (100 + index.id))
            (folder / "case_ids.npy").write_bytes(b"c" * 40)
            (folder / "backend" / "hnsw.bin").write_bytes(b"h" * 7)
            overlays = media_root / "overlays" / f"index-{index.id}"
            overlays.mkdir(parents=True)
            (overlays / "1.png").write_bytes(b"p" * 11)
        made.append(index)
        return index

    return make


def on_disk(media_root: Path, index: IndexVersion) -> int:
    """Bytes under the index's folder and its overlays folder."""
    return sum(path.stat().st_size for folder in (media_root / index.directory,
                                                  media_root / "overlays" / f"index-{index.id}")
               for path in folder.rglob("*") if path.is_file())


def a_query(user, index: IndexVersion) -> Query:
    return Query.objects.create(user=user, image="queries/x.jpg", sha256="0" * 64, width=4, height=3,
                                index_version=index, status=Query.Status.DONE)


def a_study(index: IndexVersion, name: str = "Kept") -> Study:
    return Study.objects.create(name=name, collection=index.collection, index_version=index,
                                status=Study.Status.CLOSED)


@pytest.fixture
def world(make_index, clinician):
    """One index version of every kind the rule tells apart."""
    w = {}
    w["old"] = make_index()                                   # finished, replaced, unreferenced
    w["failed"] = make_index(status=S.FAILED)                 # a failed build
    w["queried"] = make_index()                               # a query was answered from it
    a_query(clinician, w["queried"])
    w["studied"] = make_index()                               # a reader study is frozen on it
    a_study(w["studied"])
    w["base_of_pending"] = make_index()                       # an incremental build still reads it
    w["base_of_done"] = make_index()                          # its extension is complete (own copies)
    w["extension"] = make_index(base=w["base_of_done"])       # ... and is referenced by a query
    a_query(clinician, w["extension"])
    w["active"] = make_index(active=True)
    w["pending"] = make_index(status=S.PENDING, base=w["base_of_pending"])
    w["running"] = make_index(status=S.RUNNING)
    # a collection without an active index keeps its newest finished one
    w["other_old"] = make_index(collection="other")
    w["other_newest"] = make_index(collection="other")
    w["other_failed"] = make_index(collection="other", status=S.FAILED)
    return w


REMOVABLE = {"old", "failed", "base_of_done", "other_old", "other_failed"}


def names(world, indexes) -> set[str]:
    ids = {index if isinstance(index, int) else index.id for index in indexes}
    return {name for name, index in world.items() if index.id in ids}


def test_the_rule_keeps_active_unfinished_referenced_and_needed_indexes(world):
    assert names(world, index_removable_list()) == REMOVABLE
    assert names(world, index_removable_list(collection="other")) == {"other_old", "other_failed"}
    assert list(index_removable_list(collection="nowhere")) == []
    # what counts as a reference: queries and reader studies (a study's neighbours reference cases)
    assert {(model._meta.label, field) for model, field in index_referencing_relations()} == {
        ("retrieval.Query", "index_version"), ("readerstudy.Study", "index_version")}


def test_the_dry_run_lists_with_sizes_and_removes_nothing(world, media_root, django_capture_on_commit_callbacks):
    before = {name: on_disk(media_root, index) for name, index in world.items()}
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("cleanup_indexes", "--dry-run", stdout=out)
    text = out.getvalue()
    for name in REMOVABLE:
        index = world[name]
        assert f"would remove index #{index.id} ({index.collection}, {index.status}" in text
        assert f"4 files, {before[name]} B" in text
    for name in set(world) - REMOVABLE:
        assert f"#{world[name].id} " not in text
    total = sum(before[name] for name in REMOVABLE)
    assert total < 1024 and f"Dry run: 5 index version(s) would be removed, freeing {total} B in 20 files; " \
                            "nothing was removed." in text
    assert IndexVersion.objects.count() == len(world)
    assert {name: on_disk(media_root, index) for name, index in world.items()} == before
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.INDEX_REMOVE).exists()


def test_removal_deletes_rows_and_folders_and_reports_the_bytes_freed(world, media_root,
                                                                         django_capture_on_commit_callbacks):
    kept_before = {name: on_disk(media_root, index) for name, index in world.items() if name not in REMOVABLE}
    freed = sum(on_disk(media_root, world[name]) for name in REMOVABLE)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("cleanup_indexes", stdout=out)
    text = out.getvalue()
    assert f"Removed 5 index version(s), freed {freed} B in 20 files." in text
    for name in REMOVABLE:
        index = world[name]
        assert f"removed index #{index.id} " in text
        assert not IndexVersion.objects.filter(id=index.id).exists()
        assert not (media_root / index.directory).exists()
        assert not (media_root / "overlays" / f"index-{index.id}").exists()
    assert {name: on_disk(media_root, world[name]) for name in kept_before} == kept_before
    assert set(IndexVersion.objects.values_list("id", flat=True)) == {world[n].id for n in kept_before}
    assert (media_root / "indexes").is_dir() and (media_root / "overlays").is_dir()
    # a finished extension outlives its base: its own files, lineage cleared
    assert IndexVersion.objects.get(id=world["extension"].id).base is None
    events = AuditEvent.objects.filter(action=AuditEvent.Action.INDEX_REMOVE)
    assert sorted(int(e.object_id) for e in events) == sorted(world[name].id for name in REMOVABLE)
    assert {e.object_type for e in events} == {"retrieval.indexversion"}
    assert sum(e.detail["bytes"] for e in events) == freed

    out = StringIO()
    call_command("cleanup_indexes", stdout=out)
    assert out.getvalue().startswith("Nothing to remove: every index version is active, unfinished or referenced.")
    out = StringIO()
    call_command("cleanup_indexes", "--collection", "other", "--dry-run", stdout=out)
    assert "Nothing to remove: every index version of collection 'other'" in out.getvalue()


def test_an_index_referenced_after_it_was_listed_is_kept(world, media_root, clinician,
                                                         django_capture_on_commit_callbacks):
    stale = list(index_removable_list())
    a_query(clinician, world["old"])  # a query answered from it meanwhile
    a_study(world["other_old"], name="Late")  # a reader study created on it meanwhile
    sizes = {name: on_disk(media_root, index) for name, index in world.items()}
    with django_capture_on_commit_callbacks(execute=True):
        result = index_versions_remove(indexes=stale, dry_run=False)
    assert names(world, result.kept) == {"old", "other_old"}
    assert names(world, [i.id for i in result.removed]) == {"failed", "base_of_done", "other_failed"}
    assert result.bytes == sizes["failed"] + sizes["base_of_done"] + sizes["other_failed"]
    for name in ("old", "other_old"):
        assert IndexVersion.objects.filter(id=world[name].id).exists()
        assert on_disk(media_root, world[name]) == sizes[name] > 0


def test_a_dry_run_of_a_stale_list_reports_the_same(world, clinician):
    stale = list(index_removable_list())
    a_query(clinician, world["old"])
    result = index_versions_remove(indexes=stale, dry_run=True)
    assert names(world, result.kept) == {"old"} and names(world, [i.id for i in result.removed]) == REMOVABLE - {"old"}
    assert IndexVersion.objects.filter(id=world["failed"].id).exists()


def test_a_reference_the_check_missed_still_protects_its_index(world, media_root, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    """The database's protection is the last guard: were a query to slip in between the check and
    the delete (here: a check that misses references), its index and files stay, the rest goes."""
    from django.db.models import Q

    from retrieval.services import cleanup

    monkeypatch.setattr(cleanup.selectors, "index_removable_condition", lambda: Q(active=False, status=S.DONE))
    size = on_disk(media_root, world["queried"])
    with django_capture_on_commit_callbacks(execute=True):
        result = index_versions_remove(indexes=[world["queried"], world["old"]])
    assert names(world, result.kept) == {"queried"} and names(world, [i.id for i in result.removed]) == {"old"}
    assert IndexVersion.objects.filter(id=world["queried"].id).exists() and on_disk(media_root, world["queried"]) == size
    assert not (media_root / world["old"].directory).exists()


def test_folders_outside_the_index_folders_are_never_deleted(make_index, media_root, tmp_path,
                                                             django_capture_on_commit_callbacks):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("precious")
    (outside / "sub" / "keep.txt").write_text("precious")
    (media_root / "cases").mkdir(parents=True)
    (media_root / "cases" / "x.jpg").write_bytes(b"x")
    neighbour = make_index(active=True)  # its folder is under media/indexes, next to the others
    (media_root / "indexes" / "link").symlink_to(outside, target_is_directory=True)
    # a real index folder that holds a link leading out of it: the link goes, what it points to stays
    inside = make_index(status=S.FAILED, files=False)
    folder = media_root / inside.directory
    folder.mkdir()
    (folder / "own.npy").write_bytes(b"o" * 5)
    (folder / "escape").symlink_to(outside, target_is_directory=True)
    expected_bytes = 5 + os.lstat(folder / "escape").st_size
    hostile = [make_index(status=S.FAILED, directory=d) for d in
               ("../outside", str(outside), "indexes/link", "indexes", "", "cases", "indexes/../cases")]

    with django_capture_on_commit_callbacks(execute=True):
        result = index_versions_remove(indexes=index_removable_list(), dry_run=False)

    assert {i.id for i in result.removed} == {inside.id} | {h.id for h in hostile}  # the rows go, not the files
    assert sorted(result.refused) == sorted(f"{h.id}: {h.directory}" for h in hostile if h.directory)
    assert (outside / "keep.txt").read_text() == "precious" and (outside / "sub" / "keep.txt").exists()
    assert (media_root / "cases" / "x.jpg").exists() and (media_root / "indexes" / "link").is_symlink()
    assert on_disk(media_root, neighbour) == 100 + neighbour.id + 40 + 7 + 11
    assert not folder.exists()
    assert next(i for i in result.removed if i.id == inside.id).bytes == expected_bytes
    assert not result.errors


def test_the_admin_action_removes_the_selected_removable_versions(world, media_root, django_user_model,
                                                                  django_capture_on_commit_callbacks):
    root = django_user_model.objects.create_superuser(username="root", password="pw-root")
    selected = [world["old"].id, world["active"].id, world["queried"].id]
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in(root).post("/admin/retrieval/indexversion/", {
            "action": "remove_unreferenced", "_selected_action": selected}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    kept = sorted(selected[1:])
    assert f"Removed index version(s) #{world['old'].id}: " in text and f"Kept #{kept[0]}, #{kept[1]}: " in text
    assert not IndexVersion.objects.filter(id=world["old"].id).exists()
    assert not (media_root / world["old"].directory).exists()
    assert IndexVersion.objects.filter(id__in=selected[1:]).count() == 2
    assert AuditEvent.objects.get(action=AuditEvent.Action.INDEX_REMOVE).user == root


@pytest.mark.slow
def test_a_real_base_index_is_removed_and_its_finished_extension_still_serves(
        ready_index, media_root, django_capture_on_commit_callbacks):
    base_folder = media_root / ready_index.directory
    base_overlays = media_root / "overlays" / f"index-{ready_index.id}"
    assert (base_folder / "features.npy").exists() and any(base_overlays.iterdir())
    extension = build_index_here(model_version=ready_index.model_version, incremental=True)
    assert extension.status == S.DONE and extension.active and extension.base_id == ready_index.id
    assert list(index_removable_list()) == [ready_index]
    size = sum(p.stat().st_size for folder in (base_folder, base_overlays) for p in folder.rglob("*") if p.is_file())

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("cleanup_indexes", "--collection", "synthetic", stdout=out)

    assert f"removed index #{ready_index.id} (synthetic, done" in out.getvalue()
    assert f"({size} bytes)" in out.getvalue()
    assert not base_folder.exists() and not base_overlays.exists()
    extension.refresh_from_db()
    assert extension.base is None and extension.active
    runtime.forget()
    loaded = loaders.load_index(extension)
    ids, scores = loaded.search(loaded.features[:1], 3)
    assert ids[0][0] == loaded.case_ids[0] and np.isclose(scores[0][0], 1.0, atol=1e-4)
    assert list(index_removable_list()) == []
