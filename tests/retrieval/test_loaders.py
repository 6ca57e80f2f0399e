"""retrieval.loaders loads what a version row names; retrieval.runtime only caches it.

Nothing here loads at import time: the web process imports both (through the services) and must
never pull in PyTorch.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval import loaders, runtime
from retrieval.models import IndexVersion

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_loaders_and_the_runtime_loads_no_model_library():
    code = ("import sys, django; django.setup(); import retrieval.loaders, retrieval.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}, timeout=120)
    assert result.stdout.strip() == "[]"


@pytest.mark.django_db
def test_the_loaders_load_a_version_s_models_and_refuse_the_wrong_rows(tiny_method_models):
    from retrieval.ml.embedding import EmbeddingNet
    from retrieval.ml.features import SECBIREncoder

    encoder = loaders.load_encoder(tiny_method_models["4ch"])
    assert isinstance(encoder, SECBIREncoder) and (encoder.model3.in_chans, encoder.model4.in_chans) == (3, 4)
    assert encoder.method == loaders.model_saliency(tiny_method_models["4ch"])["method"] == "vanilla"
    with pytest.raises(ValueError, match="not a 4-channel model with a 3-channel parent"):
        loaders.load_encoder(tiny_method_models["3ch"])

    assert loaders.load_segmenter(None).name == "classical"
    assert loaders.load_segmenter(tiny_method_models["segmentation"]).is_learned
    with pytest.raises(ValueError, match="is not a segmentation model"):
        loaders.load_segmenter(tiny_method_models["triplet"])
    assert isinstance(loaders.load_embedding_model(tiny_method_models["triplet"]), EmbeddingNet)

    described = loaders.load_descriptor_encoder(encoder, {"secbir", "mask", "triplet"},
                                                triplet=tiny_method_models["triplet"])
    assert described.available() == {"secbir", "cnn3", "mask", "triplet"} and described.segmenter.name == "classical"
    with pytest.raises(ValueError, match="needs a trained contrastive model"):
        loaders.load_descriptor_encoder(encoder, {"secbir", "contrastive"})

    building = IndexVersion.objects.create(model_version=tiny_method_models["4ch"], collection="synthetic")
    with pytest.raises(ValueError, match="not finished"):
        loaders.load_index(building)
    with pytest.raises(ValueError, match="not finished"):
        runtime.loaded_index(building)


@pytest.mark.django_db
def test_the_runtime_caches_what_the_loaders_load_anew_each_time(tiny_models):
    runtime.forget()
    try:
        cached = runtime.encoder_for(tiny_models["4ch"])
        assert runtime.encoder_for(tiny_models["4ch"]) is cached
        assert loaders.load_encoder(tiny_models["4ch"]) is not loaders.load_encoder(tiny_models["4ch"])
    finally:
        runtime.forget()


def test_load_rgb_decodes_a_jpeg_at_a_reduced_scale_that_keeps_the_size_asked_for(tmp_path):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 255, (450, 600, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert loaders.load_rgb(str(tmp_path / "a.jpg")).shape == (450, 600, 3)
    assert loaders.load_rgb(str(tmp_path / "a.jpg"), at_least=128).shape == (225, 300, 3)  # 1/2: 1/4 is < 128
    assert loaders.load_rgb(str(tmp_path / "a.jpg"), at_least=100).shape == (113, 150, 3)  # 1/4
    assert loaders.load_rgb(str(tmp_path / "a.jpg"), at_least=380).shape == (450, 600, 3)  # whole
    assert np.array_equal(loaders.load_rgb(str(tmp_path / "a.png"), at_least=128), pixels)  # PNG: whole


@pytest.mark.parametrize("kind", ["exact", "faiss-hnsw"])
def test_an_index_folder_s_vectors_and_backend_are_loaded_memory_mapped(tmp_path, kind):
    import numpy as np

    from retrieval.ml.search import l2_normalise

    library = l2_normalise(np.random.default_rng(5).standard_normal((300, 24)).astype(np.float32))
    np.save(tmp_path / loaders.FEATURES_FILE, library)
    first_features, first = loaders.load_index_vectors(tmp_path, kind=kind, faiss_min_vectors=1)
    features, backend = loaders.load_index_vectors(tmp_path, kind=kind, faiss_min_vectors=1)
    assert isinstance(features, np.memmap) and not features.flags.writeable
    assert backend.kind == kind and getattr(backend, "memory_mapped", True)  # the second load reads the save
    found, scores = backend.search(library[:5], 3)
    assert found[:, 0].tolist() == [0, 1, 2, 3, 4]
    for got, expected in zip((found, scores), first.search(library[:5], 3)):
        np.testing.assert_array_equal(got, expected)
