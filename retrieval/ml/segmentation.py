"""Lesion masks for the Dice coefficient (paper 000), without downloadable weights.

The classical method (the default): a lesion-contrast channel (distance of each pixel's colour
from the skin colour estimated on the image border, plus its darkness), Gaussian smoothing, an
Otsu threshold, morphological opening and closing, hole filling, and the connected component
that best looks like the lesion (large and near the centre). Masks are MASK_SIZE x MASK_SIZE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

MASK_SIZE = 64
WORK_SIZE = 128  # images are segmented at this size, then the mask is resized


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu 1979)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    hist, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight1 = np.cumsum(hist)
    weight2 = weight1[-1] - weight1
    sum1 = np.cumsum(hist * centres)
    mean1 = sum1 / np.maximum(weight1, 1)
    mean2 = (sum1[-1] - sum1) / np.maximum(weight2, 1)
    between = weight1 * weight2 * (mean1 - mean2) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def lesion_contrast(image: np.ndarray) -> np.ndarray:
    """(H, W) float: how unlike the surrounding skin each pixel is (colour distance + darkness)."""
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    border = np.concatenate([rgb[:4].reshape(-1, 3), rgb[-4:].reshape(-1, 3),
                             rgb[:, :4].reshape(-1, 3), rgb[:, -4:].reshape(-1, 3)])
    skin = np.median(border, axis=0)
    distance = np.linalg.norm(rgb - skin, axis=2)
    darkness = np.clip(skin.mean() - rgb.mean(axis=2), 0, None)
    return distance + darkness


def classical_mask(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(mask bool (MASK_SIZE, MASK_SIZE), found). ``found`` is False when no lesion-like region
    stands out (the mask is then empty: Dice treats two empty masks as identical)."""
    pixels = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
                        .resize((WORK_SIZE, WORK_SIZE), Image.BILINEAR))
    contrast = ndimage.gaussian_filter(lesion_contrast(pixels), sigma=2.0)
    if float(contrast.max() - contrast.min()) < 0.05:
        return np.zeros((MASK_SIZE, MASK_SIZE), bool), False
    foreground = contrast > otsu_threshold(contrast)
    structure = np.ones((3, 3), bool)
    foreground = ndimage.binary_opening(foreground, structure, iterations=2)
    foreground = ndimage.binary_closing(foreground, structure, iterations=2)
    foreground = ndimage.binary_fill_holes(foreground)
    labels, count = ndimage.label(foreground)
    if count == 0:
        return np.zeros((MASK_SIZE, MASK_SIZE), bool), False
    yy, xx = np.mgrid[:WORK_SIZE, :WORK_SIZE]
    centre = (WORK_SIZE - 1) / 2
    best, best_score = 0, -np.inf
    for label in range(1, count + 1):
        region = labels == label
        area = region.sum()
        distance = np.hypot(yy[region].mean() - centre, xx[region].mean() - centre) / WORK_SIZE
        score = area * (1.0 - distance)
        if score > best_score:
            best, best_score = label, score
    mask = Image.fromarray((labels == best).astype(np.uint8) * 255).resize((MASK_SIZE, MASK_SIZE), Image.BILINEAR)
    return np.asarray(mask) >= 128, True


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); two empty masks give 1."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@dataclass
class Segmenter:
    """Lesion masks of a batch of images; ``name`` says which method made them."""

    name: str = "classical"

    @classmethod
    def classical(cls) -> Segmenter:
        return cls("classical")

    def masks(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, MASK_SIZE, MASK_SIZE) bool."""
        return np.stack([classical_mask(image)[0] for image in images])
