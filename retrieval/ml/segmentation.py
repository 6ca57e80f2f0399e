"""Lesion masks for the Dice coefficient (paper 000, sections 2.4 and 3.4), without downloadable weights.

The paper segments with a U-Net trained on the ISIC segmentation data; its weights are not
available here, so the product has two methods behind one interface (:class:`Segmenter`):

**classical** (the default; no training, no weights) -- :func:`classical_mask`:

1. resize to ``WORK_SIZE`` x ``WORK_SIZE`` (128; masks come out at ``MASK_SIZE`` = 64);
2. hair removal: a greyscale closing per channel with a small disk (a DullRazor-like filter:
   dark strands thinner than the disk disappear, the lesion body stays);
3. field of view: very dark regions connected to the image border (the dermoscope's black
   vignette, dark corners), a little widened, are left out of everything below;
4. skin colour: a plane in log colour (multiplicative uneven lighting) fitted robustly
   (least squares, residuals over median + 2.5 MAD dropped, 3 rounds) to a ring of pixels
   along the border of the field of view, so a lesion that touches the border does not count;
5. lesion contrast: the colour distance of each pixel from the local skin colour plus how much
   darker it is, lightly smoothed (Gaussian, sigma 1);
6. Otsu threshold (:func:`otsu_threshold`, NumPy) over the field of view gives the lesion core;
   pixels above a lower threshold (three quarters of the way from the skin level to Otsu's)
   connected to the core are added (hysteresis: the pale periphery of a dark lesion);
7. morphological opening and closing, hole filling;
8. the connected component that best looks like the lesion: the largest, weighted by how near
   its centroid is to the image centre;
9. ``found`` is False -- and the mask empty -- when nothing stands out: a field of view too small,
   a contrast range too small, a core not clearly apart from the skin, or no component left.
   Nothing else is substituted; the caller sees the flag (Dice treats two empty masks as identical).

**learned** -- :class:`SmallUNet`, a small U-Net (~0.5 M parameters, 128 px in, 64 x 64 logits out)
trained from scratch on the library's own (image, ground-truth mask) pairs with Dice + BCE loss
(:func:`train_segmentation`, deterministic on CPU for a seed), saved with its configuration and
metrics (:func:`load_segmentation`, :func:`predict_masks`).

Pure NumPy / SciPy / PyTorch: no Django here.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from retrieval.ml.seeding import seed_everything

logger = logging.getLogger(__name__)

MASK_SIZE = 64
WORK_SIZE = 128  # images are segmented at this size, then the mask is resized

# Classical method parameters (tuned on the synthetic library's validation split and 250 training
# images; see docs/retrieval.md, "Lesion segmentation (for Dice)").
HAIR_DISK_RADIUS = 2  # greyscale closing removes dark strands thinner than about 2 * radius + 1 px
VIGNETTE_LEVEL = 0.15  # mean RGB in [0, 1] below which a border-connected region is outside the field
VIGNETTE_MARGIN = 3  # px of the field's edge (the vignette's soft fall-off) also left out
SKIN_RING = 8  # px: width of the ring along the field's border where the skin colour is measured
SMOOTHING_SIGMA = 1.0
HYSTERESIS = 0.75  # the lower threshold: this far from the skin level towards Otsu's threshold
MIN_CONTRAST = 0.05  # below this contrast range there is nothing to segment
MIN_SEPARATION = 0.015  # Otsu's threshold must be this far above the skin level
MIN_FIELD = 0.1  # fraction of the image that must be inside the field of view


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu 1979).

    Values above the returned threshold are the brighter class."""
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


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen-Dice 2|A∩B| / (|A| + |B|) of two boolean masks; two empty masks give 1."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} and {b.shape}")
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx * xx + yy * yy <= radius * radius


def resize_mask(mask: np.ndarray, size: int = MASK_SIZE) -> np.ndarray:
    """A mask of any size (bool, or uint8 with white = lesion) -> bool (size, size), as the
    images are resized (squashed, not cropped)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8) * 255
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape == (size, size):
        return mask >= 128
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.BILINEAR)) >= 128


def _resize_rgb(image: np.ndarray, size: int, resample=Image.BILINEAR) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] == (size, size) and image.ndim == 3 and image.shape[2] == 3:
        return image
    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), resample), dtype=np.uint8)


def remove_hair(rgb: np.ndarray) -> np.ndarray:
    """Greyscale closing per channel: thin dark strands (hair, ruler ticks) take the colour around them."""
    footprint = _disk(HAIR_DISK_RADIUS)
    return np.stack([ndimage.grey_closing(rgb[..., c], footprint=footprint) for c in range(3)], axis=2)


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: inside the dermoscope's field (not the black vignette or dark corners).

    Very dark regions (mean RGB < VIGNETTE_LEVEL) that touch the image border and survive an
    opening (so hair and thin lines do not count) are outside, with a VIGNETTE_MARGIN px margin."""
    dark = ndimage.binary_opening(rgb.mean(axis=2) < VIGNETTE_LEVEL, _disk(2))
    labels, _ = ndimage.label(dark)
    touching = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, touching[touching > 0])
    if outside.any():
        outside = ndimage.binary_dilation(outside, _disk(VIGNETTE_MARGIN))
    return ~outside


def skin_ring(fov: np.ndarray) -> np.ndarray:
    """Pixels of the field of view within SKIN_RING px of its border (or of the image's)."""
    distance = ndimage.distance_transform_edt(np.pad(fov, 1))[1:-1, 1:-1]
    return fov & (distance <= SKIN_RING)


def skin_surface(rgb: np.ndarray, ring: np.ndarray, rounds: int = 3) -> np.ndarray:
    """(H, W, 3) skin colour under uneven lighting: a plane in log colour fitted to the ``ring``
    pixels, robustly (each round drops residuals over median + 2.5 MAD: lesion, hair, bubbles)."""
    h, w, _ = rgb.shape
    yy, xx = np.mgrid[:h, :w]
    design = np.stack([np.ones(h * w), (xx.ravel() - w / 2) / w, (yy.ravel() - h / 2) / h], axis=1)
    logs = np.log(np.clip(rgb.reshape(-1, 3), 1 / 255, None))
    use = ring.ravel().copy()
    coef = np.zeros((3, 3))
    for _ in range(rounds):
        if use.sum() < 3:
            break
        coef, *_ = np.linalg.lstsq(design[use], logs[use], rcond=None)
        residual = np.linalg.norm(logs - design @ coef, axis=1)
        kept = residual[use]
        centre = np.median(kept)
        use &= residual <= centre + 2.5 * 1.4826 * np.median(np.abs(kept - centre))
    return np.exp(design @ coef).reshape(h, w, 3)


def lesion_contrast(rgb: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(H, W): colour distance from the local skin colour plus how much darker than it (RGB in [0, 1])."""
    distance = np.linalg.norm(rgb - skin, axis=2)
    darkness = np.clip(skin.mean(axis=2) - rgb.mean(axis=2), 0, None)
    return distance + darkness


def _empty() -> tuple[np.ndarray, bool]:
    return np.zeros((MASK_SIZE, MASK_SIZE), bool), False


def classical_mask(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(mask bool (MASK_SIZE, MASK_SIZE), found) of an RGB uint8 image (H, W, 3) of any size.

    ``found`` is False when no lesion-like region stands out; the mask is then all False (no
    substitute shape). See the module docstring for the steps."""
    rgb = _resize_rgb(image, WORK_SIZE).astype(np.float64) / 255.0
    rgb = remove_hair(rgb)
    fov = field_of_view(rgb)
    if fov.mean() < MIN_FIELD:
        return _empty()
    ring = skin_ring(fov)
    contrast = ndimage.gaussian_filter(lesion_contrast(rgb, skin_surface(rgb, ring)), sigma=SMOOTHING_SIGMA)
    values = contrast[fov]
    if float(values.max() - values.min()) < MIN_CONTRAST:
        return _empty()
    threshold = otsu_threshold(values)
    skin_level = float(np.median(contrast[ring]))
    if threshold - skin_level < MIN_SEPARATION:
        return _empty()
    core = (contrast > threshold) & fov
    weak, _ = ndimage.label((contrast > skin_level + HYSTERESIS * (threshold - skin_level)) & fov)
    grown = np.unique(weak[core])
    foreground = np.isin(weak, grown[grown > 0])
    structure = np.ones((3, 3), bool)
    foreground = ndimage.binary_opening(foreground, structure, iterations=2)
    foreground = ndimage.binary_closing(foreground, structure, iterations=2)
    foreground = ndimage.binary_fill_holes(foreground)
    labels, count = ndimage.label(foreground)
    if count == 0:
        return _empty()
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(foreground, labels, index)
    centroids = np.array(ndimage.center_of_mass(foreground, labels, index)).reshape(-1, 2)
    centre = (WORK_SIZE - 1) / 2
    offsets = np.hypot(centroids[:, 0] - centre, centroids[:, 1] - centre) / WORK_SIZE
    best = int(index[np.argmax(areas * (1.0 - offsets))])
    mask = resize_mask((labels == best).astype(np.uint8) * 255)
    if not mask.any():
        return _empty()
    return mask, True


# --- The learned option ---------------------------------------------------------------------

CONFIG_NAME = "unet-small"
INPUT_SIZE = 2 * MASK_SIZE
CHECKPOINT_KIND = "lesion-segmentation"
CHECKPOINT_FORMAT = 1


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """A small U-Net: (N, 3, INPUT_SIZE, INPUT_SIZE) in [0, 1] -> (N, 1, MASK_SIZE, MASK_SIZE) logits.

    A strided stem halves the input to the mask size; three encoder levels (``width`` x 1, 2, 4
    channels, max-pooling between), a bottleneck (x 8), and a decoder with skip connections back
    to the mask size."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.width = width
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True))
        self.enc1, self.enc2, self.enc3 = _block(w, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.bottleneck = _block(4 * w, 8 * w)
        self.up3, self.dec3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, stride=2), _block(8 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        e1 = self.enc1(self.stem(x))
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([self.up3(b), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def segmentation_input(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image of any size -> (INPUT_SIZE, INPUT_SIZE, 3) uint8, as the model sees it."""
    return _resize_rgb(image, INPUT_SIZE, Image.BICUBIC)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus (1 - soft Dice), the soft Dice averaged over images."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    soft = (2 * (probabilities * target).sum(1) + 1) / (probabilities.sum(1) + target.sum(1) + 1)
    return bce + (1 - soft).mean()


def _prepare(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([segmentation_input(image) for image, _ in pairs])
    masks = np.stack([resize_mask(mask) for _, mask in pairs])
    return images, masks


def pairs_fingerprint(images: np.ndarray, masks: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.packbits(masks).tobytes())
    return digest.hexdigest()


def _augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """The same random flips and quarter turns for each image and its mask (lesions have no up)."""
    out_i, out_m = [], []
    for image, mask in zip(images, masks):
        k = int(torch.randint(4, (1,), generator=generator))
        flip = bool(torch.randint(2, (1,), generator=generator))
        image, mask = torch.rot90(image, k, (1, 2)), torch.rot90(mask, k, (1, 2))
        if flip:
            image, mask = image.flip(2), mask.flip(2)
        out_i.append(image)
        out_m.append(mask)
    return torch.stack(out_i), torch.stack(out_m)


@torch.no_grad()
def _predict_tensor(model: SmallUNet, images: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = _to_tensor(images[start:start + batch_size]).to(device)
        out.append((model(x)[:, 0] > 0).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, MASK_SIZE, MASK_SIZE), bool)


def _dice_scores(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([dice(p, t) for p, t in zip(predicted, truth)])


def train_segmentation(pairs_train: Sequence[tuple[np.ndarray, np.ndarray]],
                       pairs_val: Sequence[tuple[np.ndarray, np.ndarray]], *, epochs: int, seed: int = 0,
                       device: str | torch.device = "cpu", out_path: str | Path, batch_size: int = 16,
                       lr: float = 3e-3, width: int = 12, progress=None) -> dict:
    """Train a :class:`SmallUNet` on (image uint8 (H, W, 3), mask) pairs; keep the epoch with the
    best validation mean Dice; save it (weights, configuration, metrics, history) to ``out_path``.

    Images are resized to INPUT_SIZE, masks to MASK_SIZE. Adam with a cosine learning-rate decay,
    Dice + BCE loss, random flips and quarter turns. Deterministic on CPU for a seed (same data,
    same thread count). Returns the kept epoch's metrics with the per-epoch history.
    ``progress``: an optional callable taking each epoch's metrics dict."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not pairs_train or not pairs_val:
        raise ValueError("training needs non-empty training and validation pairs")
    device = torch.device(device)
    generator = seed_everything(seed)
    train_images, train_masks = _prepare(pairs_train)
    val_images, val_masks = _prepare(pairs_val)
    fingerprint = pairs_fingerprint(np.concatenate([train_images, val_images]),
                                    np.concatenate([train_masks, val_masks]))
    model = SmallUNet(width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(train_images) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    x_all = _to_tensor(train_images)
    y_all = torch.from_numpy(train_masks[:, None].astype(np.float32))
    history, best, best_state = [], None, None
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(train_images), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            if len(rows) < 2 and count:  # BatchNorm needs two samples; drop a last single one
                continue
            x, y = _augment(x_all[rows], y_all[rows], generator)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = dice_bce_loss(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        trained = time.perf_counter()
        scores = _dice_scores(_predict_tensor(model, val_images, device), val_masks)
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1), "val_dice_mean": float(scores.mean()),
                   "val_dice_median": float(np.median(scores)), "n_val": len(scores),
                   "train_seconds": round(trained - started, 4), "val_seconds": round(time.perf_counter() - trained, 4)}
        history.append(metrics)
        logger.info("segmentation epoch %d: %s", epoch + 1, metrics)
        if progress:
            progress(metrics)
        if best is None or metrics["val_dice_mean"] > best["val_dice_mean"]:
            best = metrics
            best_state = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
    result = {**best, "n_train": len(train_images), "history": history}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": CHECKPOINT_FORMAT, "kind": CHECKPOINT_KIND, "config": CONFIG_NAME,
        "arch": {"width": width, "input_size": INPUT_SIZE, "mask_size": MASK_SIZE},
        "weights": best_state, "metrics": result, "seed": seed, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "data_fingerprint": fingerprint,
    }, out_path)
    return result


def load_segmentation(path: str | Path, *, device: str | torch.device = "cpu") -> SmallUNet:
    """A trained :class:`SmallUNet` from a checkpoint of :func:`train_segmentation` (eval mode)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a lesion segmentation checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unknown segmentation checkpoint format {state.get('format')!r}")
    arch = state["arch"]
    if (arch["input_size"], arch["mask_size"]) != (INPUT_SIZE, MASK_SIZE):
        raise ValueError(f"{path} was trained for {arch['input_size']} px input and {arch['mask_size']} px masks")
    model = SmallUNet(arch["width"])
    model.load_state_dict(state["weights"])
    model.metrics = state.get("metrics", {})
    return model.to(device).eval()


def predict_masks(model: SmallUNet, images: np.ndarray | Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
    """RGB uint8 images (N, H, W, 3), any size -> bool (N, MASK_SIZE, MASK_SIZE) (logit > 0)."""
    prepared = np.stack([segmentation_input(image) for image in images]) if len(images) else \
        np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    device = next(model.parameters()).device
    return _predict_tensor(model, prepared, device, batch_size)


@dataclass
class Segmenter:
    """Lesion masks of a batch of images, by either method; ``name`` says which made them
    ("classical", or "learned #<ModelVersion id>")."""

    name: str = "classical"
    model: SmallUNet | None = field(default=None, repr=False)

    @classmethod
    def classical(cls) -> Segmenter:
        return cls("classical")

    @classmethod
    def learned(cls, path: str | Path, *, version_id: int | None = None,
                device: str | torch.device = "cpu") -> Segmenter:
        name = f"learned #{version_id}" if version_id is not None else "learned"
        return cls(name, load_segmentation(path, device=device))

    @property
    def is_learned(self) -> bool:
        return self.model is not None

    def masks_and_found(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(masks bool (N, MASK_SIZE, MASK_SIZE), found bool (N,)): found is False where the
        method saw no lesion (the classical method's flag; an empty learned mask)."""
        if self.model is not None:
            masks = predict_masks(self.model, images)
            return masks, masks.reshape(len(masks), -1).any(axis=1)
        results = [classical_mask(image) for image in images]
        if not results:
            return np.zeros((0, MASK_SIZE, MASK_SIZE), bool), np.zeros(0, bool)
        return np.stack([mask for mask, _ in results]), np.array([found for _, found in results])

    def masks(self, images) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, MASK_SIZE, MASK_SIZE) bool."""
        return self.masks_and_found(images)[0]
