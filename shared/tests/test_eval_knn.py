"""kNN classification: a hand-computed weighted vote, the 5-NN tie rule, top-5 and chunking."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.shared.evaluation.knn import class_ranking, knn_accuracy, nearest_neighbours


def test_weighted_knn_matches_a_hand_computed_example():
    # Train features on the unit circle at angles 0, 90, 180, 270 degrees (classes 0, 1, 1, 2);
    # the query at 45 degrees has cosine 0.7071 to the first two and -0.7071 to the last two.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[math.cos(math.pi / 4), math.sin(math.pi / 4)]])
    # k = 3: neighbours 0 (s = 0.7071), 1 (0.7071), then 2 or 3 (s = -0.7071; class 1 or 2).
    # Votes with tau = 0.5: class 0: e^{1.4142}, class 1: e^{1.4142} (+ e^{-1.4142} if index 2 is picked).
    # Hand values: e^{1.4142} = 4.1133, e^{-1.4142} = 0.2431.
    assert math.exp(0.70710678 / 0.5) == pytest.approx(4.1133, abs=1e-4)
    sims, idx = nearest_neighbours(train, query, 2)
    assert sorted(idx[0].tolist()) == [0, 1]
    assert sims[0].tolist() == pytest.approx([0.70710678, 0.70710678], abs=1e-6)
    # k = 2: classes 0 and 1 tie at 4.1133 each -> the smaller label (0) ranks first.
    out = knn_accuracy(train, labels, query, torch.tensor([0]), k=2, temperature=0.5, num_classes=3)
    assert out["top1"] == 100.0
    out = knn_accuracy(train, labels, query, torch.tensor([1]), k=2, temperature=0.5, num_classes=3)
    assert out["top1"] == 0.0 and out["top5"] == 100.0
    # Scale invariance of the cosine vote: the query's norm does not matter.
    out = knn_accuracy(train, labels, 7 * query, torch.tensor([0]), k=2, temperature=0.5, num_classes=3)
    assert out["top1"] == 100.0


def test_weighted_vote_scores_by_hand():
    # Three queries with known neighbours; class scores computed by hand with tau = 0.1.
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    # Similarities: 1.0 (class 0), 0.8 (class 1), 0.6 (class 1), 0.0 (class 0). With k = 3:
    # class 0: e^{10} = 22026.47; class 1: e^{8} + e^{6} = 2980.96 + 403.43 = 3384.39 -> class 0.
    out = knn_accuracy(train, labels, query, torch.tensor([0]), k=3, temperature=0.1)
    assert out["top1"] == 100.0
    # With tau = 10 the weights flatten: class 0: e^{0.1} = 1.105; class 1: e^{0.08} + e^{0.06} = 2.145.
    out = knn_accuracy(train, labels, query, torch.tensor([1]), k=3, temperature=10.0)
    assert out["top1"] == 100.0


def test_five_nn_majority_tie_goes_to_the_smaller_label():
    # 1-D features; query at 0. Neighbours by distance: 1 (cls 3), 2 (cls 3), 3 (cls 1), 4 (cls 1), 5 (cls 2);
    # votes: class 3 x2, class 1 x2, class 2 x1 -> tie between 1 and 3 -> label 1.
    train = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [9.0]])
    labels = torch.tensor([3, 3, 1, 1, 2, 0])
    query = torch.zeros(1, 1)
    common = dict(k=5, metric="euclidean", vote="majority", num_classes=4)
    assert knn_accuracy(train, labels, query, torch.tensor([1]), **common)["top1"] == 100.0
    assert knn_accuracy(train, labels, query, torch.tensor([3]), **common)["top1"] == 0.0
    # Top-5 only ranks labels that received votes: class 0 has none, so it is never a top-5 hit.
    assert knn_accuracy(train, labels, query, torch.tensor([2]), **common)["top5"] == 100.0
    assert knn_accuracy(train, labels, query, torch.tensor([0]), **common)["top5"] == 0.0
    # A clear majority wins regardless of label order.
    labels2 = torch.tensor([3, 3, 3, 1, 1, 0])
    assert knn_accuracy(train, labels2, query, torch.tensor([3]), **common)["top1"] == 100.0


def test_class_ranking_is_stable_on_ties():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert class_ranking(scores).tolist() == [[1, 2, 0, 3], [0, 1, 2, 3]]


def test_euclidean_neighbours_match_cdist():
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=gen)
    queries = torch.randn(20, 16, generator=gen)
    scores, idx = nearest_neighbours(train, queries, 5, metric="euclidean", train_chunk_size=64)
    ref = torch.cdist(queries, train).topk(5, largest=False)
    assert torch.equal(idx, ref.indices)
    assert torch.allclose(-scores, ref.values, atol=1e-4)


@pytest.mark.parametrize(("metric", "vote"), [("cosine", "weighted"), ("euclidean", "majority")])
def test_chunking_does_not_change_the_result(metric, vote):
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(7, 32, generator=gen) * 3
    train_y = torch.randint(0, 7, (500,), generator=gen)
    test_y = torch.randint(0, 7, (120,), generator=gen)
    train = centres[train_y] + torch.randn(500, 32, generator=gen)
    test = centres[test_y] + torch.randn(120, 32, generator=gen)
    kwargs = dict(k=20, metric=metric, vote=vote, temperature=0.07)
    whole = knn_accuracy(train, train_y, test, test_y, chunk_size=10_000, train_chunk_size=10_000, **kwargs)
    chunked = knn_accuracy(train, train_y, test, test_y, chunk_size=7, train_chunk_size=33, **kwargs)
    assert whole == chunked
    assert whole["top1"] > 80.0  # separable clusters are classified well
    assert whole["num_train"] == 500 and whole["num_test"] == 120


def test_knn_rejects_mismatched_features():
    with pytest.raises(ValueError, match="dimension"):
        knn_accuracy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="--vote"):
        knn_accuracy(
            torch.ones(3, 4), torch.zeros(3, dtype=torch.long), torch.ones(2, 4), torch.zeros(2), vote="x"
        )
