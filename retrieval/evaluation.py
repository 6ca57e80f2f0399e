"""Quantitative evaluation of the project's own models (thesis Tables 3.I and 4.I).

Queries are the test split, the retrieval set is train + validation of the same collection.
SE-CBIR (4-channel features), the 3-channel CBIR baseline and the other retrieval methods
(:mod:`retrieval.methods`) are scored side by side on the same images, each also lesion-aware;
the two classifiers' accuracy and macro sensitivity come with them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from retrieval import methods as m
from retrieval.classes import CODES, TEST, TRAIN, VAL
from retrieval.models import Case, ModelVersion

METHOD_SECBIR = "secbir"
METHOD_CNN3 = "cnn3"


@dataclass
class ModelEvaluation:
    results: dict  # method -> (RetrievalScores, lesion-aware RetrievalScores)
    classification: dict  # "3-channel" / "4-channel" -> ClassificationScores on the test split
    n_library: int
    n_queries: int
    cost: dict | None = None  # method -> mean scoring milliseconds per query


def load_encoder(model4: ModelVersion, device: str = "cpu", **saliency_options):
    """The SE-CBIR encoder of a 4-channel ModelVersion and its 3-channel parent.

    ``saliency_options`` go to :class:`SECBIREncoder` (method, ig_steps, ig_baseline).
    """
    from pathlib import Path

    from retrieval.ml.features import SECBIREncoder
    from retrieval.ml.train import load_checkpoint, resolve_device

    if model4.stage != ModelVersion.Stage.RGB_SALIENCY or model4.parent is None:
        raise ValueError(f"{model4} is not a 4-channel model with a 3-channel parent")
    torch_device = resolve_device(device)
    return SECBIREncoder(load_checkpoint(Path(model4.parent.checkpoint.path), device=torch_device),
                         load_checkpoint(Path(model4.checkpoint.path), device=torch_device), device=torch_device,
                         **saliency_options)


def descriptor_encoder(model4: ModelVersion, needs: set[str], *, device: str = "cpu", contrastive=None,
                       triplet=None, segmentation=None, **saliency_options):
    """A DescriptorEncoder of one SE-CBIR model with what ``needs`` asks for (style extractor,
    segmenter: classical, or the learned ``segmentation`` ModelVersion; embedding models)."""
    from retrieval.ml.descriptors import DescriptorEncoder

    encoder = load_encoder(model4, device, **saliency_options)
    options = {}
    if m.STYLE in needs:
        from retrieval.ml.measures import StyleExtractor

        options["style_extractor"] = StyleExtractor(encoder.model3)
    if m.MASK in needs:
        from retrieval.services.segmentation import segmenter_for

        options["segmenter"] = segmenter_for(segmentation, device=str(encoder.device))
    embeddings = {}
    for name, version in ((m.CONTRASTIVE, contrastive), (m.TRIPLET, triplet)):
        if name in needs:
            if version is None:
                raise ValueError(f"method {name!r} needs a trained {name} model (train_model --stage {name})")
            from retrieval.ml.metric import load_embedding

            embeddings[name] = load_embedding(version.checkpoint.path, device=encoder.device)
    return DescriptorEncoder(encoder, embeddings=embeddings, **options)


def _encode_cases(encoder, cases: list[Case], needs: set[str], *, use_labels: bool, batch: int, progress: bool,
                  description: str, packed_masks: bool = True):
    from retrieval.runtime import load_rgb

    parts: dict[str, list[np.ndarray]] = {name: [] for name in needs}
    predicted3, predicted4 = [], []
    for start in tqdm(range(0, len(cases), batch), desc=description, disable=not progress, unit="batch"):
        chunk = cases[start:start + batch]
        images = [load_rgb(case.image.path) for case in chunk]
        labels = np.array([CODES.index(case.dx) for case in chunk]) if use_labels else None
        encoded = encoder.encode(images, labels, needs=needs, packed_masks=packed_masks)
        for name in needs:
            parts[name].append(encoded.descriptors[name])
        predicted3.extend(encoded.secbir.predicted.tolist())
        predicted4.extend(encoded.secbir.probabilities4.argmax(axis=1).tolist())
    return {name: np.concatenate(rows) for name, rows in parts.items()}, predicted3, predicted4


def _fit_style(encoder, library: list[Case], *, batch: int, components: int) -> None:
    """Fit the style projection on (a sample of) the retrieval set, as an index build does."""
    from retrieval.ml.measures import StyleProjection
    from retrieval.runtime import load_rgb
    from retrieval.services.index import STYLE_FIT_SAMPLE

    rows = np.unique(np.linspace(0, len(library) - 1, min(STYLE_FIT_SAMPLE, len(library))).round().astype(int))
    sample = [library[i] for i in rows]
    raw = [encoder.raw_style([load_rgb(c.image.path) for c in sample[start:start + batch]])
           for start in range(0, len(sample), batch)]
    encoder.style_projection = StyleProjection.fit(np.concatenate(raw), components=components)


def evaluate_model(model4: ModelVersion, *, ks=(1, 3, 6, 9), device: str = "cpu", batch: int = 16,
                   progress: bool = True, methods: list[str] | None = None, contrastive: ModelVersion | None = None, triplet: ModelVersion | None = None,
                   segmentation: ModelVersion | None = None, style_components: int = 256, **saliency_options) -> ModelEvaluation:
    """Retrieval scores of ``methods`` (default SE-CBIR and the 3-channel baseline) on one split:
    queries = test images, retrieval set = train + validation images, every method on the same
    images; plus the SE-CBIR classifiers' accuracy. ``cost`` gives each method's mean scoring
    time per query in milliseconds (descriptors precomputed, as in an index)."""
    import time

    from retrieval.ml.methods import method_topk
    from retrieval.ml.metrics import classification_scores, precision_at_k

    methods = list(methods or [METHOD_SECBIR, METHOD_CNN3])
    for name in methods:
        m.get_method(name)
    needs = {m.SECBIR} | {d for name in methods for d in m.METHODS[name].needs}
    encoder = descriptor_encoder(model4, needs, device=device, contrastive=contrastive, triplet=triplet,
                                 segmentation=segmentation, **saliency_options)
    cases = Case.objects.filter(collection=model4.collection).order_by("id")
    library = list(cases.filter(split__in=[TRAIN, VAL]))
    queries = list(cases.filter(split=TEST))
    if not library or not queries:
        raise ValueError(f"collection {model4.collection!r} needs train/val and test cases; run split_library")
    if m.STYLE in needs:
        _fit_style(encoder, library, batch=batch, components=style_components)
    lib, _, _ = _encode_cases(encoder, library, needs, use_labels=True, batch=batch, progress=progress,
                              description="Library")
    qs, predicted3, predicted4 = _encode_cases(encoder, queries, needs, use_labels=False, batch=batch,
                                               progress=progress, description="Queries", packed_masks=False)
    largest_lesion = max(Counter(case.lesion_id for case in library).values())
    depth = min(len(library), max(ks) + largest_lesion)
    query_labels = [case.dx for case in queries]
    query_lesions = [case.lesion_id for case in queries]
    results, cost = {}, {}
    for name in methods:
        started = time.perf_counter()
        indices = [method_topk(name, {d: qs[d][i] for d in m.METHODS[name].needs}, lib, depth)[0]
                   for i in range(len(queries))]
        cost[name] = 1000 * (time.perf_counter() - started) / len(queries)
        labels = [[library[i].dx for i in row] for row in indices]
        lesions = [[library[i].lesion_id for i in row] for row in indices]
        results[name] = (
            precision_at_k(query_labels, labels, ks),
            precision_at_k(query_labels, labels, ks, query_lesions=query_lesions, neighbour_lesions=lesions,
                           lesion_aware=True),
        )
    classification = {
        "3-channel": classification_scores(query_labels, [CODES[i] for i in predicted3]),
        "4-channel": classification_scores(query_labels, [CODES[i] for i in predicted4]),
    }
    return ModelEvaluation(results, classification, len(library), len(queries), cost)
