"""Quantitative evaluation of the project's own models (thesis Tables 3.I and 4.I).

Queries are the test split, the retrieval set is train + validation of the same collection.
SE-CBIR (4-channel features), the 3-channel CBIR baseline and the other retrieval methods
(:mod:`retrieval.methods`) are scored side by side on the same images, each also lesion-aware;
the two classifiers' accuracy and macro sensitivity come with them.

What a reviewer needs besides the point figures (:func:`evaluation_uncertainty`): lesion-bootstrap
intervals of every per-class P@k and AP@k and a paired test of each method against SE-CBIR
(:mod:`retrieval.ml.bootstrap`); each method's neighbour vote next to the classifiers' own
decisions on the same queries, with the calibration of its shares (:mod:`retrieval.ml.calibration`);
how often equal scores decided a rank (the seeded tie-break of ``method_topk``). The library's
saliency maps explain the ground-truth class (the thesis) or, for the label-leakage ablation, the
predicted class (``library_saliency``). A 4-channel model is always evaluated with the saliency
maps it was trained on (:func:`checked_saliency`). The models are loaded by :mod:`retrieval.loaders`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from retrieval import loaders
from retrieval import methods as m
from retrieval.classes import CODES, TEST, TRAIN, VAL
from retrieval.ml.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES
from retrieval.models import Case, ModelVersion

METHOD_SECBIR = "secbir"
METHOD_CNN3 = "cnn3"


#: Library saliency maps (``--library-saliency``): for the ground-truth class (the thesis), for
#: the 3-channel model's predicted class (as queries get them: no label reaches the library's
#: descriptors), or both side by side (the predicted variant as the extra method below).
LIBRARY_TRUTH, LIBRARY_PREDICTED, LIBRARY_BOTH = "truth", "predicted", "both"
LIBRARY_SALIENCY = (LIBRARY_TRUTH, LIBRARY_PREDICTED)
METHOD_SECBIR_PREDICTED = "secbir-predicted"
#: Neighbours in the vote: the six a clinician sees (thesis 3.4, the reader study).
VOTE_K = 6


@dataclass
class TieCounts:
    """How often equal scores, put in order by the seeded tie-break, decided a rank.

    ``tied_ranks``: (query, rank <= max k) positions whose case scored exactly as another
    candidate, of ``ranks``; ``queries``: queries with at least one such rank; ``at_cut[k]``:
    queries whose k-th and (k+1)-th scores are equal, i.e. the tie-break chose which cases are
    in the top k.
    """

    ranks: int
    tied_ranks: int
    queries: int
    at_cut: dict[int, int]

    def as_dict(self) -> dict:
        return {"ranks": self.ranks, "tied_ranks": self.tied_ranks, "queries_with_tied_rank": self.queries,
                "tie_at_cut": {str(k): n for k, n in self.at_cut.items()}}


@dataclass
class MethodRecord:
    """Per-query outcomes of one method, in query order (what the bootstrap resamples)."""

    hits: np.ndarray  # (n, K) share of the first k neighbours with the query's class
    hits_lesion_aware: np.ndarray  # (n, K) the same after removing the query's own lesion
    vote: list[str]  # the neighbour vote's class (first VOTE_K neighbours)
    vote_share: np.ndarray  # (n,) share of that class, count / VOTE_K
    ties: TieCounts


@dataclass
class ModelEvaluation:
    results: dict  # method -> (RetrievalScores, lesion-aware RetrievalScores)
    classification: dict  # "3-channel" / "4-channel" -> ClassificationScores on the test split
    n_library: int
    n_queries: int
    cost: dict | None = None  # method -> mean scoring milliseconds per query
    records: dict = field(default_factory=dict)  # method -> MethodRecord
    query_labels: list[str] = field(default_factory=list)
    query_lesions: list[str] = field(default_factory=list)
    query_ids: list[str] = field(default_factory=list)  # image ids, in query order
    predicted: dict = field(default_factory=dict)  # "3-channel"/"4-channel" -> predicted codes
    confidence: dict = field(default_factory=dict)  # "3-channel"/"4-channel" -> (n,) top softmax probability
    ks: list[int] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # library_saliency, saliency, stem_init, tie_seed, vote_k


def model_stem_init(model4: ModelVersion) -> str:
    return (model4.training_options or {}).get("stem_init", "mean")


def checked_saliency(model4: ModelVersion, method: str | None = None, ig_steps: int | None = None,
                     ig_baseline: str | None = None) -> dict:
    """The saliency options to evaluate or index ``model4`` with: its own, or the requested ones
    when they are the same. A 4-channel model only ever saw maps of its training method, so
    feeding it others would compare it unfairly: a mismatch is a ``ValueError`` saying what to do.
    """
    from retrieval.ml.saliency import saliency_record

    own = loaders.model_saliency(model4)
    if method is None and (ig_steps is not None or ig_baseline is not None):
        method = own["method"]
    if method is None:
        return own
    wanted = saliency_record(method, ig_steps if ig_steps is not None else own.get("ig_steps", 32),
                             ig_baseline or own.get("ig_baseline", "black"))
    if wanted != own:
        trained = "vanilla-gradient maps" if own["method"] == "vanilla" else (
            f"integrated-gradient maps ({own['ig_steps']} steps, {own['ig_baseline']} baseline)")
        asked = "vanilla-gradient maps" if wanted["method"] == "vanilla" else (
            f"integrated-gradient maps ({wanted['ig_steps']} steps, {wanted['ig_baseline']} baseline)")
        raise ValueError(
            f"{model4} was trained on {trained}; evaluating it with {asked} would feed it maps it never saw. "
            f"Leave out --saliency/--ig-* to use the model's own, or train a matching 4-channel model "
            f"(train_model --stage 4ch --saliency {wanted['method']}"
            + (f" --ig-steps {wanted['ig_steps']} --ig-baseline {wanted['ig_baseline']}"
               if wanted["method"] == "integrated" else "") + ")")
    return own


@dataclass
class _Encoded:
    descriptors: dict  # name -> (n, ...) rows
    predicted3: list[int]
    predicted4: list[int]
    confidence3: np.ndarray  # (n,) top softmax probability of the 3-channel model
    confidence4: np.ndarray


def _encode_cases(encoder, cases: list[Case], needs: set[str], *, use_labels: bool, batch: int, progress: bool,
                  description: str, packed_masks: bool = True) -> _Encoded:
    """Descriptors of ``cases``; ``use_labels``: saliency maps for their ground-truth class (else
    the 3-channel model's predicted class, as for queries)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in needs}
    predicted3, predicted4, confidence3, confidence4 = [], [], [], []
    for start in tqdm(range(0, len(cases), batch), desc=description, disable=not progress, unit="batch"):
        chunk = cases[start:start + batch]
        images = [loaders.load_rgb(case.image.path) for case in chunk]
        labels = np.array([CODES.index(case.dx) for case in chunk]) if use_labels else None
        encoded = encoder.encode(images, labels, needs=needs, packed_masks=packed_masks)
        for name in needs:
            parts[name].append(encoded.descriptors[name])
        predicted3.extend(encoded.secbir.predicted.tolist())
        predicted4.extend(encoded.secbir.probabilities4.argmax(axis=1).tolist())
        confidence3.append(encoded.secbir.probabilities.max(axis=1))
        confidence4.append(encoded.secbir.probabilities4.max(axis=1))
    return _Encoded({name: np.concatenate(rows) for name, rows in parts.items()}, predicted3, predicted4,
                    np.concatenate(confidence3).astype(np.float64), np.concatenate(confidence4).astype(np.float64))


def _fit_style(encoder, library: list[Case], *, batch: int, components: int) -> None:
    """Fit the style projection on (a sample of) the retrieval set, as an index build does."""
    from retrieval.ml.measures import StyleProjection
    from retrieval.services.index import STYLE_FIT_SAMPLE

    rows = np.unique(np.linspace(0, len(library) - 1, min(STYLE_FIT_SAMPLE, len(library))).round().astype(int))
    sample = [library[i] for i in rows]
    raw = [encoder.raw_style([loaders.load_rgb(c.image.path) for c in sample[start:start + batch]])
           for start in range(0, len(sample), batch)]
    encoder.style_projection = StyleProjection.fit(np.concatenate(raw), components=components)


def _tie_counts(scores: list[np.ndarray], ks: list[int]) -> TieCounts:
    """Where equal scores met in each query's ranked list (scores best first, at least max k + 1)."""
    deepest = max(ks)
    tied_ranks, queries, at_cut = 0, 0, {k: 0 for k in ks}
    for row in scores:
        row = np.asarray(row, dtype=np.float64)
        equal_next = row[1:] == row[:-1]  # rank r (0-based) ties with rank r + 1
        tied = np.zeros(len(row), dtype=bool)
        tied[:-1] |= equal_next
        tied[1:] |= equal_next
        count = int(tied[:deepest].sum())
        tied_ranks += count
        queries += count > 0
        for k in ks:
            at_cut[k] += bool(len(row) > k and row[k - 1] == row[k])
    return TieCounts(ranks=len(scores) * deepest, tied_ranks=tied_ranks, queries=queries, at_cut=at_cut)


def evaluate_model(model4: ModelVersion, *, ks=(1, 3, 6, 9), device: str = "cpu", batch: int = 16,
                   progress: bool = True, methods: list[str] | None = None, contrastive: ModelVersion | None = None,
                   triplet: ModelVersion | None = None, segmentation: ModelVersion | None = None,
                   style_components: int = 256, library_saliency: str = LIBRARY_TRUTH, tie_seed: int = 0,
                   vote_k: int = VOTE_K, **saliency_options) -> ModelEvaluation:
    """Retrieval scores of ``methods`` (default SE-CBIR and the 3-channel baseline) on one split:
    queries = test images, retrieval set = train + validation images, every method on the same
    images; plus the SE-CBIR classifiers' accuracy. ``cost`` gives each method's mean scoring
    time per query in milliseconds (descriptors precomputed, as in an index).

    ``library_saliency``: the library's saliency maps for the ground-truth class (``truth``, the
    thesis), the predicted class (``predicted``), or ``both``: then ``secbir`` uses the truth maps
    and the extra method ``secbir-predicted`` the predicted ones, scored on the same queries.
    ``saliency_options`` (method, ig_steps, ig_baseline) must be the model's own
    (:func:`checked_saliency`); by default they are. ``tie_seed`` seeds the order of equal scores
    (:func:`retrieval.ml.methods.method_topk`); ``vote_k`` neighbours make the neighbour vote.
    """
    import time

    from retrieval.ml.methods import method_topk
    from retrieval.ml.metrics import classification_scores, neighbour_vote_tally, precision_at_k, query_precision

    if library_saliency not in (*LIBRARY_SALIENCY, LIBRARY_BOTH):
        raise ValueError(f"library_saliency must be one of {', '.join((*LIBRARY_SALIENCY, LIBRARY_BOTH))}")
    record = checked_saliency(model4, **saliency_options)
    methods = [name for name in (methods or [METHOD_SECBIR, METHOD_CNN3]) if name != METHOD_SECBIR_PREDICTED]
    for name in methods:
        m.get_method(name)
    if library_saliency == LIBRARY_BOTH and METHOD_SECBIR not in methods:
        methods.insert(0, METHOD_SECBIR)
    needs = {m.SECBIR} | {d for name in methods for d in m.METHODS[name].needs}
    encoder = loaders.load_descriptor_encoder(loaders.load_encoder(model4, device=device, saliency=record), needs,
                                              contrastive=contrastive, triplet=triplet, segmentation=segmentation)
    cases = Case.objects.filter(collection=model4.collection).order_by("id")
    library = list(cases.filter(split__in=[TRAIN, VAL]))
    queries = list(cases.filter(split=TEST))
    if not library or not queries:
        raise ValueError(f"collection {model4.collection!r} needs train/val and test cases; run split_library")
    ks = sorted(ks)
    if m.STYLE in needs:
        _fit_style(encoder, library, batch=batch, components=style_components)
    lib = _encode_cases(encoder, library, needs, use_labels=library_saliency != LIBRARY_PREDICTED, batch=batch,
                        progress=progress, description="Library").descriptors
    # the scored methods: (row name, registry method, library descriptors)
    scored = [(name, name, lib) for name in methods]
    if library_saliency == LIBRARY_BOTH:
        predicted_lib = _encode_cases(encoder, library, {m.SECBIR}, use_labels=False, batch=batch, progress=progress,
                                      description="Library (predicted-class maps)").descriptors
        scored.insert(methods.index(METHOD_SECBIR) + 1, (METHOD_SECBIR_PREDICTED, METHOD_SECBIR, predicted_lib))
    qs = _encode_cases(encoder, queries, needs, use_labels=False, batch=batch, progress=progress,
                       description="Queries", packed_masks=False)
    largest_lesion = max(Counter(case.lesion_id for case in library).values())
    # one more than the deepest cut-off, so that a tie across the cut can be seen
    depth = min(len(library), max(max(ks), vote_k) + largest_lesion + 1)
    query_labels = [case.dx for case in queries]
    query_lesions = [case.lesion_id for case in queries]
    results, cost, records = {}, {}, {}
    for row_name, name, library_rows in scored:
        started = time.perf_counter()
        found = [method_topk(name, {d: qs.descriptors[d][i] for d in m.METHODS[name].needs}, library_rows, depth,
                             tie_seed=tie_seed) for i in range(len(queries))]
        cost[row_name] = 1000 * (time.perf_counter() - started) / len(queries)
        labels = [[library[i].dx for i in rows] for rows, _ in found]
        lesions = [[library[i].lesion_id for i in rows] for rows, _ in found]
        results[row_name] = (
            precision_at_k(query_labels, labels, ks),
            precision_at_k(query_labels, labels, ks, query_lesions=query_lesions, neighbour_lesions=lesions,
                           lesion_aware=True),
        )
        votes = [neighbour_vote_tally(row[:vote_k]) for row in labels]
        records[row_name] = MethodRecord(
            hits=query_precision(query_labels, labels, ks),
            hits_lesion_aware=query_precision(query_labels, labels, ks, query_lesions=query_lesions,
                                              neighbour_lesions=lesions, lesion_aware=True),
            vote=[vote.top for vote in votes],
            vote_share=np.array([vote.shares[vote.top] for vote in votes]),
            ties=_tie_counts([scores for _, scores in found], ks),
        )
    predicted = {"3-channel": [CODES[i] for i in qs.predicted3], "4-channel": [CODES[i] for i in qs.predicted4]}
    classification = {name: classification_scores(query_labels, codes) for name, codes in predicted.items()}
    options = {"model_version": model4.id, "library_saliency": library_saliency, "saliency": record,
               "stem_init": model_stem_init(model4), "tie_seed": tie_seed, "vote_k": vote_k}
    return ModelEvaluation(results, classification, len(library), len(queries), cost, records=records,
                           query_labels=query_labels, query_lesions=query_lesions,
                           query_ids=[case.image_id for case in queries], predicted=predicted,
                           confidence={"3-channel": qs.confidence3, "4-channel": qs.confidence4}, ks=ks,
                           options=options)


def evaluation_uncertainty(evaluation: ModelEvaluation, *, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                           level: float = DEFAULT_LEVEL, reference: str | None = METHOD_SECBIR):
    """Lesion-bootstrap intervals of every method's per-class P@k and AP@k (standard and
    lesion-aware), paired comparisons against ``reference`` (SE-CBIR) on the same replicates,
    and the decision figures (:func:`decision_uncertainty`). Returns (Uncertainty, decisions)."""
    from retrieval.ml.bootstrap import LesionBootstrap, retrieval_uncertainty

    draw = LesionBootstrap(evaluation.query_lesions, evaluation.query_labels, replicates=replicates, seed=seed)
    uncertainty = retrieval_uncertainty(draw, evaluation.query_labels, evaluation.ks,
                                        {name: (r.hits, r.hits_lesion_aware) for name, r in evaluation.records.items()},
                                        classes=CODES, level=level, reference=reference)
    return uncertainty, decision_uncertainty(draw, evaluation, level=level)


def decision_uncertainty(draw, evaluation: ModelEvaluation, *, level: float = DEFAULT_LEVEL) -> dict:
    """Accuracy and macro sensitivity, with intervals, of the classifiers (no retrieval) and of each
    method's neighbour vote on the same queries; each against the 3-channel classifier (paired);
    the calibration (reliability, ECE with interval) of the vote's top share and of the softmax."""
    from retrieval.ml.bootstrap import compare, interval
    from retrieval.ml.calibration import softmax_reliability, vote_reliability

    labels = np.asarray(evaluation.query_labels)
    vote_k = evaluation.options.get("vote_k", VOTE_K)

    def figures(answers, confidence, calibrate):
        correct = (np.asarray(answers) == labels).astype(np.float64)
        accuracy = draw.mean(correct)
        per_class, macro = draw.class_means(correct, labels, CODES)
        table, bins = calibrate(confidence, correct)
        ece, ece_reps = draw.weighted_abs_sum(correct - np.asarray(confidence, dtype=np.float64), bins,
                                              len(table.bins))
        return {"correct": correct, "accuracy": accuracy, "macro": macro, "per_class": per_class,
                "reliability": table, "ece": (ece, ece_reps)}

    sources = {f"{name} classifier": figures(evaluation.predicted[name], evaluation.confidence[name],
                                             softmax_reliability)
               for name in ("3-channel", "4-channel") if name in evaluation.predicted}
    for name, record in evaluation.records.items():
        sources[f"{name} vote"] = figures(record.vote, record.vote_share,
                                          lambda conf, correct: vote_reliability(conf, correct, vote_k))
    baseline = sources.get("3-channel classifier")
    out = {}
    for source, f in sources.items():
        entry = {
            "n": int(len(labels)),
            "accuracy": float(f["accuracy"][0][0]), "accuracy_ci": interval(f["accuracy"][1], level)[0],
            "macro_sensitivity": float(f["macro"][0][0]),
            "macro_sensitivity_ci": interval(f["macro"][1], level)[0],
            "sensitivity": {code: float(est[0]) for code, (est, _) in f["per_class"].items()},
            "sensitivity_ci": {code: interval(reps, level)[0] for code, (_, reps) in f["per_class"].items()},
            "reliability": f["reliability"], "ece": f["ece"][0], "ece_ci": interval(f["ece"][1], level)[0],
            "vs_3_channel": None,
        }
        if baseline is not None and f is not baseline:
            entry["vs_3_channel"] = {
                "accuracy": compare(f["accuracy"][0], f["accuracy"][1], baseline["accuracy"][0],
                                    baseline["accuracy"][1], level)[0],
                "macro_sensitivity": compare(f["macro"][0], f["macro"][1], baseline["macro"][0], baseline["macro"][1],
                                             level)[0],
            }
        out[source] = entry
    return out
