"""INTL and CW-RGP losses against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.intl.loss import intl_loss, intl_m_loss, normalized_mse, pairwise_mse_loss, trace_loss, trade_off
from selfsup.intl.model import ema_momentum


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


A = _t([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
B = _t([[2.0, 1.0, 2.0], [0.0, 4.0, 3.0]])


def test_normalized_mse_by_hand() -> None:
    cos = [(2 + 2 + 4) / (3 * 3), (12 + 12) / (5 * 5)]
    assert normalized_mse(A, B).item() == pytest.approx(2 - 2 * sum(cos) / 2)
    assert normalized_mse(A, A).item() == pytest.approx(0.0, abs=1e-7)


def test_trace_loss_by_hand_for_both_axes() -> None:
    # axis 0: per-sample variance over the 3 features
    d0 = []
    for row in A.tolist():
        m = sum(row) / 3
        d0.append(sum((v - m) ** 2 for v in row) / 2)
    assert trace_loss(A, 0).item() == pytest.approx(sum((d - 1) ** 2 for d in d0))
    # axis 1: per-feature variance over the 2 samples
    cols = list(zip(*A.tolist()))
    d1 = [sum((v - sum(c) / 2) ** 2 for v in c) / 1 for c in cols]
    assert trace_loss(A, 1).item() == pytest.approx(sum((d - 1) ** 2 for d in d1))


def test_trade_off_uses_the_global_batch_for_axis_0_and_emb_for_axis_1() -> None:
    assert trade_off(256, 8192, 0) == pytest.approx(0.05)
    assert trade_off(128, 8192, 0) == pytest.approx(0.04)
    assert trade_off(256, 8192, 1) == pytest.approx(0.10)


def test_intl_loss_is_the_mean_over_crops_against_crop_0() -> None:
    c = _t([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    beta = 0.05
    want = (
        normalized_mse(B, A) + beta * (trace_loss(B) + trace_loss(A))
        + normalized_mse(c, A) + beta * (trace_loss(c) + trace_loss(A))
    ) / 2  # fmt: skip
    assert intl_loss([A, B, c], beta=beta).item() == pytest.approx(want.item())


def test_intl_m_loss_targets_carry_no_gradient() -> None:
    target = A.clone().requires_grad_(True)
    online = B.clone().requires_grad_(True)
    loss = intl_m_loss([online], target, beta=0.04)
    assert loss.item() == pytest.approx((normalized_mse(B, A) + 0.04 * trace_loss(B)).item())
    loss.backward()
    assert target.grad is None and online.grad is not None


def test_pairwise_mse_averages_all_pairs() -> None:
    c = _t([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    want = (normalized_mse(A, B) + normalized_mse(A, c) + normalized_mse(B, c)) / 3
    assert pairwise_mse_loss([A, B, c]).item() == pytest.approx(want.item())
    plain = ((A - B) ** 2).mean()  # F.mse_loss: mean over every element
    assert pairwise_mse_loss([A, B], normalize=False).item() == pytest.approx(plain.item())


def test_ema_momentum_rises_from_m0_to_1() -> None:
    assert ema_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_momentum(50, 100, 0.996) == pytest.approx(1 - 0.5 * 0.004)
    assert ema_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert ema_momentum(25, 100, 0.99) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi / 4)) * 0.01)
