"""The out-of-distribution warning of an index: calibrated when the index is built, applied per query.

Calibration (:func:`ood_calibrate`, at the end of every build; :func:`index_calibrate` recomputes
it for a finished index) encodes two sets exactly as queries are encoded (saliency for the
predicted class):

* **in-distribution, held out**: the collection's validation images, each searched with its own
  lesion excluded (a new patient's image has no photo of its lesion in the library). When the
  validation split has fewer than ``MIN_HELD_OUT`` images, whole lesions of the rest of the library
  (the training split, or unsplit cases; chosen by a stable hash of their id, at most
  ``MAX_TRAIN_SHARE`` of them) top it up; they are flagged ``library`` in the figures, because
  the classifiers were trained on them.
* **out-of-distribution**: :mod:`retrieval.ml.ood_set` (real non-dermoscopic images shipped by
  installed packages, generated skin close-ups and plain inputs).

Every candidate score of :mod:`retrieval.ml.ood` is computed for both; the class means and
shrunk covariance of the Mahalanobis score are fitted on the library rows *outside* the held-out
lesions (so held-out images are new to it, as a query is); the score is chosen on the select half
and its figures are reported on the report half (:func:`retrieval.ml.ood.select_score`). The
record goes to ``IndexVersion.calibration``; the Mahalanobis statistics, when the chosen score
needs them, to ``ood-<sha256[:12]>.npz`` in the index folder (content-addressed: a worker that has
an older file cached never mixes it with a newer threshold).

A query (:func:`query_ood`) computes only the chosen score, from what its search and saliency
pass already produced, and is warned when the score is below the threshold. Indexes calibrated
before this (no ``version`` 2 record) keep their best-cosine rule and threshold, labelled
``legacy_best_cosine``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.db import transaction
from django.utils import timezone

from retrieval import loaders, runtime
from retrieval.classes import CODES, VAL
from retrieval.models import Case, IndexVersion
from retrieval.ood_record import LEGACY, VERSION

logger = logging.getLogger(__name__)

LEGACY_DESCRIPTION = ("cosine similarity of the nearest library image against the 1st percentile of validation "
                      "images' (calibrated before the other scores existed)")
#: Fewer validation images than this: whole training lesions top the held-out set up to it.
MIN_HELD_OUT = 300
#: At most this many held-out images are encoded (spread over the validation split).
MAX_HELD_OUT = 1000
#: At most this share of the other library lesions tops the held-out set up (the Mahalanobis fit keeps the rest).
MAX_TRAIN_SHARE = 0.25
BATCH = 16
STATS_PREFIX = "ood-"
SOURCE_VALIDATION, SOURCE_LIBRARY = "validation", "library"
SELECTION_RULE = (
    "held-out in-distribution images (whole lesions) and the evaluation set (whole image groups) are split "
    "into a select half and a report half by a stable hash, stratified by source and kind; per candidate the "
    "threshold is the split-conformal quantile of the select half's in-distribution scores for the target "
    "false-warning rate; the candidate that warns the largest mean share per kind of the select half's "
    "out-of-distribution images wins (ties: higher select-half AUROC, then the simpler score); the figures "
    "shown are the report half's, which neither the threshold nor the choice saw"
)


class CalibrationError(Exception):
    """The calibration cannot be computed; the message says why (for administrators)."""


def _round(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _round(item) for key, item in value.items()}
    return value


def _held_out(index: IndexVersion, case_ids: np.ndarray) -> list[tuple[Case, str]]:
    """The held-out in-distribution cases of the index (validation first) and their source."""
    indexed = set(case_ids.tolist())
    cases = Case.objects.filter(collection=index.collection, id__in=case_ids.tolist()).order_by("id")
    val = [c for c in cases.filter(split=VAL).only("id", "image", "lesion_id", "dx") if c.id in indexed]
    if len(val) > MAX_HELD_OUT:
        val = [val[i] for i in np.unique(np.linspace(0, len(val) - 1, MAX_HELD_OUT).round().astype(int))]
    chosen = [(case, SOURCE_VALIDATION) for case in val]
    if len(chosen) < MIN_HELD_OUT:
        train = [c for c in cases.exclude(split=VAL).only("id", "image", "lesion_id", "dx") if c.id in indexed]
        by_lesion: dict[str, list[Case]] = {}
        for case in train:
            by_lesion.setdefault(case.lesion_id, []).append(case)
        order = sorted(by_lesion, key=lambda lesion: (hashlib.sha256(lesion.encode()).hexdigest(), lesion))
        for lesion in order[:int(len(order) * MAX_TRAIN_SHARE)]:
            if len(chosen) >= MIN_HELD_OUT:
                break
            chosen += [(case, SOURCE_LIBRARY) for case in by_lesion[lesion]]
    return chosen


def _encode(encoder, images: list[np.ndarray], tick: Callable[[], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """SE-CBIR features and 3-channel logits of images resized to the encoder's input, as queries."""
    features, logits = [], []
    for start in range(0, len(images), BATCH):
        encoded = encoder.encode(np.stack(images[start:start + BATCH]))
        features.append(encoded.features)
        logits.append(encoded.logits)
        if tick is not None:
            tick()
    return np.concatenate(features), np.concatenate(logits)


def _nearest_other_lesion(backend, queries: np.ndarray, lesions: list[str] | None, row_lesions: np.ndarray,
                          k: int) -> np.ndarray:
    """(n, m) best-first similarities to library rows, own lesion excluded when ``lesions`` is given;
    m = k, or fewer when the library is that small."""
    size = len(row_lesions)
    if lesions is None:
        _, scores = backend.search(queries, min(size, k))
        return np.asarray(scores, dtype=np.float64)
    _, counts = np.unique(row_lesions, return_counts=True)
    rows, scores = backend.search(queries, min(size, k + int(counts.max())))
    kept = [[s for r, s in zip(row_ids, row_scores) if row_lesions[r] != lesion][:k]
            for lesion, row_ids, row_scores in zip(lesions, rows, scores)]
    width = min(len(row) for row in kept)
    if width == 0:
        raise CalibrationError("a held-out image has no other lesion in the library to compare with")
    return np.array([row[:width] for row in kept], dtype=np.float64)


def _save_stats(folder: Path, model) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **model.to_arrays())
    data = buffer.getvalue()
    name = f"{STATS_PREFIX}{hashlib.sha256(data).hexdigest()[:12]}.npz"
    target = folder / name
    if not target.exists():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return name


def ood_calibrate(*, index: IndexVersion, features: np.ndarray, case_ids: np.ndarray, backend,
                  tick: Callable[[], None] | None = None) -> dict:
    """The calibration record of an index whose vectors are ``features`` (rows of ``case_ids``),
    searched by ``backend``; writes the Mahalanobis statistics file when the chosen score needs it.

    ``tick`` is called after every encoded batch (a build's heartbeat). Deterministic for the same
    index, model and evaluation set."""
    from retrieval.ml import ood
    from retrieval.ml.descriptors import resize_rgb_array
    from retrieval.ml.ood_set import KINDS, EvaluationSetError, evaluation_set_resized, set_digest

    meta = {row["id"]: row for row in Case.objects.filter(id__in=case_ids.tolist()).values("id", "lesion_id", "dx")}
    row_lesions = np.array([meta[int(i)]["lesion_id"] if int(i) in meta else f"#deleted-{int(i)}"
                            for i in case_ids])
    row_labels = np.array([CODES.index(meta[int(i)]["dx"]) if int(i) in meta else -1 for i in case_ids])
    held = _held_out(index, case_ids)
    if len(held) < 2:
        raise CalibrationError("fewer than two held-out library images to calibrate on")
    encoder = runtime.encoder_for(index.model_version)
    size = encoder.config.input_size
    images, lesions, sources = [], [], []
    for case, source in held:
        try:
            images.append(resize_rgb_array(loaders.load_rgb(case.image.path), size))
        except (OSError, ValueError) as exc:
            logger.warning("OOD calibration: case %s skipped, image unreadable: %s", case.id, exc)
            continue
        lesions.append(case.lesion_id)
        sources.append(source)
    try:
        evaluation = evaluation_set_resized(size)
    except EvaluationSetError as exc:
        raise CalibrationError(str(exc)) from None
    in_features, in_logits = _encode(encoder, images, tick)
    out_features, out_logits = _encode(encoder, [image.pixels for image in evaluation], tick)
    in_similar = _nearest_other_lesion(backend, in_features, lesions, row_lesions, ood.KNN_K)
    out_similar = _nearest_other_lesion(backend, out_features, None, row_lesions, ood.KNN_K)

    fit_rows = ~np.isin(row_lesions, np.array(sorted(set(lesions)))) & (row_labels >= 0)
    if fit_rows.sum() < 2:
        raise CalibrationError("too few library rows outside the held-out lesions to fit the Mahalanobis score")
    mahalanobis = ood.MahalanobisModel.fit(features[fit_rows], row_labels[fit_rows])
    simple = [name for name in ood.CANDIDATES if name != ood.COMBINED]
    k = min(ood.KNN_K, in_similar.shape[1], out_similar.shape[1])
    in_scores = ood.candidate_scores(similarities=in_similar, logits=in_logits, features=in_features,
                                     mahalanobis=mahalanobis, k=k, names=simple)
    out_scores = ood.candidate_scores(similarities=out_similar, logits=out_logits, features=out_features,
                                      mahalanobis=mahalanobis, k=k, names=simple)
    in_select = ood.select_half(lesions, sources)
    out_select = ood.select_half([image.group for image in evaluation], [image.kind for image in evaluation])
    combination = ood.fit_combination({name: values[in_select] for name, values in in_scores.items()})
    in_scores[ood.COMBINED] = ood.combined(in_scores, combination)
    out_scores[ood.COMBINED] = ood.combined(out_scores, combination)
    kinds = [image.kind for image in evaluation]
    selection = ood.select_score(in_scores, out_scores, in_select=in_select, out_select=out_select,
                                 out_kinds=kinds, in_sources=sources)
    needs_stats = "mahalanobis" in ood.NEEDS[selection.method]
    stats_file = _save_stats(loaders.index_path(index), mahalanobis) if needs_stats else None
    report = selection.report
    chosen_out = out_scores[selection.method]
    missed = [image.name for image, score, selected in zip(evaluation, chosen_out, out_select)
              if not selected and not score < selection.threshold]
    per_source = {source: sources.count(source) for source in (SOURCE_VALIDATION, SOURCE_LIBRARY)
                  if source in sources}
    in_source = ("validation images" if SOURCE_LIBRARY not in per_source else
                 "validation images and whole lesions of the rest of the library (validation split too small)"
                 ) + ", encoded as queries, own lesion excluded"
    return {
        "version": VERSION,
        "method": selection.method,
        "description": ood.DESCRIPTIONS[selection.method].format(k=k),
        "threshold": selection.threshold,
        "target_false_warning": ood.TARGET_FALSE_WARNING,
        "false_warning_bound": round(selection.bound, 4),
        "auroc": _round(report["auroc"]),
        "ood_warned": _round(report["ood_warned"]),
        "ood_warned_per_kind": _round(report["ood_warned_per_kind"]),
        "id_warned": _round(report["id_warned"]),
        "id_warned_per_source": _round(report.get("id_warned_per_source", {})),
        "not_warned": missed,  # the report half's non-dermoscopic images the chosen score lets through
        "in_distribution": {
            "source": in_source,
            "n": len(sources), "per_source": per_source, "lesions": len(set(lesions)),
            "select": int(in_select.sum()), "report": int((~in_select).sum()),
        },
        "evaluation_set": {
            "n": len(evaluation), "per_kind": {kind: kinds.count(kind) for kind in KINDS if kind in kinds},
            "groups": len({image.group for image in evaluation}), "select": int(out_select.sum()),
            "report": int((~out_select).sum()), "input_size": size, "digest": set_digest(list(evaluation)),
        },
        "selection": SELECTION_RULE,
        "candidates": {name: {"description": ood.DESCRIPTIONS[name].format(k=k), "threshold": figures["threshold"],
                              "false_warning_bound": round(figures["bound"], 4),
                              "select": _round(figures["select"]), "report": _round(figures["report"])}
                       for name, figures in selection.candidates.items()},
        "params": {"k": k, "combination": combination, "stats_file": stats_file,
                   "mahalanobis": {"fit_rows": int(fit_rows.sum()), "shrinkage": round(mahalanobis.shrinkage, 6)}},
        "calibrated_at": timezone.now().isoformat(),
        # the fields of the first calibration format, for readers that know only those
        "n": len(sources), "source": in_source,
    }


def index_calibrate(*, index: IndexVersion) -> IndexVersion:
    """Recompute the out-of-distribution calibration of a finished index (in this process) and store it.

    Queries that run afterwards use the new score and threshold; finished queries keep the score,
    threshold and method they were warned (or not) with. Older statistics files are removed but
    the previous one (a worker may be reading it)."""
    if index.status != IndexVersion.Status.DONE:
        raise ValueError(f"{index} is not finished; only a complete index can be calibrated")
    loaded = runtime.loaded_index(index)
    record = ood_calibrate(index=index, features=loaded.features, case_ids=loaded.case_ids,
                           backend=loaded.backend)
    with transaction.atomic():
        current = IndexVersion.objects.select_for_update().get(id=index.id)
        previous = ((current.calibration or {}).get("params") or {}).get("stats_file")
        IndexVersion.objects.filter(id=index.id).update(calibration=record)
    keep = {record["params"]["stats_file"], previous}
    for path in loaders.index_path(index).glob(f"{STATS_PREFIX}*.npz"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    index.refresh_from_db()
    return index


def ood_depth(index: IndexVersion) -> int:
    """How many nearest library vectors the chosen score needs (1 for the legacy rule)."""
    params = (index.calibration or {}).get("params") or {}
    return int(params.get("k", 1))


def query_ood(index: IndexVersion, *, similarities: np.ndarray, logits: np.ndarray,
              features: np.ndarray) -> dict:
    """The query's ``{"score", "threshold", "method"}`` and whether it is warned (``warned``).

    ``similarities``: its best-first SE-CBIR cosines to the library (at least :func:`ood_depth`);
    ``logits`` and ``features``: its 3-channel logits and SE-CBIR features (one row each)."""
    from retrieval.ml import ood

    calibration = index.calibration or {}
    method = calibration.get("method") if calibration.get("version", 1) >= VERSION else None
    if method not in ood.CANDIDATES:  # calibrated before the candidates existed, or not at all
        method = LEGACY if calibration.get("version", 1) < VERSION else ood.BEST_COSINE
        score = float(similarities[0]) if len(similarities) else None
    else:
        params = calibration.get("params") or {}
        stats = None
        if "mahalanobis" in ood.NEEDS[method]:
            stats = runtime.ood_statistics(index, params["stats_file"])
        score = float(ood.candidate_scores(
            similarities=np.asarray(similarities, np.float64)[None], logits=np.asarray(logits)[None],
            features=np.asarray(features)[None], mahalanobis=stats, k=int(params.get("k", ood.KNN_K)),
            combination=params.get("combination"), names=[method])[method][0])
    threshold = calibration.get("threshold")
    warned = score is not None and threshold is not None and score < threshold
    return {"score": score, "threshold": threshold, "method": method, "warned": warned}
