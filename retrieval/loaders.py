"""Loading what a version row names: its models, encoders, segmenter, and an index's files.

Every path from a ``ModelVersion`` or ``IndexVersion`` to a loaded object goes through here:

* :func:`load_encoder`: the SE-CBIR encoder of a 4-channel ModelVersion and its 3-channel parent,
  making the saliency maps the model was trained on (:func:`model_saliency`);
* :func:`load_embedding_model`: a contrastive or triplet ModelVersion's embedding network;
* :func:`load_segmenter`: the classical segmenter, or a learned segmentation ModelVersion;
* :func:`load_descriptor_encoder`: an SE-CBIR encoder with what the requested descriptors need
  (style extractor and projection, segmenter, embeddings), and :func:`load_index_encoder`, the
  same for an index (its methods, its models, its style projection);
* :func:`load_index` / :func:`load_ood_statistics`: a finished index's vectors, saliency maps and
  search backend (memory-mapped: :func:`load_index_vectors`), and its out-of-distribution
  statistics;
* the index's files (:data:`FEATURES_FILE` ..., :func:`index_path`), written by
  :mod:`retrieval.services.index`, and :func:`load_rgb`, an image file as the encoders take it.

Devices are names (``cpu``, ``cuda``, ``auto``; :func:`retrieval.ml.devices.resolve_device`).
Nothing here caches: :mod:`retrieval.runtime` keeps what a worker process has loaded. How to build a
network from a checkpoint is the ML library's (:mod:`retrieval.ml.checkpoints`,
:mod:`retrieval.ml.embedding`, :mod:`retrieval.ml.segmentation`); PyTorch is imported only when
something is loaded, so the web process can import this module without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from retrieval import methods as m
from retrieval.models import IndexVersion, ModelVersion

FEATURES_FILE = "features.npy"  # the SE-CBIR vectors (descriptor "secbir")
CASE_IDS_FILE = "case_ids.npy"
SALIENCY_FILE = "saliency.npy"
BACKEND_DIR = "backend"
STYLE_PROJECTION_FILE = "style_projection.npz"


# --- An index's files ---------------------------------------------------------------------------

def index_path(index: IndexVersion) -> Path:
    """The folder of an index's files under ``MEDIA_ROOT``."""
    return Path(settings.MEDIA_ROOT) / index.directory


def descriptor_file(name: str) -> str:
    """The file of one descriptor's library rows in an index's folder."""
    return FEATURES_FILE if name == m.SECBIR else f"{name}.npy"


def index_descriptors(index: IndexVersion) -> set[str]:
    """The descriptors an index stores: those its methods need (SE-CBIR's always)."""
    return {m.SECBIR} | {d for name in (index.methods or []) if name in m.METHODS for d in m.METHODS[name].needs}


def load_rgb(path: str, *, at_least: int | None = None) -> np.ndarray:
    """An image file as an RGB uint8 array (as stored: library images and queries are upright).

    ``at_least``: the caller resizes to this side next, so a JPEG may be decoded at a reduced
    scale (1/2, 1/4, 1/8: libjpeg's DCT scaling, several times faster) as long as both sides stay
    at least this large; other formats are decoded whole."""
    from PIL import Image

    from retrieval.ml.features import as_rgb

    with Image.open(path) as image:
        if at_least is not None and image.format == "JPEG":
            image.draft("RGB", (at_least, at_least))
        return np.asarray(as_rgb(image), dtype=np.uint8)


# --- Models -------------------------------------------------------------------------------------

def model_saliency(model4: ModelVersion) -> dict:
    """How a 4-channel model's saliency maps are made: its training maps' method (and IG options),
    as :func:`retrieval.ml.saliency.saliency_record` writes them.

    Models registered before ``training_options`` existed were trained on vanilla maps.
    """
    from retrieval.ml.saliency import DEFAULT_IG_BASELINE, DEFAULT_IG_STEPS, VANILLA, saliency_record

    recorded = (model4.training_options or {}).get("saliency") or {}
    return saliency_record(recorded.get("method", VANILLA), recorded.get("ig_steps", DEFAULT_IG_STEPS),
                           recorded.get("ig_baseline", DEFAULT_IG_BASELINE))


def load_encoder(model4: ModelVersion, *, device: str = "cpu", saliency: dict | None = None):
    """The SE-CBIR encoder (:class:`retrieval.ml.features.SECBIREncoder`) of a 4-channel
    ModelVersion and its 3-channel parent, on ``device``.

    ``saliency`` (a saliency record: method, ig_steps, ig_baseline) says how its maps are made; by
    default the model's own (:func:`model_saliency`), so an index and its queries get the maps
    the model was trained on.
    """
    from retrieval.ml.checkpoints import load_checkpoint
    from retrieval.ml.devices import resolve_device
    from retrieval.ml.features import SECBIREncoder
    from retrieval.ml.saliency import DEFAULT_IG_BASELINE, DEFAULT_IG_STEPS

    if model4.stage != ModelVersion.Stage.RGB_SALIENCY or model4.parent is None:
        raise ValueError(f"{model4} is not a 4-channel model with a 3-channel parent")
    record = saliency if saliency is not None else model_saliency(model4)
    torch_device = resolve_device(device)
    return SECBIREncoder(load_checkpoint(Path(model4.parent.checkpoint.path), device=torch_device),
                         load_checkpoint(Path(model4.checkpoint.path), device=torch_device), device=torch_device,
                         method=record["method"], ig_steps=record.get("ig_steps", DEFAULT_IG_STEPS),
                         ig_baseline=record.get("ig_baseline", DEFAULT_IG_BASELINE))


def load_embedding_model(version: ModelVersion, *, device="cpu"):
    """The :class:`retrieval.ml.embedding.EmbeddingNet` of a contrastive or triplet ModelVersion."""
    from retrieval.ml.embedding import load_embedding

    return load_embedding(version.checkpoint.path, device=device)


def load_segmenter(version: ModelVersion | None, *, device: str = "cpu"):
    """The classical segmenter (``version`` None) or the learned model of a segmentation ModelVersion
    (``device``: cpu, cuda or auto), as a :class:`retrieval.ml.segmentation.Segmenter`."""
    from retrieval.ml.devices import resolve_device
    from retrieval.ml.segmentation import Segmenter

    if version is None:
        return Segmenter.classical()
    if version.stage != ModelVersion.Stage.SEGMENTATION:
        raise ValueError(f"{version} is not a segmentation model")
    return Segmenter.learned(version.checkpoint.path, version_id=version.id, device=resolve_device(device))


def load_descriptor_encoder(encoder, needs: set[str], *, contrastive: ModelVersion | None = None,
                            triplet: ModelVersion | None = None, segmentation: ModelVersion | None = None,
                            style_projection=None):
    """A :class:`retrieval.ml.descriptors.DescriptorEncoder` of one SE-CBIR ``encoder`` with what
    ``needs`` asks for: the style extractor (and ``style_projection``, when known), the segmenter
    (classical, or the learned ``segmentation`` ModelVersion) and the embedding models, on the
    encoder's device. A needed embedding without its ModelVersion is a ``ValueError``."""
    from retrieval.ml.descriptors import DescriptorEncoder

    options = {}
    if m.STYLE in needs:
        from retrieval.ml.measures import StyleExtractor

        options["style_extractor"] = StyleExtractor(encoder.model3)
        options["style_projection"] = style_projection
    if m.MASK in needs:
        options["segmenter"] = load_segmenter(segmentation, device=str(encoder.device))
    embeddings = {}
    for name, version in ((m.CONTRASTIVE, contrastive), (m.TRIPLET, triplet)):
        if name in needs:
            if version is None:
                raise ValueError(f"method {name!r} needs a trained {name} model (train_model --stage {name})")
            embeddings[name] = load_embedding_model(version, device=encoder.device)
    return DescriptorEncoder(encoder, embeddings=embeddings, **options)


def load_index_encoder(index: IndexVersion, *, encoder, with_style_projection: bool = True):
    """The networks of an index around its SE-CBIR ``encoder`` (:func:`load_encoder` of its model
    version): what the index's methods need, with its segmentation and embedding models and, unless
    ``with_style_projection`` is False (a build that has not fitted it yet), its style projection."""
    needs = index_descriptors(index)
    projection = None
    if m.STYLE in needs and with_style_projection:
        from retrieval.ml.measures import StyleProjection

        with np.load(index_path(index) / STYLE_PROJECTION_FILE) as arrays:
            projection = StyleProjection.from_arrays(dict(arrays))
    return load_descriptor_encoder(encoder, needs, contrastive=index.contrastive_model, triplet=index.triplet_model,
                                   segmentation=index.segmentation_model, style_projection=projection)


# --- Finished indexes ---------------------------------------------------------------------------

@dataclass
class LoadedIndex:
    index_id: int
    case_ids: np.ndarray  # (N,) int64, row -> Case id
    features: np.ndarray  # (N, D) float32 unit rows, memory-mapped (read-only)
    saliency: np.ndarray  # (N, S, S) uint8, memory-mapped
    backend: object  # a retrieval.ml.search backend
    directory: str = ""
    descriptors: dict = field(default_factory=dict)  # other methods' descriptors, loaded on first use
    row_metadata: object = None  # RowMetadata, read on the first filtered search (metadata())

    def search(self, queries: np.ndarray, k: int, *, where=None) -> tuple[np.ndarray, np.ndarray]:
        """(case ids (n, k'), cosine similarities (n, k')), best first; ``where``: a
        :class:`retrieval.ml.search.SearchFilter` applied inside the search (k' = fewer than k
        when it allows fewer cases)."""
        if where is not None and not where.empty and self.backend.kind != "qdrant" \
                and getattr(self.backend, "metadata", None) is None:
            self.backend.attach_metadata(self.metadata())  # (Qdrant filters on its own payload)
        rows, scores = self.backend.search(queries, min(k, len(self.case_ids)), where=where)
        return self.case_ids[rows], scores

    def metadata(self):
        """The rows' payload as :class:`retrieval.ml.search.RowMetadata`, read from the database
        once per loaded index, on its first filtered search."""
        if self.row_metadata is None:
            from retrieval.ml.search import RowMetadata

            self.row_metadata = RowMetadata.from_payload(case_payloads(self.case_ids))
        return self.row_metadata

    def descriptor(self, name: str) -> np.ndarray:
        """The library rows of one descriptor (memory-mapped, as the SE-CBIR vectors are)."""
        if name == m.SECBIR:
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


def load_index(index: IndexVersion, *, qdrant=None) -> LoadedIndex:
    """A finished index's vectors, saliency maps and search backend (``SEARCH_BACKEND``;
    ``qdrant``: the client, for ``SEARCH_BACKEND=qdrant``)."""
    if index.status != IndexVersion.Status.DONE:
        raise ValueError(f"{index} is not finished (status {index.status})")
    folder = index_path(index)
    case_ids = np.load(folder / CASE_IDS_FILE)
    if settings.SEARCH_BACKEND == "qdrant":
        features = np.load(folder / FEATURES_FILE, mmap_mode="r")
        backend = load_qdrant_backend(index, qdrant, features, case_ids)
    else:
        features, backend = load_index_vectors(folder, kind=settings.SEARCH_BACKEND,
                                               faiss_min_vectors=settings.SEARCH_FAISS_MIN_VECTORS)
    return LoadedIndex(index.id, case_ids, features, np.load(folder / SALIENCY_FILE, mmap_mode="r"), backend,
                       index.directory)


# --- Qdrant -------------------------------------------------------------------------------------

def make_qdrant_client():
    """A Qdrant client from the settings: the server at ``QDRANT_URL`` (with ``QDRANT_API_KEY``),
    or local mode at ``QDRANT_PATH`` (a folder or ``:memory:``). Not cached here:
    :func:`retrieval.runtime.qdrant_client` keeps one per process."""
    from qdrant_client import QdrantClient

    if settings.QDRANT_URL:
        return QdrantClient(url=settings.QDRANT_URL, api_key=settings.QDRANT_API_KEY)
    if settings.QDRANT_PATH == ":memory:":
        return QdrantClient(":memory:")
    if settings.QDRANT_PATH:
        return QdrantClient(path=settings.QDRANT_PATH)
    raise ValueError("no Qdrant is configured: set QDRANT_URL or QDRANT_PATH")


def qdrant_collection(index_id: int, method: str = m.SECBIR) -> str:
    """The Qdrant collection of one index version's vectors of one method. A query records its
    index version, so it searches that version's collection: activating a new version switches
    every later query at once, and an older version's collection keeps serving the queries sent
    to it until the cleanup removes the version (and drops its collections)."""
    return f"{settings.QDRANT_COLLECTION_PREFIX}-index-{int(index_id)}-{method}"


def case_payloads(case_ids: np.ndarray) -> list[dict]:
    """Per index row, the case's payload that searches filter on (``PAYLOAD_KEYS``); a case
    deleted since the build gets an empty payload (queries skip it anyway)."""
    from retrieval.models import Case

    fields_ = ("id", "dx", "lesion_id", "patient_id", "split", "localization", "sex", "age", "source_dataset")
    rows = {row[0]: row for row in Case.objects.filter(id__in=[int(i) for i in case_ids]).values_list(*fields_)}
    payloads = []
    for case_id in case_ids:
        row = rows.get(int(case_id))
        if row is None:
            payloads.append({"case_id": int(case_id)})
            continue
        _, dx, lesion, patient, split, site, sex, age, dataset = row
        payloads.append({"case_id": int(case_id), "diagnosis": dx, "lesion_id": lesion, "patient_id": patient,
                         "split": split, "site": site, "sex": sex, "age": age, "dataset": dataset})
    return payloads


def write_qdrant_collection(index_id: int, client, features: np.ndarray, case_ids: np.ndarray):
    """Upsert an index's SE-CBIR vectors and their cases' payload as its Qdrant collection."""
    from retrieval.ml.search_qdrant import QdrantBackend

    return QdrantBackend.create(client, qdrant_collection(index_id), features, case_payloads(case_ids))


def load_qdrant_backend(index: IndexVersion, client, features: np.ndarray, case_ids: np.ndarray):
    """The Qdrant backend of a finished index. Its collection is written by the index build;
    one that is missing (the index was built under another SEARCH_BACKEND) is written now from
    the index's files, with a warning, as a missing FAISS index is built at load."""
    import logging

    from retrieval.ml.search_qdrant import QdrantBackend

    if client is None:
        raise ValueError("SEARCH_BACKEND=qdrant needs a Qdrant client")
    name = qdrant_collection(index.id)
    if not client.collection_exists(name):
        logging.getLogger(__name__).warning("writing the missing Qdrant collection %s (%s vectors)", name,
                                            len(case_ids))
        return write_qdrant_collection(index.id, client, features, case_ids)
    return QdrantBackend.open(client, name, size=features.shape[0], dimension=features.shape[1])


def load_index_vectors(folder: Path, *, kind: str, faiss_min_vectors: int):
    """An index folder's SE-CBIR vectors and search backend, both memory-mapped.

    ``features.npy`` is opened with ``mmap_mode="r"``, never read whole: the exact backend
    searches the map in place, and the FAISS backends read their own saved file memory-mapped
    (:func:`retrieval.ml.search.read_saved`), so a FAISS worker touches ``features.npy`` only
    for the sample its load verifies and for the rows a method reads. Either way the vectors
    sit once in the host's page cache, shared by every worker process, instead of once per
    process (docs/scaling.md).
    """
    from retrieval.ml.search import load_backend

    features = np.load(Path(folder) / FEATURES_FILE, mmap_mode="r")
    return features, load_backend(Path(folder) / BACKEND_DIR, features, kind=kind,
                                  faiss_min_vectors=faiss_min_vectors)


def load_ood_statistics(index: IndexVersion, name: str):
    """The Mahalanobis statistics of an index's out-of-distribution score, from its file ``name``
    (``ood-<digest>.npz``, :mod:`retrieval.services.ood`)."""
    from retrieval.ml.ood import MahalanobisModel

    with np.load(index_path(index) / name) as arrays:
        return MahalanobisModel.from_arrays(dict(arrays))
