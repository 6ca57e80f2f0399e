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
    scores = measures.euclidean_scores(np.array([0.0, 0.0], np.float32), library.astype(np.float32))
    assert scores.dtype == np.float64 and scores.shape == (3,)


def test_cosine_score_is_rescaled_to_zero_one():
    library = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    # cosines with (1, 0): 1, 0, -1, 1/sqrt(2) -> (c + 1) / 2
    expected = [1.0, 0.5, 0.0, (1 / np.sqrt(2) + 1) / 2]
    assert np.allclose(measures.cosine_scores(np.array([1.0, 0.0]), library), expected)
    with pytest.raises(ValueError, match="all zeros"):
        measures.cosine_scores(np.zeros(2), library)
    with pytest.raises(ValueError, match="all zeros"):
        measures.cosine_scores(np.ones(2), np.array([[1.0, 2.0], [0.0, 0.0]]))


def test_cosine_scores_stay_in_zero_one_and_ignore_scale():
    rng = np.random.default_rng(4)
    library = rng.normal(size=(200, 16)).astype(np.float32)
    query = rng.normal(size=16).astype(np.float32)
    scores = measures.cosine_scores(query, library)
    assert scores.dtype == np.float64 and scores.min() >= 0.0 and scores.max() <= 1.0
    assert np.allclose(measures.cosine_scores(query * 7.0, library * 3.0), scores)
    # float32 products (no float64 copy of the library): exact to ~1e-7
    assert np.allclose(measures.cosine_scores(query, np.stack([query, -query])), [1.0, 0.0], atol=1e-6)


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


def test_gram_vectors_follow_the_weights_and_the_position_normalisation():
    rng = np.random.default_rng(5)
    maps = torch.from_numpy(rng.normal(size=(1, 3, 4, 4)).astype(np.float32))
    assert torch.allclose(measures.gram_vector(maps, 0.25), 0.25 * measures.gram_vector(maps))
    # the same pattern tiled 2x2 has the same Gram matrix (normalised by H*W)
    assert torch.allclose(measures.gram_vector(maps.repeat(1, 1, 2, 2)), measures.gram_vector(maps), atol=1e-5)
    with pytest.raises(ValueError, match="N, C, H, W"):
        measures.gram_vector(maps[0])


def test_style_extractor_on_the_tiny_model():
    from retrieval.ml.configs import get_config
    from retrieval.ml.network import build_model

    torch.manual_seed(0)
    model = build_model(get_config("tiny"), pretrained=False)
    model.train()  # extract must use eval mode anyway and give it back
    extractor = measures.StyleExtractor(model)
    channels = [16, 24, 32, 48, 64]  # timm test_efficientnet: five stages
    assert extractor.channels == channels and extractor.stages == list(range(5))
    assert extractor.weights == pytest.approx([1 / c for c in channels])
    assert extractor.dimension == sum(c * (c + 1) // 2 for c in channels) == 4220
    x = torch.randn(3, 3, 64, 64)
    running = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    vectors = extractor.extract(x)
    assert vectors.shape == (3, 4220) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert model.training and all(torch.equal(a, m.running_mean) for a, m in
                                  zip(running, [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]))
    assert np.allclose(extractor.extract(x[:1])[0], vectors[0], atol=1e-5)  # independent of the batch
    assert not any(b._forward_hooks for b in model.backbone.blocks)  # hooks removed

    # chosen stages and weights, against the stage outputs computed without hooks
    picked = measures.StyleExtractor(model.backbone, stages=[1, 3], weights=[2.0, 0.5])
    assert picked.dimension == 24 * 25 // 2 + 48 * 49 // 2
    model.eval()
    with torch.no_grad():
        h = model.backbone.bn1(model.backbone.conv_stem(x))
        stage_outputs = []
        for block in model.backbone.blocks:
            h = block(h)
            stage_outputs.append(h)
        expected = torch.cat([measures.gram_vector(stage_outputs[1], 2.0),
                              measures.gram_vector(stage_outputs[3], 0.5)], dim=1).numpy()
    assert np.allclose(picked.extract(x), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="one weight per stage"):
        measures.StyleExtractor(model, stages=[0, 1], weights=[1.0])
    with pytest.raises(ValueError, match="stages"):
        measures.StyleExtractor(model, stages=[7])


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
    for row in (0, 15, 29):  # the top 9 by style score, exact and projected: the query's own cluster
        exact_rows, _ = measures.top_k(measures.style_scores(vectors[row], vectors), 10)
        approx_rows, _ = measures.top_k(measures.style_scores(reduced[row], reduced), 10)
        assert exact_rows[0] == approx_rows[0] == row
        assert set(exact_rows[1:] // 10) == set(approx_rows[1:] // 10) == {row // 10}
    restored = measures.StyleProjection.from_arrays(small.to_arrays())
    assert np.array_equal(restored.transform(vectors), reduced)
    assert restored.explained == small.explained and reduced.dtype == np.float32
    assert measures.StyleProjection.fit(vectors, components=500).components == 29  # capped by N - 1


def test_style_projection_with_more_vectors_than_dimensions():
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(50, 8)) * np.arange(1, 9)
    full = measures.StyleProjection.fit(vectors, components=256)  # capped by the dimension
    assert full.components == 8 and full.explained == pytest.approx(1.0)
    projected = full.transform(vectors)
    exact = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    assert np.allclose(((projected[:, None] - projected[None]) ** 2).sum(-1), exact, rtol=1e-4, atol=1e-3)
    # the small-sample route (Gram matrix of the sample) finds the same leading directions
    wide = np.concatenate([vectors[:6], np.zeros((6, 4))], axis=1)
    svd = np.linalg.svd(wide - wide.mean(0), full_matrices=False)[2][:3]
    fitted = measures.StyleProjection.fit(wide, components=3).basis
    assert np.allclose(np.abs(np.sum(svd * fitted, axis=1)), 1.0, atol=1e-4)


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


def test_dice_popcount_matches_unpacked_masks():
    rng = np.random.default_rng(7)
    masks = rng.random((20, 64, 64)) < rng.random((20, 1, 1))
    query = rng.random((64, 64)) < 0.4
    overlap = (masks & query).sum(axis=(1, 2))
    expected = 2 * overlap / (masks.sum(axis=(1, 2)) + query.sum())
    assert np.allclose(measures.dice_scores(query, measures.pack_masks(masks)), expected)
    with pytest.raises(ValueError, match="mask sizes"):
        measures.dice_scores(np.zeros((8, 8), bool), measures.pack_masks(masks))
    packed = measures.pack_masks(masks)
    assert np.array_equal(measures.popcount_rows(packed), masks.sum(axis=(1, 2)))
    assert np.array_equal(measures.popcount_rows(packed, lookup=True), masks.sum(axis=(1, 2)))
    odd = measures.pack_masks(masks[:, :4, :4])  # 2 bytes a row: not whole 64-bit words
    assert np.array_equal(measures.popcount_rows(odd), masks[:, :4, :4].sum(axis=(1, 2)))
    assert np.array_equal(measures.popcount_rows(odd, lookup=True), masks[:, :4, :4].sum(axis=(1, 2)))


def test_i1_scores_are_harmonic_means_and_zero_when_any_part_is():
    assert np.allclose(measures.i1(np.array([0.5]), np.array([1.0])), [2 / (2 + 1)])  # 2 / (1/0.5 + 1/1)
    assert np.allclose(measures.i1(np.array([0.5]), np.array([0.25]), np.array([1.0])), [3 / (2 + 4 + 1)])
    assert np.allclose(measures.i1(np.array([1.0, 0.0, 0.3]), np.array([1.0, 0.7, 0.0])), [1.0, 0.0, 0.0])
    assert np.allclose(measures.i1(np.ones(4), np.ones(4), np.ones(4)), 1.0)
    with np.errstate(all="raise"):  # no division warning for a zero component
        assert measures.i1(np.array([0.0]), np.array([0.0])).tolist() == [0.0]
    assert set(measures.I1_COMPONENTS) == {"i1_ed", "i1_cd", "i1_ecd", "i1_se", "i1_sc", "i1_sd"}
    assert measures.I1_COMPONENTS["i1_ecd"] == ("euclidean", "cosine", "dice")


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
    scores = np.zeros(100)
    scores[[40, 7, 90]] = 1.0  # the partial-sort path (k small against N): ties still by index
    assert measures.top_k(scores, 5)[0].tolist() == [7, 40, 90, 0, 1]
    with pytest.raises(ValueError, match="k=5"):
        measures.top_k(np.ones(3), 5)


def test_a_tie_seed_orders_tied_scores_at_random_and_reproducibly():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.5, 0.9, 0.1])
    first = measures.top_k(scores, 4, tie_seed=11)
    assert np.array_equal(first[0], measures.top_k(scores, 4, tie_seed=11)[0])
    assert sorted(first[0][:3].tolist()) == [1, 3, 5] and first[0][3] in (0, 2, 4)  # best scores still first
    assert first[1].tolist() == [0.9, 0.9, 0.9, 0.5]
    orders = {tuple(measures.top_k(scores, 4, tie_seed=seed)[0].tolist()) for seed in range(30)}
    assert len(orders) > 5  # the seed, not the index, decides among equal scores
    # the key of a row depends on (row, seed) only, and both branches (partial and full sort) agree
    many = np.zeros(400)
    many[[3, 250, 399]] = 1.0
    assert sorted(measures.top_k(many, 3, tie_seed=2)[0].tolist()) == [3, 250, 399]
    assert np.array_equal(measures.top_k(many, 300, tie_seed=2)[0][:3], measures.top_k(many, 3, tie_seed=2)[0])


def test_ties_do_not_favour_the_class_imported_first():
    """An I1-score with a zero component is 0 for every case (here: a lesion in the query, none
    found in the library, so Dice is 0): with ties by library order a query would get the
    first-imported class every time; with the seeded tie-break about half of the neighbours come
    from each half of a library sorted by class."""
    rng = np.random.default_rng(0)
    library = {"mask": measures.pack_masks(np.zeros((200, 64, 64), dtype=bool)),
               "cnn3": rng.random((200, 8)).astype(np.float32)}
    classes = np.array(["bkl"] * 100 + ["nv"] * 100)  # library order = class order
    query_mask = np.zeros((64, 64), dtype=bool)
    query_mask[20:40, 20:40] = True
    first_half = []
    for number in range(60):
        query = {"mask": query_mask, "cnn3": rng.random(8).astype(np.float32)}
        rows, scores = method_topk("i1_cd", query, library, 6)
        assert scores.tolist() == [0.0] * 6  # every case ties
        first_half.append(np.mean(classes[rows] == "bkl"))
        assert np.array_equal(rows, method_topk("i1_cd", query, library, 6)[0])  # same query, same order
    assert 0.35 < np.mean(first_half) < 0.65
    with_index_ties = measures.top_k(measures.dice_scores(query_mask, library["mask"]), 6)[0]
    assert classes[with_index_ties].tolist() == ["bkl"] * 6  # what the old rule did


def test_the_tie_seed_of_a_query_comes_from_its_descriptors():
    from retrieval.ml.methods import query_tie_seed

    a = {"cnn3": np.array([0.1, 0.2], dtype=np.float32), "mask": np.zeros((4, 4), dtype=bool)}
    same = {"mask": np.zeros((4, 4), dtype=bool), "cnn3": np.array([0.1, 0.2], dtype=np.float32)}
    assert query_tie_seed(a) == query_tie_seed(same)  # name order does not matter
    assert query_tie_seed(a) != query_tie_seed(a, 1)
    assert query_tie_seed(a) != query_tie_seed({**a, "cnn3": np.array([0.1, 0.3], dtype=np.float32)})


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
    # by hand: Z = 2, 1 x 2 maps; f(q) = (1, 2), f(r) = (3, 2) -> weights (4, 0) -> A = 4 g_1
    g_q = np.array([[[0.0, 2.0]], [[1.0, 3.0]]])
    g_r = np.array([[[3.0, 3.0]], [[0.0, 4.0]]])
    a_q, a_r = measures.activation_map_pair(torch.from_numpy(g_q), torch.from_numpy(g_r))
    assert a_q.tolist() == [[0.0, 8.0]] and a_r.tolist() == [[12.0, 12.0]]
    with pytest.raises(ValueError, match="Z, h, w"):
        measures.activation_map_pair(g_q, g_r[0])


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
