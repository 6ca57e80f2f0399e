"""A procedural, dermoscopy-like synthetic case library. NumPy + Pillow, no database.

The real HAM10000 images cannot be downloaded here, so the demo library and the tests use
images rendered from the real metadata: the same class imbalance, the same lesions with
several photos each. What a class looks like is drawn from overlapping distributions of
dermoscopic features (colour palette, border irregularity, asymmetry, pigment network,
dots and globules, vessels, blue-white veil, regression, size ...), and melanoma, nevi and
benign keratoses borrow each other's features often enough that they are genuinely
confusable. A lesion's look is fixed by the seed and its ``lesion_id``; each photo of it
adds its own rotation, zoom, shift, lighting, blur, hair and artefacts (dark vignetted
corners, ruler marks, gel bubbles). Ground-truth lesion masks come with every image.

Everything is deterministic for a seed: same seed, same bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.classes import CODES

WIDTH, HEIGHT = 600, 450  # HAM10000's image size
_BASE = 2  # the lesion body is rendered at 1/_BASE resolution, sharp details at full size
JPEG_QUALITY = 92
METADATA_NAME = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset")

# Feature strengths per class: (low, high) of a uniform draw. Ranges overlap on purpose.
_F = {
    #          akiec        bcc          bkl          df           mel          nv           vasc
    "radius": ((.30, .60), (.28, .62), (.32, .70), (.22, .45), (.38, .78), (.22, .55), (.20, .45)),
    "elong": ((1.0, 1.5), (1.0, 1.5), (1.0, 1.6), (1.0, 1.3), (1.0, 1.7), (1.0, 1.35), (1.0, 1.3)),
    "irregular": ((.06, .16), (.05, .16), (.03, .12), (.01, .05), (.08, .24), (.01, .07), (.02, .08)),
    "edge": ((.10, .22), (.04, .12), (.02, .06), (.10, .22), (.03, .12), (.04, .12), (.03, .08)),
    "darkness": ((.05, .35), (.10, .45), (.20, .75), (.25, .55), (.45, .95), (.25, .80), (.30, .70)),
    "variety": ((.15, .45), (.25, .60), (.15, .45), (.10, .30), (.45, .95), (.05, .35), (.10, .30)),
    "redness": ((.50, .90), (.35, .75), (.00, .25), (.10, .35), (.05, .40), (.00, .20), (.85, 1.0)),
    "asymmetry": ((.10, .40), (.10, .45), (.05, .35), (.00, .15), (.30, .90), (.00, .20), (.00, .20)),
    "network": ((.00, .15), (.00, .05), (.00, .20), (.35, .70), (.20, .70), (.35, .90), (.00, .05)),
    "net_irregular": ((.20, .60), (.20, .60), (.20, .60), (.05, .25), (.50, 1.0), (.00, .30), (.10, .40)),
    "globules": ((.00, .10), (.00, .10), (.00, .15), (.00, .10), (.05, .35), (.10, .80), (.00, .05)),
    "black_dots": ((.00, .15), (.00, .20), (.00, .20), (.00, .05), (.30, .95), (.00, .20), (.00, .05)),
    "arborizing": ((.00, .15), (.45, 1.0), (.00, .10), (.00, .05), (.00, .25), (.00, .05), (.00, .15)),
    "dotted_vessels": ((.40, .95), (.00, .30), (.00, .20), (.00, .15), (.00, .30), (.00, .10), (.00, .20)),
    "nests": ((.00, .05), (.30, .90), (.00, .10), (.00, .05), (.00, .20), (.00, .05), (.00, .05)),
    "veil": ((.00, .10), (.00, .35), (.00, .10), (.00, .05), (.15, .85), (.00, .10), (.00, .20)),
    "regression": ((.00, .15), (.00, .20), (.00, .15), (.00, .10), (.05, .60), (.00, .10), (.00, .05)),
    "central_white": ((.00, .10), (.00, .20), (.00, .10), (.55, 1.0), (.00, .15), (.00, .05), (.00, .10)),
    "lacunae": ((.00, .05), (.00, .05), (.00, .05), (.00, .05), (.00, .05), (.00, .05), (.55, 1.0)),
    "milia": ((.00, .10), (.00, .10), (.35, 1.0), (.00, .05), (.00, .10), (.00, .15), (.00, .05)),
    "fissures": ((.00, .15), (.00, .05), (.35, .95), (.00, .05), (.00, .15), (.00, .10), (.00, .05)),
    "scale": ((.40, .95), (.00, .20), (.05, .40), (.00, .10), (.00, .10), (.00, .05), (.00, .05)),
    "erythema": ((.30, .80), (.20, .60), (.00, .25), (.05, .30), (.00, .25), (.00, .15), (.10, .40)),
}
FEATURES = tuple(_F)
# Classes that dermatologists confuse; a lesion of one borrows from another this often.
_CONFUSABLE = {"mel": ("nv", "bkl"), "nv": ("mel", "bkl"), "bkl": ("mel", "nv"), "bcc": ("mel", "akiec"),
               "akiec": ("bkl", "bcc"), "df": ("nv",), "vasc": ("bcc",)}
_BORROW_PROBABILITY = {"mel": .40, "nv": .25, "bkl": .40, "bcc": .20, "akiec": .25, "df": .20, "vasc": .10}

_TAN = np.array([.78, .58, .42])
_BROWN = np.array([.40, .22, .12])
_DARK = np.array([.16, .09, .07])
_BLUE_GREY = np.array([.42, .46, .58])
_PINK_RED = np.array([.80, .36, .38])
_PURPLE_RED = np.array([.55, .10, .22])
_VEIL = np.array([.62, .68, .82])
_SCAR_WHITE = np.array([.94, .89, .86])
_SCALE = np.array([.95, .92, .80])
_VESSEL = np.array([.78, .12, .16])


def _seed_of(*parts: object) -> list[int]:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


@dataclass(frozen=True)
class Lesion:
    """Everything that stays the same across photos of one lesion."""

    dx: str
    f: dict[str, float]
    harmonics: np.ndarray  # (K, 2): amplitude, phase of border harmonics k = 2..K+1
    grids: np.ndarray  # (8, G, G) smooth noise fields in lesion space
    fine: np.ndarray  # (G2, G2) high-frequency field (fissures, network distortion)
    asym_angle: float
    net_freq: float
    skin: np.ndarray  # RGB
    hairiness: float
    dots: np.ndarray  # (N, 7): u, v, radius, r, g, b, opacity
    vessels: list[np.ndarray]  # polylines in lesion space
    vessel_widths: list[float]


def lesion_features(dx: str, rng: np.random.Generator) -> dict[str, float]:
    """Draw the feature strengths of one lesion of class ``dx`` (with occasional borrowing)."""
    index = CODES.index(dx)
    own = {name: rng.uniform(*ranges[index]) for name, ranges in _F.items()}
    if rng.random() < _BORROW_PROBABILITY[dx]:
        other = CODES.index(str(rng.choice(_CONFUSABLE[dx])))
        weight = rng.uniform(.3, .65)
        for name, ranges in _F.items():
            own[name] = (1 - weight) * own[name] + weight * rng.uniform(*ranges[other])
    return own


def make_lesion(dx: str, lesion_id: str, seed: int) -> Lesion:
    rng = np.random.default_rng(_seed_of("lesion", seed, lesion_id))
    f = lesion_features(dx, rng)
    k = np.arange(2, 10)
    amplitudes = f["irregular"] * rng.uniform(.3, 1.0, size=k.size) / np.sqrt(k - 1)
    harmonics = np.stack([amplitudes, rng.uniform(0, 2 * np.pi, size=k.size)], axis=1)
    grids = rng.random((8, 9, 9))
    fine = rng.random((33, 33))
    radius = f["radius"]
    dots = []

    def scatter(count: int, r_lo: float, r_hi: float, size: tuple[float, float], colour, opacity: float) -> None:
        for _ in range(count):
            angle = rng.uniform(0, 2 * np.pi)
            dist = radius * math.sqrt(rng.uniform(r_lo ** 2, r_hi ** 2))
            jitter = np.clip(np.asarray(colour) + rng.normal(0, .04, 3), 0, 1)
            dots.append([dist * math.cos(angle), dist * math.sin(angle) / f["elong"],
                         radius * rng.uniform(*size), *jitter, opacity])

    scatter(int(f["globules"] * 40), 0, .65, (.035, .06), _BROWN * .9, .85)
    scatter(int(f["black_dots"] * 45), .45, 1.0, (.008, .035), _DARK, .9)
    scatter(int(f["nests"] * 9), .1, .9, (.06, .16), _BLUE_GREY, .75)
    scatter(int(f["milia"] * 25), 0, .9, (.015, .035), np.array([.97, .95, .85]), .9)
    scatter(int(f["fissures"] * 18), 0, .9, (.02, .045), _DARK * 1.4, .8)  # comedo-like openings
    scatter(int(f["dotted_vessels"] * 70), 0, .95, (.006, .014), _VESSEL, .9)
    scatter(int(f["lacunae"] * 30), 0, .85, (.06, .13), _PURPLE_RED, .9)

    vessels, widths = [], []
    for _ in range(int(f["arborizing"] * 6)):
        _grow_vessel(rng, radius, np.array([rng.uniform(-.6, .6), rng.uniform(-.6, .6)]) * radius,
                     rng.uniform(0, 2 * np.pi), radius * rng.uniform(.25, .55), 2.6, vessels, widths, depth=0)
    skin = np.clip(np.array([.88, .70, .62]) + rng.normal(0, .035, 3) - rng.uniform(0, .12), 0, 1)
    return Lesion(dx, f, harmonics, grids, fine, rng.uniform(0, 2 * np.pi), rng.uniform(9, 16), skin,
                  float(rng.beta(1.2, 3.0)), np.array(dots, dtype=float).reshape(-1, 7), vessels, widths)


def _grow_vessel(rng, radius, start, angle, length, width, out, widths, depth) -> None:
    points = [start]
    steps = 6
    for _ in range(steps):
        angle += rng.normal(0, .35)
        points.append(points[-1] + length / steps * np.array([math.cos(angle), math.sin(angle)]))
    out.append(np.array(points))
    widths.append(width)
    if depth < 2:
        for _ in range(int(rng.integers(1, 3))):
            branch_at = points[int(rng.integers(2, steps))]
            _grow_vessel(rng, radius, branch_at, angle + rng.choice([-1, 1]) * rng.uniform(.4, 1.1),
                         length * .55, width * .65, out, widths, depth + 1)


@dataclass(frozen=True)
class Shot:
    """What changes from one photo of a lesion to the next."""

    rotation: float
    zoom: float
    shift: tuple[float, float]
    gain: float
    cast: np.ndarray
    gradient: tuple[float, float]
    blur: float
    vignette: float  # 0 = none, else the radius (relative to the half diagonal) of the dermoscope field
    hairs: int
    ruler: bool
    bubbles: int
    noise_seed: int


def make_shot(lesion: Lesion, image_id: str, seed: int) -> Shot:
    rng = np.random.default_rng(_seed_of("shot", seed, image_id))
    return Shot(
        rotation=rng.uniform(0, 2 * np.pi), zoom=rng.uniform(1.0, 1.4),
        shift=(rng.uniform(-.07, .07), rng.uniform(-.07, .07)), gain=rng.uniform(.85, 1.08),
        cast=np.clip(1 + rng.normal(0, .035, 3), .9, 1.1),
        gradient=(rng.uniform(0, 2 * np.pi), rng.uniform(0, .18)), blur=rng.uniform(0, 1.1),
        vignette=rng.uniform(.85, 1.05) if rng.random() < .35 else 0.0,
        hairs=int(rng.poisson(lesion.hairiness * 22)), ruler=bool(rng.random() < .12),
        bubbles=int(rng.integers(1, 6)) if rng.random() < .2 else 0,
        noise_seed=int(rng.integers(0, 2 ** 31)),
    )


def _sample(grid: np.ndarray, u: np.ndarray, v: np.ndarray, extent: float) -> np.ndarray:
    """Bilinear sample of ``grid`` (covering [-extent, extent]^2 in lesion space), smoothstepped."""
    n = grid.shape[-1] - 1
    gx = np.clip((u / extent + 1) * .5 * n, 0, n - 1e-6)
    gy = np.clip((v / extent + 1) * .5 * n, 0, n - 1e-6)
    x0, y0 = gx.astype(np.int32), gy.astype(np.int32)
    tx, ty = gx - x0, gy - y0
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    top = grid[y0, x0] * (1 - tx) + grid[y0, x0 + 1] * tx
    bottom = grid[y0 + 1, x0] * (1 - tx) + grid[y0 + 1, x0 + 1] * tx
    return top * (1 - ty) + bottom * ty


def _blend(base: np.ndarray, colour, amount: np.ndarray) -> np.ndarray:
    amount = np.clip(amount, 0, 1)[..., None]
    return base * (1 - amount) + np.asarray(colour) * amount


def _transform(shot: Shot, width: int, height: int):
    """Image pixel grid -> lesion-space coordinates (u, v) and the pixels per lesion unit."""
    scale = min(width, height) / 2 * shot.zoom
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    x0 = (xx + .5 - width / 2 - shot.shift[0] * width) / scale
    y0 = (yy + .5 - height / 2 - shot.shift[1] * height) / scale
    c, s = math.cos(shot.rotation), math.sin(shot.rotation)
    return c * x0 + s * y0, -s * x0 + c * y0, scale


def _to_image(shot: Shot, width: int, height: int, u: float, v: float) -> tuple[float, float]:
    scale = min(width, height) / 2 * shot.zoom
    c, s = math.cos(shot.rotation), math.sin(shot.rotation)
    x0, y0 = c * u - s * v, s * u + c * v
    return x0 * scale + width / 2 + shot.shift[0] * width, y0 * scale + height / 2 + shot.shift[1] * height


def _render_body(lesion: Lesion, shot: Shot, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    f = lesion.f
    u, v, _ = _transform(shot, width, height)
    ve = v * f["elong"]
    r = np.hypot(u, ve)
    theta = np.arctan2(ve, u)
    k = np.arange(2, 2 + len(lesion.harmonics))[:, None, None]
    border = f["radius"] * (1 + np.sum(lesion.harmonics[:, 0, None, None] * np.cos(k * theta + lesion.harmonics[:, 1, None, None]), axis=0))
    inside = (border - r) / f["radius"]
    alpha = 1 / (1 + np.exp(np.clip(-inside / max(f["edge"], 1e-3) * 4, -60, 60)))
    rn = np.clip(r / np.maximum(border, 1e-6), 0, 1.5)
    g = [_sample(lesion.grids[i], u, v, 1.6) for i in range(8)]

    # Skin: patient tone, mottling, redness around inflamed lesions.
    skin = lesion.skin * (0.94 + 0.12 * g[7][..., None])
    halo = np.exp(-np.maximum(r - border, 0) / (f["radius"] * .5)) * (1 - alpha)
    skin = _blend(skin, _PINK_RED * 1.05, f["erythema"] * .55 * halo)

    # Lesion colour: a palette from light to dark along the radius, perturbed by noise and
    # shifted to one side for asymmetric lesions.
    base = _TAN * (1 - f["darkness"]) + _BROWN * f["darkness"]
    base = base * (1 - f["redness"]) + (_PINK_RED * (1 - f["lacunae"]) + _PURPLE_RED * f["lacunae"]) * f["redness"]
    periphery = base * .55 + lesion.skin * .45
    centre = base * (1 - .45 * f["darkness"] * f["variety"]) + _DARK * .45 * f["darkness"] * f["variety"]
    direction = (u * math.cos(lesion.asym_angle) + v * math.sin(lesion.asym_angle)) / f["radius"]
    t = np.clip(.75 * rn + f["variety"] * 1.4 * (g[0] - .5) + .45 * f["asymmetry"] * direction, 0, 1)
    colour = centre * (1 - t[..., None]) + periphery * t[..., None]
    accents = np.clip((g[1] - (1 - .55 * f["variety"])) * 6, 0, 1) * (rn < 1)
    colour = _blend(colour, _DARK if f["darkness"] > .5 else _BROWN, accents * f["variety"])
    colour = _blend(colour, _BLUE_GREY, np.clip((g[2] - .75) * 5, 0, 1) * f["variety"] * .6)

    # Pigment network: a distorted grid of darker lines, regular or broken up.
    wobble = _sample(lesion.fine, u, v, 1.6) - .5
    freq = lesion.net_freq / max(f["radius"], .2) * .35
    uu = u * freq + f["net_irregular"] * 3 * (g[3] - .5) + 1.5 * f["net_irregular"] * wobble
    vv = v * freq + f["net_irregular"] * 3 * (g[4] - .5)
    holes = np.abs(np.sin(np.pi * uu) * np.sin(np.pi * vv)) ** .35
    net_fade = np.clip(1.2 - rn, 0, 1) if f["net_irregular"] < .5 else np.clip(g[5] * 1.6 - .3, 0, 1)
    colour = colour * (1 - (1 - holes) * f["network"] * .55 * net_fade)[..., None]

    # Cerebriform fissures and ridges (seborrhoeic keratosis).
    ridges = np.abs(np.sin(np.pi * 7 * (lesion.fine.shape[0] / 33) * _sample(lesion.fine, u * .7, v * .7, 1.6)))
    colour = colour * (1 - f["fissures"] * .45 * (ridges < .18))[..., None]
    colour = _blend(colour, _SCALE, f["scale"] * np.clip((g[6] - .45) * 3, 0, 1) * (rn < 1.05))
    colour = _blend(colour, _VEIL, f["veil"] * .85 * np.clip((g[5] - (1 - f["veil"] * .7)) * 4, 0, 1) * (rn < .95))
    colour = _blend(colour, _SCAR_WHITE, f["regression"] * .9 * np.clip((g[3] - .62) * 5, 0, 1) * (rn < .95))
    scar = np.clip((.38 - rn + .12 * (g[2] - .5)) * 7, 0, 1)
    colour = _blend(colour, _SCAR_WHITE, f["central_white"] * .85 * scar)

    image = skin * (1 - alpha[..., None]) + colour * alpha[..., None]
    return image, alpha


def _draw_details(lesion: Lesion, shot: Shot, image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    scale = min(width, height) / 2 * shot.zoom
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for points, line_width in zip(lesion.vessels, lesion.vessel_widths):
        xy = [_to_image(shot, width, height, float(p[0]), float(p[1] / lesion.f["elong"])) for p in points]
        draw.line(xy, fill=(200, 30, 40, 230), width=max(1, round(line_width * shot.zoom)), joint="curve")
    for u, v, radius, red, green, blue, opacity in lesion.dots:
        x, y = _to_image(shot, width, height, u, v)
        rad = max(radius * scale, .8)
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=(int(red * 255), int(green * 255), int(blue * 255), int(opacity * 255)))
    overlay = overlay.filter(ImageFilter.GaussianBlur(1.1))
    image = Image.alpha_composite(image.convert("RGBA"), overlay)

    draw = ImageDraw.Draw(image)
    for _ in range(shot.hairs):  # hair: dark curved strands across the field
        x, y = rng.uniform(-50, width + 50), rng.uniform(-50, height + 50)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(.3, 1.1) * width
        bend = rng.normal(0, .8)
        pts = []
        for i in range(12):
            a = angle + bend * i / 11
            x += math.cos(a) * length / 11
            y += math.sin(a) * length / 11
            pts.append((x, y))
        shade = int(rng.uniform(15, 70))
        draw.line(pts, fill=(shade, int(shade * .8), int(shade * .6), 255), width=int(rng.integers(1, 4)), joint="curve")
    if shot.ruler:
        edge = rng.integers(0, 2)
        for i in range(0, width, int(rng.integers(9, 14))):
            tick = 18 if i % 5 == 0 else 9
            y0 = 4 if edge == 0 else height - 4 - tick
            draw.line([(i, y0), (i, y0 + tick)], fill=(25, 25, 25, 255), width=2)
    for _ in range(shot.bubbles):  # gel bubbles: bright rims with a highlight
        x, y, rad = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 40)
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], outline=(245, 245, 240, 255), width=2)
        draw.ellipse([x - rad * .5, y - rad * .6, x - rad * .2, y - rad * .3], fill=(255, 255, 255, 200))
    return image.convert("RGB")


def render(lesion: Lesion, shot: Shot, width: int = WIDTH, height: int = HEIGHT) -> tuple[Image.Image, Image.Image]:
    """One photo of ``lesion``: the RGB image and its ground-truth mask (L, 255 = lesion)."""
    small_w, small_h = width // _BASE, height // _BASE
    body, alpha = _render_body(lesion, shot, small_w, small_h)
    rng = np.random.default_rng(shot.noise_seed)
    body_img = Image.fromarray((np.clip(body, 0, 1) * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    mask = Image.fromarray(((alpha > .5) * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    image = _draw_details(lesion, shot, body_img, rng)

    pixels = np.asarray(image, dtype=np.float32) / 255
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = (xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2)
    angle, amount = shot.gradient
    light = shot.gain * (1 + amount * (cx * math.cos(angle) + cy * math.sin(angle)))
    pixels = pixels * light[..., None] * shot.cast
    if shot.vignette:
        dist = np.hypot(cx * width, cy * height) / math.hypot(width / 2, height / 2)
        pixels = pixels * np.clip((shot.vignette - dist) * 12, 0, 1)[..., None]
    pixels = pixels + rng.normal(0, .012, pixels.shape).astype(np.float32)
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    if shot.blur > .3:
        image = image.filter(ImageFilter.GaussianBlur(shot.blur))
    return image, mask


# --- A library in the HAM10000 layout ---------------------------------------------------------


def read_rows(metadata: Path) -> list[dict[str, str]]:
    with open(metadata, newline="", encoding="utf-8-sig") as handle:
        return [row for row in csv.DictReader(handle) if row.get("dx") in CODES]


def select_rows(rows: Sequence[dict[str, str]], limit: int | None, seed: int, min_lesions_per_class: int = 3) -> list[dict[str, str]]:
    """A class-stratified sample of whole lesions with about ``limit`` images (all rows if None).

    Each class keeps its share of the images (and at least ``min_lesions_per_class``
    lesions), so a small demo library still has the real imbalance and every class.
    """
    if limit is None or limit >= len(rows):
        return list(rows)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    lesions: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        lesions[row["lesion_id"]].append(row)
    by_class: dict[str, list[str]] = defaultdict(list)
    for lesion_id, members in lesions.items():
        by_class[members[0]["dx"]].append(lesion_id)
    rng = np.random.default_rng(_seed_of("select", seed))
    chosen: list[dict[str, str]] = []
    for dx in CODES:
        ids = sorted(by_class.get(dx, []))
        if not ids:
            continue
        rng.shuffle(ids)
        quota = limit * sum(len(lesions[i]) for i in ids) / len(rows)
        taken = 0
        for count, lesion_id in enumerate(ids):
            if taken >= quota and count >= min_lesions_per_class:
                break
            chosen.extend(lesions[lesion_id])
            taken += len(lesions[lesion_id])
    order = {id(row): i for i, row in enumerate(rows)}
    return sorted(chosen, key=lambda row: order[id(row)])


def _render_one(job: tuple[dict[str, str], int, str, str]) -> str:
    row, seed, image_path, mask_path = job
    lesion = make_lesion(row["dx"], row["lesion_id"], seed)
    image, mask = render(lesion, make_shot(lesion, row["image_id"], seed))
    for target, picture, fmt, options in ((image_path, image, "JPEG", {"quality": JPEG_QUALITY}),
                                          (mask_path, mask, "PNG", {})):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        tmp = f"{target}.part"
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, target)  # never leave a half-written image behind
    return row["image_id"]


def write_library(rows: Iterable[dict[str, str]], folder: Path, *, seed: int, workers: int = 1, progress=None) -> Path:
    """Render ``rows`` into ``folder`` in the HAM10000 layout; return the metadata path.

    Images go to two part folders as in the published data set, masks to ``masks/``.
    Files already there are kept (rendering is deterministic), so re-running is cheap.
    """
    rows = list(rows)
    parts = [folder / "HAM10000_images_part_1", folder / "HAM10000_images_part_2"]
    masks = folder / "masks"
    for path in (*parts, masks):
        path.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, row in enumerate(rows):
        image_path = parts[0 if i < len(rows) / 2 else 1] / f"{row['image_id']}.jpg"
        mask_path = masks / f"{row['image_id']}_segmentation.png"
        if image_path.exists() and mask_path.exists():
            if progress:
                progress(1)
            continue
        jobs.append((row, seed, str(image_path), str(mask_path)))
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_render_one, jobs, chunksize=8):
                if progress:
                    progress(1)
    else:
        for job in jobs:
            _render_one(job)
            if progress:
                progress(1)
    metadata = folder / METADATA_NAME
    tmp = folder / f"{METADATA_NAME}.part"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        for row in rows:
            out = {col: row.get(col, "") for col in METADATA_COLUMNS}
            out["dataset"] = "synthetic"
            writer.writerow(out)
    os.replace(tmp, metadata)
    return metadata
