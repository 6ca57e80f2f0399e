"""What a worker process keeps loaded between tasks: encoders and finished indexes.

Loading a model or an index costs far more than one query, so both are cached per process,
keyed by their database ids (rows are immutable once done, so a cached entry never goes
stale). What is cached is loaded by :mod:`retrieval.loaders`; nothing is loaded at import time.
Only the worker calls this; the web process never loads a model.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from django.conf import settings

from retrieval import loaders
from retrieval.models import IndexVersion, ModelVersion

_lock = threading.Lock()
_qdrant_lock = threading.Lock()  # (loaded_index holds _lock while it asks for the client)
_encoders: OrderedDict[int, object] = OrderedDict()
_descriptor_encoders: OrderedDict[int, object] = OrderedDict()
_indexes: OrderedDict[int, loaders.LoadedIndex] = OrderedDict()
_ood_statistics: OrderedDict[tuple[int, str], object] = OrderedDict()
_qdrant: list = []  # the process's one Qdrant client (local mode locks its folder to one client)
_KEEP = 2  # an old and a new version side by side while an index is swapped


def _remember(cache: OrderedDict, key: int, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _KEEP:
        cache.popitem(last=False)


def encoder_for(model4: ModelVersion):
    """The SE-CBIR encoder of a 4-channel ModelVersion on the configured device (cached)."""
    with _lock:
        encoder = _encoders.get(model4.id)
        if encoder is None:
            encoder = loaders.load_encoder(model4, device=settings.TORCH_DEVICE)
            _remember(_encoders, model4.id, encoder)
        return encoder


def descriptor_encoder_for(index: IndexVersion, *, with_style_projection: bool = True):
    """The networks of an index (SE-CBIR pair, style extractor and projection, segmenter,
    embeddings) as one :class:`retrieval.ml.descriptors.DescriptorEncoder` (cached per index)."""
    key = index.id if with_style_projection else -index.id
    with _lock:
        cached = _descriptor_encoders.get(key)
        if cached is not None:
            return cached
    loaded = loaders.load_index_encoder(index, encoder=encoder_for(index.model_version),
                                        with_style_projection=with_style_projection)
    with _lock:
        _remember(_descriptor_encoders, key, loaded)
    return loaded


def loaded_index(index: IndexVersion) -> loaders.LoadedIndex:
    """A finished index's vectors, saliency maps and search backend (cached; an unfinished index
    is a ``ValueError``)."""
    with _lock:
        loaded = _indexes.get(index.id)
        if loaded is None:
            client = qdrant_client() if settings.SEARCH_BACKEND == "qdrant" else None
            loaded = loaders.load_index(index, qdrant=client)
            _remember(_indexes, index.id, loaded)
        return loaded


def qdrant_client():
    """The process's Qdrant client (``QDRANT_URL`` / ``QDRANT_PATH``), made on first use."""
    with _qdrant_lock:
        if not _qdrant:
            _qdrant.append(loaders.make_qdrant_client())
        return _qdrant[0]


def ood_statistics(index: IndexVersion, name: str):
    """The Mahalanobis statistics of an index's out-of-distribution score (``ood-<digest>.npz``,
    :mod:`retrieval.services.ood`), cached per index and file: a recalibration writes a new file,
    so a cached entry never goes stale."""
    key = (index.id, name)
    with _lock:
        cached = _ood_statistics.get(key)
        if cached is None:
            cached = loaders.load_ood_statistics(index, name)
            _remember(_ood_statistics, key, cached)
        return cached


def forget() -> None:
    """Drop every cached encoder and index (tests; a worker never needs it)."""
    with _lock:
        _encoders.clear()
        _descriptor_encoders.clear()
        _indexes.clear()
        _ood_statistics.clear()
    with _qdrant_lock:
        for client in _qdrant:
            client.close()
        _qdrant.clear()
