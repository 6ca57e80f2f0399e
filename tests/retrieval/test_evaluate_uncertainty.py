"""evaluate_retrieval end to end on the tiny models: bootstrap intervals, paired tests against
SE-CBIR, the vote next to the classifiers, calibration, ties, the library-saliency ablation and
the saliency-method check; build_index's library-saliency option."""
from __future__ import annotations

import csv
import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from retrieval.models import Case, IndexVersion, ModelVersion
from tests.conftest import build_index_here

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

KS = ["1", "3", "6", "9"]


def _evaluate(*args, out=None):
    stdout, stderr = StringIO(), StringIO()
    extra = ["--out", str(out)] if out else []
    call_command("evaluate_retrieval", "--device", "cpu", "--format", "json", *args, *extra, stdout=stdout,
                 stderr=stderr, verbosity=0)
    return json.loads(stdout.getvalue()), stderr.getvalue()


def test_the_evaluation_reports_intervals_paired_tests_votes_calibration_and_ties(tiny_models, tmp_path):
    out = tmp_path / "eval"
    document, err = _evaluate("--methods", "secbir,cnn3,i1_cd", "--library-saliency", "both", "--bootstrap", "200",
                              out=out)
    n_test = Case.objects.filter(split="test").count()
    assert list(document["methods"]) == ["secbir", "secbir-predicted", "cnn3", "i1_cd"]
    assert document["bootstrap"]["replicates"] == 200 and document["bootstrap"]["unit"] == "lesion"
    assert document["bootstrap"]["n_queries"] == n_test and document["bootstrap"]["reference"] == "secbir"
    assert document["evaluation"] == {"model_version": tiny_models["4ch"].id, "library_saliency": "both",
                                      "saliency": {"method": "vanilla"}, "stem_init": "mean", "tie_seed": 0,
                                      "vote_k": 6}
    for name, entry in document["methods"].items():
        for k in KS:
            low, high = entry["ci"]["ap"][k]
            assert 0 <= low <= high <= 1
            for code, bounds in entry["ci"]["per_class"].items():
                assert 0 <= bounds[k][0] <= bounds[k][1] <= 1, (name, code)
        # the tiny library has a handful of test queries: every class with queries is marked
        assert entry["few_queries"] == [code for code, n in entry["n_per_class"].items() if 0 < n < 10]
        assert entry["ties"]["ranks"] == n_test * 9 and set(entry["ties"]["tie_at_cut"]) == set(KS)
    assert document["methods"]["secbir"]["vs_reference"] is None
    for name in ("secbir-predicted", "cnn3", "i1_cd"):
        versus = document["methods"][name]["vs_reference"]
        assert versus["reference"] == "secbir"
        for k in KS:
            expected = document["methods"][name]["ap"][k] - document["methods"]["secbir"]["ap"][k]
            assert versus["ap"][k]["difference"] == pytest.approx(expected)
            assert versus["ap"][k]["ci"][0] <= versus["ap"][k]["ci"][1] and 0 < versus["ap"][k]["p"] <= 1

    decisions = document["decisions"]
    assert list(decisions) == ["3-channel classifier", "4-channel classifier", "secbir vote", "secbir-predicted vote",
                               "cnn3 vote", "i1_cd vote"]
    three = decisions["3-channel classifier"]
    assert three["accuracy"] == pytest.approx(document["classifiers"]["3-channel"]["accuracy"])
    assert three["macro_sensitivity"] == pytest.approx(document["classifiers"]["3-channel"]["macro_sensitivity"])
    assert three["vs_3_channel"] is None and three["reliability"]["scheme"].startswith("top softmax")
    vote = decisions["secbir vote"]
    assert set(vote["vs_3_channel"]) == {"accuracy", "macro_sensitivity"}
    assert vote["vs_3_channel"]["accuracy"]["difference"] == pytest.approx(vote["accuracy"] - three["accuracy"])
    assert len(vote["reliability"]["bins"]) == 6 and sum(b["n"] for b in vote["reliability"]["bins"]) == n_test
    assert 0 <= vote["ece_ci"][0] <= vote["ece_ci"][1] <= 1

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == ["method", "variant", "class", "k", "value"]  # the old columns first
    assert {"ci_low", "ci_high", "few_queries", "difference", "p"} <= set(rows[0])
    macro = [r for r in rows if r["method"] == "cnn3" and r["class"] == "macro" and r["variant"] == "standard"]
    assert [r["reference"] for r in macro] == ["secbir"] * 4 and all(r["p"] for r in macro)
    assert (out / "decisions.csv").read_text().startswith("source,measure,class,value,ci_low")
    for picture in ("precision_at_k.png", "reliability.png"):
        assert (out / picture).stat().st_size > 0
    markdown = (out / "results.md").read_text()
    assert "AP@k minus secbir's (paired)" in markdown and "†" in markdown and "ECE" in markdown
    assert "library saliency maps for the ground-truth class (secbir) and predicted class" in markdown
    assert "tied ranks" in markdown


def test_without_bootstrap_the_old_formats_are_unchanged(tiny_models):
    stdout = StringIO()
    call_command("evaluate_retrieval", "--methods", "secbir", "--bootstrap", "0", "--format", "csv", "--device",
                 "cpu", stdout=stdout, stderr=StringIO(), verbosity=0)
    assert stdout.getvalue().splitlines()[0] == "method,variant,class,k,value"
    document, _ = _evaluate("--methods", "secbir", "--bootstrap", "0")
    assert "ci" not in document["methods"]["secbir"] and "decisions" not in document


def test_predicted_class_library_maps_change_the_secbir_scores_only(tiny_models):
    truth, _ = _evaluate("--methods", "secbir,cnn3", "--bootstrap", "0")
    predicted, _ = _evaluate("--methods", "secbir,cnn3", "--bootstrap", "0", "--library-saliency", "predicted")
    both, _ = _evaluate("--methods", "secbir,cnn3", "--bootstrap", "0", "--library-saliency", "both")
    assert predicted["evaluation"]["library_saliency"] == "predicted"
    assert predicted["methods"]["cnn3"] == truth["methods"]["cnn3"]  # no saliency in the 3-channel features
    assert both["methods"]["secbir"]["ap"] == truth["methods"]["secbir"]["ap"]
    assert both["methods"]["secbir-predicted"]["ap"] == predicted["methods"]["secbir"]["ap"]


def test_a_saliency_method_the_model_was_not_trained_on_is_refused(tiny_models):
    with pytest.raises(CommandError, match="trained on vanilla-gradient maps; evaluating it with integrated-gradient"):
        _evaluate("--methods", "secbir", "--saliency", "integrated")
    # the reverse: a model trained on integrated-gradient maps is evaluated with them by default
    wide = tiny_models["4ch"]
    ig = ModelVersion.objects.create(
        config="tiny", stage="4ch", parent=wide.parent, collection=wide.collection, checkpoint=wide.checkpoint.name,
        checkpoint_sha256=wide.checkpoint_sha256, data_fingerprint="test", metrics=wide.metrics, epochs=1,
        training_options={"saliency": {"method": "integrated", "ig_steps": 2, "ig_baseline": "grey"},
                          "stem_init": "zero"})
    with pytest.raises(CommandError, match=r"integrated-gradient maps \(2 steps, grey baseline\); evaluating it "
                                           "with vanilla-gradient maps"):
        _evaluate("--model-version", str(ig.id), "--methods", "secbir", "--saliency", "vanilla")
    with pytest.raises(CommandError, match="--ig-steps 8 --ig-baseline grey"):
        _evaluate("--model-version", str(ig.id), "--methods", "secbir", "--ig-steps", "8")
    document, err = _evaluate("--model-version", str(ig.id), "--methods", "secbir", "--bootstrap", "0")
    assert document["evaluation"]["saliency"] == {"method": "integrated", "ig_steps": 2, "ig_baseline": "grey"}
    assert document["evaluation"]["stem_init"] == "zero" and "integrated saliency maps (as trained)" in err
    same, _ = _evaluate("--model-version", str(ig.id), "--methods", "secbir", "--bootstrap", "0", "--saliency",
                        "integrated", "--ig-steps", "2", "--ig-baseline", "grey")
    assert same["methods"] == document["methods"]


def test_build_index_can_make_the_library_maps_for_the_predicted_class(tiny_models, media_root, settings):
    from retrieval import runtime
    from retrieval.loaders import load_rgb

    settings.INDEX_CHUNK_SIZE = 64
    runtime.forget()
    truth = build_index_here(model_version=tiny_models["4ch"], extra_methods=False)
    stdout = StringIO()
    call_command("build_index", "--here", "--secbir-only", "--library-saliency", "predicted", stdout=stdout,
                 verbosity=0)
    predicted = IndexVersion.objects.get(active=True)
    assert predicted.id != truth.id and "library saliency maps for the predicted class" in stdout.getvalue()
    assert truth.descriptors["library_saliency"] == "truth" and predicted.descriptors["library_saliency"] == "predicted"
    ids = np.load(media_root / predicted.directory / "case_ids.npy")
    assert np.array_equal(ids, np.load(media_root / truth.directory / "case_ids.npy"))
    vectors = {index.id: np.load(media_root / index.directory / "features.npy") for index in (truth, predicted)}
    # each build's vectors are what the encoder gives with (truth) and without (predicted) the labels
    from retrieval.classes import CODES
    from retrieval.ml.descriptors import resize_rgb_array

    encoder = runtime.encoder_for(tiny_models["4ch"])
    cases = [Case.objects.get(id=i) for i in ids[:8].tolist()]
    images = np.stack([resize_rgb_array(load_rgb(c.image.path), encoder.config.input_size) for c in cases])
    with_labels = encoder.encode(images, np.array([CODES.index(c.dx) for c in cases])).features
    without = encoder.encode(images).features
    assert np.allclose(vectors[truth.id][:8], with_labels, atol=1e-5)
    assert np.allclose(vectors[predicted.id][:8], without, atol=1e-5)
    # an extension keeps its base's choice
    extension = build_index_here(model_version=tiny_models["4ch"], incremental=True)
    assert extension.descriptors["library_saliency"] == "predicted"
    with pytest.raises(ValueError, match="library_saliency must be one of truth, predicted"):
        build_index_here(model_version=tiny_models["4ch"], library_saliency="both")
