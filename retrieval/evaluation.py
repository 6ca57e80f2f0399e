"""Quantitative evaluation of the project's own models (thesis Tables 3.I and 4.I).

Queries are the test split, the retrieval set is train + validation of the same collection.
SE-CBIR (4-channel features) and the 3-channel CBIR baseline are scored side by side, each
also lesion-aware; the two classifiers' accuracy and macro sensitivity come with them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

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


def _encode_cases(encoder, cases: list[Case], *, use_labels: bool, batch: int, progress: bool, description: str):
    from retrieval.ml.train import load_resized

    size = encoder.config.input_size
    features, baseline, predicted3, predicted4 = [], [], [], []
    for start in tqdm(range(0, len(cases), batch), desc=description, disable=not progress, unit="batch"):
        chunk = cases[start:start + batch]
        images = np.stack([load_resized(case.image.path, size) for case in chunk])
        labels = np.array([CODES.index(case.dx) for case in chunk]) if use_labels else None
        encoded = encoder.encode(images, labels)
        features.append(encoded.features)
        baseline.append(encoder.baseline_features(images))
        predicted3.extend(encoded.predicted.tolist())
        predicted4.extend(encoded.probabilities4.argmax(axis=1).tolist())
    return np.concatenate(features), np.concatenate(baseline), predicted3, predicted4


def evaluate_model(model4: ModelVersion, *, ks=(1, 3, 6, 9), device: str = "cpu", batch: int = 16,
                   progress: bool = True, **saliency_options) -> ModelEvaluation:
    from retrieval.ml.metrics import classification_scores, precision_at_k
    from retrieval.ml.search import cosine_topk

    encoder = load_encoder(model4, device, **saliency_options)
    cases = Case.objects.filter(collection=model4.collection).order_by("id")
    library = list(cases.filter(split__in=[TRAIN, VAL]))
    queries = list(cases.filter(split=TEST))
    if not library or not queries:
        raise ValueError(f"collection {model4.collection!r} needs train/val and test cases; run split_library")
    lib_features, lib_baseline, _, _ = _encode_cases(encoder, library, use_labels=True, batch=batch,
                                                     progress=progress, description="Library")
    q_features, q_baseline, predicted3, predicted4 = _encode_cases(encoder, queries, use_labels=False, batch=batch,
                                                                   progress=progress, description="Queries")
    largest_lesion = max(Counter(case.lesion_id for case in library).values())
    depth = min(len(library), max(ks) + largest_lesion)
    query_labels = [case.dx for case in queries]
    query_lesions = [case.lesion_id for case in queries]
    results = {}
    for method, (q, lib) in {METHOD_SECBIR: (q_features, lib_features), METHOD_CNN3: (q_baseline, lib_baseline)}.items():
        indices, _ = cosine_topk(q, lib, depth)
        labels = [[library[i].dx for i in row] for row in indices]
        lesions = [[library[i].lesion_id for i in row] for row in indices]
        results[method] = (
            precision_at_k(query_labels, labels, ks),
            precision_at_k(query_labels, labels, ks, query_lesions=query_lesions, neighbour_lesions=lesions,
                           lesion_aware=True),
        )
    classification = {
        "3-channel": classification_scores(query_labels, [CODES[i] for i in predicted3]),
        "4-channel": classification_scores(query_labels, [CODES[i] for i in predicted4]),
    }
    return ModelEvaluation(results, classification, len(library), len(queries))
