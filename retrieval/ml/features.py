"""Preprocessing and the SE-CBIR encoder: image -> saliency -> 4-channel features.

One code path for library images and queries: :class:`SECBIREncoder.encode` takes a batch of
preprocessed images and, for library images, their ground-truth classes (saliency explains
the true class); for queries none (saliency explains the predicted class).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from retrieval.ml.configs import ModelConfig
from retrieval.ml.network import RGB_CHANNELS, RGB_SALIENCY_CHANNELS, SECBIRNet
from retrieval.ml.saliency import INTEGRATED, VANILLA, integrated_gradients, vanilla_gradient

# The saliency channel is scaled like the image channels of a mean = std = 0.5 model, so the
# 4th input has the same range as the others whatever the backbone's normalisation.
SALIENCY_MEAN = 0.5
SALIENCY_STD = 0.5


def as_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB. 16-bit greyscale (modes I;16*, and I holding values above 255) keeps its
    high byte: Pillow's own conversion clips every value above 255 to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values.clip(0, 65535) >> 8
        image = Image.fromarray(values.clip(0, 255).astype(np.uint8))  # mode L
    return image.convert("RGB")


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3). Images are resized, not cropped: lesions may touch the border."""
    return np.asarray(as_rgb(image).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def normalise(images: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W) normalised with the config's mean/std."""
    batch = images[None] if images.ndim == 3 else images
    x = torch.from_numpy(np.array(batch, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(config.mean, dtype=torch.float32)[None, :, None, None]
    std = torch.tensor(config.std, dtype=torch.float32)[None, :, None, None]
    return (x - mean) / std


def with_saliency(x: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) image + (N, H, W) saliency in [0, 1] -> (N, 4, H, W) input of the 4-channel model."""
    return torch.cat([x, ((saliency - SALIENCY_MEAN) / SALIENCY_STD)[:, None].to(x.dtype)], dim=1)


@dataclass
class Encoded:
    features: np.ndarray  # (N, D) float32, unit norm: 4-channel (SE-CBIR) features
    saliency: np.ndarray  # (N, H, W) float32 in [0, 1]
    predicted: np.ndarray  # (N,) int64: the 3-channel model's predicted class
    probabilities: np.ndarray  # (N, C) float32: the 3-channel model's softmax
    probabilities4: np.ndarray  # (N, C) float32: the 4-channel model's softmax
    logits: np.ndarray  # (N, C) float32: the 3-channel model's logits (out-of-distribution scores)


class SECBIREncoder:
    """The trained pair of classifiers, ready to turn images into retrieval features."""

    def __init__(self, model3: SECBIRNet, model4: SECBIRNet, *, device: torch.device | str = "cpu",
                 method: str = VANILLA, ig_steps: int = 32, ig_baseline: str = "black") -> None:
        if model3.in_chans != RGB_CHANNELS or model4.in_chans != RGB_SALIENCY_CHANNELS:
            raise ValueError("SECBIREncoder needs a 3-channel and a 4-channel model")
        if method not in (VANILLA, INTEGRATED):
            raise ValueError(f"unknown saliency method {method!r}")
        self.device = torch.device(device)
        self.config = model3.config
        self.model3 = model3.to(self.device).eval()
        self.model4 = model4.to(self.device).eval()
        self.method, self.ig_steps, self.ig_baseline = method, ig_steps, ig_baseline

    def saliency(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Saliency maps (N, H, W) and the 3-channel model's logits."""
        if self.method == VANILLA:
            saliency, _, logits = vanilla_gradient(self.model3, x, target, return_logits=True)
            return saliency, logits
        saliency, _ = integrated_gradients(self.model3, x, target, steps=self.ig_steps, baseline=self.ig_baseline,
                                           mean=self.config.mean, std=self.config.std)
        with torch.no_grad():
            return saliency, self.model3(x)

    def encode(self, images: np.ndarray, labels: np.ndarray | None = None) -> Encoded:
        """Encode resized uint8 images (N, S, S, 3); ``labels`` are ground-truth class indices or None.

        Cost: one forward + backward pass of the 3-channel model and one forward pass of the
        4-channel model.
        """
        x = normalise(images, self.config).to(self.device)
        target = None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=self.device)
        saliency, logits = self.saliency(x, target)
        probabilities = logits.softmax(dim=1)
        with torch.no_grad():
            pooled = self.model4.pooled(with_saliency(x, saliency))
            features = torch.nn.functional.normalize(pooled.float(), dim=1)
            probabilities4 = self.model4.head(pooled).softmax(dim=1)
        return Encoded(
            features=features.cpu().numpy().astype(np.float32),
            saliency=saliency.cpu().numpy().astype(np.float32),
            predicted=probabilities.argmax(dim=1).cpu().numpy(),
            probabilities=probabilities.cpu().numpy().astype(np.float32),
            probabilities4=probabilities4.cpu().numpy().astype(np.float32),
            logits=logits.detach().cpu().numpy().astype(np.float32),
        )

    def baseline_features(self, images: np.ndarray) -> np.ndarray:
        """The 3-channel CBIR baseline: the same features from the RGB model."""
        x = normalise(images, self.config).to(self.device)
        with torch.no_grad():
            return self.model3.features(x).cpu().numpy().astype(np.float32)
