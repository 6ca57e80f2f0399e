"""Per-image descriptors of every retrieval method, computed the same way for library and queries.

One :class:`DescriptorEncoder` holds the networks of an index: the SE-CBIR pair (3-channel and
4-channel classifiers), the style extractor on the 3-channel model with the index's projection,
the lesion segmenter, and the metric-learning embeddings the index was built with. ``encode``
computes only the descriptors asked for (see :mod:`retrieval.ml.methods`), so a query pays for
the method it uses. The same object gives the feature maps behind the evidence maps (paper 004):
the last feature maps before global average pooling of the network a method compares with.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from retrieval import methods as m
from retrieval.ml.features import Encoded, SECBIREncoder, normalise, resize_rgb, with_saliency
from retrieval.ml.saliency import VANILLA

SEGMENTATION_INPUT = 256  # images are resized to this square before segmentation


@dataclass
class EncodedImages:
    descriptors: dict[str, np.ndarray] = field(default_factory=dict)  # descriptor -> (N, ...) rows
    secbir: Encoded | None = None  # saliency, predicted class, probabilities (when secbir was asked for)


class _Resized:
    """The images resized to each square size asked for, once per size."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images
        self.sizes: dict[int, np.ndarray] = {}

    def at(self, size: int) -> np.ndarray:
        if size not in self.sizes:
            self.sizes[size] = np.stack([resize_rgb_array(image, size) for image in self.images])
        return self.sizes[size]


class DescriptorEncoder:
    def __init__(self, encoder: SECBIREncoder, *, style_extractor=None, style_projection=None, segmenter=None,
                 embeddings: dict | None = None) -> None:
        self.encoder = encoder
        self.style_extractor = style_extractor
        self.style_projection = style_projection
        self.segmenter = segmenter
        self.embeddings = dict(embeddings or {})  # "contrastive"/"triplet" -> embedding.EmbeddingNet
        for name, net in self.embeddings.items():
            if name not in (m.CONTRASTIVE, m.TRIPLET):
                raise ValueError(f"unknown embedding {name!r}")
            net.to(encoder.device).eval()

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def size(self) -> int:
        return self.encoder.config.input_size

    def available(self) -> set[str]:
        found = {m.SECBIR, m.CNN3}
        if self.style_extractor is not None and self.style_projection is not None:
            found.add(m.STYLE)
        if self.segmenter is not None:
            found.add(m.MASK)
        return found | set(self.embeddings)

    def _input(self, images: list[np.ndarray], size: int, config) -> torch.Tensor:
        return normalise(_Resized(images).at(size), config).to(self.device)

    def raw_style(self, images: list[np.ndarray]) -> np.ndarray:
        """Unprojected style vectors (N, total) of the 3-channel model (to fit a projection)."""
        if self.style_extractor is None:
            raise ValueError("this encoder has no style extractor")
        return self.style_extractor.extract(self._input(images, self.size, self.encoder.config))

    def encode(self, images: list[np.ndarray], labels: np.ndarray | None = None, *,
               needs: set[str] | tuple[str, ...] = (m.SECBIR,), packed_masks: bool = True) -> EncodedImages:
        """Descriptors of ``images`` (RGB uint8 arrays of any size). ``labels`` (class indices) are
        for library images only: their saliency explains the true class; queries' the predicted one.
        Masks come bit-packed (index rows) unless ``packed_masks`` is False (a query's bool map).

        Each image is resized once per input size. With vanilla-gradient saliency, the 3-channel
        features and the style vector come from the saliency pass's own forward pass of the
        3-channel model (hooks on its head's input and on the style stages), not from passes of
        their own: the same network on the same input in eval mode gives the same values."""
        needs = set(needs)
        unknown = needs - self.available()
        if unknown:
            raise ValueError(f"this index has no {', '.join(sorted(unknown))} descriptors")
        out = EncodedImages()
        config = self.encoder.config
        resized = _Resized(images)
        inputs: dict[tuple, torch.Tensor] = {}

        def x_for(net_config) -> torch.Tensor:
            key = (net_config.input_size, tuple(net_config.mean), tuple(net_config.std))
            if key not in inputs:
                inputs[key] = normalise(resized.at(net_config.input_size), net_config).to(self.device)
            return inputs[key]

        shared = m.SECBIR in needs and self.encoder.method == VANILLA
        if m.SECBIR in needs:
            with self._observing_model3(needs if shared else set()) as seen:
                out.secbir = self.encoder.encode(resized.at(self.size), labels)
            out.descriptors[m.SECBIR] = out.secbir.features
        if m.CNN3 in needs:
            if shared:
                out.descriptors[m.CNN3] = seen["pooled"].detach().float().cpu().numpy()
            else:
                with torch.no_grad():
                    out.descriptors[m.CNN3] = self.encoder.model3.pooled(x_for(config)).float().cpu().numpy()
        if m.STYLE in needs:
            raw = self.style_extractor.vectors(seen["stages"]) if shared else \
                self.style_extractor.extract(x_for(config))
            out.descriptors[m.STYLE] = self.style_projection.transform(raw).astype(np.float32)
        if m.MASK in needs:
            from retrieval.ml.measures import pack_masks

            masks = self.segmenter.masks(resized.at(SEGMENTATION_INPUT))
            out.descriptors[m.MASK] = pack_masks(masks) if packed_masks else masks
        for name, net in self.embeddings.items():
            if name in needs:
                with torch.no_grad():
                    out.descriptors[name] = net.embed(x_for(net.config)).float().cpu().numpy()
        return out

    @contextmanager
    def _observing_model3(self, needs: set[str]):
        """For the duration: the 3-channel model's pooled features (its head's input) and the style
        stages' outputs of the forward passes inside, as the needs ask (nothing for an empty set)."""
        seen: dict = {}
        hooks = []
        if m.CNN3 in needs:
            hooks.append(self.encoder.model3.head.register_forward_pre_hook(
                lambda _module, args: seen.__setitem__("pooled", args[0])))
        with ExitStack() as stack:
            if m.STYLE in needs:
                seen["stages"] = stack.enter_context(self.style_extractor.capture())
            try:
                yield seen
            finally:
                for hook in hooks:
                    hook.remove()

    # --- Evidence maps (paper 004) ---------------------------------------------------------

    def feature_maps(self, method: str, images: list[np.ndarray], saliency: np.ndarray | None = None) -> np.ndarray:
        """The last feature maps (N, Z, h, w) of the network ``method`` compares images with.

        SE-CBIR: the 4-channel model on image + saliency (``saliency``: (N, S, S) in [0, 1]);
        the 3-channel family (cnn3, Euclidean, cosine, style, I1): the 3-channel model; the
        embeddings: their own network.
        """
        name = m.get_method(method).name
        config = self.encoder.config
        with torch.no_grad():
            if name in self.embeddings:
                net = self.embeddings[name]
                return net.feature_maps(self._input(images, net.config.input_size, net.config)).float().cpu().numpy()
            x = self._input(images, self.size, config)
            if name == m.SECBIR:
                if saliency is None:
                    raise ValueError("SE-CBIR feature maps need the images' saliency maps")
                sal = torch.as_tensor(np.asarray(saliency, dtype=np.float32), device=self.device)
                return self.encoder.model4.backbone.forward_features(with_saliency(x, sal)).float().cpu().numpy()
            if name in (m.CONTRASTIVE, m.TRIPLET):
                raise ValueError(f"this index has no {name} embedding")
            return self.encoder.model3.backbone.forward_features(x).float().cpu().numpy()


def resize_rgb_array(image: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (size, size, 3), as :func:`features.resize_rgb` does for PIL images."""
    from PIL import Image

    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] == (size, size):
        return image
    return resize_rgb(Image.fromarray(image), size)
