"""Training building blocks of SE-CBIR: focal loss, learning-rate schedule, augmentation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.ml.augment import paired_geometric_augmentation, resize_only, strong_rgb_augmentation
from retrieval.ml.losses import FocalLoss
from retrieval.ml.schedule import (
    FOUR_CHANNEL_LR, GROUP_NEW, GROUP_PRETRAINED, THREE_CHANNEL_LR, check_schedule, lr_multiplier, make_scheduler,
    param_groups,
)

SIZE = 32


# --- focal loss -------------------------------------------------------------------------------

def test_focal_loss_matches_hand_computed_example():
    # Logits are log-probabilities, so softmax gives back the probabilities exactly.
    # Sample 1: p = (0.5, 0.25, 0.25), target 0.
    #   target:  -0.25 * (1 - 0.5)^2  * ln 0.5  = 0.25 * 0.25 * 0.693147 = 0.0433217
    #   others:  -0.75 * (1 - 0.75)^2 * ln 0.75 = 0.75 * 0.0625 * 0.287682 = 0.0134851, twice
    #   sum = 0.0433217 + 2 * 0.0134851 = 0.0702919
    # Sample 2: p = (0.2, 0.3, 0.5), target 1.
    #   target:  -0.25 * (1 - 0.3)^2 * ln 0.3  = 0.25 * 0.49 * 1.203973 = 0.1474867
    #   class 0: -0.75 * (1 - 0.8)^2 * ln 0.8  = 0.75 * 0.04 * 0.223144 = 0.0066943
    #   class 2: -0.75 * (1 - 0.5)^2 * ln 0.5  = 0.75 * 0.25 * 0.693147 = 0.1299651
    #   sum = 0.2841461
    # mean = (0.0702919 + 0.2841461) / 2 = 0.1772190
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], dtype=torch.float64))
    targets = torch.tensor([0, 1])

    per_sample = FocalLoss(reduction="none")(logits, targets)

    assert per_sample.tolist() == pytest.approx([0.0702919, 0.2841461], abs=1e-6)
    assert FocalLoss()(logits, targets).item() == pytest.approx(0.1772190, abs=1e-6)
    assert FocalLoss(reduction="sum")(logits, targets).item() == pytest.approx(0.3544380, abs=1e-6)


def test_alpha_half_gamma_zero_is_half_the_binary_cross_entropy_over_classes():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    targets = torch.tensor([0, 3, 6, 2, 2])
    one_hot = F.one_hot(targets, 7).to(logits.dtype)
    bce = F.binary_cross_entropy(logits.softmax(dim=1), one_hot, reduction="none").sum(dim=1)

    focal = FocalLoss(alpha=0.5, gamma=0.0, reduction="none")(logits, targets)

    torch.testing.assert_close(focal, 0.5 * bce)


def test_gradients_stay_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 1e4]], requires_grad=True)
    targets = torch.tensor([0, 0, 1])  # one confident-right, two confident-wrong

    loss = FocalLoss()(logits, targets)
    loss.backward()

    assert torch.isfinite(loss)
    assert loss.item() > 0
    assert torch.isfinite(logits.grad).all()


def test_well_classified_samples_are_down_weighted_relative_to_cross_entropy():
    logits = torch.log(torch.tensor([[0.95, 0.03, 0.02], [0.10, 0.60, 0.30]]))
    targets = torch.tensor([0, 0])  # the first is easy, the second hard
    ce = F.cross_entropy(logits, targets, reduction="none")

    focal = FocalLoss(reduction="none")(logits, targets)

    easy_ratio, hard_ratio = (focal / ce).tolist()
    assert easy_ratio < hard_ratio / 10
    assert (focal < ce).all()


def test_focal_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="targets"):
        FocalLoss()(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


# --- learning-rate schedule -------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "expected"), [(0, 1.0), (1, 2.0), (5, 6.0), (6, 4.8), (10, 1.96608)])
def test_lr_multiplier_ramps_to_six_then_decays_by_point_eight(epoch, expected):
    assert lr_multiplier(epoch) == pytest.approx(expected, rel=1e-12)


def test_thesis_learning_rates_for_the_new_layers():
    assert THREE_CHANNEL_LR.new_lr == pytest.approx(1e-2)
    assert FOUR_CHANNEL_LR.new_lr == pytest.approx(1e-3)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))  # "2" is the new layer


def test_param_groups_give_new_layers_the_larger_rate_and_cover_each_parameter_once():
    model = _model()

    groups = param_groups(model, {"2"}, base_lr=5e-5, factor=200)

    by_name = {group["name"]: group for group in groups}
    assert set(by_name) == {GROUP_PRETRAINED, GROUP_NEW}
    assert by_name[GROUP_PRETRAINED]["lr"] == by_name[GROUP_PRETRAINED]["initial_lr"] == pytest.approx(5e-5)
    assert by_name[GROUP_NEW]["lr"] == by_name[GROUP_NEW]["initial_lr"] == pytest.approx(1e-2)
    assert {id(p) for p in by_name[GROUP_NEW]["params"]} == {id(model[2].weight), id(model[2].bias)}
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each exactly once


def test_param_groups_skip_frozen_parameters_and_accept_a_predicate():
    model = _model()
    model[0].bias.requires_grad_(False)

    groups = param_groups(model, lambda name: name.startswith("2."), base_lr=1e-5, factor=100)

    grouped = [id(p) for group in groups for p in group["params"]]
    assert id(model[0].bias) not in grouped
    assert len(grouped) == len(set(grouped)) == 3


def test_param_groups_refuse_a_name_that_matches_nothing():
    with pytest.raises(ValueError, match="head"):
        param_groups(_model(), {"head"}, base_lr=1e-5, factor=100)


def test_scheduler_keeps_the_ratio_between_groups():
    model = _model()
    optimizer = torch.optim.SGD(param_groups(model, {"2"}, base_lr=5e-5, factor=200))
    scheduler = make_scheduler(optimizer)
    lrs = {}
    for epoch in range(7):
        lrs[epoch] = {group["name"]: group["lr"] for group in optimizer.param_groups}
        optimizer.step()
        scheduler.step()

    for epoch, expected in [(0, 1.0), (1, 2.0), (5, 6.0), (6, 4.8)]:
        assert lrs[epoch][GROUP_PRETRAINED] == pytest.approx(5e-5 * expected)
        assert lrs[epoch][GROUP_NEW] == pytest.approx(1e-2 * expected)


@pytest.mark.parametrize(("epoch", "expected"), [(0, 1.0), (1, 6.0), (2, 3.6), (3, 2.16)])
def test_one_epoch_ramp_peaks_at_epoch_one_then_decays(epoch, expected):
    assert lr_multiplier(epoch, ramp_epochs=1, peak=6.0, decay=0.6) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("epoch", "expected"), [(0, 4.0), (1, 2.0), (2, 1.0)])
def test_no_ramp_starts_at_the_peak(epoch, expected):
    assert lr_multiplier(epoch, ramp_epochs=0, peak=4.0, decay=0.5) == pytest.approx(expected, rel=1e-12)


def test_scheduler_follows_a_short_ramp_in_every_group():
    model = _model()
    optimizer = torch.optim.SGD(param_groups(model, {"2"}, base_lr=1e-5, factor=100))
    scheduler = make_scheduler(optimizer, ramp_epochs=2, peak=5.0, decay=0.5)
    seen = []
    for _ in range(5):
        seen.append({group["name"]: group["lr"] for group in optimizer.param_groups})
        optimizer.step()
        scheduler.step()

    for epoch, multiplier in enumerate([1.0, 3.0, 5.0, 2.5, 1.25]):
        assert seen[epoch][GROUP_PRETRAINED] == pytest.approx(1e-5 * multiplier)
        assert seen[epoch][GROUP_NEW] == pytest.approx(1e-3 * multiplier)


@pytest.mark.parametrize(("ramp_epochs", "peak", "decay", "message"), [
    (-1, 6.0, 0.8, "ramp_epochs"), (5, 0.0, 0.8, "peak"), (5, 6.0, 0.0, "decay"), (5, 6.0, 1.5, "decay"),
])
def test_invalid_schedules_are_refused_before_training(ramp_epochs, peak, decay, message):
    with pytest.raises(ValueError, match=message):
        check_schedule(ramp_epochs, peak, decay)
    optimizer = torch.optim.SGD(param_groups(_model(), {"2"}, base_lr=1e-5, factor=100))
    with pytest.raises(ValueError, match=message):
        make_scheduler(optimizer, ramp_epochs=ramp_epochs, peak=peak, decay=decay)


# --- augmentation -----------------------------------------------------------------------------

def _image(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth, asymmetric test image, so that rotations and flips are visible and
    interpolation of uint8 and float versions agrees to within rounding."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 255 * (0.5 + 0.5 * np.sin(x / width * math.pi) * y / height)
    green = 255 * x / width
    blue = 255 * (1 - y / height)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def test_strong_augmentation_returns_a_square_uint8_image_that_differs_from_plain_resizing():
    augment = strong_rgb_augmentation(SIZE)
    plain = resize_only(SIZE)(_image())

    outputs = [augment(_image(), np.random.default_rng(seed)) for seed in range(5)]

    for out in outputs:
        assert out.shape == (SIZE, SIZE, 3)
        assert out.dtype == np.uint8
        assert np.abs(out.astype(int) - plain.astype(int)).mean() > 1
    assert not np.array_equal(outputs[0], outputs[1])


def test_strong_augmentation_is_deterministic_by_seed():
    augment = strong_rgb_augmentation(SIZE)

    first = [augment(_image(), np.random.default_rng(seed)) for seed in range(5)]
    again = [augment(_image(), np.random.default_rng(seed)) for seed in range(5)]
    # A second pipeline object: nothing depends on the instance's history either.
    other = [strong_rgb_augmentation(SIZE)(_image(), np.random.default_rng(seed)) for seed in range(5)]

    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def _paired(seed: int) -> tuple[np.ndarray, np.ndarray]:
    image = _image()
    saliency = (image[..., 0] / 255).astype(np.float32)
    return paired_geometric_augmentation(SIZE)(image, saliency, np.random.default_rng(seed))


def test_paired_augmentation_applies_the_same_geometry_to_image_and_saliency():
    plain = resize_only(SIZE)(_image())
    for seed in range(8):
        image, saliency = _paired(seed)

        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert saliency.shape == (SIZE, SIZE) and saliency.dtype == np.float32
        # Only uint8 rounding separates the two after identical resampling.
        assert np.abs(saliency - image[..., 0] / 255).max() < 2 / 255
        if seed == 0:
            assert np.abs(image.astype(int) - plain.astype(int)).mean() > 5  # the geometry did change

    # The check has teeth: a saliency map from another draw does not line up.
    image_a, _ = _paired(0)
    _, saliency_b = _paired(1)
    assert np.abs(saliency_b - image_a[..., 0] / 255).mean() > 0.05


def test_paired_augmentation_is_deterministic_by_seed():
    image_a, saliency_a = _paired(3)
    image_b, saliency_b = _paired(3)

    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(saliency_a, saliency_b)


def test_resize_only_resizes_image_and_saliency_identically():
    image = _image()
    saliency = (image[..., 0] / 255).astype(np.float32)

    out_image, out_saliency = resize_only(SIZE)(image, saliency)

    assert out_image.shape == (SIZE, SIZE, 3)
    assert out_saliency.shape == (SIZE, SIZE)
    assert np.abs(out_saliency - out_image[..., 0] / 255).max() < 1 / 255
    np.testing.assert_array_equal(resize_only(SIZE)(image), out_image)


def test_augmentation_rejects_a_saliency_map_of_another_size():
    image = _image()
    with pytest.raises(ValueError, match="saliency"):
        paired_geometric_augmentation(SIZE)(image, np.zeros((10, 10), np.float32), np.random.default_rng(0))


def test_paired_flips_are_drawn_independently():
    # albumentations' own seeding gives each transform a generator with the same seed, which
    # makes the two flips fire together; drawing from one shared generator must not.
    image = _image()
    saliency = (image[..., 0] / 255).astype(np.float32)
    plain = resize_only(SIZE)(image)
    augment = paired_geometric_augmentation(SIZE)
    outputs = [augment(image, saliency, np.random.default_rng(seed))[0] for seed in range(64)]

    assert any(np.array_equal(out, plain[:, ::-1]) for out in outputs)  # horizontal flip alone
    assert any(np.array_equal(out, plain[::-1]) for out in outputs)  # vertical flip alone
