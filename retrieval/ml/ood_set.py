"""The out-of-distribution evaluation set: images that are not dermoscopic images of a skin lesion.

Two sources, both available offline (nothing is downloaded, ever):

* **Real images shipped by installed packages** (:data:`PACKAGED`): scikit-image's sample data
  (pinned in requirements.txt for this purpose) and matplotlib's: photographs of people,
  animals, objects and scenes, medical and microscopy images of other kinds, graphics and text.
  Each is used whole and as a centre crop (two views of one group: they always fall on the same
  side of the select/report split).
* **Generated images** (NumPy + Pillow, deterministic for a seed): clinical close-ups of skin
  that are *not* dermoscopy (:func:`skin_closeup`: skin of any tone with pores, skin lines, fine
  hair, uneven lighting and no dermoscope vignette, sometimes a small mole seen from a distance,
  often with clothing or a background in the frame: the hardest case, because it is skin) and
  plain non-image inputs (:func:`plain_image`: noise, gradients, flat colours, a document page,
  patterns).

Kinds (reported separately): ``photo``, ``medical``, ``skin`` (generated close-ups), ``plain``.
Every image is RGB uint8, converted as a query upload is (:func:`retrieval.ml.features.as_rgb`).
No Django.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.ml.features import as_rgb, resize_rgb

PHOTO, MEDICAL, SKIN, PLAIN = "photo", "medical", "skin", "plain"
KINDS = {
    PHOTO: "real photographs (people, animals, objects, scenes, textures)",
    MEDICAL: "real medical and microscopy images of other kinds",
    SKIN: "generated clinical close-ups of skin (not dermoscopy)",
    PLAIN: "graphics, text and generated plain inputs (noise, gradients, flat colours, a page)",
}
#: Generated images per kind (seeds 0..n-1).
SKIN_IMAGES = 40
WIDTH, HEIGHT = 600, 450  # generated images have the library's (HAM10000's) size
#: Centre crop side as a share of the shorter side (the second view of a packaged image).
CROP = 0.6


class EvaluationSetError(RuntimeError):
    """A packaged image the set needs is missing (its package is not installed)."""


@dataclass(frozen=True)
class Packaged:
    package: str
    path: str  # relative to the package's folder
    name: str
    kind: str
    what: str
    licence: str


_SKIMAGE = "scikit-image 0.26.0 sample data"
_MPL = "matplotlib 3.11.2 sample data"


def _packaged() -> tuple[Packaged, ...]:
    """The packaged images, their kinds, descriptions and licences: ``ood_set_packaged.csv`` (data,
    beside this module), checked as it is read."""
    import csv

    path = Path(__file__).with_name("ood_set_packaged.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [Packaged(**row) for row in csv.DictReader(handle)]
    for line, row in enumerate(rows, start=2):
        if row.package not in ("skimage", "matplotlib") or row.kind not in KINDS or not all(vars(row).values()):
            raise EvaluationSetError(f"{path.name} line {line}: bad row {row}")
    return tuple(rows)


#: The real images of installed packages the set uses (whole and as a centre crop).
PACKAGED = _packaged()
#: Images of one scene: one group (the same side of the split).
_GROUPS = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}
PLAIN_GENERATED = ("noise_gaussian", "noise_uniform_grey", "noise_salt_pepper", "clouds", "gradient_linear",
                   "gradient_radial", "flat_black", "flat_white", "flat_grey", "flat_skin", "flat_red",
                   "flat_blue", "document", "stripes", "checker", "colour_bars")


@dataclass(frozen=True)
class EvaluationImage:
    name: str
    kind: str
    group: str  # images of one group stay on one side of the select/report split
    source: str
    licence: str
    pixels: np.ndarray  # (H, W, 3) uint8


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationSetError(f"the out-of-distribution evaluation set needs the package {package!r} "
                                 "(requirements.txt pins it); install the requirements")
    return Path(list(spec.submodule_search_locations)[0])


def _read(item: Packaged) -> np.ndarray:
    path = _package_dir(item.package) / item.path
    if not path.exists():
        raise EvaluationSetError(f"{path} is missing: the out-of-distribution evaluation set needs "
                                 f"{item.package}'s sample image {item.path!r}")
    if path.name == "s1045.ima.gz":  # raw 256 x 256 16-bit MRI slice (matplotlib's own reader)
        with gzip.open(path) as handle:
            values = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(np.float64)
        return np.repeat((values / max(values.max(), 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    with Image.open(path) as image:
        return np.asarray(as_rgb(image), dtype=np.uint8)


def _centre_crop(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    side = max(1, round(min(height, width) * CROP))
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[top:top + side, left:left + side]


def packaged_images() -> list[EvaluationImage]:
    """Every packaged image whole and as a centre crop."""
    out = []
    for item in PACKAGED:
        pixels = _read(item)
        group = _GROUPS.get(item.name, item.name)
        source = f"{item.what} ({_SKIMAGE if item.package == 'skimage' else _MPL}: {item.path})"
        out.append(EvaluationImage(item.name, item.kind, group, source, item.licence, pixels))
        out.append(EvaluationImage(f"{item.name}_crop", item.kind, group, source + ", centre crop", item.licence,
                                   np.ascontiguousarray(_centre_crop(pixels))))
    return out


# --- Generated images -------------------------------------------------------------------------

def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, ("ood-set", *parts))).encode()).digest()
    return np.random.default_rng([int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)])


def _field(rng: np.random.Generator, cells: int, width: int, height: int) -> np.ndarray:
    """A smooth random field in [0, 1] (a coarse grid upsampled bicubically)."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 255


#: Skin tones from very light to very dark (linear RGB in [0, 1]; Fitzpatrick I-VI, roughly).
_TONES = np.array([[.96, .83, .75], [.91, .74, .64], [.82, .62, .50], [.68, .48, .35], [.52, .35, .24],
                   [.34, .22, .16]], dtype=np.float32)
_CLOTHES = np.array([[.12, .16, .32], [.55, .08, .10], [.85, .85, .82], [.10, .10, .10], [.25, .42, .22],
                     [.62, .52, .38], [.40, .50, .70], [.80, .62, .10]], dtype=np.float32)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Clothing (woven fabric with folds), a wall or a bed sheet."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.choice(["fabric", "wall", "sheet"])
    if kind == "fabric":
        colour = _CLOTHES[rng.integers(len(_CLOTHES))] * rng.uniform(.8, 1.15)
        period = rng.uniform(2.5, 5)
        weave = .5 + .25 * np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
        folds = _field(rng, 5, width, height)
        shade = .7 + .45 * folds + .06 * (weave - .5)
    elif kind == "wall":
        colour = np.array(rng.uniform(.55, .95, 3), dtype=np.float32)
        shade = .8 + .25 * (xx / width) * rng.uniform(-1, 1) + .05 * _field(rng, 12, width, height)
    else:
        colour = np.array([.92, .93, .96] if rng.random() < .6 else [.62, .74, .86], dtype=np.float32)
        shade = .75 + .35 * _field(rng, 4, width, height)
    return np.clip(colour[None, None] * shade[..., None], 0, 1)


def skin_closeup(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A clinical (non-dermoscopic) close-up photograph of skin, RGB uint8 (height, width, 3).

    Skin of a random tone with mottling and redness, skin lines, pores, freckles and fine hair;
    directional light and a soft highlight instead of a dermoscope's even light and dark vignette;
    often a limb edge with clothing or a background; sometimes one to three small moles seen from
    a distance (a few pixels to 3 % of the width across)."""
    rng = _rng("skin", seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xx - width / 2) / (height / 2), (yy - height / 2) / (height / 2)
    position = rng.uniform(0, len(_TONES) - 1)
    low = int(position)
    tone = _TONES[low] * (1 - (position - low)) + _TONES[min(low + 1, len(_TONES) - 1)] * (position - low)
    skin = tone[None, None] * (.92 + .16 * _field(rng, 7, width, height))[..., None]
    redness = _field(rng, 4, width, height) * rng.uniform(0, .3)
    skin = skin * (1 - redness[..., None]) + np.array([.80, .38, .36], np.float32) * tone.mean() * 1.4 * redness[..., None]

    # skin lines: two families of faint, slightly wavy creases
    warp = _field(rng, 6, width, height) * 6
    for _ in range(2):
        angle, period = rng.uniform(0, np.pi), rng.uniform(7, 16)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period + warp
        crease = np.clip(1 - np.abs(np.sin(np.pi * phase)) * 6, 0, 1)
        skin = skin * (1 - rng.uniform(.03, .08) * crease)[..., None]

    image = Image.fromarray((np.clip(skin, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image, "RGBA")
    dark = tuple(int(c * 255 * .55) for c in tone)
    for _ in range(int(rng.integers(400, 1800))):  # pores
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(.5, 1.4)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(*dark, int(rng.uniform(40, 110))))
    for _ in range(int(rng.integers(0, 60)) if rng.random() < .5 else 0):  # freckles
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(*(int(c * 255 * .75) for c in tone), int(rng.uniform(60, 140))))
    hair = (rng.uniform(.15, .45, 3) * 255).astype(int) if rng.random() < .6 else (
        np.clip(tone * 255 * rng.uniform(.8, 1.15), 0, 255).astype(int))
    direction = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(0, 90))):  # fine hair: short, thin, mostly one direction
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle, length = rng.normal(direction, .35), rng.uniform(8, 35)
        bend = rng.normal(0, .3)
        points = [(x, y)]
        for step in range(1, 6):
            a = angle + bend * step / 5
            x, y = x + math.cos(a) * length / 5, y + math.sin(a) * length / 5
            points.append((x, y))
        draw.line(points, fill=(*hair.tolist(), int(rng.uniform(90, 200))), width=1)
    for _ in range(int(rng.integers(1, 4)) if rng.random() < .6 else 0):  # small moles, seen from afar
        x, y = rng.uniform(.15, .85) * width, rng.uniform(.15, .85) * height
        r = rng.uniform(2, .015 * width + 2)
        brown = np.clip(tone * rng.uniform(.25, .6), 0, 1)
        draw.ellipse([x - r, y - r * rng.uniform(.8, 1.2), x + r, y + r], fill=(*(brown * 255).astype(int).tolist(), 235))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(.6)), dtype=np.float32) / 255

    layout = rng.choice(["skin", "limb", "edge"], p=[.3, .4, .3])
    if layout != "skin":  # a limb or body edge: the rest of the frame is clothing or background
        wobble = .08 * (_field(rng, 3, width, height) - .5)
        angle = rng.uniform(0, np.pi)
        across = u * math.cos(angle) + v * math.sin(angle) + wobble
        if layout == "limb":
            half = rng.uniform(.45, .8)
            centre = rng.uniform(-.3, .3)
            inside = np.clip((half - np.abs(across - centre)) * 40, 0, 1)
            roundness = np.sqrt(np.clip(1 - ((across - centre) / half) ** 2, 0, 1))
            pixels = pixels * (.55 + .45 * roundness)[..., None]  # a cylinder lit from the front
        else:
            edge = rng.uniform(-.6, .6)
            inside = np.clip((across - edge) * 40, 0, 1)
            pixels = pixels * (.75 + .25 * np.clip((across - edge) * 2, 0, 1))[..., None]
        pixels = pixels * inside[..., None] + _background(rng, width, height) * (1 - inside[..., None])

    # uneven light: a directional gradient, a soft highlight, a colour cast; no vignette
    angle, amount = rng.uniform(0, 2 * np.pi), rng.uniform(.05, .35)
    light = rng.uniform(.8, 1.1) * (1 + amount * (u * math.cos(angle) + v * math.sin(angle)) / 1.5)
    hx, hy, spread = rng.uniform(-1.2, 1.2), rng.uniform(-.9, .9), rng.uniform(.2, .6)
    highlight = rng.uniform(0, .22) * np.exp(-((u - hx) ** 2 + (v - hy) ** 2) / (2 * spread ** 2))
    cast = np.clip(1 + rng.normal(0, .04, 3), .9, 1.1).astype(np.float32)
    pixels = pixels * light[..., None] * cast + highlight[..., None]
    pixels = pixels + rng.normal(0, rng.uniform(.006, .02), pixels.shape).astype(np.float32)
    out = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    blur = rng.uniform(0, 1.2)
    return np.asarray(out.filter(ImageFilter.GaussianBlur(blur)) if blur > .3 else out, dtype=np.uint8)


def plain_image(name: str, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """One of :data:`PLAIN_GENERATED`, RGB uint8 (height, width, 3)."""
    rng = _rng("plain", name)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if name == "noise_gaussian":
        pixels = rng.normal(.5, .2, (height, width, 3))
    elif name == "noise_uniform_grey":
        pixels = np.repeat(rng.random((height, width, 1)), 3, axis=2)
    elif name == "noise_salt_pepper":
        pixels = np.repeat((rng.random((height, width, 1)) < .5).astype(np.float32), 3, axis=2)
    elif name == "clouds":
        pixels = np.stack([_field(rng, 9, width, height) for _ in range(3)], axis=2)
    elif name == "gradient_linear":
        a, b = rng.random(3), rng.random(3)
        t = (xx / width)[..., None]
        pixels = a * (1 - t) + b * t
    elif name == "gradient_radial":  # dark towards the corners, like a vignette, with nothing inside
        r = np.hypot(xx - width / 2, yy - height / 2) / math.hypot(width / 2, height / 2)
        pixels = np.array([.85, .62, .52])[None, None] * np.clip(1.1 - r, 0, 1)[..., None]
    elif name.startswith("flat_"):
        colour = {"flat_black": (0, 0, 0), "flat_white": (1, 1, 1), "flat_grey": (.5, .5, .5),
                  "flat_skin": (.88, .70, .62), "flat_red": (.8, .1, .1), "flat_blue": (.15, .25, .75)}[name]
        pixels = np.broadcast_to(np.array(colour, np.float32), (height, width, 3))
    elif name == "document":
        page = Image.new("RGB", (width, height), (250, 250, 246))
        draw = ImageDraw.Draw(page)
        y = 40
        while y < height - 40:
            x = 50
            while x < width - 50:
                word = int(rng.integers(12, 60))
                draw.rectangle([x, y, min(x + word, width - 50), y + 7], fill=(30, 30, 30))
                x += word + 8
            y += int(rng.choice([16, 16, 16, 30]))
        return np.asarray(page, dtype=np.uint8)
    elif name == "stripes":
        pixels = np.repeat(((np.sin(xx / 9) > 0).astype(np.float32))[..., None], 3, axis=2) * .8 + .1
    elif name == "checker":
        pixels = np.repeat((((xx // 40) + (yy // 40)) % 2)[..., None], 3, axis=2)
    elif name == "colour_bars":
        bars = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1]], np.float32)
        pixels = bars[np.minimum((xx * len(bars) / width).astype(int), len(bars) - 1)] * .75
    else:
        raise ValueError(f"unknown plain image {name!r}")
    return (np.clip(np.asarray(pixels, np.float32), 0, 1) * 255).round().astype(np.uint8)


def generated_images() -> list[EvaluationImage]:
    out = [EvaluationImage(f"skin_closeup_{seed:02d}", SKIN, f"skin_closeup_{seed:02d}",
                           f"generated clinical close-up of skin (retrieval.ml.ood_set.skin_closeup, seed {seed})",
                           "generated here", skin_closeup(seed)) for seed in range(SKIN_IMAGES)]
    out += [EvaluationImage(name, PLAIN, name, f"generated plain input (retrieval.ml.ood_set.plain_image {name!r})",
                            "generated here", plain_image(name)) for name in PLAIN_GENERATED]
    return out


def evaluation_set() -> list[EvaluationImage]:
    """Every image of the set at its own size, in a fixed order (packaged first, then generated)."""
    return packaged_images() + generated_images()


@functools.lru_cache(maxsize=2)
def evaluation_set_resized(size: int) -> tuple[EvaluationImage, ...]:
    """The set resized to an encoder's square input exactly as a query is
    (:func:`retrieval.ml.features.resize_rgb`), made once per process and size (read-only arrays:
    at 128 px the whole set is ~6 MB; rendering it takes a few seconds)."""
    out = []
    for image in evaluation_set():
        pixels = resize_rgb(Image.fromarray(image.pixels), size)
        pixels.setflags(write=False)
        out.append(EvaluationImage(image.name, image.kind, image.group, image.source, image.licence, pixels))
    return tuple(out)


def set_digest(images: list[EvaluationImage]) -> str:
    """SHA-256 over the names, kinds and pixels: whether two calibrations saw the same set."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.name}|{image.kind}|{image.group}|{image.pixels.shape}".encode())
        digest.update(np.ascontiguousarray(image.pixels).tobytes())
    return digest.hexdigest()
