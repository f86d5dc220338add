"""IterNorm, the spectral power transform and CW-RGP's group ZCA against direct computations."""

from __future__ import annotations

import pytest
import torch

from selfsup.intl.whitening import group_zca_whitening, iter_norm, spectral_power_transform


def _x(n: int = 6, d: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def newton_by_hand(x: torch.Tensor, iters: int, axis: int) -> torch.Tensor:
    """The spec's steps written out with a loop over k and explicit P·P·P."""
    n, d = x.shape
    if axis == 0:
        xc = x - x.mean(dim=1, keepdim=True)
        sigma = xc @ xc.T / (d - 1)
    else:
        xc = x - x.mean(dim=0, keepdim=True)
        sigma = xc.T @ xc / (n - 1)
    tr = torch.trace(sigma)
    p = torch.eye(sigma.shape[0], dtype=x.dtype)
    for _ in range(iters):
        p = 1.5 * p - 0.5 * (p @ p @ p @ (sigma / tr))
    w = p / tr.sqrt()
    return w @ xc if axis == 0 else xc @ w


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("iters", [0, 1, 4])
def test_iter_norm_matches_the_newton_steps(axis: int, iters: int) -> None:
    x = _x()
    torch.testing.assert_close(iter_norm(x, iters=iters, axis=axis), newton_by_hand(x, iters, axis))


def test_iter_norm_converges_to_whitening_with_many_iterations() -> None:
    x = _x(4, 50)  # axis 0: N x N covariance of 4 samples, full rank and well conditioned
    z = iter_norm(x, iters=20, axis=0).double()  # (the coupled-free Newton form drifts after many more steps)
    cov = z @ z.T / (50 - 1)  # Z is centred per sample already (W X̃ keeps the row sums at 0)
    torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=1e-3, rtol=0)


def test_iter_norm_is_fp32_under_autocast_and_differentiable() -> None:
    x = _x().float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = iter_norm(x.bfloat16(), iters=4, axis=0)
    assert z.dtype == torch.float32
    z.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("axis", [0, 1])
def test_spectral_power_minus_half_whitens_and_zero_only_centres(axis: int) -> None:
    x = _x(5, 12) if axis == 0 else _x(40, 6)
    z = spectral_power_transform(x, power=-0.5, axis=axis).double()
    n, d = x.shape
    cov = z @ z.T / (d - 1) if axis == 0 else (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
    rank = cov.shape[0] - (1 if axis == 0 else 0)  # per-sample centring over features keeps full N rank here
    assert torch.linalg.matrix_rank(cov).item() >= rank
    eig = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(eig[eig > 1e-3], torch.ones_like(eig[eig > 1e-3]), atol=1e-4, rtol=0)
    centred = x - (x.mean(dim=1, keepdim=True) if axis == 0 else x.mean(dim=0, keepdim=True))
    torch.testing.assert_close(spectral_power_transform(x, power=0.0, axis=axis), centred)


def test_spectral_power_equals_iter_norm_in_the_limit() -> None:
    x = _x(4, 30)
    torch.testing.assert_close(
        spectral_power_transform(x, power=-0.5, axis=0), iter_norm(x, iters=20, axis=0), atol=2e-4, rtol=1e-3
    )


def test_group_zca_whitens_each_group_and_undoes_the_permutation() -> None:
    x = _x(8, 24)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    z = group_zca_whitening(x, groups=2, permutation=perm).double()
    # group g holds the permuted features perm[g*12:(g+1)*12]; each is white over its 12 features
    for g in range(2):
        cols = perm[g * 12 : (g + 1) * 12]
        zg = z[:, cols]
        cov = zg @ zg.T / (12 - 1)
        torch.testing.assert_close(cov, torch.eye(8, dtype=torch.float64), atol=1e-3, rtol=0)
    # without a permutation: contiguous groups
    plain = group_zca_whitening(x, groups=3, permutation=None).double()
    zg = plain[:, :8]
    torch.testing.assert_close(zg @ zg.T / 7, torch.eye(8, dtype=torch.float64), atol=1e-3, rtol=0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="--axis"):
        iter_norm(_x(), axis=2)
    with pytest.raises(ValueError, match="--group"):
        group_zca_whitening(_x(4, 10), groups=3)


@pytest.mark.parametrize("axis", [0, 1])
def test_iter_norm_gradients_match_finite_differences(axis: int) -> None:
    x = _x(4, 6, seed=3).requires_grad_(True)
    assert iter_norm(x, iters=4, axis=axis).shape == (4, 6)
    assert torch.autograd.gradcheck(lambda t: iter_norm(t, iters=4, axis=axis), (x,), eps=1e-6, atol=1e-5)


def test_group_zca_gradients_match_finite_differences() -> None:
    x = _x(4, 12, seed=4).requires_grad_(True)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(
        lambda t: group_zca_whitening(t, groups=2, permutation=perm), (x,), eps=1e-6, atol=1e-4
    )
