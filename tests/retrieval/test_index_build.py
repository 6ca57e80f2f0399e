"""Index builds: chunked and resumable, no duplicates, atomic activation, incremental updates."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from retrieval import loaders, runtime
from retrieval.models import Case, IndexVersion
from retrieval.services import index as index_services
from retrieval.services.index import index_activate, index_build_request, index_build_run
from retrieval.services.queries import index_for_queries
from tests.conftest import build_index_here

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _library_ids():
    return sorted(Case.objects.exclude(split="test").values_list("id", flat=True))


def test_a_finished_build_holds_every_library_case_once_and_is_active(ready_index, media_root):
    folder = media_root / ready_index.directory
    features = np.load(folder / "features.npy")
    case_ids = np.load(folder / "case_ids.npy")
    saliency = np.load(folder / "saliency.npy")
    assert sorted(case_ids.tolist()) == _library_ids() and len(set(case_ids.tolist())) == len(case_ids)
    assert Case.objects.filter(id__in=case_ids.tolist(), split="test").count() == 0  # test split = queries only
    assert features.shape == (len(case_ids), 256) and ready_index.dimension == 256
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert saliency.shape == (len(case_ids), 64, 64) and saliency.dtype == np.uint8 and saliency.max() == 255
    assert (ready_index.size, ready_index.done, ready_index.total) == (len(case_ids),) * 3
    assert not list(folder.glob("chunk-*.npz"))  # assembled, then tidied
    overlays = media_root / "overlays" / f"index-{ready_index.id}"
    assert sorted(int(p.stem) for p in overlays.glob("*.png")) == sorted(case_ids.tolist())  # pre-rendered
    calibration = ready_index.calibration
    assert calibration["version"] == 2 and calibration["method"] in calibration["candidates"]
    assert calibration["n"] > 0 and calibration["source"].startswith("validation")
    assert index_for_queries() == ready_index


def test_a_full_build_stores_every_method_s_descriptors(ready_index, media_root):
    from retrieval.methods import METHODS

    folder = media_root / ready_index.directory
    case_ids = np.load(folder / "case_ids.npy")
    # every method but the embeddings (no contrastive or triplet model is trained here)
    assert ready_index.methods == [name for name in METHODS if name not in ("contrastive", "triplet")]
    cnn3 = np.load(folder / "cnn3.npy")
    assert cnn3.shape == (len(case_ids), 256) and np.all(np.linalg.norm(cnn3, axis=1) > 0)
    style = np.load(folder / "style.npy")
    assert style.shape[0] == len(case_ids) and style.dtype == np.float32
    assert style.shape[1] == ready_index.descriptors["style"]["components"] <= len(case_ids)
    assert 0.5 < ready_index.descriptors["style"]["explained"] <= 1.0
    masks = np.load(folder / "mask.npy")
    assert masks.shape == (len(case_ids), 64 * 64 // 8) and masks.dtype == np.uint8
    assert 0 < np.unpackbits(masks, axis=1).mean() < 1  # lesions found, not the whole image
    assert not (folder / "contrastive.npy").exists() and not (folder / "triplet.npy").exists()


def test_a_secbir_only_build_stores_only_its_vectors(tiny_models, media_root, settings):
    settings.INDEX_CHUNK_SIZE = 64
    index = build_index_here(model_version=tiny_models["4ch"], extra_methods=False)
    assert index.status == "done" and index.methods == ["secbir"]
    assert sorted(p.name for p in (media_root / index.directory).glob("*.npy")) == [
        "case_ids.npy", "features.npy", "plan.npy", "saliency.npy"]


def test_running_a_finished_build_again_does_nothing(ready_index, media_root):
    before = (media_root / ready_index.directory / "features.npy").stat().st_mtime_ns
    assert index_build_run(index_id=ready_index.id, worker="again", enqueue_next=False) is False
    assert (media_root / ready_index.directory / "features.npy").stat().st_mtime_ns == before


def test_a_build_killed_mid_chunk_resumes_without_recomputing_or_duplicating(tiny_models, settings, encoded,
                                                                             media_root):
    settings.INDEX_CHUNK_SIZE = 8
    index = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=index.id, worker="w1", enqueue_next=False)
    index_build_run(index_id=index.id, worker="w1", enqueue_next=False)
    # w1 claims the third chunk and dies: RUNNING, heartbeat stops.
    claimed = IndexVersion.objects.filter(id=index.id).update(
        status="running", worker="w1", heartbeat_at=timezone.now() - timedelta(hours=1))
    assert claimed == 1
    assert index_build_run(index_id=index.id, worker="w2", enqueue_next=False)  # takes over the stale build
    index.refresh_from_db()
    # attempts counts runs started, as for every job kind: w1's first claim and w2's takeover
    assert index.attempts == 2 and index.worker == "w2" and index.status == "running"
    while index.status == "running":
        index_build_run(index_id=index.id, worker="w2", enqueue_next=False)
        index.refresh_from_db()
    assert index.status == "done" and index.active
    assert sorted(encoded) == _library_ids()  # every case encoded exactly once
    assert sorted(np.load(media_root / index.directory / "case_ids.npy").tolist()) == _library_ids()


def test_a_live_build_is_not_taken_over(tiny_models, settings):
    settings.INDEX_CHUNK_SIZE = 8
    index = index_build_request(model_version=tiny_models["4ch"])
    IndexVersion.objects.filter(id=index.id).update(status="running", worker="w1", heartbeat_at=timezone.now())
    assert index_build_run(index_id=index.id, worker="w2", enqueue_next=False) is False
    assert IndexVersion.objects.get(id=index.id).worker == "w1"


def test_a_second_request_while_building_returns_the_same_build(tiny_models):
    first = index_build_request(model_version=tiny_models["4ch"])
    assert index_build_request(model_version=tiny_models["4ch"]) == first
    assert IndexVersion.objects.count() == 1


def test_the_old_index_serves_until_the_new_one_is_complete(ready_index, settings, tiny_models):
    settings.INDEX_CHUNK_SIZE = 8
    new = index_build_request(model_version=tiny_models["4ch"])
    index_build_run(index_id=new.id, worker="w", enqueue_next=False)
    new.refresh_from_db()
    assert new.status == "running" and 0 < new.done < new.total
    assert index_for_queries() == ready_index
    while new.status == "running":
        index_build_run(index_id=new.id, worker="w", enqueue_next=False)
        new.refresh_from_db()
    ready_index.refresh_from_db()
    assert new.active and not ready_index.active and index_for_queries() == new
    index_activate(index=ready_index)  # roll back
    assert index_for_queries() == ready_index and not IndexVersion.objects.get(id=new.id).active


def test_incremental_build_encodes_only_new_cases_and_keeps_old_vectors(ready_index, monkeypatch, media_root):
    from retrieval.ham10000 import MetadataRow
    from retrieval.services import case_create
    from tests.conftest import jpeg_bytes

    new_ids = [case_create(collection="synthetic", row=MetadataRow(row=0, lesion_id=f"HAM_new{i}", image_id=f"ISIC_new{i}",
                                                                   dx="nv", dx_type="histo", age=40, sex="male",
                                                                   localization="back", dataset="clinic"),
                           image_data=jpeg_bytes(900 + i)).id for i in range(3)]
    encoded: list[int] = []
    real = index_services.encode_cases
    monkeypatch.setattr(index_services, "encode_cases",
                        lambda model, ids, **options: (encoded.extend(ids), real(model, ids, **options))[1])

    new = build_index_here(model_version=ready_index.model_version, incremental=True)

    assert new.status == "done" and new.active and new.base == ready_index
    assert sorted(encoded) == sorted(new_ids)
    old_ids = np.load(media_root / ready_index.directory / "case_ids.npy")
    ids = np.load(media_root / new.directory / "case_ids.npy")
    assert sorted(ids.tolist()) == sorted(old_ids.tolist() + new_ids) and new.size == len(old_ids) + 3
    old_features = np.load(media_root / ready_index.directory / "features.npy")
    features = np.load(media_root / new.directory / "features.npy")
    rows = {case: row for row, case in enumerate(ids.tolist())}
    for old_row, case in enumerate(old_ids.tolist()):
        assert np.array_equal(features[rows[case]], old_features[old_row])
    # every other method's descriptors too, compared through the same (reused) style projection
    assert new.methods == ready_index.methods
    for name in sorted(loaders.index_descriptors(ready_index) - {"secbir"}):
        old = np.load(media_root / ready_index.directory / f"{name}.npy")
        extended = np.load(media_root / new.directory / f"{name}.npy")
        assert extended.shape == (len(ids),) + old.shape[1:], name
        assert all(np.array_equal(extended[rows[case]], old[row]) for row, case in enumerate(old_ids.tolist())), name
    assert ((media_root / new.directory / "style_projection.npz").read_bytes()
            == (media_root / ready_index.directory / "style_projection.npz").read_bytes())


def test_incremental_without_an_active_index_is_refused(tiny_models):
    with pytest.raises(ValueError, match="no active index .* run a full build"):
        index_build_request(model_version=tiny_models["4ch"], incremental=True)


def test_an_unreadable_library_image_is_skipped_and_reported(tiny_models, media_root, settings):
    settings.INDEX_CHUNK_SIZE = 16
    broken = Case.objects.exclude(split="test").order_by("id").first()
    (media_root / broken.image.name).write_bytes(b"not an image any more")
    index = build_index_here(model_version=tiny_models["4ch"])
    assert index.status == "done" and index.skipped == [broken.id]
    assert "1 skipped" in index.message
    assert broken.id not in np.load(media_root / index.directory / "case_ids.npy").tolist()


def test_a_3_channel_model_cannot_build_an_index(tiny_models):
    with pytest.raises(ValueError, match="3-channel model; an index needs a 4-channel"):
        index_build_request(model_version=tiny_models["3ch"])


def test_build_index_command_here_and_errors(tiny_models, settings):
    settings.INDEX_CHUNK_SIZE = 16
    runtime.forget()
    out = StringIO()
    call_command("build_index", "--here", stdout=out, verbosity=0)
    index = IndexVersion.objects.get()
    assert index.active and f"Index #{index.id} is active" in out.getvalue()
    with pytest.raises(CommandError, match="no ModelVersion #999"):
        call_command("build_index", "--model-version", "999", verbosity=0)


def test_build_index_command_without_models_is_a_clear_error(db, media_root, tmp_path):
    call_command("make_synthetic_library", "--limit", "12", "--out", str(tmp_path / "s"), verbosity=0)
    with pytest.raises(CommandError, match="no trained 4-channel model for collection 'synthetic'"):
        call_command("build_index", verbosity=0)


def test_the_dice_methods_compare_the_chosen_segmenter_s_masks(tiny_method_models, settings, media_root):
    """build_index --segmentation-model V: the stored lesion masks are the learned model's (not the
    classical ones), the index says so, and an extension keeps the base's segmenter."""
    from retrieval.ml.descriptors import SEGMENTATION_INPUT, resize_rgb_array
    from retrieval.ml.measures import pack_masks
    from retrieval.ml.segmentation import Segmenter

    settings.INDEX_CHUNK_SIZE = 16
    runtime.forget()
    learned = tiny_method_models["segmentation"]
    with pytest.raises(CommandError, match="is not a segmentation model"):
        call_command("build_index", "--here", "--segmentation-model", str(tiny_method_models["triplet"].id),
                     verbosity=0)
    call_command("build_index", "--here", "--segmentation-model", str(learned.id), verbosity=0)
    index = IndexVersion.objects.get(active=True)
    assert index.segmentation_model == learned and "i1_sd" in index.methods
    assert index.descriptors["segmentation"] == {"kind": "learned", "model_version": learned.id,
                                                 "val_dice_mean": learned.metrics["val_dice_mean"]}

    ids = np.load(media_root / index.directory / "case_ids.npy")[:4]
    stored = np.load(media_root / index.directory / "mask.npy")[:4]
    images = np.stack([resize_rgb_array(loaders.load_rgb(Case.objects.get(id=i).image.path), SEGMENTATION_INPUT)
                       for i in ids.tolist()])
    assert np.array_equal(stored, pack_masks(loaders.load_segmenter(learned).masks(images)))
    assert not np.array_equal(stored, pack_masks(Segmenter.classical().masks(images)))

    extension = index_build_request(model_version=index.model_version, incremental=True)
    assert extension.segmentation_model == learned
