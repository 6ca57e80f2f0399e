"""Metric-learning embeddings: the siamese/contrastive network of paper 002 and the triplet-loss
network with global average pooling and hierarchical triplet selection of paper 004.

Plain PyTorch / NumPy, no Django.

Network (:class:`EmbeddingNet`)
    The config's timm backbone (ImageNet weights, or the backbone of a trained 3-channel
    SE-CBIR classifier), followed by global average pooling of its last feature maps and L2
    normalisation; there is no projection layer. Paper 004 puts GAP right before the embedding
    so that query-result activation maps (its eq. 2, ``retrieval.ml.measures.activation_map_pair``)
    can be computed from the feature maps ``g_z`` and the embedding ``f_z`` = their spatial
    mean; a dense projection after GAP would break that link. The embedding dimension is
    therefore the backbone's feature size (``config.feature_dim``: 1280 for Lite0, 256 for the
    tiny test config). Paper 002's 5-dimensional code is not reproduced: its own conclusion asks
    for a larger one, and the kNN search works on unit vectors of any size.

Losses (``D`` on the unit embeddings)
    * :func:`contrastive_loss`, paper 002: ``L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2`` with
      ``D`` the Euclidean distance and **Y = 1 for a dissimilar pair, 0 for a similar one**
      (the paper's convention). The function takes ``same`` (True for a similar pair), i.e.
      ``Y = 1 - same``. On unit vectors ``D = sqrt(2 - 2 cos)`` lies in [0, 2]; the default
      margin 1 lets a dissimilar pair stop contributing once its cosine is at most 0.5.
    * :func:`triplet_loss`, paper 004 eq. 1: ``L = max(0, l + D(a, b) - (D(a, c) + D(b, c)) / 2)``
      with ``D`` the *squared* Euclidean distance, ``a``/``b`` similar, ``c`` dissimilar, and
      the paper's margin ``l = 1`` (squared distances of unit vectors lie in [0, 4]).

Sampling (:func:`sample_pairs`, :func:`sample_triplets`; seeded ``numpy.random.Generator``)
    Without similarity groups, similar = same class and dissimilar = another class. With
    groups (paper 004's hierarchical annotation: visually similar groups under a disease), a
    group is taken *within* a class (a group name that spans two diseases is two groups), and
    similar = siblings (same group); hierarchical selection takes dissimilar images from another
    disease and excludes cousins (same disease, other group); ``hierarchical=False`` takes them
    from any other group, cousins included. Images without a group are not sampled. A class
    or group with a single image cannot give a similar pair and is skipped as an anchor; no
    valid tuple at all is a ``ValueError``.

Training (:func:`train_embedding`; the same ``TrainOptions`` as the classifiers' loop, :mod:`retrieval.ml.train`)
    Per epoch a fresh set of pairs/triplets is drawn with ``numpy.random.default_rng([seed,
    epoch])`` (as many as training images unless told otherwise), each image augmented like
    the 3-channel classifier's training images (``augment.strong_rgb_augmentation``) with its
    own seed. Validation is retrieval: every validation image is a query against the training
    images by cosine similarity of the embeddings; P@k (share of the first k neighbours of the
    query's class, micro mean) and AP@k (macro mean over classes, the thesis's measure) for
    k = 1, 3, 6, 9, plus the loss on a fixed set of validation pairs/triplets. The epoch with the
    best AP@6 is kept. Checkpoints are written like the classifiers' (``<stage>-best.pt``,
    ``<stage>-last.pt``, :mod:`retrieval.ml.checkpoints`); :func:`load_embedding` reads them. Same
    seed -> same weights on CPU.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from retrieval.classes import CODES  # a plain constants module, no Django
from retrieval.ml import augment
from retrieval.ml.checkpoints import (
    EMBEDDING_STAGES, STAGE_CONTRASTIVE, STAGE_TRIPLET, end_epoch, load_checkpoint, read_checkpoint,
    resume_checkpoint, training_checkpoint,
)
from retrieval.ml.configs import ModelConfig, get_config
from retrieval.ml.data import Item, data_fingerprint, load_resized
from retrieval.ml.devices import MEMORY_FORMAT, resolve_device
from retrieval.ml.features import as_rgb, normalise
from retrieval.ml.metrics import DEFAULT_KS, precision_at_k
from retrieval.ml.network import RGB_CHANNELS, SECBIRNet, create_backbone
from retrieval.ml.schedule import LearningRates, make_scheduler
from retrieval.ml.seeding import seed_everything
from retrieval.ml.train import OPTIMIZERS, StageResult, TrainOptions, stop_epoch
from retrieval.ml.weights import load_imagenet_weights

logger = logging.getLogger(__name__)

#: Paper 004's margin l (squared distances); paper 002 gives none, 1 is used for the contrastive margin.
TRIPLET_MARGIN = 1.0
CONTRASTIVE_MARGIN = 1.0
DEFAULT_MARGINS = {STAGE_CONTRASTIVE: CONTRASTIVE_MARGIN, STAGE_TRIPLET: TRIPLET_MARGIN}
#: The whole backbone is fine-tuned at one rate (there are no new layers: GAP has no weights).
#: SGD with Nesterov momentum 0.9 as the classifiers; multiplied by the profile's schedule. The
#: gradient reaches the backbone through the L2 normalisation of GAP features of norm ~20 (Lite0),
#: so the classifiers' backbone rate (5e-5) barely moves it: on a third of the demo library, 2
#: epochs from the 3-channel model, 5e-3 gave validation AP@6 0.46 (triplet) / 0.35 (contrastive)
#: against 0.30 / 0.30 at 5e-4 and 0.33 / 0.30 with Adam at 1e-4; 2e-2 lowered the contrastive
#: model to 0.25 (docs/retrieval.md, "Metric-learning embeddings").
EMBEDDING_LR = LearningRates(base_lr=5e-3, factor=1.0)
#: Validation cut-offs (the thesis's) and the one that picks the kept epoch.
VAL_KS = DEFAULT_KS
SELECTION_K = 6
SELECTION_METRIC = f"ap_at_{SELECTION_K}"
EMBEDDING_KIND = "embedding"


# --- Network ------------------------------------------------------------------------------------

class EmbeddingNet(nn.Module):
    """Backbone -> GAP of the last feature maps -> L2 normalisation (embedding size = ``config.feature_dim``).

    ``backbone_from``: a trained 3-channel :class:`SECBIRNet` of the same config whose backbone
    weights are copied (its head is dropped); otherwise ImageNet weights when ``pretrained``.
    """

    def __init__(self, config: ModelConfig, *, pretrained: bool = True, backbone_from: SECBIRNet | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config)
        if backbone_from is not None:
            if backbone_from.config.name != config.name or backbone_from.in_chans != RGB_CHANNELS:
                raise ValueError(f"an embedding of {config.name} starts from a 3-channel {config.name} model, "
                                 f"not a {backbone_from.in_chans}-channel {backbone_from.config.name} one")
            self.backbone.load_state_dict(backbone_from.backbone.state_dict())
            self.weights_source = f"backbone of a 3-channel model ({backbone_from.weights_source or 'checkpoint'})"
        else:
            self.weights_source = load_imagenet_weights(self.backbone, config) if pretrained else "not loaded"

    @property
    def embedding_dim(self) -> int:
        return self.config.feature_dim

    @property
    def in_chans(self) -> int:
        name = self.backbone.pretrained_cfg.get("first_conv", "conv_stem")
        return self.backbone.get_submodule(name).in_channels

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature maps before pooling, (N, Z, h, w) (``g_z`` of paper 004, eq. 2)."""
        return self.backbone.forward_features(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling of :meth:`feature_maps`, (N, Z), not normalised (``f_z``, eq. 3)."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (N, Z), float32."""
        return F.normalize(self.pooled(x).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def build_embedding(config: ModelConfig, *, init_checkpoint: Path | None = None,
                    pretrained: bool = True) -> EmbeddingNet:
    """A fresh embedding network: from a 3-channel classifier checkpoint if given, else ImageNet weights."""
    if init_checkpoint is None:
        return EmbeddingNet(config, pretrained=pretrained)
    model3 = load_checkpoint(Path(init_checkpoint))
    net = EmbeddingNet(config, pretrained=False, backbone_from=model3)
    net.weights_source = f"backbone of {Path(init_checkpoint).name} ({model3.weights_source or 'checkpoint'})"
    return net


def load_embedding(path: str | Path, device: str | torch.device = "cpu") -> EmbeddingNet:
    """An :class:`EmbeddingNet` from a contrastive/triplet checkpoint, in eval mode on ``device``."""
    state = read_checkpoint(path)
    if state.get("stage") not in EMBEDDING_STAGES:
        raise ValueError(f"{path} is a {state.get('stage')} checkpoint, not an embedding "
                         f"({' or '.join(EMBEDDING_STAGES)}); load classifiers with checkpoints.load_checkpoint")
    net = EmbeddingNet(get_config(state["config"]), pretrained=False)
    net.load_state_dict(state["weights"])
    net.weights_source = state.get("weights_source", "")
    net.stage = state["stage"]
    net.metrics = state.get("metrics", {})
    return net.to(device).eval()


# --- Losses -------------------------------------------------------------------------------------

def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def _check_pairs(*tensors: torch.Tensor) -> None:
    first = tensors[0]
    if first.ndim != 2 or any(t.shape != first.shape for t in tensors):
        raise ValueError(f"embeddings must be (N, Z) of one shape, got {[tuple(t.shape) for t in tensors]}")


def contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, same, margin: float = CONTRASTIVE_MARGIN, *,
                     reduction: str = "mean") -> torch.Tensor:
    """Paper 002: ``(1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2``, ``D = ||e1 - e2||_2``.

    ``same``: (N,) bool (or 0/1), True for a similar pair. The paper's ``Y`` is 1 for a
    *dissimilar* pair, so ``Y = 1 - same``: similar pairs are pulled together (``D^2 / 2``),
    dissimilar pairs pushed apart until they are ``margin`` away.
    """
    _check_pairs(e1, e2)
    if margin <= 0:
        raise ValueError(f"the contrastive margin must be positive, got {margin}")
    same = torch.as_tensor(same, device=e1.device).to(e1.dtype).reshape(-1)
    if same.shape[0] != e1.shape[0]:
        raise ValueError(f"one 'same' flag per pair is needed: {same.shape[0]} for {e1.shape[0]} pairs")
    squared = (e1 - e2).pow(2).sum(dim=1)
    # clamp: sqrt has an infinite gradient at 0 (identical embeddings); below 1e-24 the term's gradient is 0.
    distance = squared.clamp_min(1e-24).sqrt()
    dissimilar = 1.0 - same
    per_pair = (1.0 - dissimilar) * 0.5 * squared + dissimilar * 0.5 * (margin - distance).clamp_min(0).pow(2)
    return _reduce(per_pair, reduction)


def triplet_loss(fa: torch.Tensor, fb: torch.Tensor, fc: torch.Tensor, margin: float = TRIPLET_MARGIN, *,
                 reduction: str = "mean") -> torch.Tensor:
    """Paper 004, eq. 1: ``max(0, l + D(a, b) - (D(a, c) + D(b, c)) / 2)``, D = squared Euclidean.

    ``fa``, ``fb``: embeddings of the similar images; ``fc``: of the dissimilar one.
    """
    _check_pairs(fa, fb, fc)
    d_ab = (fa - fb).pow(2).sum(dim=1)
    d_ac = (fa - fc).pow(2).sum(dim=1)
    d_bc = (fb - fc).pow(2).sum(dim=1)
    return _reduce((margin + d_ab - 0.5 * (d_ac + d_bc)).clamp_min(0), reduction)


# --- Sampling -----------------------------------------------------------------------------------

class _Pools:
    """Who may be similar / dissimilar to whom, per selection key (class, or (class, group))."""

    def __init__(self, labels: Sequence[int], groups: Sequence[Hashable | None] | None, hierarchical: bool) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError("labels must be one class per image")
        if groups is not None and len(groups) != len(labels):
            raise ValueError(f"one group per image is needed: {len(groups)} groups for {len(labels)} images")
        self.labels = labels
        keys: dict[tuple, list[int]] = {}
        for i, label in enumerate(labels.tolist()):
            if groups is None:
                key = (label,)
            else:
                group = groups[i]
                if group is None or (isinstance(group, str) and not group.strip()):
                    continue  # not annotated: not sampled
                key = (label, str(group))
            keys.setdefault(key, []).append(i)
        self.keys = sorted(keys, key=lambda k: tuple(str(part) for part in k))
        self.members = {key: np.asarray(keys[key], dtype=np.int64) for key in self.keys}
        eligible = np.concatenate([self.members[k] for k in self.keys]) if self.keys else np.empty(0, np.int64)
        eligible.sort()
        self.negatives = {}
        for key in self.keys:
            if groups is None or hierarchical:
                mask = labels[eligible] != key[0]  # another disease (cousins excluded)
            else:
                mask = ~np.isin(eligible, self.members[key])  # any other group, cousins included
            self.negatives[key] = eligible[mask]
        self.by_class = groups is None

    def anchors(self, *, need_positive: bool, need_negative: bool) -> tuple[list[tuple], np.ndarray]:
        """Keys that can anchor, and all their member images (concatenated, in key order)."""
        keys = [k for k in self.keys
                if (not need_positive or len(self.members[k]) >= 2) and (not need_negative or len(self.negatives[k]))]
        images = np.concatenate([self.members[k] for k in keys]) if keys else np.empty(0, np.int64)
        return keys, images

    def key_of(self, keys: list[tuple]) -> dict[int, tuple]:
        return {int(i): k for k in keys for i in self.members[k]}

    def what(self) -> str:
        return "class" if self.by_class else "similarity group"


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of samples must be a whole number >= 0, got {n!r}")


def sample_triplets(labels: Sequence[int], n: int, rng: np.random.Generator,
                    groups: Sequence[Hashable | None] | None = None, *, hierarchical: bool = True) -> np.ndarray:
    """``n`` triplets (a, b, c) of image indices, (n, 3) int64: a/b similar, c dissimilar.

    ``labels``: class per image. ``groups``: optional similarity group per image (None or ""
    = not annotated, not sampled). Without groups a/b share a class and c has another class.
    With groups a/b are siblings (same class and group); c comes from another class
    (``hierarchical``, cousins excluded) or from any other group (``hierarchical=False``,
    cousins included). The anchor ``a`` is drawn uniformly from the images that can anchor a
    triplet, ``b`` uniformly from its siblings, ``c`` uniformly from its dissimilar images.
    """
    _check_n(n)
    pools = _Pools(labels, groups, hierarchical)
    keys, anchors = pools.anchors(need_positive=True, need_negative=True)
    if not len(anchors):
        raise ValueError(f"no valid triplet: no {pools.what()} has two images and a dissimilar image elsewhere "
                         f"({len(pools.keys)} {pools.what()}(s) among {len(pools.labels)} images)")
    key_of = pools.key_of(keys)
    out = np.empty((n, 3), dtype=np.int64)
    for row in range(n):
        a = int(anchors[rng.integers(len(anchors))])
        key = key_of[a]
        siblings = pools.members[key]
        siblings = siblings[siblings != a]
        negatives = pools.negatives[key]
        out[row] = a, siblings[rng.integers(len(siblings))], negatives[rng.integers(len(negatives))]
    return out


def sample_pairs(labels: Sequence[int], n: int, rng: np.random.Generator, positive_fraction: float = 0.5,
                 groups: Sequence[Hashable | None] | None = None, *, hierarchical: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of image indices (n, 2) int64 and ``same`` (n,) bool (True = similar pair).

    ``round(n * positive_fraction)`` pairs are similar (same class, or siblings with groups),
    the rest dissimilar (as :func:`sample_triplets` chooses c), in random order.
    """
    _check_n(n)
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    pools = _Pools(labels, groups, hierarchical)
    n_pos = int(round(n * positive_fraction))
    n_neg = n - n_pos
    pairs = np.empty((n, 2), dtype=np.int64)
    same = np.zeros(n, dtype=bool)
    if n_pos:
        keys, anchors = pools.anchors(need_positive=True, need_negative=False)
        if not len(anchors):
            raise ValueError(f"no similar pair possible: no {pools.what()} has two images")
        key_of = pools.key_of(keys)
        for row in range(n_pos):
            a = int(anchors[rng.integers(len(anchors))])
            siblings = pools.members[key_of[a]]
            siblings = siblings[siblings != a]
            pairs[row] = a, siblings[rng.integers(len(siblings))]
        same[:n_pos] = True
    if n_neg:
        keys, anchors = pools.anchors(need_positive=False, need_negative=True)
        if not len(anchors):
            raise ValueError("no dissimilar pair possible: every sampled image is in one "
                             + ("similarity group" if not (pools.by_class or hierarchical) else "class"))
        key_of = pools.key_of(keys)
        for row in range(n_pos, n):
            a = int(anchors[rng.integers(len(anchors))])
            negatives = pools.negatives[key_of[a]]
            pairs[row] = a, negatives[rng.integers(len(negatives))]
    order = rng.permutation(n)
    return pairs[order], same[order]


def sample_tuples(stage: str, labels: Sequence[int], n: int, rng: np.random.Generator,
                  groups: Sequence[Hashable | None] | None = None, *, hierarchical: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The stage's training tuples: (pairs, same) for contrastive, (triplets, None) for triplet."""
    if stage == STAGE_CONTRASTIVE:
        return sample_pairs(labels, n, rng, groups=groups, hierarchical=hierarchical)
    if stage == STAGE_TRIPLET:
        return sample_triplets(labels, n, rng, groups, hierarchical=hierarchical), None
    raise ValueError(f"unknown embedding stage {stage!r}; use {' or '.join(EMBEDDING_STAGES)}")


def tuple_loss(stage: str, embeddings: torch.Tensor, same: torch.Tensor | None, margin: float, *,
               reduction: str = "mean") -> torch.Tensor:
    """The stage's loss on embeddings (T, N, Z): T = 2 (pairs, with ``same``) or 3 (triplets)."""
    if stage == STAGE_CONTRASTIVE:
        return contrastive_loss(embeddings[0], embeddings[1], same, margin, reduction=reduction)
    return triplet_loss(embeddings[0], embeddings[1], embeddings[2], margin, reduction=reduction)


# --- Training -----------------------------------------------------------------------------------

class TupleDataset(Dataset):
    """Pairs or triplets of training images, each image augmented as the 3-channel classifier's
    training images (``augment.strong_rgb_augmentation``), seeded by (seed, epoch, tuple, slot)."""

    def __init__(self, items: Sequence[Item], tuples: np.ndarray, same: np.ndarray | None, size: int, *,
                 seed: int, epoch: int) -> None:
        self.items, self.tuples, self.same, self.seed, self.epoch = list(items), tuples, same, seed, epoch
        self.augment = augment.strong_rgb_augmentation(size)

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, index: int):
        images = []
        for slot, item_index in enumerate(self.tuples[index].tolist()):
            with Image.open(self.items[item_index].path) as image:
                array = np.asarray(as_rgb(image), dtype=np.uint8)
            rng = np.random.default_rng([self.seed, self.epoch, index, slot])
            images.append(np.array(self.augment(array, rng), dtype=np.uint8))
        same = bool(self.same[index]) if self.same is not None else False
        return torch.from_numpy(np.stack(images)), same


def embed_items(net: EmbeddingNet, items: Sequence[Item], device: torch.device, *, batch_size: int = 64,
                progress: bool = False, description: str = "Embedding") -> np.ndarray:
    """Unit embeddings (N, Z) float32 of resized (not augmented) images, in eval mode."""
    net.eval()
    size = net.config.input_size
    out = np.empty((len(items), net.embedding_dim), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, len(items), batch_size), desc=description, disable=not progress, unit="batch"):
            chunk = items[start:start + batch_size]
            x = normalise(np.stack([load_resized(i.path, size) for i in chunk]), net.config)
            out[start:start + len(chunk)] = net.embed(x.to(device, memory_format=MEMORY_FORMAT)).cpu().numpy()
    return out


def retrieval_scores(query: np.ndarray, query_labels: Sequence[int], library: np.ndarray,
                     library_labels: Sequence[int], ks: Sequence[int] = VAL_KS) -> dict:
    """P@k (micro mean over queries) and AP@k (macro mean over classes) of cosine kNN on unit rows."""
    ks = [k for k in ks if k <= len(library)]
    if not ks:
        raise ValueError(f"too few library images ({len(library)}) for any cut-off")
    similarity = query @ library.T
    # stable argsort of -similarity: ties by library index
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :max(ks)]
    library_labels = np.asarray(library_labels)
    neighbour_labels = [[CODES[c] for c in library_labels[row]] for row in order]
    query_codes = [CODES[c] for c in query_labels]
    scores = precision_at_k(query_codes, neighbour_labels, ks)
    hits = library_labels[order] == np.asarray(query_labels)[:, None]
    metrics = {}
    for k in ks:
        metrics[f"precision_at_{k}"] = float(hits[:, :k].mean())
        metrics[f"ap_at_{k}"] = float(scores.ap[k])
    return metrics


def _validation_tuples(stage, val, seed, hierarchical):
    """A fixed set of validation tuples by class (groups are for training), or None if impossible."""
    labels = [item.label for item in val]
    try:
        return sample_tuples(stage, labels, len(val), np.random.default_rng([seed, 2**31 - 1]),
                             hierarchical=hierarchical)
    except ValueError as exc:
        logger.warning("no validation loss: %s", exc)
        return None


def train_embedding(stage: str, config: ModelConfig, train: Sequence[Item], val: Sequence[Item], out_dir: Path, *,
                    options: TrainOptions, groups: Mapping[str, str] | None = None, init_checkpoint: Path | None = None,
                    on_epoch: Callable[[dict], None] | None = None, hierarchical: bool = True,
                    margin: float | None = None, tuples_per_epoch: int | None = None, resume: Path | None = None,
                    on_step: Callable[[], None] | None = None,
                    epochs_this_run: int | None = None) -> StageResult | None:
    """Train a contrastive (paper 002) or triplet (paper 004) embedding; returns the best epoch's checkpoint.

    ``groups``: similarity group per training image, keyed by ``Item.key`` (images without one
    are not sampled); None samples by class. ``init_checkpoint``: a 3-channel classifier
    checkpoint whose backbone starts the network (else ImageNet weights). ``margin``: default
    :data:`DEFAULT_MARGINS`. ``tuples_per_epoch``: pairs/triplets drawn per epoch (default: the
    number of training images). Learning rate: ``options.lr`` or :data:`EMBEDDING_LR`, times the
    options' schedule. The kept epoch has the best validation AP@6 (:data:`SELECTION_METRIC`).
    ``resume``, ``on_step`` and ``epochs_this_run``: as :func:`retrieval.ml.train.train_stage` (a
    resumed run draws the same tuples: each epoch's are seeded by the seed and the epoch).
    """
    if stage not in EMBEDDING_STAGES:
        raise ValueError(f"unknown embedding stage {stage!r}; use {' or '.join(EMBEDDING_STAGES)}")
    if not train or not val:
        raise ValueError("training needs non-empty train and validation sets")
    if options.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {options.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
    margin = DEFAULT_MARGINS[stage] if margin is None else float(margin)
    if margin <= 0:
        raise ValueError(f"the margin must be positive, got {margin}")
    n_tuples = len(train) if tuples_per_epoch is None else int(tuples_per_epoch)
    if n_tuples < 1:
        raise ValueError(f"tuples_per_epoch must be at least 1, got {tuples_per_epoch}")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    generator = seed_everything(options.seed)
    fingerprint = data_fingerprint(train, val)
    labels = [item.label for item in train]
    group_list = None
    if groups is not None:
        group_list = [groups.get(item.key) for item in train]
        if not any(g is not None and str(g).strip() for g in group_list):
            raise ValueError("no training image has a similarity group")
    # Fail before any training when no tuple can be drawn (e.g. every group has one image).
    sample_tuples(stage, labels, 1, np.random.default_rng(0), group_list, hierarchical=hierarchical)
    val_tuples = _validation_tuples(stage, val, options.seed, hierarchical)

    net = build_embedding(config, init_checkpoint=init_checkpoint).to(device, memory_format=MEMORY_FORMAT)
    weights_source = net.weights_source
    base_lr = options.lr if options.lr is not None else EMBEDDING_LR.base_lr
    params = [{"params": [p for p in net.parameters() if p.requires_grad], "lr": base_lr, "initial_lr": base_lr}]
    if options.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, momentum=options.momentum, nesterov=True)
    else:
        optimizer = torch.optim.Adam(params)
    scheduler = make_scheduler(optimizer, options.ramp_epochs, options.peak, options.decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    workers = options.num_workers if device.type == "cuda" else 0
    arity = 2 if stage == STAGE_CONTRASTIVE else 3

    start_epoch, best, history = 0, -1.0, []
    last_path, best_path = out_dir / f"{stage}-last.pt", out_dir / f"{stage}-best.pt"
    if resume is not None:
        start_epoch, best, history = resume_checkpoint(
            resume, stage=stage, config_name=config.name, fingerprint=fingerprint, model=net, optimizer=optimizer,
            scheduler=scheduler, generator=generator,
            recorded={"margin": (margin, None), "hierarchical": (hierarchical, None),
                      "grouped": (groups is not None, None)})
        logger.info("resuming %s %s at epoch %d", config.name, stage, start_epoch + 1)
    for epoch in range(start_epoch, stop_epoch(start_epoch, options.epochs, epochs_this_run)):
        tuples, same = sample_tuples(stage, labels, n_tuples, np.random.default_rng([options.seed, epoch]), group_list,
                                     hierarchical=hierarchical)
        dataset = TupleDataset(train, tuples, same, config.input_size, seed=options.seed, epoch=epoch)
        loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=workers,
                            drop_last=len(dataset) > options.batch_size)
        net.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{options.epochs}", disable=not options.progress,
                   unit="batch")
        for images, same_batch in bar:
            b = images.shape[0]
            # (B, T, S, S, 3) -> one forward pass over the T slots stacked: (T * B, 3, S, S)
            stacked = images.transpose(0, 1).reshape(arity * b, *images.shape[2:])
            x = normalise(stacked.numpy(), config).to(device, memory_format=MEMORY_FORMAT)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                embeddings = net.embed(x).reshape(arity, b, -1)
            loss = tuple_loss(stage, embeddings, same_batch.to(device), margin)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, count = total + loss.item() * b, count + b
            bar.set_postfix(loss=f"{total / count:.4f}")
            if on_step:
                on_step()
        scheduler.step()
        trained = time.perf_counter()

        val_embeddings = embed_items(net, val, device, batch_size=max(options.batch_size, 32))
        train_embeddings = embed_items(net, train, device, batch_size=max(options.batch_size, 32))
        metrics = {"epoch": epoch + 1, "loss": total / max(count, 1)}
        if val_tuples is not None:
            val_idx, val_same = val_tuples
            stacked = torch.from_numpy(val_embeddings[val_idx.T])  # (T, n, Z)
            metrics["val_loss"] = float(tuple_loss(stage, stacked, None if val_same is None
                                                   else torch.from_numpy(val_same), margin))
        metrics.update(retrieval_scores(val_embeddings, [i.label for i in val], train_embeddings, labels))
        metrics.update({"lr": optimizer.param_groups[0]["lr"], "margin": margin, "tuples": len(dataset),
                        "grouped": groups is not None, "hierarchical": hierarchical,
                        "train_seconds": round(trained - started, 4),
                        "val_seconds": round(time.perf_counter() - trained, 4)})
        history.append(metrics)
        logger.info("%s %s epoch %d: %s", config.name, stage, epoch + 1, metrics)
        # AP@6, or the largest cut-off there is when the training set is smaller than 6 images
        selection = metrics.get(SELECTION_METRIC, metrics[f"ap_at_{max(k for k in VAL_KS if k <= len(train))}"])
        improved = selection > best
        best = max(best, selection)
        payload = training_checkpoint(net, config, stage, metrics, fingerprint, weights_source, epoch, best,
                                      history, optimizer, scheduler, generator, options)
        payload.update({"kind": EMBEDDING_KIND, "embedding_dim": net.embedding_dim, "margin": margin,
                        "hierarchical": hierarchical, "grouped": groups is not None,
                        "selection_metric": SELECTION_METRIC})
        end_epoch(payload, metrics, last_path, best_path, improved=improved, on_epoch=on_epoch)

    return StageResult.if_finished(best_path, history, weights_source, epochs=options.epochs)
