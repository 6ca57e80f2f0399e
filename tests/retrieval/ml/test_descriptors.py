"""DescriptorEncoder: every descriptor at once equals each computed on its own, with the 3-channel
features and the style vector taken from the saliency pass instead of passes of their own."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import methods as m
from retrieval.ml.configs import get_config
from retrieval.ml.descriptors import DescriptorEncoder, resize_rgb_array
from retrieval.ml.embedding import EmbeddingNet
from retrieval.ml.features import SECBIREncoder, normalise
from retrieval.ml.measures import StyleExtractor, StyleProjection
from retrieval.ml.network import build_model, widen_to_saliency
from retrieval.ml.saliency import INTEGRATED, VANILLA
from retrieval.ml.segmentation import Segmenter

EVERY = {m.SECBIR, m.CNN3, m.STYLE, m.MASK, m.CONTRASTIVE, m.TRIPLET}


def _images(count: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=(90 + 7 * i, 120, 3), dtype=np.uint8) for i in range(count)]


def _encoder(method: str) -> DescriptorEncoder:
    torch.manual_seed(0)
    config = get_config("tiny")
    model3 = build_model(config, pretrained=False)
    secbir = SECBIREncoder(model3, widen_to_saliency(model3), method=method, ig_steps=4)
    style = StyleExtractor(secbir.model3)
    x = normalise(np.stack([resize_rgb_array(image, config.input_size) for image in _images()]), config)
    projection = StyleProjection.fit(style.extract(x), components=4)
    embeddings = {name: EmbeddingNet(config, backbone_from=model3) for name in (m.CONTRASTIVE, m.TRIPLET)}
    return DescriptorEncoder(secbir, style_extractor=style, style_projection=projection,
                             segmenter=Segmenter.classical(), embeddings=embeddings)


def _forward_counter(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.backbone.conv_stem.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("method", [VANILLA, INTEGRATED])
def test_every_descriptor_at_once_equals_each_on_its_own(method):
    encoder = _encoder(method)
    images, labels = _images(), np.array([0, 1, 2, 3, 4])
    together = encoder.encode(images, labels, needs=EVERY)
    config = encoder.encoder.config
    x = normalise(np.stack([resize_rgb_array(image, config.input_size) for image in images]), config)
    with torch.no_grad():
        direct = {m.CNN3: encoder.encoder.model3.pooled(x).numpy(),
                  m.STYLE: encoder.style_projection.transform(encoder.style_extractor.extract(x))}
    for name in EVERY:
        alone = encoder.encode(images, labels, needs={name}).descriptors[name]
        assert together.descriptors[name].shape == alone.shape, name
        assert np.allclose(together.descriptors[name], alone, rtol=1e-5, atol=1e-6), name
        if name in direct:
            assert np.allclose(together.descriptors[name], direct[name], rtol=1e-5, atol=1e-6), name
    assert np.array_equal(together.secbir.saliency, encoder.encode(images, labels).secbir.saliency)


def test_with_vanilla_saliency_the_3_channel_model_runs_one_forward_pass_for_three_descriptors():
    encoder = _encoder(VANILLA)
    calls = _forward_counter(encoder.encoder.model3)
    encoder.encode(_images(), None, needs={m.SECBIR, m.CNN3, m.STYLE})
    assert calls[0] == 1  # the saliency pass; before, the 3-channel features and style had one each
    calls[0] = 0
    encoder.encode(_images(), None, needs={m.CNN3, m.STYLE})  # no saliency pass to ride on
    assert calls[0] == 2
    # the hooks are gone afterwards: a later forward pass captures nothing
    with torch.no_grad():
        encoder.encoder.model3(torch.zeros(1, 3, 64, 64))
    assert not encoder.encoder.model3.head._forward_pre_hooks
    assert all(not block._forward_hooks for block in encoder.encoder.model3.backbone.blocks)
