"""Training both stages on a tiny synthetic set with the tiny config (CPU, seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval import synthetic
from retrieval.ml.checkpoints import STAGE_3CH, STAGE_4CH, load_checkpoint
from retrieval.ml.configs import get_config
from retrieval.ml.data import Item
from retrieval.ml.train import TrainOptions, train_stage

CLASSES = ("mel", "nv", "vasc")


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """24 small synthetic images of three visually distinct classes."""
    folder = tmp_path_factory.mktemp("tiny-set")
    items = []
    for i in range(24):
        dx = CLASSES[i % 3]
        lesion = synthetic.make_lesion(dx, f"L{i}", seed=9)
        image, _ = synthetic.render(lesion, synthetic.make_shot(lesion, f"I{i}", seed=9), 96, 72)
        path = folder / f"I{i}.jpg"
        image.save(path)
        items.append(Item(str(path), ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc").index(dx), f"I{i}"))
    return items[:18], items[18:]


def options(**overrides) -> TrainOptions:
    return TrainOptions(**{"epochs": 4, "batch_size": 6, "seed": 3, "lr": 3e-4, "lr_factor": 10, "progress": False,
                           **overrides})


def test_3ch_loss_decreases_and_best_checkpoint_is_kept(tiny_set, tmp_path):
    train, val = tiny_set
    result = train_stage(STAGE_3CH, get_config("tiny"), train, val, tmp_path, options=options())
    losses = [epoch["loss"] for epoch in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    best = max(result.history, key=lambda e: e["macro_sensitivity"])
    assert result.metrics["macro_sensitivity"] == best["macro_sensitivity"]
    state = torch.load(result.checkpoint, weights_only=False)
    assert state["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert state["config"] == "tiny" and state["stage"] == STAGE_3CH and len(state["data_fingerprint"]) == 64
    model = load_checkpoint(result.checkpoint)
    assert model.in_chans == 3


def test_training_is_deterministic_on_cpu(tiny_set, tmp_path):
    train, val = tiny_set
    first = train_stage(STAGE_3CH, get_config("tiny"), train, val, tmp_path / "a", options=options(epochs=2))
    second = train_stage(STAGE_3CH, get_config("tiny"), train, val, tmp_path / "b", options=options(epochs=2))
    assert [e["loss"] for e in first.history] == [e["loss"] for e in second.history]
    a, b = torch.load(first.checkpoint, weights_only=False), torch.load(second.checkpoint, weights_only=False)
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


def test_resume_continues_where_it_stopped(tiny_set, tmp_path):
    train, val = tiny_set
    config = get_config("tiny")
    straight = train_stage(STAGE_3CH, config, train, val, tmp_path / "straight", options=options(epochs=3))
    train_stage(STAGE_3CH, config, train, val, tmp_path / "split", options=options(epochs=2))
    resumed = train_stage(STAGE_3CH, config, train, val, tmp_path / "split", options=options(epochs=3),
                          resume=tmp_path / "split" / "3ch-last.pt")
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["loss"] == pytest.approx(straight.history[-1]["loss"], rel=1e-5)


def test_4ch_stage_starts_from_the_3ch_model_with_cached_saliency(tiny_set, tmp_path):
    train, val = tiny_set
    config = get_config("tiny")
    rgb = train_stage(STAGE_3CH, config, train, val, tmp_path, options=options(epochs=2))
    result = train_stage(STAGE_4CH, config, train, val, tmp_path, options=options(epochs=2), parent_checkpoint=rgb.checkpoint)
    caches = list(tmp_path.glob("saliency-*.npz"))
    assert len(caches) == 1
    maps = np.load(caches[0])
    assert maps["train"].shape == (18, 64, 64) and maps["val"].shape == (6, 64, 64)
    model4 = load_checkpoint(result.checkpoint)
    assert model4.in_chans == 4
    assert "widened from 3ch-best.pt" in result.weights_source


def test_4ch_needs_a_parent_and_resume_refuses_other_data(tiny_set, tmp_path):
    train, val = tiny_set
    config = get_config("tiny")
    with pytest.raises(ValueError, match="starts from a trained 3-channel checkpoint"):
        train_stage(STAGE_4CH, config, train, val, tmp_path, options=options())
    train_stage(STAGE_3CH, config, train, val, tmp_path, options=options(epochs=1))
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        train_stage(STAGE_3CH, config, train[:-1], val, tmp_path / "other", options=options(epochs=2),
                    resume=tmp_path / "3ch-last.pt")


def test_stage_follows_the_options_schedule_and_records_epoch_times(tiny_set, tmp_path):
    train, val = tiny_set
    result = train_stage(STAGE_3CH, get_config("tiny"), train, val, tmp_path,
                         options=options(epochs=3, ramp_epochs=1, peak=3.0, decay=0.5))
    # "lr" is the pretrained group's rate after the epoch's scheduler step, i.e. the next epoch's
    assert [e["lr"] for e in result.history] == pytest.approx([3e-4 * 3.0, 3e-4 * 1.5, 3e-4 * 0.75])
    assert all(e["train_seconds"] > 0 and e["val_seconds"] > 0 for e in result.history)
    state = torch.load(tmp_path / "3ch-last.pt", weights_only=False)
    assert state["schedule"] == {"ramp_epochs": 1, "peak": 3.0, "decay": 0.5} and state["batch_size"] == 6
