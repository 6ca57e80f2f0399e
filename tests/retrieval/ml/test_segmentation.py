"""Lesion segmentation (retrieval.ml.segmentation): Otsu, the classical masks, Dice, the small U-Net."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.ml import segmentation as seg
from retrieval.ml.segmentation import (
    MASK_SIZE, Segmenter, SmallUNet, classical_mask, dice, load_segmentation, otsu_threshold, predict_masks,
    resize_mask, train_segmentation,
)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def skin_with_lesion(rng, h=120, w=160, *, lesion=None, skin=(205, 150, 130), dark=(95, 60, 45), noise=10.0):
    """A skin-coloured noisy background with a dark lesion drawn where ``lesion`` is True."""
    image = rng.normal(skin, noise, size=(h, w, 3))
    if lesion is not None:
        image[lesion] = rng.normal(dark, noise, size=(int(lesion.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def truth_at_mask_size(lesion: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(lesion.astype(np.uint8) * 255).resize((MASK_SIZE, MASK_SIZE))) >= 128


def test_otsu_splits_a_bimodal_array_between_its_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.7, 0.05, 300)])
    threshold = otsu_threshold(values)
    assert 0.25 < threshold < 0.6  # in the gap between the modes (any point of it is as good)
    assert np.array_equal(values > threshold, np.arange(800) >= 500)
    assert otsu_threshold(np.full(10, 0.5)) == 0.5  # one value: nothing to split


def test_dice_by_hand():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 pixels, 4 shared
    assert dice(a, a) == 1.0
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0  # both empty: the same
    assert dice(a, np.zeros((4, 4), bool)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, np.zeros((3, 3), bool))


def test_classical_mask_finds_a_dark_ellipse_on_noisy_skin():
    rng = np.random.default_rng(5)
    lesion = ellipse(120, 160, 55, 85, 28, 40)
    mask, found = classical_mask(skin_with_lesion(rng, lesion=lesion))
    assert mask.shape == (MASK_SIZE, MASK_SIZE) and mask.dtype == bool
    assert found and dice(mask, truth_at_mask_size(lesion)) > 0.9


def test_classical_mask_ignores_vignette_hair_and_uneven_light():
    rng = np.random.default_rng(8)
    h, w = 150, 200
    lesion = ellipse(h, w, 70, 95, 25, 30)
    image = skin_with_lesion(rng, h, w, lesion=lesion).astype(np.float64)
    yy, xx = np.mgrid[:h, :w]
    image *= (0.85 + 0.3 * xx / w)[..., None]  # light from one side
    for row in (30, 100, 120):  # three dark hairs right across the image
        image[row:row + 2] = (40, 30, 25)
    image[~ellipse(h, w, h / 2, w / 2, h * 0.62, w * 0.62)] = 0  # the dermoscope's black vignette
    mask, found = classical_mask(np.clip(image, 0, 255).astype(np.uint8))
    assert found and dice(mask, truth_at_mask_size(lesion)) > 0.85


def test_classical_mask_says_when_there_is_no_lesion():
    rng = np.random.default_rng(2)
    for image in (np.full((50, 50, 3), 180, np.uint8), skin_with_lesion(rng, noise=15.0),
                  np.zeros((40, 40, 3), np.uint8)):
        mask, found = classical_mask(image)
        assert not found and not mask.any()
    masks, found = Segmenter.classical().masks_and_found(np.stack([np.full((32, 32, 3), 180, np.uint8)] * 2))
    assert masks.shape == (2, MASK_SIZE, MASK_SIZE) and not found.any()


def tiny_pairs(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Small images (48 x 48) with a dark ellipse of random size and place, and its mask."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        lesion = ellipse(48, 48, rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(6, 14), rng.uniform(6, 14))
        skin = rng.uniform((170, 120, 100), (230, 180, 160))
        pairs.append((skin_with_lesion(rng, 48, 48, lesion=lesion, skin=skin), lesion))
    return pairs


def test_small_unet_maps_its_input_to_mask_logits():
    out = SmallUNet(width=4)(torch.rand(2, 3, 2 * MASK_SIZE, 2 * MASK_SIZE))
    assert out.shape == (2, 1, MASK_SIZE, MASK_SIZE)


def test_learned_model_trains_deterministically_and_its_loss_decreases(tmp_path):
    train, val = tiny_pairs(16, seed=1), tiny_pairs(4, seed=2)
    options = dict(epochs=3, seed=11, device="cpu", batch_size=4, width=6)
    first = train_segmentation(train, val, out_path=tmp_path / "a.pt", **options)
    second = train_segmentation(train, val, out_path=tmp_path / "b.pt", **options)

    def without_timings(metrics: dict) -> dict:
        return {key: value for key, value in metrics.items() if not key.endswith("_seconds")}

    losses = [epoch["loss"] for epoch in first["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert [without_timings(e) for e in first["history"]] == [without_timings(e) for e in second["history"]]
    assert without_timings({**first, "history": []}) == without_timings({**second, "history": []})
    a, b = torch.load(tmp_path / "a.pt", weights_only=False), torch.load(tmp_path / "b.pt", weights_only=False)
    assert a["weights"].keys() == b["weights"].keys()
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert a["config"] == "unet-small" and a["arch"]["width"] == 6 and a["metrics"]["n_train"] == 16
    assert 0 <= a["metrics"]["val_dice_mean"] <= 1 and a["seed"] == 11

    model = load_segmentation(tmp_path / "a.pt")
    images = np.stack([image for image, _ in val])
    masks = predict_masks(model, images)
    assert masks.shape == (4, MASK_SIZE, MASK_SIZE) and masks.dtype == bool
    segmenter = Segmenter.learned(tmp_path / "a.pt", version_id=7)
    assert segmenter.name == "learned #7" and segmenter.is_learned
    assert np.array_equal(segmenter.masks(images), masks)
    assert Segmenter.classical().name == "classical" and not Segmenter.classical().is_learned

    torch.save({"format": 1, "weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a lesion segmentation checkpoint"):
        load_segmentation(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train_segmentation(train, val, epochs=0, out_path=tmp_path / "c.pt")


def test_resize_mask_squashes_like_the_images():
    mask = np.zeros((45, 60), np.uint8)
    mask[:, 30:] = 255
    small = resize_mask(mask)
    assert small.shape == (MASK_SIZE, MASK_SIZE) and small[:, MASK_SIZE // 2 + 1:].all() and not small[:, :MASK_SIZE // 2 - 1].any()
    assert seg.INPUT_SIZE == 2 * MASK_SIZE
