"""Adding the contrastive and triplet embeddings to the active index without re-encoding anything
else (issue 17): the build encodes only the new descriptors, takes the SE-CBIR vectors, saliency,
other descriptors, calibration and overlays from its base, and serves all 13 methods."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval import loaders, runtime
from retrieval.methods import METHODS
from retrieval.services import index as index_services
from tests.conftest import register_checkpoint, run_index_build_here

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_embeddings_are_added_to_the_active_index_without_re_encoding_it(ready_index, tiny_method_assets,
                                                                          media_root, monkeypatch, sent_jobs):
    from retrieval.ml.features import SECBIREncoder

    base = ready_index
    assert "contrastive" not in base.methods and "triplet" not in base.methods
    assert len(base.methods) == 11
    with pytest.raises(ValueError, match="already has every embedding there is"):
        index_services.index_methods_add(collection=base.collection)  # nothing trained yet
    models = {stage: register_checkpoint(tiny_method_assets[stage].checkpoint, stage=stage,
                                         metrics=tiny_method_assets[stage].metrics)
              for stage in ("contrastive", "triplet")}

    def no_secbir(*args, **kwargs):
        raise AssertionError("the SE-CBIR network ran: adding embeddings must not re-encode the library")

    monkeypatch.setattr(SECBIREncoder, "encode", no_secbir)
    runtime.forget()
    index = index_services.index_methods_add(collection=base.collection)
    assert index.base == base and index.descriptors["adds"] == ["contrastive", "triplet"]
    assert (index.contrastive_model, index.triplet_model) == (models["contrastive"], models["triplet"])
    assert index_services.index_methods_add(collection=base.collection) == index  # the one under way
    index = run_index_build_here(index)
    assert index.status == "done", index.message
    base.refresh_from_db()
    assert index.active and not base.active and index.size == base.size
    assert sorted(index.methods) == sorted(METHODS) and len(index.methods) == 13

    old, new = loaders.index_path(base), loaders.index_path(index)
    for name in ("features.npy", "saliency.npy", "case_ids.npy", "cnn3.npy", "style.npy", "mask.npy"):
        assert np.array_equal(np.load(old / name), np.load(new / name)), name
    assert index.calibration == base.calibration  # the same SE-CBIR vectors: the same warning
    overlays = sorted(p.name for p in (media_root / "overlays" / f"index-{index.id}").iterdir())
    assert overlays == sorted(p.name for p in (media_root / "overlays" / f"index-{base.id}").iterdir())

    # Each added row is its case's embedding (the chunks follow the base's row order).
    monkeypatch.undo()
    runtime.forget()
    loaded = runtime.loaded_index(index)
    encoder = runtime.descriptor_encoder_for(index)
    from retrieval.models import Case

    for row in (0, len(loaded.case_ids) // 2, len(loaded.case_ids) - 1):
        case = Case.objects.get(id=int(loaded.case_ids[row]))
        fresh = encoder.encode([loaders.load_rgb(case.image.path)], needs={"contrastive", "triplet"})
        for name in ("contrastive", "triplet"):
            assert np.allclose(loaded.descriptor(name)[row], fresh.descriptors[name][0], atol=1e-5), (name, row)
    runtime.forget()
    with pytest.raises(ValueError, match="already has every embedding there is"):
        index_services.index_methods_add(collection=base.collection)
