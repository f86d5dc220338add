"""The swapped-prediction loss, the codes (queue + Sinkhorn) and Un-Mix's three-term loss against hand
computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.swav_unmix.codes import assignment_codes
from selfsup.swav_unmix.loss import swapped_prediction_loss, swav_loss, unmix_loss
from selfsup.swav_unmix.queue import EmbeddingQueue, effective_queue_length
from selfsup.swav_unmix.sinkhorn import distributed_sinkhorn

from .test_sinkhorn import naive_sinkhorn


def hand_loss(scores: list[list[float]], codes: dict[int, list[list[float]]], bs: int, tau: float) -> float:
    """(1/|A|) Σ_a (1/(V−1)) Σ_{v≠a} −(1/B) Σ_n Σ_k q_a[n,k] log softmax(s_v[n]/τ)_k, with Python floats."""
    v_total = len(scores) // bs
    total = 0.0
    for a, q in codes.items():
        sub = 0.0
        for v in range(v_total):
            if v == a:
                continue
            for n in range(bs):
                row = [s / tau for s in scores[v * bs + n]]
                log_z = math.log(sum(math.exp(x) for x in row))
                sub -= sum(qk * (x - log_z) for qk, x in zip(q[n], row)) / bs
        total += sub / (v_total - 1)
    return total / len(codes)


def test_swapped_prediction_matches_the_hand_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(3 * 2, 4, generator=gen).double()  # V = 3 crops, B = 2, K = 4
    codes = {0: torch.rand(2, 4, generator=gen).double(), 1: torch.rand(2, 4, generator=gen).double()}
    got = swapped_prediction_loss(scores, codes, batch_size=2, temperature=0.1)
    want = hand_loss(scores.tolist(), {a: q.tolist() for a, q in codes.items()}, 2, 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_loss_gradient_flows_only_through_the_predictions() -> None:
    scores = torch.randn(4, 3, requires_grad=True)
    codes = assignment_codes(
        scores, F.normalize(torch.randn(4, 2), dim=1), batch_size=2, crops_for_assign=[0],
        prototypes=torch.eye(3, 2),
    )  # fmt: skip
    assert not codes[0].requires_grad
    swapped_prediction_loss(scores, codes, batch_size=2).backward()
    assert scores.grad[:2].abs().sum() == 0 and scores.grad[2:].abs().sum() > 0  # crop 0 only assigns


def _setup(seed: int = 2, bs: int = 2, k: int = 3, d: int = 2):
    gen = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(k, d, generator=gen), dim=1)
    emb = F.normalize(torch.randn(3 * bs, d, generator=gen), dim=1)
    return prototypes, emb, emb @ prototypes.t()


def test_codes_without_queue_are_sinkhorn_of_the_batch_scores_and_reverse_flips_crop_0_only() -> None:
    prototypes, emb, scores = _setup()
    codes = assignment_codes(scores, emb, batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes)
    for crop in (0, 1):
        want = naive_sinkhorn(scores[2 * crop : 2 * crop + 2].double().tolist(), 0.05, 3)
        torch.testing.assert_close(codes[crop], torch.tensor(want, dtype=torch.float32))
    rev = assignment_codes(
        scores, emb, batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes, reverse_first=True
    )
    torch.testing.assert_close(
        rev[0], torch.tensor(naive_sinkhorn(scores[:2].flip(0).double().tolist(), 0.05, 3)).float()
    )
    torch.testing.assert_close(rev[1], codes[1])


def test_queue_partly_zero_is_filled_but_not_used_then_used_once_full() -> None:
    prototypes, emb, scores = _setup()
    queue = EmbeddingQueue(num_assign=2, length=4, dim=2)
    codes = assignment_codes(
        scores, emb, batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes, queue=queue
    )
    # partly zero: not used, batch-only codes; the batch embeddings are now at the front of each slot
    plain = assignment_codes(scores, emb, batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes)
    for crop in (0, 1):
        torch.testing.assert_close(codes[crop], plain[crop])
        torch.testing.assert_close(queue.queue[crop, :2], emb[2 * crop : 2 * crop + 2])
        assert queue.queue[crop, 2:].abs().sum() == 0
    assert not queue.in_use
    # second push fills the slots (the first batch shifted back): still computed without the queue
    assignment_codes(
        scores.flip(0), emb.flip(0), batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes, queue=queue
    )
    assert not queue.in_use and queue.queue[:, -1].abs().sum() > 0
    before = queue.queue.clone()
    codes = assignment_codes(
        scores, emb, batch_size=2, crops_for_assign=[0, 1], prototypes=prototypes, queue=queue
    )
    assert queue.in_use
    for slot, crop in enumerate((0, 1)):
        rows = torch.cat((before[slot] @ prototypes.t(), scores[2 * crop : 2 * crop + 2]))
        want = naive_sinkhorn(rows.double().tolist(), 0.05, 3)[-2:]
        torch.testing.assert_close(codes[crop], torch.tensor(want, dtype=torch.float32))
        torch.testing.assert_close(queue.queue[slot, 2:], before[slot, :2])  # shifted by the batch
    # the flag, once set, keeps the queue in use for the epoch even if the queue were zero; reset_use clears it
    queue.reset_use()
    assert not queue.in_use


def test_swav_loss_with_a_full_queue_matches_the_hand_computation() -> None:
    prototypes, emb, scores = _setup(seed=4)
    queue = EmbeddingQueue(num_assign=1, length=2, dim=2)
    queue.queue[0] = F.normalize(torch.tensor([[1.0, 0.5], [-0.3, 1.0]]), dim=1)
    before = queue.queue[0].clone()
    codes = assignment_codes(
        scores, emb, batch_size=2, crops_for_assign=[1], prototypes=prototypes, queue=queue
    )
    rows = torch.cat((before @ prototypes.t(), scores[2:4]))
    q1 = naive_sinkhorn(rows.double().tolist(), 0.05, 3)[-2:]
    want = hand_loss(scores.double().tolist(), {1: q1}, 2, 0.1)
    got = swapped_prediction_loss(scores, codes, batch_size=2, temperature=0.1)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_effective_queue_length_rounds_down_to_the_global_batch() -> None:
    assert effective_queue_length(3840, 32, 8) == 3840
    assert effective_queue_length(3840, 64, 4) == 3840
    assert effective_queue_length(120, 128, 1) == 0  # the Un-Mix CIFAR scripts: queue silently off
    assert effective_queue_length(1000, 64, 4) == 768
    with pytest.raises(ValueError, match="--queue_length"):
        effective_queue_length(-1, 1, 1)


def test_sinkhorn_is_used_by_the_codes() -> None:
    prototypes, emb, scores = _setup()
    codes = assignment_codes(
        scores, emb, batch_size=2, crops_for_assign=[2], prototypes=prototypes, epsilon=0.1
    )
    torch.testing.assert_close(codes[2], distributed_sinkhorn(scores[4:6], epsilon=0.1))


def test_unmix_loss_is_the_original_plus_both_mixed_terms_weighted_by_lambda() -> None:
    """Rows of ``[c0, c1, m0]`` (one pair): L_ori on ``[c0, c1]``, L_mix and L_mix_rev on ``[m0, c1]``, the
    latter with m0's codes from the reversed batch; the queue advances once per term, in that order."""
    prototypes, emb, scores = _setup(seed=6, bs=2)
    queue = EmbeddingQueue(num_assign=1, length=6, dim=2)
    lam = 0.3
    swav = dict(prototypes=prototypes, crops_for_assign=[0], queue=queue)
    got = unmix_loss(scores, emb, lam, batch_size=2, **swav)
    ori, mix = [0, 1], [4, 5]  # rows of c0 and m0; c1 is rows 2, 3 in both sets
    plain = dict(batch_size=2, prototypes=prototypes, crops_for_assign=[0])
    loss_ori = swav_loss(scores[[*ori, 2, 3]], emb[[*ori, 2, 3]], **plain)
    loss_mix = swav_loss(scores[[*mix, 2, 3]], emb[[*mix, 2, 3]], **plain)
    loss_rev = swav_loss(scores[[*mix, 2, 3]], emb[[*mix, 2, 3]], reverse_first=True, **plain)
    torch.testing.assert_close(got["loss_ori"], loss_ori)  # the queue was not full: no queue scores yet
    torch.testing.assert_close(got["loss_mix"], loss_mix)
    torch.testing.assert_close(got["loss_mix_rev"], loss_rev)
    torch.testing.assert_close(got["loss"], loss_ori + lam * loss_mix + (1 - lam) * loss_rev)
    assert got["lam"].item() == pytest.approx(lam) and got["lam"].dtype == torch.float32
    # queue rows, newest first: the reversed m0 embeddings, m0's, then c0's
    torch.testing.assert_close(queue.queue[0], torch.cat((emb[mix].flip(0), emb[mix], emb[ori])))
