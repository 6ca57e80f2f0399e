"""The retrieval methods a clinician can pick: the registry (names, labels, descriptors).

Plain Python, importable by the web process without loading PyTorch; the scoring lives in
:mod:`retrieval.ml.methods`. SE-CBIR (the thesis) is the default. The others are the related
systems of the source papers: the 3-channel CBIR baseline (thesis), Mehta's Euclidean, cosine
and style scores and their I1-scores with the Dice coefficient of lesion masks (papers 000/001),
and the siamese (contrastive) and triplet-loss embeddings (papers 002/004).

Each method names the per-image *descriptors* it needs; an index stores them for every library
case and a query computes the same for its image:

========== ===================================================================================
secbir     4-channel (RGB + saliency) pooled features, unit rows (the SE-CBIR index vectors)
cnn3       3-channel model's pooled features, raw (not normalised): cnn3, Euclidean, cosine
style      the 3-channel model's multi-stage Gram matrices, as projected vectors (measures.py)
mask       lesion masks (MASK_SIZE x MASK_SIZE), bit-packed per row; the query's as a bool map
contrastive, triplet   the metric-learning embeddings, unit rows
========== ===================================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

SECBIR = "secbir"
CNN3 = "cnn3"
STYLE = "style"
MASK = "mask"
CONTRASTIVE = "contrastive"
TRIPLET = "triplet"
DESCRIPTORS = (SECBIR, CNN3, STYLE, MASK, CONTRASTIVE, TRIPLET)


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    needs: tuple[str, ...]
    source: str
    description: str


METHODS: dict[str, Method] = {m.name: m for m in [
    Method(SECBIR, "SE-CBIR (saliency-enhanced)", (SECBIR,), "thesis",
           "Cosine similarity of the 4-channel (image + saliency map) network's features."),
    Method(CNN3, "CNN (image only)", (CNN3,), "thesis",
           "Cosine similarity of the 3-channel classifier's features: SE-CBIR without the saliency map."),
    Method("euclidean", "Euclidean score", (CNN3,), "paper 000",
           "1 - d/d_max: Euclidean distance of the 3-channel features, scaled by the farthest library case."),
    Method("cosine", "Cosine score", (CNN3,), "paper 000",
           "(c + 1) / 2: cosine similarity of the 3-channel features rescaled to [0, 1]."),
    Method("style", "Style score", (STYLE,), "paper 000",
           "1 - L/L_max: style loss between Gram matrices of several network stages (colour, texture)."),
    Method("i1_ed", "I1 Euclidean + Dice", (CNN3, MASK), "paper 000",
           "Harmonic mean of the Euclidean score and the Dice coefficient of the lesion masks."),
    Method("i1_cd", "I1 cosine + Dice", (CNN3, MASK), "paper 000",
           "Harmonic mean of the cosine score and the Dice coefficient of the lesion masks."),
    Method("i1_ecd", "I1 Euclidean + cosine + Dice", (CNN3, MASK), "paper 000",
           "Harmonic mean of the Euclidean score, the cosine score and the Dice coefficient."),
    Method("i1_se", "I1 style + Euclidean", (STYLE, CNN3), "paper 000",
           "Harmonic mean of the style score and the Euclidean score."),
    Method("i1_sc", "I1 style + cosine", (STYLE, CNN3), "paper 000",
           "Harmonic mean of the style score and the cosine score."),
    Method("i1_sd", "I1 style + Dice", (STYLE, MASK), "paper 000",
           "Harmonic mean of the style score and the Dice coefficient of the lesion masks."),
    Method(CONTRASTIVE, "Siamese embedding (contrastive)", (CONTRASTIVE,), "paper 002",
           "Cosine similarity of an embedding trained with a contrastive loss on image pairs."),
    Method(TRIPLET, "Triplet embedding", (TRIPLET,), "paper 004",
           "Cosine similarity of an embedding trained with a (hierarchical) triplet loss."),
]}
DEFAULT_METHOD = SECBIR
#: (name, label) pairs, for choice fields.
METHOD_CHOICES = [(m.name, m.label) for m in METHODS.values()]


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown retrieval method {name!r}; one of: {', '.join(METHODS)}") from None
