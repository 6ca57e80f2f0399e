"""The similarity measures of papers 000/001 and the evidence maps of paper 004, against values
worked out by hand on tiny arrays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.ml import measures
from retrieval.ml.methods import method_scores, method_topk
from retrieval.ml.segmentation import classical_mask, dice, otsu_threshold


def test_euclidean_score_is_one_minus_distance_over_the_farthest():
    library = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    # distances from (0, 0): 0, 5, 10 -> d_max 10 -> 1, 0.5, 0
    assert np.allclose(measures.euclidean_scores(np.array([0.0, 0.0]), library), [1.0, 0.5, 0.0])
    # from (3, 4): 5, 0, 5 -> 0, 1, 0 (d_max is taken for each query)
    assert np.allclose(measures.euclidean_scores(np.array([3.0, 4.0]), library), [0.0, 1.0, 0.0])
    assert np.allclose(measures.euclidean_scores(np.array([1.0, 1.0]), np.ones((3, 2))), 1.0)  # all identical


def test_cosine_score_is_rescaled_to_zero_one():
    library = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    # cosines with (1, 0): 1, 0, -1, 1/sqrt(2) -> (c + 1) / 2
    expected = [1.0, 0.5, 0.0, (1 / np.sqrt(2) + 1) / 2]
    assert np.allclose(measures.cosine_scores(np.array([1.0, 0.0]), library), expected)
    with pytest.raises(ValueError, match="all zeros"):
        measures.cosine_scores(np.zeros(2), library)


def test_gram_vectors_turn_the_style_loss_into_a_squared_distance():
    rng = np.random.default_rng(0)
    stages = [torch.from_numpy(rng.normal(size=(2, c, 3, 4)).astype(np.float32)) for c in (2, 3)]
    weights = [0.5, 1 / 3]
    grams = [[(s[i].reshape(s.shape[1], -1) @ s[i].reshape(s.shape[1], -1).T / 12).numpy() for s in stages]
             for i in range(2)]
    direct = measures.style_loss(grams[0], grams[1], weights)
    vectors = torch.cat([measures.gram_vector(s, w) for s, w in zip(stages, weights)], dim=1).numpy()
    assert vectors.shape == (2, 3 + 6)  # C(C+1)/2 per stage
    assert np.sum((vectors[0] - vectors[1]) ** 2) == pytest.approx(direct, rel=1e-5)


def test_gram_vector_by_hand():
    # one channel pair over two positions: F = [[1, 2], [3, 4]] -> G = F F^T / 2 = [[2.5, 5.5], [5.5, 12.5]]
    maps = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert np.allclose(measures.gram_vector(maps).numpy(), [[2.5, 5.5 * np.sqrt(2), 12.5]])


def test_style_projection_keeps_distances_with_every_component_and_order_with_few():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 40)) * 5
    vectors = np.concatenate([c + rng.normal(size=(10, 40)) * 0.3 for c in centres])
    full = measures.StyleProjection.fit(vectors, components=40)
    projected = full.transform(vectors)
    exact = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    approx = ((projected[:, None] - projected[None]) ** 2).sum(-1)
    assert np.allclose(approx, exact, rtol=1e-3, atol=1e-3) and full.explained == pytest.approx(1.0)
    small = measures.StyleProjection.fit(vectors, components=2)
    assert small.components == 2 and 0.8 < small.explained < 1.0
    reduced = small.transform(vectors)
    for row in range(len(vectors)):  # the 9 nearest of each vector are its own cluster either way
        near = np.argsort(((reduced - reduced[row]) ** 2).sum(1))[1:10]
        assert set(near // 10) == {row // 10}
    restored = measures.StyleProjection.from_arrays(small.to_arrays())
    assert np.array_equal(restored.transform(vectors), reduced)


def test_style_score_is_one_minus_loss_over_the_largest():
    library = np.array([[0.0], [1.0], [2.0]])
    # squared distances from 0: 0, 1, 4 -> 1 - L/4
    assert np.allclose(measures.style_scores(np.array([0.0]), library), [1.0, 0.75, 0.0])


def test_dice_on_packed_masks_by_hand():
    query = np.zeros((8, 8), bool)
    query[:2, :4] = True  # 8 pixels
    same = query.copy()
    half = np.zeros((8, 8), bool)
    half[:2, 2:6] = True  # 8 pixels, 4 shared -> 2*4 / 16 = 0.5
    apart = np.zeros((8, 8), bool)
    apart[6:, 6:] = True  # 4 pixels, none shared -> 0
    empty = np.zeros((8, 8), bool)
    packed = measures.pack_masks(np.stack([same, half, apart, empty]))
    assert packed.shape == (4, 8)
    assert np.allclose(measures.dice_scores(query, packed), [1.0, 0.5, 0.0, 0.0])
    assert measures.dice_scores(empty, packed)[3] == 1.0  # two empty masks are the same
    assert dice(query, half) == 0.5


def test_i1_scores_are_harmonic_means_and_zero_when_any_part_is():
    assert np.allclose(measures.i1(np.array([0.5]), np.array([1.0])), [2 / (2 + 1)])  # 2 / (1/0.5 + 1/1)
    assert np.allclose(measures.i1(np.array([0.5]), np.array([0.25]), np.array([1.0])), [3 / (2 + 4 + 1)])
    assert np.allclose(measures.i1(np.array([1.0, 0.0, 0.3]), np.array([1.0, 0.7, 0.0])), [1.0, 0.0, 0.0])
    with np.errstate(all="raise"):  # no division warning for a zero component
        measures.i1(np.array([0.0]), np.array([0.0]))


def test_method_scores_combine_the_parts_as_named():
    cnn = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    style = np.array([[0.0], [1.0], [2.0]])
    query = {"cnn3": np.array([0.1, 0.0]), "style": np.array([0.0])}
    library = {"cnn3": cnn, "style": style}
    euclid = measures.euclidean_scores(query["cnn3"], cnn)
    expected = measures.i1(measures.style_scores(query["style"], style), euclid)
    assert np.allclose(method_scores("i1_se", query, library), expected)
    rows, scores = method_topk("i1_se", query, library, 2)
    assert rows.tolist() == [0, 1] and np.allclose(scores, expected[[0, 1]])
    with pytest.raises(ValueError, match="needs the descriptors mask"):
        method_scores("i1_ed", query, library)


def test_top_k_orders_ties_by_index():
    rows, scores = measures.top_k(np.array([0.5, 0.9, 0.5, 0.9]), 3)
    assert rows.tolist() == [1, 3, 0] and scores.tolist() == [0.9, 0.9, 0.5]


def test_activation_map_pair_matches_a_direct_computation():
    rng = np.random.default_rng(2)
    g_q, g_r = rng.random((4, 3, 2)), rng.random((4, 3, 2))
    a_q, a_r = measures.activation_map_pair(g_q, torch.from_numpy(g_r))
    for i in range(3):
        for j in range(2):
            f_q = [g_q[z].mean() for z in range(4)]
            f_r = [g_r[z].mean() for z in range(4)]
            assert a_q[i, j] == pytest.approx(sum(g_q[z, i, j] * (f_q[z] - f_r[z]) ** 2 for z in range(4)))
            assert a_r[i, j] == pytest.approx(sum(g_r[z, i, j] * (f_q[z] - f_r[z]) ** 2 for z in range(4)))
    assert np.array_equal(measures.normalise_map(np.full((2, 2), 3.0)), np.zeros((2, 2)))
    assert measures.normalise_map(np.array([[1.0, 3.0]])).tolist() == [[0.0, 1.0]]


def test_otsu_and_the_classical_mask_find_a_dark_lesion():
    values = np.concatenate([np.full(100, 0.2), np.full(100, 0.8)])
    assert 0.2 <= otsu_threshold(values) < 0.8
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal((200, 150, 130), 8, size=(120, 160, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:120, :160]
    lesion = ((yy - 60) / 30) ** 2 + ((xx - 80) / 45) ** 2 <= 1
    image[lesion] = np.clip(rng.normal((90, 55, 45), 8, size=(lesion.sum(), 3)), 0, 255).astype(np.uint8)
    mask, found = classical_mask(image)
    from PIL import Image

    truth = np.asarray(Image.fromarray(lesion.astype(np.uint8) * 255).resize((64, 64))) >= 128
    assert found and dice(mask, truth) > 0.9
    flat, found = classical_mask(np.full((50, 50, 3), 180, np.uint8))
    assert not found and not flat.any()
