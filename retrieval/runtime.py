"""What a worker process keeps loaded between tasks: encoders and finished indexes.

Loading a model or an index costs far more than one query, so both are cached per process,
keyed by their database ids (rows are immutable once done, so a cached entry never goes
stale). Only the worker calls this; the web process never loads a model.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from retrieval.models import IndexVersion, ModelVersion

FEATURES_FILE = "features.npy"  # the SE-CBIR vectors (descriptor "secbir")
CASE_IDS_FILE = "case_ids.npy"
SALIENCY_FILE = "saliency.npy"
BACKEND_DIR = "backend"
STYLE_PROJECTION_FILE = "style_projection.npz"

_lock = threading.Lock()
_encoders: OrderedDict[int, object] = OrderedDict()
_descriptor_encoders: OrderedDict[int, object] = OrderedDict()
_indexes: OrderedDict[int, LoadedIndex] = OrderedDict()
_ood_statistics: OrderedDict[tuple[int, str], object] = OrderedDict()
_KEEP = 2  # an old and a new version side by side while an index is swapped


def _remember(cache: OrderedDict, key: int, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _KEEP:
        cache.popitem(last=False)


def encoder_for(model4: ModelVersion):
    """The SE-CBIR encoder of a 4-channel ModelVersion on the configured device (cached)."""
    from retrieval.evaluation import load_encoder

    with _lock:
        encoder = _encoders.get(model4.id)
        if encoder is None:
            encoder = load_encoder(model4, settings.TORCH_DEVICE)
            _remember(_encoders, model4.id, encoder)
        return encoder


def index_path(index: IndexVersion) -> Path:
    return Path(settings.MEDIA_ROOT) / index.directory


def descriptor_file(name: str) -> str:
    from retrieval.methods import SECBIR

    return FEATURES_FILE if name == SECBIR else f"{name}.npy"


def index_descriptors(index: IndexVersion) -> set[str]:
    """The descriptors an index stores: those its methods need (SE-CBIR's always)."""
    from retrieval.methods import METHODS, SECBIR

    return {SECBIR} | {d for name in (index.methods or []) if name in METHODS for d in METHODS[name].needs}


def load_rgb(path: str) -> np.ndarray:
    """An image file as an RGB uint8 array (as stored: library images and queries are upright)."""
    from PIL import Image

    from retrieval.ml.features import as_rgb

    with Image.open(path) as image:
        return np.asarray(as_rgb(image), dtype=np.uint8)


def descriptor_encoder_for(index: IndexVersion, *, with_style_projection: bool = True):
    """The networks of an index (SE-CBIR pair, style extractor and projection, segmenter,
    embeddings) as one :class:`retrieval.ml.descriptors.DescriptorEncoder` (cached per index)."""
    from retrieval import methods as m
    from retrieval.ml.descriptors import DescriptorEncoder

    key = index.id if with_style_projection else -index.id
    with _lock:
        cached = _descriptor_encoders.get(key)
        if cached is not None:
            return cached
    encoder = encoder_for(index.model_version)
    needs = index_descriptors(index)
    options = {}
    if m.STYLE in needs:
        from retrieval.ml.measures import StyleExtractor, StyleProjection

        options["style_extractor"] = StyleExtractor(encoder.model3)
        if with_style_projection:
            with np.load(index_path(index) / STYLE_PROJECTION_FILE) as arrays:
                options["style_projection"] = StyleProjection.from_arrays(dict(arrays))
    if m.MASK in needs:
        from retrieval.services.segmentation import segmenter_for

        options["segmenter"] = segmenter_for(index.segmentation_model, device=str(encoder.device))
    embeddings = {}
    for name, model in ((m.CONTRASTIVE, index.contrastive_model), (m.TRIPLET, index.triplet_model)):
        if name in needs and model is not None:
            from retrieval.ml.metric import load_embedding

            embeddings[name] = load_embedding(model.checkpoint.path, device=encoder.device)
    loaded = DescriptorEncoder(encoder, embeddings=embeddings, **options)
    with _lock:
        _remember(_descriptor_encoders, key, loaded)
    return loaded


@dataclass
class LoadedIndex:
    index_id: int
    case_ids: np.ndarray  # (N,) int64, row -> Case id
    features: np.ndarray  # (N, D) float32 unit rows
    saliency: np.ndarray  # (N, S, S) uint8, memory-mapped
    backend: object  # retrieval.ml.index search backend
    directory: str = ""
    descriptors: dict = field(default_factory=dict)  # other methods' descriptors, loaded on first use

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(case ids (n, k), cosine similarities (n, k)), best first."""
        rows, scores = self.backend.search(queries, min(k, len(self.case_ids)))
        return self.case_ids[rows], scores

    def descriptor(self, name: str) -> np.ndarray:
        """The library rows of one descriptor (memory-mapped; the SE-CBIR vectors are in memory)."""
        from retrieval.methods import SECBIR

        if name == SECBIR:
            return self.features
        array = self.descriptors.get(name)
        if array is None:
            array = np.load(Path(settings.MEDIA_ROOT) / self.directory / descriptor_file(name), mmap_mode="r")
            self.descriptors[name] = array
        return array

    def row_of(self, case_id: int) -> int:
        rows = np.flatnonzero(self.case_ids == case_id)
        if not len(rows):
            raise KeyError(f"case {case_id} is not in index #{self.index_id}")
        return int(rows[0])


def loaded_index(index: IndexVersion) -> LoadedIndex:
    """A finished index's vectors, saliency maps and search backend (cached)."""
    from retrieval.ml.index import load_backend

    if index.status != IndexVersion.Status.DONE:
        raise ValueError(f"{index} is not finished (status {index.status})")
    with _lock:
        loaded = _indexes.get(index.id)
        if loaded is None:
            folder = index_path(index)
            features = np.load(folder / FEATURES_FILE)
            backend = load_backend(folder / BACKEND_DIR, features, kind=settings.SEARCH_BACKEND,
                                   faiss_min_vectors=settings.SEARCH_FAISS_MIN_VECTORS)
            loaded = LoadedIndex(index.id, np.load(folder / CASE_IDS_FILE), features,
                                 np.load(folder / SALIENCY_FILE, mmap_mode="r"), backend, index.directory)
            _remember(_indexes, index.id, loaded)
        return loaded


def ood_statistics(index: IndexVersion, name: str):
    """The Mahalanobis statistics of an index's out-of-distribution score (``ood-<digest>.npz``,
    :mod:`retrieval.services.ood`), cached per index and file: a recalibration writes a new file,
    so a cached entry never goes stale."""
    from retrieval.ml.ood import MahalanobisModel

    key = (index.id, name)
    with _lock:
        cached = _ood_statistics.get(key)
        if cached is None:
            with np.load(index_path(index) / name) as arrays:
                cached = MahalanobisModel.from_arrays(dict(arrays))
            _remember(_ood_statistics, key, cached)
        return cached


def forget() -> None:
    """Drop every cached encoder and index (tests; a worker never needs it)."""
    with _lock:
        _encoders.clear()
        _descriptor_encoders.clear()
        _indexes.clear()
        _ood_statistics.clear()
