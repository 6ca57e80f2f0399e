"""Lesion segmentation for the Dice similarity measure: train the learned model, score either method.

The masks come from :mod:`retrieval.ml.segmentation`; here are only the library's cases with
ground-truth masks (``Case.mask``, white = lesion), their splits, and the ModelVersion rows.
Images are read as the index build reads them (resized to ``SEGMENTATION_INPUT``), so the Dice
measured here is that of the masks the retrieval methods compare.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.core.files.storage import default_storage
from PIL import Image

from retrieval.classes import CODES
from retrieval.models import Case, ModelVersion

BATCH = 32


class NoMasks(ValueError):
    """The collection (or split) has no cases with ground-truth masks."""


def cases_with_masks(*, collection: str, split: str) -> list[Case]:
    """The split's cases that have a ground-truth mask, in id order; NoMasks when there are none."""
    cases = list(Case.objects.filter(collection=collection, split=split).exclude(mask="").order_by("id")
                 .only("id", "image", "mask", "dx", "sha256"))
    if not cases:
        in_collection = Case.objects.filter(collection=collection)
        if not in_collection.exists():
            raise NoMasks(f"no collection {collection!r} in the library")
        if not in_collection.exclude(mask="").exists():
            raise NoMasks(f"collection {collection!r} has no ground-truth lesion masks")
        if not in_collection.filter(split=split).exists():
            raise NoMasks(f"collection {collection!r} has no cases in the {split!r} split; run split_library first")
        raise NoMasks(f"collection {collection!r} has no cases with ground-truth masks in the {split!r} split")
    return cases


def _load_image(case: Case) -> np.ndarray:
    from retrieval.ml.data import load_resized
    from retrieval.ml.descriptors import SEGMENTATION_INPUT

    return load_resized(case.image.path, SEGMENTATION_INPUT)


def _load_mask(case: Case) -> np.ndarray:
    from retrieval.ml.segmentation import resize_mask

    with case.mask.open("rb") as handle, Image.open(handle) as image:
        return resize_mask(np.asarray(image.convert("L")))


def _fingerprint(splits: dict[str, list[Case]]) -> str:
    digest = hashlib.sha256()
    for split, cases in splits.items():
        for case in sorted(cases, key=lambda c: c.sha256):
            digest.update(f"{split}:{case.sha256}:{case.mask.name}\n".encode())
    return digest.hexdigest()


def segmentation_train(*, collection: str, epochs: int = 10, seed: int = 0, device: str = "cpu",
                       progress: Callable[[dict], None] | None = None) -> ModelVersion:
    """Train the small U-Net on the collection's train cases with masks (the val cases with masks
    pick the kept epoch) and register it as a ``segmentation`` ModelVersion (config unet-small)."""
    from retrieval.ml.checkpoints import checkpoint_digest
    from retrieval.ml.devices import resolve_device
    from retrieval.ml.segmentation import CONFIG_NAME, segmentation_input, train_segmentation
    from retrieval.services.library import store_content_file

    splits = {split: cases_with_masks(collection=collection, split=split) for split in ("train", "val")}
    pairs = {split: [(segmentation_input(_load_image(case)), _load_mask(case)) for case in cases]
             for split, cases in splits.items()}
    with tempfile.TemporaryDirectory(prefix="segmentation-") as work:
        path = Path(work) / "segmentation.pt"
        metrics = train_segmentation(pairs["train"], pairs["val"], epochs=epochs, seed=seed,
                                     device=resolve_device(device), out_path=path, progress=progress)
        digest = checkpoint_digest(path)
        name, wrote = store_content_file("models", digest, "pt", path)
    try:
        return ModelVersion.objects.create(
            config=CONFIG_NAME, stage=ModelVersion.Stage.SEGMENTATION, parent=None, collection=collection,
            checkpoint=name, checkpoint_sha256=digest, data_fingerprint=_fingerprint(splits), metrics=metrics,
            weights_source="trained from scratch on the collection's ground-truth masks (no pretrained weights)",
            seed=seed, epochs=epochs,
        )
    except Exception:
        if wrote:  # no row will point at it
            default_storage.delete(name)
        raise


def segmentation_evaluate(*, collection: str, segmenter, split: str = "test") -> dict:
    """Dice of ``segmenter``'s masks against the ground truth of the split's cases with masks:
    mean, median, n, the cases where the method found no lesion, and the mean per class."""
    from retrieval.ml.segmentation import dice

    cases = cases_with_masks(collection=collection, split=split)
    scores, found = [], []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start:start + BATCH]
        masks, seen = segmenter.masks_and_found(np.stack([_load_image(case) for case in chunk]))
        scores.extend(dice(mask, _load_mask(case)) for mask, case in zip(masks, chunk))
        found.extend(bool(s) for s in seen)
    scores_array = np.array(scores)
    classes = np.array([case.dx for case in cases])
    per_class = {code: {"n": int((classes == code).sum()), "mean": float(scores_array[classes == code].mean())}
                 for code in CODES if (classes == code).any()}
    return {"segmenter": segmenter.name, "collection": collection, "split": split, "n": len(cases),
            "mean": float(scores_array.mean()), "median": float(np.median(scores_array)),
            "not_found": int(len(found) - sum(found)), "per_class": per_class}
