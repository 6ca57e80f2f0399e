"""Training data: the images of a split (:class:`Item`), their fingerprint, the datasets of the two
SE-CBIR classifiers, and the conversion of a batch into model input. Plain PyTorch, no Django.

Augmentation is seeded by (seed, epoch, index), so an epoch's images are the same on every run and
after a resume; the 3-channel classifier gets the thesis's strong augmentation, the 4-channel one
rotations and flips applied identically to image and saliency map (:mod:`retrieval.ml.augment`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from retrieval.ml import augment
from retrieval.ml.configs import ModelConfig
from retrieval.ml.devices import MEMORY_FORMAT
from retrieval.ml.features import as_rgb, normalise, resize_rgb, with_saliency


@dataclass(frozen=True)
class Item:
    """One training image: where it is, its class index, and a stable id for fingerprints."""

    path: str
    label: int
    key: str


def data_fingerprint(train: Sequence[Item], val: Sequence[Item]) -> str:
    """A digest of which images (by key) with which labels are in the training and validation sets."""
    digest = hashlib.sha256()
    for split, items in (("train", train), ("val", val)):
        for item in sorted(items, key=lambda i: i.key):
            digest.update(f"{split}:{item.key}:{item.label}\n".encode())
    return digest.hexdigest()


def load_resized(path: str, size: int) -> np.ndarray:
    """An image file as RGB uint8 (size, size, 3), resized as every model input is."""
    with Image.open(path) as image:
        return resize_rgb(image, size)


class RGBDataset(Dataset):
    """Images for the 3-channel classifier; augmentation seeded by (seed, epoch, index)."""

    def __init__(self, items: Sequence[Item], size: int, *, train: bool, seed: int) -> None:
        self.items, self.size, self.train, self.seed, self.epoch = list(items), size, train, seed, 0
        self.augment = augment.strong_rgb_augmentation(size) if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if self.train:
            with Image.open(item.path) as image:
                array = np.asarray(as_rgb(image), dtype=np.uint8)
            array = self.augment(array, np.random.default_rng([self.seed, self.epoch, index]))
        else:
            array = load_resized(item.path, self.size)
        return torch.from_numpy(np.array(array, dtype=np.uint8)), item.label


class SaliencyDataset(Dataset):
    """Image + cached saliency pairs for the 4-channel classifier; rotations/flips only."""

    def __init__(self, items: Sequence[Item], saliency: np.ndarray, size: int, *, train: bool, seed: int) -> None:
        if len(items) != len(saliency):
            raise ValueError("one saliency map per item is required")
        self.items, self.saliency, self.size, self.train, self.seed, self.epoch = list(items), saliency, size, train, seed, 0
        self.augment = augment.paired_geometric_augmentation(size) if train else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = load_resized(item.path, self.size)
        saliency = np.asarray(self.saliency[index], dtype=np.float32)
        if self.train:
            image, saliency = self.augment(image, saliency, np.random.default_rng([self.seed, self.epoch, index]))
        return (torch.from_numpy(np.array(image, dtype=np.uint8)), torch.from_numpy(np.array(saliency, dtype=np.float32))), item.label


def to_input(batch, config: ModelConfig, device: torch.device) -> torch.Tensor:
    """A batch of either dataset (uint8 images, or (images, saliency maps)) as the normalised model
    input on ``device``: (N, 3, S, S), or (N, 4, S, S) with the saliency channel."""
    if isinstance(batch, (list, tuple)):
        images, saliency = batch
        x = with_saliency(normalise(images.numpy(), config), saliency.float())
    else:
        x = normalise(batch.numpy(), config)
    return x.to(device, memory_format=MEMORY_FORMAT)
