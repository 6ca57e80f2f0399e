"""Saliency heat-map overlays for display. Pillow + NumPy + matplotlib colour maps, no Django.

An overlay is a PNG with transparency (a palette image, RGBA once decoded) of the image's aspect ratio: the saliency map resized to the image,
lightly smoothed for legibility (vanilla gradients are speckled at pixel level), coloured with
a perceptually uniform map and made transparent where saliency is low, so the page can lay it
over the photograph with an opacity slider. Saliency is stored as uint8 (0..255) per case in
the index, which is exact enough for display.
"""
from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

#: Longest side of a rendered overlay; the page shows images at most about this large.
MAX_SIDE = 512
#: Longest side of an evidence map overlay: the page shows a pair side by side in a result card
#: (about 200 px each), and twelve are rendered per query (~4x faster than at MAX_SIDE).
EVIDENCE_MAX_SIDE = 256
COLOUR_MAP = "inferno"
#: Below this saliency (after smoothing, 0..1) a pixel is fully transparent.
ALPHA_FLOOR = 0.15


def to_uint8(saliency: np.ndarray) -> np.ndarray:
    """float maps in [0, 1] -> uint8 0..255 (the index's storage format)."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if not np.all(np.isfinite(saliency)):
        raise ValueError("saliency map has non-finite values")
    return np.clip(np.rint(saliency * 255.0), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _palette() -> tuple[bytes, bytes]:
    """The colour map as a 256-entry PNG palette (RGB bytes) and each entry's alpha (tRNS bytes):
    transparent below ``ALPHA_FLOOR``, then rising to opaque."""
    from matplotlib import colormaps

    levels = np.linspace(0.0, 1.0, 256)
    rgb = (colormaps[COLOUR_MAP](levels)[:, :3] * 255).astype(np.uint8)
    alpha = np.rint(np.clip((levels - ALPHA_FLOOR) / (1.0 - ALPHA_FLOOR), 0.0, 1.0) ** 0.7 * 255.0).astype(np.uint8)
    return rgb.tobytes(), alpha.tobytes()


def overlay_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_overlay(saliency: np.ndarray, size: tuple[int, int], max_side: int = MAX_SIDE) -> bytes:
    """PNG bytes of the RGBA heat map of ``saliency`` ((S, S), uint8 or float in [0, 1]) at ``size``
    (w, h), scaled down to at most ``max_side`` pixels on the long side."""
    saliency = np.asarray(saliency)
    if saliency.ndim != 2:
        raise ValueError(f"saliency must be a 2-D map, got shape {saliency.shape}")
    if saliency.dtype != np.uint8:
        saliency = to_uint8(saliency)
    width, height = overlay_size(*size, max_side=max_side)
    grey = Image.fromarray(saliency, mode="L").resize((width, height), Image.BILINEAR)
    grey = grey.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.012 * max(width, height))))
    values = np.asarray(grey, dtype=np.float32) / 255.0
    peak = float(values.max())
    if peak > 0:
        values = values / peak  # smoothing lowers the peak; keep the full colour range
    index = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    # A palette PNG whose entries carry their alpha (tRNS): the same pixels as an RGBA image
    # once decoded, in a quarter of the bytes to compress (2 ms instead of 16 at 512 px, and
    # about a third of the file). Overlays are rendered on the query path and for every
    # library case of an index build.
    image = Image.fromarray(index, mode="P")
    palette, alpha = _palette()
    image.putpalette(palette)
    buffer = io.BytesIO()
    # compress_level 1: smaller files are not worth the ~10x encoding time of optimize=True.
    image.save(buffer, "PNG", compress_level=1, transparency=alpha)
    return buffer.getvalue()
