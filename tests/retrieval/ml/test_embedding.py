"""Metric-learning embeddings (papers 002 and 004): losses, samplers, network, a tiny training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrieval import synthetic
from retrieval.ml.checkpoints import STAGE_3CH, STAGE_CONTRASTIVE, STAGE_TRIPLET, load_checkpoint
from retrieval.ml.configs import get_config
from retrieval.ml.data import Item
from retrieval.ml.embedding import (
    EmbeddingNet, contrastive_loss, load_embedding, retrieval_scores, sample_pairs, sample_triplets, train_embedding,
    triplet_loss,
)
from retrieval.ml.network import build_model
from retrieval.ml.train import TrainOptions, train_stage

CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


# --- Losses ---------------------------------------------------------------------------------------

def test_contrastive_loss_matches_hand_computed_values():
    e1 = torch.zeros(3, 2)
    e2 = torch.tensor([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0]])
    same = torch.tensor([True, False, False])
    # pair 0, similar (Y = 0):     D = 5            -> 1/2 * 5^2               = 12.5
    # pair 1, dissimilar (Y = 1):  D = 0.5 < m = 1  -> 1/2 * max(0, 1 - 0.5)^2 = 0.125
    # pair 2, dissimilar (Y = 1):  D = 5 >= m       -> 1/2 * max(0, 1 - 5)^2   = 0
    per_pair = contrastive_loss(e1, e2, same, margin=1.0, reduction="none")
    assert per_pair.tolist() == pytest.approx([12.5, 0.125, 0.0])
    # mean: (12.5 + 0.125 + 0) / 3 = 4.208333...
    assert contrastive_loss(e1, e2, same, margin=1.0).item() == pytest.approx(12.625 / 3)
    assert contrastive_loss(e1, e2, [1, 0, 0], margin=1.0, reduction="sum").item() == pytest.approx(12.625)


def test_contrastive_margin_only_affects_dissimilar_pairs_closer_than_it():
    e1, e2 = torch.zeros(2, 2), torch.tensor([[0.3, 0.4], [0.3, 0.4]])  # D = 0.5 for both
    same = torch.tensor([True, False])
    # similar: 1/2 * 0.5^2 = 0.125 whatever the margin
    # dissimilar: m = 0.5 -> max(0, 0) = 0; m = 0.4 -> 0; m = 2 -> 1/2 * 1.5^2 = 1.125
    assert contrastive_loss(e1, e2, same, margin=0.5, reduction="none").tolist() == pytest.approx([0.125, 0.0])
    assert contrastive_loss(e1, e2, same, margin=0.4, reduction="none").tolist() == pytest.approx([0.125, 0.0])
    assert contrastive_loss(e1, e2, same, margin=2.0, reduction="none").tolist() == pytest.approx([0.125, 1.125])
    # identical embeddings of a dissimilar pair: 1/2 * m^2, with a finite gradient
    a = torch.zeros(1, 2, requires_grad=True)
    loss = contrastive_loss(a, torch.zeros(1, 2), [False], margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.5) and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="positive"):
        contrastive_loss(e1, e2, same, margin=0.0)
    with pytest.raises(ValueError, match="one 'same' flag per pair"):
        contrastive_loss(e1, e2, [True], margin=1.0)


def test_triplet_loss_matches_hand_computed_values():
    fa = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    fb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    fc = torch.tensor([[0.0, 2.0], [1.0, 0.0], [1.0, 1.0]])
    # D = squared Euclidean, l = 1:
    # row 0: D(a,b) = 1, D(a,c) = 4, D(b,c) = 1 + 4 = 5 -> max(0, 1 + 1 - (4 + 5) / 2) = max(0, -2.5) = 0
    # row 1: D(a,b) = 4, D(a,c) = 1, D(b,c) = 1         -> max(0, 1 + 4 - (1 + 1) / 2)  = 4
    # row 2: D(a,b) = 1, D(a,c) = 2, D(b,c) = 1         -> max(0, 1 + 1 - (2 + 1) / 2)  = 0.5
    assert triplet_loss(fa, fb, fc, reduction="none").tolist() == pytest.approx([0.0, 4.0, 0.5])
    assert triplet_loss(fa, fb, fc).item() == pytest.approx(4.5 / 3)  # default margin 1 (paper 004)
    # margin 3 on row 0: max(0, 3 + 1 - 4.5) = 0; row 2: 3 + 1 - 1.5 = 2.5
    assert triplet_loss(fa, fb, fc, margin=3.0, reduction="none").tolist() == pytest.approx([0.0, 6.0, 2.5])
    with pytest.raises(ValueError, match="one shape"):
        triplet_loss(fa, fb, fc[:2])


# --- Samplers -------------------------------------------------------------------------------------

LABELS = [0, 0, 0, 1, 1, 2]  # class 2 has one image: never an anchor, but a dissimilar image
# two diseases with two similarity groups each; group d1 of disease 1 has one image
DISEASE = [0, 0, 0, 0, 0, 1, 1, 1, 1]
GROUPS = ["a", "a", "a", "b", "b", "c", "c", "d1", None]  # the last image is not annotated


def test_every_triplet_is_valid_by_class():
    triplets = sample_triplets(LABELS, 300, np.random.default_rng(1))
    labels = np.asarray(LABELS)
    assert triplets.shape == (300, 3) and triplets.dtype == np.int64
    a, b, c = triplets.T
    assert (a != b).all() and (labels[a] == labels[b]).all() and (labels[c] != labels[a]).all()
    assert not np.isin(5, a) and not np.isin(5, b) and np.isin(5, c)  # the lone class-2 image is only a c


def test_hierarchical_triplets_exclude_cousins_and_non_hierarchical_may_use_them():
    disease, groups = np.asarray(DISEASE), np.asarray(GROUPS, dtype=object)
    hier = sample_triplets(DISEASE, 400, np.random.default_rng(2), GROUPS)
    a, b, c = hier.T
    assert (a != b).all() and (groups[a] == groups[b]).all() and (disease[a] == disease[b]).all()
    assert (disease[c] != disease[a]).all()  # no cousin (same disease, other group)
    assert not np.isin([7, 8], hier[:, :2]).any()  # a one-image group and an unannotated image anchor nothing
    assert not np.isin(8, c).any()  # unannotated images are not sampled at all

    flat = sample_triplets(DISEASE, 400, np.random.default_rng(2), GROUPS, hierarchical=False)
    a, b, c = flat.T
    assert (groups[a] == groups[b]).all() and (groups[c] != groups[a]).all()
    cousins = (disease[c] == disease[a]) & (groups[c] != groups[a])
    assert cousins.any() and (~cousins).any()
    assert not np.isin(8, flat).any()


def test_samplers_are_deterministic_per_seed():
    first = sample_triplets(LABELS, 50, np.random.default_rng(7))
    assert np.array_equal(first, sample_triplets(LABELS, 50, np.random.default_rng(7)))
    assert not np.array_equal(first, sample_triplets(LABELS, 50, np.random.default_rng(8)))
    p1, s1 = sample_pairs(LABELS, 40, np.random.default_rng(7))
    p2, s2 = sample_pairs(LABELS, 40, np.random.default_rng(7))
    assert np.array_equal(p1, p2) and np.array_equal(s1, s2)


def test_pairs_are_valid_and_split_by_the_positive_fraction():
    pairs, same = sample_pairs(LABELS, 40, np.random.default_rng(3), positive_fraction=0.25)
    labels = np.asarray(LABELS)
    assert pairs.shape == (40, 2) and same.sum() == 10
    i, j = pairs.T
    assert (i != j).all() and (labels[i] == labels[j])[same].all() and (labels[i] != labels[j])[~same].all()
    assert 0 < same[:20].sum() < 20  # shuffled, not all positives first
    # with groups: positives are siblings, hierarchical negatives come from the other disease
    pairs, same = sample_pairs(DISEASE, 60, np.random.default_rng(3), groups=GROUPS)
    disease, groups = np.asarray(DISEASE), np.asarray(GROUPS, dtype=object)
    i, j = pairs.T
    assert (groups[i] == groups[j])[same].all() and (disease[i] != disease[j])[~same].all()


def test_impossible_sampling_is_a_clear_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no valid triplet"):
        sample_triplets([0, 0, 0], 5, rng)  # one class: nothing dissimilar
    with pytest.raises(ValueError, match="no valid triplet"):
        sample_triplets([0, 1, 2], 5, rng)  # no class with two images
    with pytest.raises(ValueError, match="no valid triplet"):
        sample_triplets([0, 0, 1, 1], 5, rng, [None, None, None, None])
    # every group under one disease: hierarchical selection has no dissimilar image, flat selection has cousins
    with pytest.raises(ValueError, match="no valid triplet"):
        sample_triplets([0, 0, 0, 0], 5, rng, ["a", "a", "b", "b"])
    assert sample_triplets([0, 0, 0, 0], 5, rng, ["a", "a", "b", "b"], hierarchical=False).shape == (5, 3)
    with pytest.raises(ValueError, match="no similar pair"):
        sample_pairs([0, 1, 2], 4, rng)
    with pytest.raises(ValueError, match="no dissimilar pair"):
        sample_pairs([0, 0, 0], 4, rng)
    assert sample_pairs([0, 0, 0], 4, rng, positive_fraction=1.0)[1].all()
    with pytest.raises(ValueError, match="one group per image"):
        sample_triplets([0, 0, 1], 2, rng, ["a"])
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_pairs(LABELS, 4, rng, positive_fraction=1.5)


def test_retrieval_scores_count_same_class_neighbours():
    library = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]  # classes 4, 4, 5, 6 (mel, mel, nv, vasc)
    queries = np.eye(3, dtype=np.float32)[[0, 1]]  # a mel query near the two mels, an nv query near the nv
    scores = retrieval_scores(queries, [4, 5], library, [4, 4, 5, 6], ks=(1, 3))
    # mel query: top 3 = mel, mel, (nv or vasc: tie, broken by index -> nv) -> P@1 = 1, P@3 = 2/3
    # nv query:  top 3 = nv, then mel, mel (ties by index)                   -> P@1 = 1, P@3 = 1/3
    assert scores["precision_at_1"] == 1.0 and scores["precision_at_3"] == pytest.approx(0.5)
    assert scores["ap_at_3"] == pytest.approx(0.5)


# --- Network --------------------------------------------------------------------------------------

def test_embedding_is_the_unit_gap_of_the_feature_maps():
    torch.manual_seed(0)
    net = EmbeddingNet(get_config("tiny")).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        maps, embedded, called = net.feature_maps(x), net.embed(x), net(x)
    assert maps.ndim == 4 and maps.shape[:2] == (3, 256) and embedded.shape == (3, 256) == (3, net.embedding_dim)
    assert torch.allclose(embedded.norm(dim=1), torch.ones(3), atol=1e-6)
    assert torch.allclose(embedded, F.normalize(maps.mean(dim=(2, 3)), dim=1), atol=1e-6)
    assert torch.equal(called, embedded)


def test_embedding_starts_from_a_3ch_models_backbone():
    torch.manual_seed(1)
    model3 = build_model(get_config("tiny"))
    net = EmbeddingNet(get_config("tiny"), backbone_from=model3)
    mine, theirs = net.backbone.state_dict(), model3.backbone.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not any(name.startswith("head") for name in net.state_dict())
    with pytest.raises(ValueError, match="3-channel"):
        EmbeddingNet(get_config("tiny"), backbone_from=build_model(get_config("tiny"), channels=4))


# --- Training -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """24 small synthetic 64-px-ish images of three classes: 18 train, 6 val."""
    folder = tmp_path_factory.mktemp("metric-set")
    items = []
    for i in range(24):
        dx = ("mel", "nv", "vasc")[i % 3]
        lesion = synthetic.make_lesion(dx, f"L{i}", seed=5)
        image, _ = synthetic.render(lesion, synthetic.make_shot(lesion, f"I{i}", seed=5), 80, 64)
        path = folder / f"I{i}.jpg"
        image.save(path)
        items.append(Item(str(path), CODES.index(dx), f"I{i}"))
    return items[:18], items[18:]


def options(**overrides) -> TrainOptions:
    return TrainOptions(**{"epochs": 2, "batch_size": 6, "seed": 5, "lr": 0.01, "progress": False, "ramp_epochs": 0,
                           "peak": 1.0, "decay": 1.0, **overrides})


def test_triplet_training_is_deterministic_decreases_the_loss_and_loads(tiny_set, tmp_path):
    train, val = tiny_set
    config = get_config("tiny")
    seen = []
    first = train_embedding(STAGE_TRIPLET, config, train, val, tmp_path / "a", options=options(),
                            tuples_per_epoch=36, on_epoch=seen.append)
    second = train_embedding(STAGE_TRIPLET, config, train, val, tmp_path / "b", options=options(),
                             tuples_per_epoch=36)
    losses = [epoch["loss"] for epoch in first.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [e["loss"] for e in second.history] == losses and len(seen) == 2
    a, b = torch.load(first.checkpoint, weights_only=False), torch.load(second.checkpoint, weights_only=False)
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert (a["stage"], a["config"], a["channels"], a["embedding_dim"]) == ("triplet", "tiny", 3, 256)
    best = max(first.history, key=lambda e: e["ap_at_6"])
    assert first.metrics["ap_at_6"] == best["ap_at_6"] and "val_loss" in first.metrics
    assert all(0 <= first.metrics[f"precision_at_{k}"] <= 1 for k in (1, 3, 6, 9))

    net = load_embedding(first.checkpoint)
    assert isinstance(net, EmbeddingNet) and not net.training
    assert all(torch.equal(net.state_dict()[k], a["weights"][k]) for k in a["weights"])
    with pytest.raises(ValueError, match="load_embedding"):
        load_checkpoint(first.checkpoint)


def test_contrastive_training_from_a_3ch_checkpoint_with_groups(tiny_set, tmp_path):
    train, val = tiny_set
    config = get_config("tiny")
    rgb = train_stage(STAGE_3CH, config, train, val, tmp_path, options=options(epochs=1, lr=3e-4))
    # two similarity groups per class, one image left unannotated
    groups = {item.key: f"g{index % 2}" for index, item in enumerate(train[1:])}
    result = train_embedding(STAGE_CONTRASTIVE, config, train, val, tmp_path, options=options(epochs=1),
                             groups=groups, init_checkpoint=rgb.checkpoint)
    state = torch.load(result.checkpoint, weights_only=False)
    assert state["stage"] == "contrastive" and state["grouped"] and state["hierarchical"]
    assert "backbone of 3ch-best.pt" in result.weights_source
    assert np.isfinite(result.metrics["loss"]) and result.metrics["tuples"] == 18
    with pytest.raises(ValueError, match="not an embedding"):
        load_embedding(rgb.checkpoint)
    with pytest.raises(ValueError, match="no training image has a similarity group"):
        train_embedding(STAGE_TRIPLET, config, train, val, tmp_path, options=options(epochs=1), groups={"x": "g"})
    with pytest.raises(ValueError, match="unknown embedding stage"):
        train_embedding("3ch", config, train, val, tmp_path, options=options(epochs=1))



def test_profiles_give_the_embedding_stages_epochs():
    from retrieval.ml.profiles import TrainingProfile, profile_options

    assert profile_options("demo", "triplet").epochs == 3 and profile_options("thesis", "contrastive").epochs == 20
    assert profile_options("demo", "contrastive").schedule == {"ramp_epochs": 0, "peak": 6.0, "decay": 0.8}
    short = TrainingProfile(name="short", config="tiny", epochs={"3ch": 2, "4ch": 1})
    assert short.options("triplet").epochs == 2  # falls back to the 3-channel epochs
    with pytest.raises(ValueError, match="unknown stage\\(s\\) 5ch"):
        TrainingProfile(name="odd", config="tiny", epochs={"3ch": 2, "4ch": 1, "5ch": 1})
