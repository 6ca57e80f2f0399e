"""train_model on a small synthetic library: both stages registered as ModelVersions."""
from __future__ import annotations

from io import StringIO

import pytest
import torch
from django.core.management import CommandError, call_command

from retrieval.models import ModelVersion

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_train_both_stages_registers_a_3ch_and_a_4ch_version(small_library, media_root):
    out = StringIO()
    call_command("train_model", "--config", "tiny", "--stage", "both", "--epochs", "2", "--batch-size", "8",
                 "--device", "cpu", "--lr", "3e-4", stdout=out, verbosity=0)

    rgb, wide = ModelVersion.objects.get(stage="3ch"), ModelVersion.objects.get(stage="4ch")
    assert wide.parent == rgb and rgb.parent is None
    assert (rgb.config, rgb.collection, rgb.epochs) == ("tiny", "synthetic", 2)
    assert 0 <= rgb.metrics["accuracy"] <= 1 and len(rgb.metrics["history"]) == 2
    assert rgb.data_fingerprint == wide.data_fingerprint and len(rgb.checkpoint_sha256) == 64
    state = torch.load(media_root / wide.checkpoint.name, weights_only=False)
    assert state["stage"] == "4ch" and state["channels"] == 4
    assert "tiny 3ch" in out.getvalue() and "macro sensitivity" in out.getvalue()

    # the 4-channel stage alone starts from the newest 3-channel model
    call_command("train_model", "--config", "tiny", "--stage", "4ch", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", verbosity=0)
    assert ModelVersion.objects.filter(stage="4ch", parent=rgb).count() == 2


def test_demo_profile_trains_each_stage_with_its_own_epochs_and_schedule(small_library, media_root):
    out = StringIO()
    # --config tiny keeps this fast; the profile's own config is secbir-lite0-fast
    call_command("train_model", "--profile", "demo", "--config", "tiny", "--batch-size", "8", "--device", "cpu",
                 stdout=out, verbosity=1)

    rgb, wide = ModelVersion.objects.get(stage="3ch"), ModelVersion.objects.get(stage="4ch")
    assert (rgb.epochs, wide.epochs) == (4, 3) and wide.parent == rgb
    assert [len(v.metrics["history"]) for v in (rgb, wide)] == [4, 3]
    for version in (rgb, wide):
        state = torch.load(media_root / version.checkpoint.name, weights_only=False)
        assert state["schedule"] == {"ramp_epochs": 0, "peak": 6.0, "decay": 0.8} and state["batch_size"] == 8
    assert "profile demo: 3ch 4 epochs, 4ch 3 epochs, batch 8" in out.getvalue()

    # explicit --epochs overrides the profile; without --config the profile names its own config
    call_command("train_model", "--profile", "demo", "--config", "tiny", "--stage", "3ch", "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", verbosity=0)
    assert ModelVersion.objects.filter(stage="3ch").first().epochs == 1
    with pytest.raises(CommandError, match="no 3-channel secbir-lite0-fast model"):
        call_command("train_model", "--profile", "demo", "--stage", "4ch", verbosity=0)


def test_4ch_without_a_3ch_model_is_a_clear_error(small_library):
    with pytest.raises(CommandError, match="no 3-channel tiny model"):
        call_command("train_model", "--config", "tiny", "--stage", "4ch", "--epochs", "1", verbosity=0)


def test_unsplit_library_is_a_clear_error(tmp_path, media_root):
    call_command("make_synthetic_library", "--limit", "20", "--out", str(tmp_path / "s"), verbosity=0)
    with pytest.raises(CommandError, match="no train/val split; run split_library first"):
        call_command("train_model", "--config", "tiny", "--epochs", "1", verbosity=0)


def test_evaluate_retrieval_scores_the_trained_models_in_table_layouts(small_library, media_root, tmp_path):
    import json

    call_command("train_model", "--config", "tiny", "--stage", "both", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", verbosity=0)
    out, err = StringIO(), StringIO()
    call_command("evaluate_retrieval", "--format", "json", "--out", str(tmp_path / "eval"), "--device", "cpu",
                 stdout=out, stderr=err, verbosity=0)
    document = json.loads(out.getvalue())
    # every method side by side on the same split (no contrastive/triplet model: listed as skipped)
    from retrieval.methods import METHODS

    assert document["k"] == [1, 3, 6, 9]
    assert set(document["methods"]) == set(METHODS) - {"contrastive", "triplet"}
    assert "skipped contrastive, triplet" in err.getvalue() and "ms scoring per query" in err.getvalue()
    from retrieval.models import Case

    n_test = Case.objects.filter(split="test").count()
    for method in document["methods"].values():
        assert method["n_queries"] == n_test
        assert all(0 <= value <= 1 for value in method["ap"].values())
        assert all(0 <= value <= 1 for value in method["ap_lesion_aware"].values())
    assert set(document["classifiers"]) == {"3-channel", "4-channel"}
    assert sum(map(sum, document["classifiers"]["4-channel"]["confusion"])) == n_test
    assert f"{n_test} test queries" in err.getvalue()
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "| 3-channel CNN classifier |" in markdown and "secbir" in markdown
    assert (tmp_path / "eval" / "precision_at_k.png").stat().st_size > 0

    two = StringIO()
    call_command("evaluate_retrieval", "--methods", "secbir,style", "--format", "json", stdout=two, verbosity=0)
    assert set(json.loads(two.getvalue())["methods"]) == {"secbir", "style"}
    with pytest.raises(CommandError, match="--segmentation-model: no segmentation ModelVersion #999"):
        call_command("evaluate_retrieval", "--methods", "i1_sd", "--segmentation-model", "999", verbosity=0)
    with pytest.raises(CommandError, match="--methods: unknown sift"):
        call_command("evaluate_retrieval", "--methods", "secbir,sift", verbosity=0)

    # the model was trained on vanilla maps: integrated-gradient maps are refused (see below for a model trained on them)
    with pytest.raises(CommandError, match="trained on vanilla-gradient maps"):
        call_command("evaluate_retrieval", "--methods", "secbir,cnn3", "--saliency", "integrated", "--ig-steps", "2",
                     "--ig-baseline", "grey", "--device", "cpu", stdout=StringIO(), verbosity=0)


def test_a_4ch_model_trained_on_integrated_gradients_with_a_zero_stem_is_evaluated_with_them(small_library,
                                                                                              media_root):
    import json

    call_command("train_model", "--config", "tiny", "--stage", "both", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--saliency", "integrated", "--ig-steps", "2", "--ig-baseline", "grey",
                 "--stem-init", "zero", verbosity=0)
    wide = ModelVersion.objects.get(stage="4ch")
    recorded = {"saliency": {"method": "integrated", "ig_steps": 2, "ig_baseline": "grey"}, "stem_init": "zero"}
    assert wide.training_options == recorded
    assert ModelVersion.objects.get(stage="3ch").training_options == {}
    state = torch.load(media_root / wide.checkpoint.name, weights_only=False)
    assert (state["saliency"], state["stem_init"]) == (recorded["saliency"], "zero")
    cached = list((media_root / "training").glob("*/saliency-*-ig2grey.npz"))
    assert len(cached) == 1  # integrated-gradient maps cached apart from vanilla ones

    out = StringIO()
    call_command("evaluate_retrieval", "--methods", "secbir", "--bootstrap", "50", "--format", "json", "--device",
                 "cpu", stdout=out, stderr=StringIO(), verbosity=0)
    assert json.loads(out.getvalue())["evaluation"]["saliency"] == recorded["saliency"]
    with pytest.raises(CommandError, match="evaluating it with vanilla-gradient maps"):
        call_command("evaluate_retrieval", "--saliency", "vanilla", "--device", "cpu", verbosity=0)
    # the product encodes library images and queries of this model with the same maps
    from retrieval import runtime

    runtime.forget()
    encoder = runtime.encoder_for(wide)
    assert (encoder.method, encoder.ig_steps, encoder.ig_baseline) == ("integrated", 2, "grey")
    runtime.forget()


def test_4ch_options_are_refused_where_they_mean_nothing(small_library):
    with pytest.raises(CommandError, match="options of the 4-channel stage"):
        call_command("train_model", "--config", "tiny", "--stage", "3ch", "--stem-init", "zero", verbosity=0)
    with pytest.raises(CommandError, match="options of the 4-channel stage"):
        call_command("train_model", "--config", "tiny", "--stage", "triplet", "--saliency", "integrated",
                     verbosity=0)
    with pytest.raises(CommandError, match="need --saliency integrated"):
        call_command("train_model", "--config", "tiny", "--ig-steps", "4", verbosity=0)


def test_evaluate_retrieval_without_a_model_says_what_to_do(db):
    with pytest.raises(CommandError, match="run train_model first"):
        call_command("evaluate_retrieval", verbosity=0)
