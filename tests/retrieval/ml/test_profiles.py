"""Training profiles: what each resolves to, and overrides."""
from __future__ import annotations

import pytest

from retrieval.ml.configs import get_config
from retrieval.ml.profiles import (
    DEFAULT_PROFILE, TRAINING_PROFILES, TrainingProfile, get_profile, profile_options,
)
from retrieval.ml.train import TrainOptions


def test_thesis_profile_is_the_thesis_recipe_and_the_trainoptions_defaults():
    for stage in ("3ch", "4ch"):
        options = profile_options("thesis", stage, seed=7)
        assert (options.epochs, options.batch_size, options.seed) == (20, 32, 7)
        assert options.schedule == {"ramp_epochs": 5, "peak": 6.0, "decay": 0.8}
        assert options == TrainOptions(seed=7)  # nothing changes for callers that name no profile
    assert get_profile("thesis").config == "secbir-lite0"
    assert DEFAULT_PROFILE == "thesis"


def test_demo_profile_resolves_to_the_fast_config_and_short_compressed_schedule():
    demo = get_profile("demo")
    assert demo.config == "secbir-lite0-fast"
    three, four = profile_options("demo", "3ch", seed=1), profile_options("demo", "4ch", seed=1)
    assert (three.epochs, four.epochs) == (4, 3)
    for options in (three, four):
        assert options.batch_size == 32 and options.seed == 1
        assert options.schedule == {"ramp_epochs": 0, "peak": 6.0, "decay": 0.8}
        assert options.lr is None  # the thesis's per-stage learning rates


def test_fast_config_is_lite0_with_its_weights_at_a_smaller_size():
    fast, lite0 = get_config("secbir-lite0-fast"), get_config("secbir-lite0")
    assert (fast.backbone, fast.weights, fast.mean, fast.std, fast.feature_dim) == (
        lite0.backbone, lite0.weights, lite0.mean, lite0.std, lite0.feature_dim)
    assert fast.input_size == 128 and lite0.input_size == 224


def test_explicit_values_override_the_profile_and_stage_options_cover_each_stage():
    options = get_profile("demo").stage_options(["3ch", "4ch"], epochs=1, device="cuda", progress=False)
    assert set(options) == {"3ch", "4ch"}
    assert all(o.epochs == 1 and o.device == "cuda" and not o.progress for o in options.values())
    assert options["3ch"].ramp_epochs == 0  # the rest stays the profile's
    assert profile_options("demo", "4ch", batch_size=8, decay=0.9).batch_size == 8


def test_bad_names_and_values_are_clear_errors():
    with pytest.raises(KeyError, match="unknown training profile 'fastest'; known: thesis, demo"):
        get_profile("fastest")
    with pytest.raises(ValueError, match="unknown stage '5ch'"):
        profile_options("demo", "5ch")
    with pytest.raises(ValueError, match="not training options: epoch"):
        profile_options("demo", "3ch", epoch=3)
    with pytest.raises(ValueError, match="at least 1"):
        profile_options("demo", "3ch", epochs=0)
    with pytest.raises(ValueError, match="decay"):
        profile_options("demo", "3ch", decay=2.0)
    with pytest.raises(ValueError, match="each of"):
        TrainingProfile(name="half", config="tiny", epochs={"3ch": 2})
    with pytest.raises(KeyError, match="unknown model config"):
        TrainingProfile(name="nowhere", config="resnet", epochs={"3ch": 2, "4ch": 2})


def test_profiles_are_read_only():
    with pytest.raises(TypeError):
        TRAINING_PROFILES["mine"] = get_profile("demo")  # type: ignore[index]
    with pytest.raises(TypeError):
        get_profile("demo").epochs["3ch"] = 50  # type: ignore[index]
