"""The out-of-distribution warning on the tiny real index: calibration at build time, the query's
score and warning, old indexes, the API, the admin and the calibrate_index command."""
from __future__ import annotations

import io
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from retrieval import runtime
from retrieval.ml import ood
from retrieval.ml.ood_set import KINDS, PACKAGED, PLAIN_GENERATED, SKIN_IMAGES
from retrieval.models import Case, IndexVersion, Query
from retrieval.selectors import index_ood_summary, query_payload
from retrieval.services.ood import LEGACY, index_calibrate
from retrieval.services.queries import OOD_WARNING, query_run, query_submit

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ASTRONAUT = Path(__import__("importlib").util.find_spec("skimage").submodule_search_locations[0]) / "data/astronaut.png"
#: The evaluation set: every packaged image whole and cropped, the generated ones once.
EXPECTED_KINDS = {
    kind: sum(2 for p in PACKAGED if p.kind == kind) + {"skin": SKIN_IMAGES, "plain": len(PLAIN_GENERATED)}.get(kind, 0)
    for kind in KINDS
}


def _astronaut() -> bytes:
    buffer = io.BytesIO()
    Image.open(ASTRONAUT).convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _run(user, data: bytes) -> Query:
    query = query_submit(user=user, image_data=data, filename="photo.jpg")
    assert query_run(query_id=query.id, worker="w")
    query.refresh_from_db()
    assert query.status == "done", query.message
    return query


def _query_features(index: IndexVersion, query: Query) -> tuple[np.ndarray, np.ndarray]:
    """The query's SE-CBIR features and 3-channel logits, encoded independently of the worker code."""
    from retrieval.ml.features import resize_rgb

    encoder = runtime.encoder_for(index.model_version)
    with Image.open(query.image.path) as image:
        encoded = encoder.encode(resize_rgb(image, encoder.config.input_size)[None])
    return encoded.features[0], encoded.logits[0]


def test_a_build_stores_the_calibration_with_every_figure_and_the_candidates(ready_index, media_root):
    calibration = ready_index.calibration
    assert calibration["version"] == 2 and calibration["method"] in ood.CANDIDATES
    assert set(calibration["candidates"]) == set(ood.CANDIDATES)  # every candidate's figures: the choice is visible
    chosen = calibration["candidates"][calibration["method"]]
    assert calibration["threshold"] == chosen["threshold"]
    report = chosen["report"]
    assert calibration["auroc"] == report["auroc"] and 0 <= calibration["auroc"] <= 1
    assert calibration["ood_warned"] == report["ood_warned"] and calibration["id_warned"] == report["id_warned"]
    assert set(calibration["ood_warned_per_kind"]) == set(KINDS) == {"photo", "medical", "skin", "plain"}
    assert calibration["target_false_warning"] == 0.05

    held = calibration["in_distribution"]
    assert held["n"] == held["select"] + held["report"] == sum(held["per_source"].values()) > 0
    # the tiny library's validation split is small, so library lesions top it up (and are flagged)
    assert held["per_source"]["validation"] == Case.objects.filter(split="val").count()
    assert held["per_source"]["library"] > 0 and "too small" in held["source"]
    assert set(calibration["id_warned_per_source"]) == {"validation", "library"}
    evaluation = calibration["evaluation_set"]
    assert evaluation["per_kind"] == EXPECTED_KINDS and evaluation["n"] == sum(EXPECTED_KINDS.values())
    assert evaluation["select"] + evaluation["report"] == evaluation["n"] and len(evaluation["digest"]) == 64

    for name, figures in calibration["candidates"].items():
        for half in ("select", "report"):
            assert set(figures[half]) >= {"auroc", "ood_warned", "ood_warned_per_kind", "id_warned", "n_in", "n_out"}
        assert figures["select"]["n_in"] == held["select"] and figures["report"]["n_out"] == evaluation["report"]
        # the threshold is fitted on the select half: at most the conformal bound of it is warned there
        assert figures["select"]["id_warned"] <= figures["false_warning_bound"]
    # the Mahalanobis fit leaves the held-out lesions out
    assert calibration["params"]["mahalanobis"]["fit_rows"] == ready_index.size - held["n"]
    stats = calibration["params"]["stats_file"]
    assert (stats is not None) == ("mahalanobis" in ood.NEEDS[calibration["method"]])
    if stats:
        assert (media_root / ready_index.directory / stats).exists()


def test_a_photograph_gets_its_ood_score_and_the_warning_when_it_is_below_the_threshold(ready_index, clinician,
                                                                                         media_root):
    folder = media_root / ready_index.directory
    features = np.load(folder / "features.npy")
    k = ready_index.calibration["params"]["k"]

    # A threshold above any mean cosine: the photograph of a person must be warned, with its score.
    IndexVersion.objects.filter(id=ready_index.id).update(calibration={
        **ready_index.calibration, "method": ood.KNN_COSINE, "threshold": 2.0})
    photo = _run(clinician, _astronaut())
    mine, _ = _query_features(ready_index, photo)
    expected = np.sort(features @ mine)[::-1][:k].mean()
    assert photo.ood_method == "knn_cosine" and photo.ood_score == pytest.approx(expected, abs=1e-5)
    assert photo.warning == OOD_WARNING
    body = query_payload(photo)
    assert body["warning"] == OOD_WARNING
    assert body["ood"] == {"score": round(photo.ood_score, 4), "threshold": 2.0, "method": "knn_cosine"}
    assert "does not look like a dermoscopic image" in OOD_WARNING and "may not be meaningful" in OOD_WARNING

    # Below the score: no warning, but the score and threshold are still there.
    IndexVersion.objects.filter(id=ready_index.id).update(calibration={
        **ready_index.calibration, "method": ood.KNN_COSINE, "threshold": -2.0})
    like = _run(clinician, Case.objects.filter(split="test").order_by("id").first().image.read())
    assert like.warning == "" and query_payload(like)["warning"] is None
    assert query_payload(like)["ood"]["threshold"] == -2.0 and like.ood_score > -2.0


def test_every_candidate_score_is_computed_by_the_query_path_as_by_the_calibration(ready_index, clinician,
                                                                                   media_root):
    from retrieval.services.ood import _save_stats

    folder = media_root / ready_index.directory
    features, case_ids = np.load(folder / "features.npy"), np.load(folder / "case_ids.npy")
    labels = dict(Case.objects.values_list("id", "dx"))
    from retrieval.classes import CODES

    model = ood.MahalanobisModel.fit(features, np.array([CODES.index(labels[int(i)]) for i in case_ids]))
    params = {**ready_index.calibration["params"], "stats_file": _save_stats(folder, model)}
    runtime.forget()
    data = _astronaut()
    for method in ood.CANDIDATES:
        IndexVersion.objects.filter(id=ready_index.id).update(calibration={
            **ready_index.calibration, "method": method, "threshold": 1e9, "params": params})
        query = _run(clinician, data)
        mine, logits = _query_features(ready_index, query)
        similarities = np.sort(features @ mine)[::-1][None]
        expected = ood.candidate_scores(similarities=similarities, logits=logits[None], features=mine[None],
                                        mahalanobis=model, k=params["k"], combination=params["combination"],
                                        names=[method])[method][0]
        assert query.ood_method == method and query.ood_score == pytest.approx(expected, rel=1e-4, abs=1e-4), method
        assert query.warning == OOD_WARNING


def test_an_index_calibrated_before_the_candidates_keeps_its_best_cosine_rule(ready_index, clinician):
    old = {"source": "validation images encoded as queries, own lesion excluded", "n": 5, "quantile": 0.01,
           "threshold": 1.5, "percentiles": {"1": 0.2, "50": 0.6}}
    IndexVersion.objects.filter(id=ready_index.id).update(calibration=old)
    query = _run(clinician, _astronaut())
    assert query.ood_method == LEGACY == "legacy_best_cosine"
    assert query.ood_score == pytest.approx(query.best_similarity) and query.ood_threshold == 1.5
    assert query.warning == OOD_WARNING  # best similarity <= 1 < 1.5
    assert query_payload(query)["ood"] == {"score": round(query.best_similarity, 4), "threshold": 1.5,
                                           "method": "legacy_best_cosine"}
    ready_index.refresh_from_db()
    summary = index_ood_summary(ready_index)
    assert summary["method"] == "legacy_best_cosine" and summary["threshold"] == 1.5 and summary["auroc"] is None


def test_the_api_and_the_admin_show_the_index_figures(ready_index, clinician, django_user_model, client):
    client_api = APIClient()
    client_api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=clinician)[0].key}")
    active = client_api.get("/api/v1/index/").json()["active"]
    calibration = ready_index.calibration
    assert active["ood_threshold"] == calibration["threshold"]
    assert active["ood"] == {
        "method": calibration["method"], "threshold": calibration["threshold"], "auroc": calibration["auroc"],
        "ood_warned": calibration["ood_warned"], "ood_warned_per_kind": calibration["ood_warned_per_kind"],
        "id_warned": calibration["id_warned"], "target_false_warning": 0.05,
        "n_in_distribution": calibration["in_distribution"]["n"], "n_evaluation": calibration["evaluation_set"]["n"],
        "calibrated": calibration["calibrated_at"], "error": None,
    }
    schema = client_api.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    assert set(active["ood"]) == set(schema["IndexOOD"]["properties"])
    assert set(schema["QueryOOD"]["properties"]) == {"score", "threshold", "method"}

    admin = django_user_model.objects.create_superuser("ood_admin", password="pw-ood-admin")
    client.force_login(admin)
    listing = client.get("/admin/retrieval/indexversion/").content.decode()
    assert f"{calibration['method']}: AUROC {calibration['auroc']:.3f}" in listing
    detail = client.get(f"/admin/retrieval/indexversion/{ready_index.id}/change/").content.decode()
    for name in ood.CANDIDATES:
        assert name in detail
    assert f"{calibration['method']} (chosen)" in detail and "held-out library warned" in detail


def test_calibrate_index_recomputes_the_same_calibration_in_process(ready_index):
    before = ready_index.calibration
    IndexVersion.objects.filter(id=ready_index.id).update(calibration={"threshold": 0.3, "n": 1})  # an old record
    out = StringIO()
    call_command("calibrate_index", "--index", str(ready_index.id), stdout=out)
    ready_index.refresh_from_db()
    after = ready_index.calibration
    assert {k: v for k, v in after.items() if k != "calibrated_at"} == {
        k: v for k, v in before.items() if k != "calibrated_at"}  # deterministic
    text = out.getvalue()
    assert f"out-of-distribution score {after['method']}" in text and "Report half" in text
    for name in ood.CANDIDATES:
        assert name in text

    building = IndexVersion.objects.create(model_version=ready_index.model_version, collection=ready_index.collection)
    with pytest.raises(CommandError, match="not finished"):
        call_command("calibrate_index", "--index", str(building.id))
    with pytest.raises(ValueError, match="not finished"):
        index_calibrate(index=building)


def test_the_migration_gives_old_finished_queries_their_legacy_score_and_threshold(clinician, tiny_models):
    model = tiny_models["4ch"]
    index = IndexVersion.objects.create(model_version=model, collection="synthetic", status="done",
                                        calibration={"threshold": 0.34, "n": 152, "quantile": 0.01})
    done = Query.objects.create(user=clinician, image="queries/x.jpg", sha256="a" * 64, width=1, height=1,
                                status="done", best_similarity=0.3, index_version=index)
    pending = Query.objects.create(user=clinician, image="queries/y.jpg", sha256="b" * 64, width=1, height=1,
                                   index_version=index)
    loader = MigrationLoader(connection)
    migration = loader.get_migration("retrieval", "0008_query_ood")
    operation = migration.operations[-1]
    assert isinstance(operation, migrations.RunPython)
    operation.code(loader.project_state(("retrieval", "0008_query_ood"), at_end=True).apps, None)
    done.refresh_from_db()
    pending.refresh_from_db()
    assert (done.ood_score, done.ood_threshold, done.ood_method) == (0.3, 0.34, "legacy_best_cosine")
    assert (pending.ood_score, pending.ood_method) == (None, "")
    assert query_payload(done)["ood"] == {"score": 0.3, "threshold": 0.34, "method": "legacy_best_cosine"}
    assert query_payload(pending)["ood"] is None
