"""The similarity measures of papers 000/001 (Mehta) and the evidence maps of paper 004 (Codella).

Pure NumPy/PyTorch. Scores are "higher is more similar"; the ones that are normalised over the
library (Euclidean ``1 - d/d_max``, style ``1 - L/L_max``) take the maximum over the library rows
given, for each query, as in the paper.
"""
from __future__ import annotations

import numpy as np
import torch

from retrieval.ml.search import _top_k_rows

I1_COMPONENTS = {
    "i1_ed": ("euclidean", "dice"),
    "i1_cd": ("cosine", "dice"),
    "i1_ecd": ("euclidean", "cosine", "dice"),
    "i1_se": ("style", "euclidean"),
    "i1_sc": ("style", "cosine"),
    "i1_sd": ("style", "dice"),
}


def _distance_scores(distances: np.ndarray) -> np.ndarray:
    """1 - d/d_max (all ones when every distance is zero)."""
    d_max = float(distances.max()) if distances.size else 0.0
    if d_max <= 0:
        return np.ones_like(distances)
    return 1.0 - distances / d_max


def _squared_distances(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    query = np.asarray(query, dtype=np.float64).ravel()
    library = np.asarray(library, dtype=np.float32)
    if library.ndim != 2 or library.shape[1] != query.shape[0]:
        raise ValueError(f"shapes do not match: query {query.shape}, library {library.shape}")
    # |l - q|^2 = |l|^2 - 2 l.q + |q|^2, in float64 for the final sum (rounding near zero clipped)
    squared = (np.einsum("ij,ij->i", library, library, dtype=np.float64) - 2.0 * (library @ query.astype(np.float32))
               + float(query @ query))
    return np.maximum(squared, 0.0)


def euclidean_scores(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Euclidean score ``1 - d/d_max`` of every library row (paper 000, eq. 2)."""
    return _distance_scores(np.sqrt(_squared_distances(query, library)))


def cosine_similarities(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Raw cosine similarities in [-1, 1] (float32 products, float64 norms: no library copy)."""
    query = np.asarray(query, dtype=np.float32).ravel()
    library = np.asarray(library, dtype=np.float32)
    q_norm = float(np.linalg.norm(query.astype(np.float64)))
    l_norm = np.sqrt(np.einsum("ij,ij->i", library, library, dtype=np.float64))
    if q_norm == 0 or np.any(l_norm == 0):
        raise ValueError("a feature vector is all zeros: the cosine similarity is undefined")
    return np.clip((library @ query).astype(np.float64) / (l_norm * q_norm), -1.0, 1.0)


def cosine_scores(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Cosine similarity rescaled to [0, 1]: ``(c + 1) / 2`` (paper 000, eq. 4)."""
    return (cosine_similarities(query, library) + 1.0) / 2.0


# --- Style (Gram matrices) ---------------------------------------------------------------

def gram_vector(feature_maps: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) feature maps -> (N, C(C+1)/2) weighted Gram vectors.

    G = F F^T / (H W) (the style-transfer Gram matrix, normalised by the number of positions so
    that stages of different resolutions are comparable). Its upper triangle is kept with the
    off-diagonal entries multiplied by sqrt(2), so that the squared Euclidean distance of two
    vectors equals the squared Frobenius distance of the two (weighted) Gram matrices.
    """
    n, c, h, w = feature_maps.shape
    flat = feature_maps.reshape(n, c, h * w).float()
    gram = flat @ flat.transpose(1, 2) / float(h * w)
    rows, cols = torch.triu_indices(c, c, device=gram.device)
    scale = torch.where(rows == cols, torch.tensor(1.0, device=gram.device), torch.tensor(2.0 ** 0.5, device=gram.device))
    return gram[:, rows, cols] * scale * weight


def style_loss(grams_x: list[np.ndarray], grams_y: list[np.ndarray], weights: list[float]) -> float:
    """Paper 000, eq. 6: sum over layers of the squared differences of the weighted Gram matrices."""
    return float(sum(((w * np.asarray(gx, np.float64) - w * np.asarray(gy, np.float64)) ** 2).sum()
                     for gx, gy, w in zip(grams_x, grams_y, weights)))


class StyleExtractor:
    """Weighted Gram vectors of a network's stage outputs (timm EfficientNet: ``backbone.blocks``).

    Default weights ``beta_l = 1 / C_l``: a Gram matrix has C_l^2 entries, so without it the
    widest stages (C = 320 for Lite0) would dominate the loss by their size alone.
    """

    def __init__(self, model, stages: list[int] | None = None, weights: list[float] | None = None) -> None:
        self.model = model
        self.backbone = getattr(model, "backbone", model)
        blocks = list(self.backbone.blocks)
        self.stages = list(range(len(blocks))) if stages is None else list(stages)
        self.channels = [self._out_channels(blocks[i]) for i in self.stages]
        self.weights = [1.0 / c for c in self.channels] if weights is None else list(weights)
        if len(self.weights) != len(self.stages):
            raise ValueError("one weight per stage")

    @staticmethod
    def _out_channels(block) -> int:
        convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
        if not convs:
            raise ValueError("a stage without convolutions")
        return convs[-1].out_channels

    @property
    def dimension(self) -> int:
        return sum(c * (c + 1) // 2 for c in self.channels)

    def describe(self) -> list[dict]:
        return [{"stage": s, "channels": c, "weight": w} for s, c, w in zip(self.stages, self.channels, self.weights)]

    def extract(self, x: torch.Tensor) -> np.ndarray:
        """(N, dimension) float32 concatenated weighted Gram vectors of the chosen stages."""
        outputs: dict[int, torch.Tensor] = {}
        blocks = list(self.backbone.blocks)
        hooks = [blocks[i].register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
                 for i in self.stages]
        try:
            with torch.no_grad():
                self.backbone.forward_features(x)
        finally:
            for hook in hooks:
                hook.remove()
        parts = [gram_vector(outputs[i], w) for i, w in zip(self.stages, self.weights)]
        return torch.cat(parts, dim=1).cpu().numpy().astype(np.float32)


class StyleProjection:
    """Principal directions of a library's style vectors: squared distances between projected
    vectors approximate the style loss (exactly with every component kept)."""

    def __init__(self, mean: np.ndarray, basis: np.ndarray, explained: float) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.basis = np.asarray(basis, dtype=np.float32)  # (P, D) orthonormal rows
        self.explained = float(explained)

    @property
    def components(self) -> int:
        return int(self.basis.shape[0])

    @classmethod
    def fit(cls, vectors: np.ndarray, components: int = 256) -> StyleProjection:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError("a style projection needs at least two vectors")
        mean = vectors.mean(axis=0)
        centred = vectors - mean
        # SVD of the (n x D) sample: n is small (<= a few hundred), D large
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        keep = max(1, min(components, int((singular > singular[0] * 1e-7).sum()) if singular[0] > 0 else 1))
        energy = float((singular ** 2).sum())
        explained = float((singular[:keep] ** 2).sum() / energy) if energy > 0 else 1.0
        return cls(mean, vt[:keep], explained)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        return ((vectors - self.mean) @ self.basis.T).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "basis": self.basis, "explained": np.array(self.explained)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> StyleProjection:
        return cls(arrays["mean"], arrays["basis"], float(np.asarray(arrays["explained"])))


def style_scores(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Style score ``1 - L/L_max`` (paper 000, eq. 7); L = squared distance of (projected) style vectors."""
    return _distance_scores(_squared_distances(query, library))


# --- Dice --------------------------------------------------------------------------------

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(N, M, M) bool -> (N, M*M/8) uint8."""
    masks = np.asarray(masks, dtype=bool)
    return np.packbits(masks.reshape(len(masks), -1), axis=1)


def dice_scores(query_mask: np.ndarray, library_masks_packed: np.ndarray) -> np.ndarray:
    """Sørensen-Dice 2|X∩Y| / (|X| + |Y|) of a query mask against bit-packed library masks.

    Two empty masks count as identical (1.0); one empty mask against a lesion gives 0.
    """
    packed_query = np.packbits(np.asarray(query_mask, dtype=bool).ravel())
    library = np.asarray(library_masks_packed, dtype=np.uint8)
    if library.ndim != 2 or library.shape[1] != packed_query.shape[0]:
        raise ValueError(f"mask sizes do not match: query {packed_query.shape}, library {library.shape}")
    overlap = _POPCOUNT[library & packed_query].sum(axis=1)
    sizes = _POPCOUNT[library].sum(axis=1) + int(_POPCOUNT[packed_query].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2.0 * overlap / np.maximum(sizes, 1), 1.0)
    return dice.astype(np.float64)


# --- I1-scores ----------------------------------------------------------------------------

def i1(*scores: np.ndarray) -> np.ndarray:
    """Harmonic mean ``n / sum(1/s_i)`` element-wise; any zero component gives 0 (its limit)."""
    if not scores:
        raise ValueError("I1 needs at least one score")
    stacked = np.stack([np.asarray(s, dtype=np.float64) for s in scores])
    if np.any(stacked < 0):
        raise ValueError("I1 components must be in [0, 1]")
    zero = np.any(stacked == 0, axis=0)
    safe = np.where(stacked == 0, 1.0, stacked)
    return np.where(zero, 0.0, len(scores) / (1.0 / safe).sum(axis=0))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best, best first, ties by index."""
    scores = np.asarray(scores, dtype=np.float64)
    rows = _top_k_rows(scores[None], k)[0]
    return rows, scores[rows]


# --- Evidence maps (paper 004, eq. 2-3) -------------------------------------------------------

def activation_map_pair(g_q, g_r) -> tuple[np.ndarray, np.ndarray]:
    """Query and result activation maps of one pair from their last feature maps (Z, h, w):
    ``A_q(i,j) = sum_z g_z(q,i,j) (f_z(q) - f_z(r))^2`` with ``f_z`` the spatial mean, and
    ``A_r`` likewise with ``g_z(r,i,j)``."""
    g_q = np.asarray(g_q.detach().cpu() if isinstance(g_q, torch.Tensor) else g_q, dtype=np.float64)
    g_r = np.asarray(g_r.detach().cpu() if isinstance(g_r, torch.Tensor) else g_r, dtype=np.float64)
    if g_q.ndim != 3 or g_q.shape[0] != g_r.shape[0]:
        raise ValueError(f"feature maps must be (Z, h, w) with the same Z: {g_q.shape}, {g_r.shape}")
    weights = (g_q.mean(axis=(1, 2)) - g_r.mean(axis=(1, 2))) ** 2
    return np.tensordot(weights, g_q, axes=1), np.tensordot(weights, g_r, axes=1)


def normalise_map(heat: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map gives zeros."""
    heat = np.asarray(heat, dtype=np.float64)
    low, high = float(heat.min()), float(heat.max())
    if high - low <= 0:
        return np.zeros_like(heat, dtype=np.float32)
    return ((heat - low) / (high - low)).astype(np.float32)
