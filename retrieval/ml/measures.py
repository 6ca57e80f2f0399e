"""The similarity measures of papers 000/001 (Mehta) and the evidence maps of paper 004 (Codella).

Pure NumPy/PyTorch (no Django). Every score function takes one query and the library's rows and
returns (N,) float64 scores, higher = more similar:

* :func:`euclidean_scores` ``1 - d/d_max``, :func:`cosine_scores` ``(c + 1) / 2`` (CNN features);
* style: :func:`gram_vector`, :class:`StyleExtractor` (weighted Gram vectors of backbone stages),
  :class:`StyleProjection` (library PCA) and :func:`style_scores` ``1 - L/L_max``;
* :func:`dice_scores` on bit-packed masks (:func:`pack_masks`);
* :func:`i1` harmonic means, named in :data:`I1_COMPONENTS`; :func:`top_k` (seeded random order of
  tied scores, :func:`tie_keys`);
* evidence maps: :func:`activation_map_pair`, :func:`normalise_map`.

The scores normalised over the library (d_max, L_max) take the maximum over the library rows
given, for each query, as in the paper: they rank within one search and are not comparable
across searches. Cost per query on a 10k library: ``bench/measures.py``.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from retrieval.ml.search import _top_k_rows

_FIT_BLOCK = 8192  # columns per block when fitting a style projection

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


def _squared_norms(library: np.ndarray) -> np.ndarray:
    """Squared row norms, summed in float32 (one pass over the library, no float64 copy; relative
    error ~1e-6 for 1280-d rows, the level of the float32 products used with them) -> float64."""
    return np.einsum("ij,ij->i", library, library).astype(np.float64)


def _squared_distances(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    query = np.asarray(query, dtype=np.float64).ravel()
    library = np.asarray(library, dtype=np.float32)
    if library.ndim != 2 or library.shape[1] != query.shape[0]:
        raise ValueError(f"shapes do not match: query {query.shape}, library {library.shape}")
    # |l - q|^2 = |l|^2 - 2 l.q + |q|^2: two passes over the float32 library (the row norms and
    # one matrix-vector product), combined in float64; rounding below zero is clipped.
    squared = _squared_norms(library) - 2.0 * (library @ query.astype(np.float32)) + float(query @ query)
    return np.maximum(squared, 0.0)


def euclidean_scores(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Euclidean score ``1 - d/d_max`` of every library row (paper 000, eq. 2), (N,) float64.

    d is the Euclidean distance of the query to each row and d_max the largest of them for this
    query (so scores rank within one search); when every distance is 0 all scores are 1.
    """
    return _distance_scores(np.sqrt(_squared_distances(query, library)))


def cosine_similarities(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Raw cosine similarities in [-1, 1] of raw (not normalised) vectors, (N,) float64.

    Float32 products and norms (no copy of the library), the quotient in float64. A zero vector
    (query or row) has no direction: ValueError.
    """
    query = np.asarray(query, dtype=np.float32).ravel()
    library = np.asarray(library, dtype=np.float32)
    if library.ndim != 2 or library.shape[1] != query.shape[0]:
        raise ValueError(f"shapes do not match: query {query.shape}, library {library.shape}")
    q_norm = float(np.linalg.norm(query.astype(np.float64)))
    l_norm = np.sqrt(_squared_norms(library))
    if q_norm == 0 or np.any(l_norm == 0):
        raise ValueError("a feature vector is all zeros: the cosine similarity is undefined")
    return np.clip((library @ query).astype(np.float64) / (l_norm * q_norm), -1.0, 1.0)


def cosine_scores(query: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Cosine similarity rescaled to [0, 1]: ``(c + 1) / 2`` (paper 000, eq. 4)."""
    return (cosine_similarities(query, library) + 1.0) / 2.0


# --- Style (Gram matrices) ---------------------------------------------------------------

def gram_vector(feature_maps: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) feature maps -> (N, C(C+1)/2) weighted Gram vectors, float32.

    Normalisation: ``G = F F^T / (H W)`` with F the (C, H W) flattened maps, i.e. the mean over
    positions of the channel products (the usual style-transfer Gram matrix normalised by the
    number of positions, so that stages of different resolutions, and inputs of different sizes,
    are comparable). The upper triangle of ``weight * G`` is kept row by row
    (``torch.triu_indices`` order) with the off-diagonal entries multiplied by sqrt(2): G is
    symmetric, so the squared Euclidean distance of two such vectors equals the squared
    Frobenius distance of the two weighted Gram matrices, the per-stage term of the style loss.
    """
    if feature_maps.ndim != 4:
        raise ValueError(f"feature maps must be (N, C, H, W), got {tuple(feature_maps.shape)}")
    n, c, h, w = feature_maps.shape
    flat = feature_maps.reshape(n, c, h * w).float()
    gram = flat @ flat.transpose(1, 2) / float(h * w)
    rows, cols = torch.triu_indices(c, c, device=gram.device)
    scale = torch.full(rows.shape, 2.0 ** 0.5, device=gram.device)
    scale[rows == cols] = 1.0
    return gram[:, rows, cols] * (scale * float(weight))


def style_loss(grams_x: list[np.ndarray], grams_y: list[np.ndarray], weights: list[float]) -> float:
    """Paper 000, eq. 6, directly from the Gram matrices (reference for tests; the search uses
    the equivalent squared distance of :func:`gram_vector` vectors):
    ``sum_l sum_ij (beta_l G^x_l,ij - beta_l G^y_l,ij)^2``."""
    if not len(grams_x) == len(grams_y) == len(weights):
        raise ValueError("one Gram matrix of each image and one weight per stage")
    return float(sum(((w * np.asarray(gx, np.float64) - w * np.asarray(gy, np.float64)) ** 2).sum()
                     for gx, gy, w in zip(grams_x, grams_y, weights)))


class StyleExtractor:
    """Weighted Gram vectors of a network's stage outputs, concatenated: the style descriptor.

    ``model`` is a :class:`~retrieval.ml.network.SECBIRNet` or its timm backbone. A forward hook
    on each chosen stage ``backbone.blocks[i]`` catches its output (timm EfficientNet: 7 stages,
    e.g. 16, 24, 40, 80, 112, 192, 320 channels for Lite0; timm's tiny ``test_efficientnet``
    has 5). ``stages`` picks them (default: all); the vector is
    ``concat_l gram_vector(stage_l output, beta_l)`` of length
    :attr:`dimension` = ``sum_l C_l (C_l + 1) / 2`` (80,712 for Lite0, 4,220 for ``tiny``).

    Default weights ``beta_l = 1 / C_l``: a stage's loss term sums C_l^2 squared Gram
    differences, so with equal weights the widest stages (320 channels against 16: 400x the
    entries) would dominate the loss by their size alone; with ``1/C_l`` each stage contributes
    on the scale of its mean squared Gram entry. Paper 000 leaves beta_l as a free choice; give
    ``weights`` (one per stage) to change them.

    :meth:`extract` runs the backbone in eval mode (batch-norm running statistics, so a vector
    does not depend on the other images of its batch and no statistic is updated) under
    ``torch.no_grad`` and restores the module's previous mode.
    """

    def __init__(self, model, stages: list[int] | None = None, weights: list[float] | None = None) -> None:
        self.model = model
        self.backbone = getattr(model, "backbone", model)
        blocks = list(self.backbone.blocks)
        self.stages = list(range(len(blocks))) if stages is None else [int(s) for s in stages]
        if not self.stages or any(not 0 <= s < len(blocks) for s in self.stages) \
                or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be distinct indices in [0, {len(blocks)}), got {self.stages}")
        self.channels = [self._out_channels(blocks[i]) for i in self.stages]
        self.weights = [1.0 / c for c in self.channels] if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.stages):
            raise ValueError(f"one weight per stage: {len(self.stages)} stages, {len(self.weights)} weights")

    @staticmethod
    def _out_channels(block) -> int:
        """Output channels of a stage: those of its last convolution (checked on every extract)."""
        convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
        if not convs:
            raise ValueError("a stage without convolutions")
        return convs[-1].out_channels

    @property
    def dimension(self) -> int:
        """Length of a style vector: ``sum_l C_l (C_l + 1) / 2``."""
        return sum(c * (c + 1) // 2 for c in self.channels)

    def describe(self) -> list[dict]:
        return [{"stage": s, "channels": c, "weight": w} for s, c, w in zip(self.stages, self.channels, self.weights)]

    @contextmanager
    def capture(self):
        """Hooks on the chosen stages for the duration: yields the dict {stage: output} that any
        forward pass of the backbone inside fills, so that a pass run for another purpose (the
        saliency pass of the same 3-channel model) also gives the style vector
        (:meth:`vectors`) without a forward pass of its own."""
        outputs: dict[int, torch.Tensor] = {}
        blocks = list(self.backbone.blocks)
        hooks = [blocks[i].register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
                 for i in self.stages]
        try:
            yield outputs
        finally:
            for hook in hooks:
                hook.remove()

    def vectors(self, outputs: dict[int, torch.Tensor]) -> np.ndarray:
        """(N, dimension) float32 concatenated weighted Gram vectors of captured stage outputs."""
        parts = []
        with torch.no_grad():
            for i, c, w in zip(self.stages, self.channels, self.weights):
                if i not in outputs:
                    raise ValueError(f"stage {i} was not captured (no forward pass inside capture())")
                if outputs[i].ndim != 4 or outputs[i].shape[1] != c:
                    raise ValueError(f"stage {i} gave {tuple(outputs[i].shape)}, expected {c} channels")
                parts.append(gram_vector(outputs[i].detach(), w))
        return torch.cat(parts, dim=1).cpu().numpy().astype(np.float32, copy=False)

    def extract(self, x: torch.Tensor) -> np.ndarray:
        """(N, dimension) float32 concatenated weighted Gram vectors of the chosen stages."""
        was_training = self.backbone.training
        try:
            self.backbone.eval()
            with self.capture() as outputs, torch.no_grad():
                self.backbone.forward_features(x)
            return self.vectors(outputs)
        finally:
            self.backbone.train(was_training)


class StyleProjection:
    """Principal directions of a library's style vectors: squared distances between projected
    vectors approximate the style loss (exactly with every component kept).

    ``transform`` maps (n, D) style vectors to (n, P) float32; ``explained`` is the fraction of
    the fitted sample's variance (squared distance to the mean) the P directions keep. An index
    stores ``to_arrays()`` (an npz) and its library rows as (N, P) float32, so a query costs one
    (N, P) distance computation.
    """

    def __init__(self, mean: np.ndarray, basis: np.ndarray, explained: float) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.basis = np.asarray(basis, dtype=np.float32)  # (P, D) orthonormal rows
        self.explained = float(explained)

    @property
    def components(self) -> int:
        return int(self.basis.shape[0])

    @classmethod
    def fit(cls, vectors: np.ndarray, components: int = 256) -> StyleProjection:
        """Mean and the top ``components`` principal directions of ``vectors`` (n, D).

        P is capped by n - 1 and D (the rank of the centred sample) and by the numerical rank:
        directions with a negligible share of the variance (singular value below 1e-6 of the
        largest) are dropped. An index fits on a sample (n <= a few hundred) of very long vectors
        (D = 80,712 for Lite0), so the principal directions come from the eigenvectors of the
        small (n, n) Gram matrix of the centred sample, accumulated in float64 over column
        blocks: seconds instead of the ~40 s of an SVD of the (n, D) matrix, and no float64
        copy of the sample. When n >= D an SVD of the sample is used.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError("a style projection needs at least two vectors")
        if components < 1:
            raise ValueError("a style projection needs at least one component")
        n, dim = vectors.shape
        mean = vectors.mean(axis=0, dtype=np.float64)
        if n >= dim:
            _, singular, basis = np.linalg.svd(vectors.astype(np.float64) - mean, full_matrices=False)
            energies = singular ** 2
        else:
            blocks = [slice(start, start + _FIT_BLOCK) for start in range(0, dim, _FIT_BLOCK)]
            gram = np.zeros((n, n))
            for block in blocks:
                centred = vectors[:, block].astype(np.float64) - mean[block]
                gram += centred @ centred.T
            energies, left = np.linalg.eigh(gram)
            energies, left = np.maximum(energies[::-1], 0.0), left[:, ::-1]
            basis = None
        total = float(energies.sum())
        rank = int((energies > energies[0] * 1e-12).sum()) if energies[0] > 0 else 0
        keep = max(1, min(components, rank, n - 1, dim))
        if basis is None:  # v_k = C^T u_k / s_k, block by block
            scale = np.sqrt(np.maximum(energies[:keep], np.finfo(np.float64).tiny))
            basis = np.empty((keep, dim))
            for block in blocks:
                centred = vectors[:, block].astype(np.float64) - mean[block]
                basis[:, block] = (left[:, :keep].T @ centred) / scale[:, None]
        explained = float(energies[:keep].sum() / total) if total > 0 else 1.0
        return cls(mean, basis[:keep], explained)

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

#: Set bits of every byte value: the popcount lookup table.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(N, M, M) bool -> (N, M*M/8) uint8 (``np.packbits`` of each flattened mask, row-major)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, M, M), got {masks.shape}")
    return np.packbits(masks.reshape(len(masks), -1), axis=1)


def popcount_rows(packed: np.ndarray, *, lookup: bool = False) -> np.ndarray:
    """Set bits per row of a (N, B) uint8 array, int64.

    The reference is the 256-entry lookup table (``lookup=True``; ~20 ms for 10k 64x64 masks on
    this 2-core machine). By default NumPy's ``bitwise_count`` ufunc (NumPy >= 2.0, a hardware
    popcount on 64-bit words when a row is a whole number of words) gives the same counts about
    10x faster; the table is used where NumPy lacks it.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if lookup or not hasattr(np, "bitwise_count"):
        return _POPCOUNT[packed].sum(axis=-1, dtype=np.int64)
    words = packed.view(np.uint64) if packed.shape[-1] % 8 == 0 else packed
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)


def dice_scores(query_mask: np.ndarray, library_masks_packed: np.ndarray) -> np.ndarray:
    """Sørensen-Dice ``2|X∩Y| / (|X| + |Y|)`` of a (M, M) bool query mask against bit-packed
    library masks (:func:`pack_masks`), (N,) float64.

    Convention: two empty masks count as identical (1.0: no lesion found in either, the limit
    of equal masks); one empty mask against a non-empty one gives 0 (no overlap).
    """
    packed_query = np.packbits(np.asarray(query_mask, dtype=bool).ravel())
    library = np.asarray(library_masks_packed, dtype=np.uint8)
    if library.ndim != 2 or library.shape[1] != packed_query.shape[0]:
        raise ValueError(f"mask sizes do not match: query {packed_query.shape}, library {library.shape}")
    overlap = popcount_rows(library & packed_query)
    sizes = popcount_rows(library) + int(popcount_rows(packed_query[None])[0])
    return np.where(sizes > 0, 2.0 * overlap / np.maximum(sizes, 1), 1.0)


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


_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)


def tie_keys(rows: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random uint64 key per library row for ``seed`` (SplitMix64 of row and seed).

    The key of a row depends only on (row, seed), not on the library's size or on which other
    rows are tied, so a tie-break costs a hash of the tied rows only and is reproducible.
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as SplitMix64 intends
        z = (np.asarray(rows, dtype=np.uint64) + np.uint64(1)) * _SPLITMIX_GAMMA + np.uint64(seed % 2 ** 64)
        z = (z ^ (z >> np.uint64(30))) * _SPLITMIX_M1
        z = (z ^ (z >> np.uint64(27))) * _SPLITMIX_M2
        return z ^ (z >> np.uint64(31))


def top_k(scores: np.ndarray, k: int, *, tie_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best of (N,) scores, best first.

    Equal scores are ordered by :func:`tie_keys` of ``tie_seed`` (a seeded random order of the
    tied rows), or by index when ``tie_seed`` is None (:func:`retrieval.ml.search._top_k_rows`).
    Discrete scores (Dice of small masks, an I1-score with a zero component, two empty masks)
    tie often, and ordering ties by index would favour whichever class was imported first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not 1 <= k <= len(scores):
        raise ValueError(f"k={k} but there are {scores.shape} scores")
    if tie_seed is None:
        rows = _top_k_rows(scores[None], k)[0]
        return rows, scores[rows]
    # Every row scoring at least the k-th best is a candidate, so the rows tied at the cut are
    # all there and the seeded order decides among them.
    cut = -np.partition(-scores, k - 1)[k - 1]
    candidates = np.flatnonzero(scores >= cut)
    rows = candidates[np.lexsort((tie_keys(candidates, tie_seed), -scores[candidates]))][:k]
    return rows, scores[rows]


# --- Evidence maps (paper 004, eq. 2-3) -------------------------------------------------------

def activation_map_pair(g_q, g_r) -> tuple[np.ndarray, np.ndarray]:
    """Query and result activation maps of one pair from their last feature maps (Z, h, w):
    ``A_q(i,j) = sum_z g_z(q,i,j) (f_z(q) - f_z(r))^2`` with ``f_z`` the spatial mean, and
    ``A_r`` likewise with ``g_z(r,i,j)``. NumPy arrays or torch tensors; float64 maps out.

    Channels whose mean differs most between the two images weigh most: the maps show where
    each image carries the features that tell the pair apart.
    """
    g_q, g_r = _as_float64(g_q), _as_float64(g_r)
    if g_q.ndim != 3 or g_r.ndim != 3 or g_q.shape[0] != g_r.shape[0]:
        raise ValueError(f"feature maps must be (Z, h, w) with the same Z: {g_q.shape}, {g_r.shape}")
    weights = (g_q.mean(axis=(1, 2)) - g_r.mean(axis=(1, 2))) ** 2
    return np.tensordot(weights, g_q, axes=1), np.tensordot(weights, g_r, axes=1)


def _as_float64(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def normalise_map(heat) -> np.ndarray:
    """Min-max to [0, 1] (float32); a constant map gives zeros. NumPy array or torch tensor."""
    heat = _as_float64(heat)
    low, high = float(heat.min()), float(heat.max())
    if high - low <= 0:
        return np.zeros_like(heat, dtype=np.float32)
    return ((heat - low) / (high - low)).astype(np.float32)
