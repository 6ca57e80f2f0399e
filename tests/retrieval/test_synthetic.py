"""The synthetic library: deterministic, lesion-consistent, and hard enough to be useful."""
from __future__ import annotations

import dataclasses
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from retrieval import synthetic
from retrieval.classes import CODES
from retrieval.models import Case
from tests.conftest import SHIPPED_METADATA


def test_rendering_is_deterministic_by_seed():
    lesion = synthetic.make_lesion("mel", "HAM_0000001", seed=3)
    shot = synthetic.make_shot(lesion, "ISIC_0000001", seed=3)
    image_a, mask_a = synthetic.render(lesion, shot)
    image_b, mask_b = synthetic.render(synthetic.make_lesion("mel", "HAM_0000001", seed=3),
                                       synthetic.make_shot(lesion, "ISIC_0000001", seed=3))
    assert image_a.size == (synthetic.WIDTH, synthetic.HEIGHT) and image_a.mode == "RGB"
    assert np.array_equal(np.asarray(image_a), np.asarray(image_b))
    assert np.array_equal(np.asarray(mask_a), np.asarray(mask_b))
    other, _ = synthetic.render(synthetic.make_lesion("mel", "HAM_0000001", seed=4),
                                synthetic.make_shot(lesion, "ISIC_0000001", seed=4))
    assert not np.array_equal(np.asarray(image_a), np.asarray(other))


def test_photos_of_one_lesion_differ_but_share_the_lesion():
    lesion = synthetic.make_lesion("nv", "HAM_0000002", seed=0)
    shots = [synthetic.make_shot(lesion, f"ISIC_{i}", seed=0) for i in range(2)]
    (img1, mask1), (img2, mask2) = (synthetic.render(lesion, s) for s in shots)
    assert shots[0].rotation != shots[1].rotation
    assert not np.array_equal(np.asarray(img1), np.asarray(img2))
    # same lesion: lesion areas agree within the zoom range
    area1, area2 = (np.asarray(mask1) > 0).mean(), (np.asarray(mask2) > 0).mean()
    ratio = area1 / area2
    zoom_ratio = (shots[0].zoom / shots[1].zoom) ** 2
    assert 0.7 * zoom_ratio < ratio < 1.4 * zoom_ratio


@pytest.mark.parametrize("dx", CODES)
def test_mask_marks_a_lesion_darker_than_skin(dx):
    lesion = synthetic.make_lesion(dx, f"HAM_{dx}", seed=1)
    # without the dark dermoscope-field corners, which are darker than any lesion
    shot = dataclasses.replace(synthetic.make_shot(lesion, f"ISIC_{dx}", seed=1), vignette=0.0)
    image, mask = synthetic.render(lesion, shot)
    inside = np.asarray(mask) > 0
    assert 0.01 < inside.mean() < 0.9
    grey = np.asarray(image.convert("L"), dtype=float)
    assert grey[inside].mean() < np.median(grey[~inside])


def test_limit_keeps_whole_lesions_every_class_and_the_imbalance():
    rows = synthetic.read_rows(SHIPPED_METADATA)
    chosen = synthetic.select_rows(rows, 600, seed=0)
    assert 580 <= len(chosen) <= 680
    lesions = {r["lesion_id"] for r in chosen}
    assert len(chosen) == sum(1 for r in rows if r["lesion_id"] in lesions)  # whole lesions
    counts = {code: sum(r["dx"] == code for r in chosen) for code in CODES}
    assert all(counts[code] >= 3 for code in CODES)
    assert counts["nv"] / len(chosen) == pytest.approx(6705 / 10015, abs=0.05)


def _richer_features(image: np.ndarray) -> np.ndarray:
    """Joint colour histogram + gradient-magnitude histogram: still simple, but not just the mean."""
    bins = 4
    q = np.clip((image * bins).astype(int), 0, bins - 1)
    colour = np.bincount(((q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]).ravel(), minlength=bins ** 3).astype(float)
    grey = image.mean(-1)
    magnitude = np.hypot(np.diff(grey, axis=1)[:-1], np.diff(grey, axis=0)[:, :-1])
    texture = np.histogram(magnitude, bins=[0, .01, .02, .04, .08, .16, 1])[0].astype(float)
    return np.concatenate([np.sqrt(colour / colour.sum()), 3 * texture / texture.sum()])


def _macro_p_at_1(features: np.ndarray, dx: np.ndarray, lesions: np.ndarray) -> float:
    """Mean over classes of P@1, same-lesion neighbours excluded."""
    z = (features - features.mean(0)) / (features.std(0) + 1e-8)
    distance = ((z[:, None] - z[None]) ** 2).sum(-1)
    distance[lesions[:, None] == lesions[None]] = np.inf
    hit = dx[distance.argmin(1)] == dx
    return float(np.mean([hit[dx == code].mean() for code in np.unique(dx)]))


@pytest.mark.slow
def test_retrieval_is_non_trivial_mean_rgb_loses_to_richer_features():
    rows = synthetic.select_rows(synthetic.read_rows(SHIPPED_METADATA), 450, seed=5)
    images = []
    for row in rows:
        lesion = synthetic.make_lesion(row["dx"], row["lesion_id"], seed=5)
        image, _ = synthetic.render(lesion, synthetic.make_shot(lesion, row["image_id"], seed=5), 300, 225)
        images.append(np.asarray(image.resize((150, 112)), dtype=np.float32) / 255)
    images = np.stack(images)
    dx = np.array([r["dx"] for r in rows])
    lesions = np.array([r["lesion_id"] for r in rows])

    mean_rgb = _macro_p_at_1(images.mean(axis=(1, 2)), dx, lesions)
    richer = _macro_p_at_1(np.stack([_richer_features(x) for x in images]), dx, lesions)

    assert richer > mean_rgb + 0.12, (mean_rgb, richer)
    assert richer < 0.9, "the library should not be trivially separable"


@pytest.mark.django_db
def test_make_synthetic_library_imports_like_real_data_and_is_idempotent(tmp_path, media_root):
    out = StringIO()
    args = ["--limit", "40", "--seed", "2", "--workers", "2", "--out", str(tmp_path / "syn")]
    call_command("make_synthetic_library", *args, stdout=out, verbosity=0)
    count = Case.objects.filter(collection="synthetic").count()
    assert count >= 40 and f"{count} imported" in out.getvalue()
    assert (tmp_path / "syn" / "HAM10000_metadata.csv").exists()
    case = Case.objects.filter(collection="synthetic").first()
    assert case.mask.name and (case.width, case.height) == (synthetic.WIDTH, synthetic.HEIGHT)
    with Image.open(media_root / case.mask.name) as mask:
        assert mask.size == (case.width, case.height)
    assert set(Case.objects.values_list("dx", flat=True)) == set(CODES)

    again = StringIO()
    call_command("make_synthetic_library", *args, stdout=again, verbosity=0)
    assert f"Nothing to add: all {count} images are already in 'synthetic'" in again.getvalue()
    assert Case.objects.count() == count
