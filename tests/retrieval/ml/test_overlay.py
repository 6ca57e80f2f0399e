"""Saliency overlays: a palette PNG with per-entry alpha that decodes to the documented RGBA heat map."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image, ImageFilter

from retrieval.ml.overlay import ALPHA_FLOOR, COLOUR_MAP, MAX_SIDE, render_overlay


def _reference_rgba(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The overlay as the module's docstring describes it, computed per pixel in floats: resized,
    smoothed, peak-normalised, coloured by the colour map, alpha 0 below the floor then rising as
    a 0.7 power to opaque."""
    grey = Image.fromarray(saliency, mode="L").resize(size, Image.BILINEAR)
    grey = grey.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.012 * max(size))))
    values = np.asarray(grey, dtype=np.float64) / 255.0
    values = values / values.max()
    rgb = colormaps[COLOUR_MAP](values)[..., :3] * 255
    alpha = np.clip((values - ALPHA_FLOOR) / (1 - ALPHA_FLOOR), 0, 1) ** 0.7 * 255
    return np.dstack([rgb, alpha])


def test_overlay_decodes_to_the_reference_heat_map_with_transparency():
    yy, xx = np.mgrid[0:128, 0:128]
    saliency = (255 * np.exp(-((xx - 80) ** 2 + (yy - 50) ** 2) / 600.0)).astype(np.uint8)
    data = render_overlay(saliency, (600, 450))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.has_transparency_data
        assert image.size == (MAX_SIDE, round(MAX_SIDE * 450 / 600))
        decoded = np.asarray(image.convert("RGBA"), dtype=np.float64)
    expected = _reference_rgba(saliency, (MAX_SIDE, 384))
    # one grey level of quantisation (the palette has 256 entries) moves a channel by a few units
    assert np.abs(decoded - expected).max() <= 4
    assert np.abs(decoded - expected).mean() < 0.5
    alpha = decoded[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # clear far from the peak, opaque on it


def test_overlay_refuses_a_map_that_is_not_two_dimensional():
    with pytest.raises(ValueError, match="2-D"):
        render_overlay(np.zeros((4, 4, 3), np.uint8), (10, 10))
