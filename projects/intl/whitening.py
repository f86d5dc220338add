"""Whitening transforms of INTL and CW-RGP, on tensors, always in fp32 (autocast disabled inside).

**IterNorm** (Huang et al., "Iterative Normalization", CVPR 2019, arXiv:1904.03441), as INTL uses it (Weng et
al., "Modulate Your Spectrum in Self-Supervised Learning", ICLR 2024, arXiv:2305.16789; ``methods/whitening.py``;
spec ``intl.md`` §4.1). For ``X`` of shape ``[N, D]`` (the gathered global batch of one crop):

* ``axis=0`` (``--axis 0``, the original's default and its "channel whitening"): centre each sample over its
  ``D`` features, ``X̃ = X − rowmean(X)``; ``Σ = X̃ X̃ᵀ / (D − 1)`` (``N × N``); output ``Z = W X̃``;
* ``axis=1`` ("batch whitening"): centre each feature over the batch; ``Σ = X̃ᵀ X̃ / (N − 1)`` (``D × D``);
  output ``Z = X̃ W``;

with ``W ≈ Σ^{-1/2}`` from ``T`` = ``iters`` (``--iters``) Newton steps on the trace-normalised matrix:
``Σ_N = Σ / tr(Σ)``, ``P_0 = I``, ``P_{k+1} = 1.5 P_k − 0.5 P_k³ Σ_N``, ``W = P_T / √tr(Σ)``. Differentiable,
no ε, not converged at T = 4 (the trace loss pulls the rest of the spectrum towards 1).

**Spectral power** (ours, ``--spectral_power p``): the paper's "spectral transformation" with the power function
``g(λ) = λ^p`` applied exactly, ``W = U diag(λ^p) Uᵀ`` from the eigendecomposition ``Σ = U diag(λ) Uᵀ`` (eigenvalues
clamped at ``eps · λ_max``); ``p = −1/2`` is ZCA whitening, ``p = 0`` leaves the centred embedding unchanged.

**Group ZCA with random partition** (CW-RGP, Weng et al., "An Investigation into Whitening Loss for
Self-supervised Learning", NeurIPS 2022, arXiv:2210.03586; ``Whitening2dZCA``; spec ``intl.md`` App. A): for
``X`` ``[w, emb]`` (one sub-batch of ``--w_size`` samples), centre each sample over its features, permute the
features, split them into ``G`` = ``--group`` groups of ``emb / G`` channels, and per group
``Σ_g = X̃_g X̃_gᵀ / (emb/G − 1)`` (``w × w``), ``W_g = U diag(λ^{-1/2}) Uᵀ`` (SVD), ``Z_g = W_g X̃_g``; un-permute.
"""

from __future__ import annotations

import torch

__all__ = ["group_zca_whitening", "iter_norm", "spectral_power_transform"]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision inputs; float64 stays float64 (gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def _centred_covariance(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    if axis not in (0, 1):
        raise ValueError(f"--axis must be 0 or 1, got {axis}")
    if x.ndim != 2:
        raise ValueError(f"whitening expects [N, D] embeddings, got shape {tuple(x.shape)}")
    n, d = x.shape
    if axis == 0:
        if d < 2:
            raise ValueError("axis 0 whitening needs at least 2 features per sample")
        xc = x - x.mean(dim=1, keepdim=True)
        return xc, xc @ xc.t() / (d - 1)
    if n < 2:
        raise ValueError("axis 1 whitening needs at least 2 samples")
    xc = x - x.mean(dim=0, keepdim=True)
    return xc, xc.t() @ xc / (n - 1)


def _apply(w: torch.Tensor, xc: torch.Tensor, axis: int) -> torch.Tensor:
    return w @ xc if axis == 0 else xc @ w


def iter_norm(x: torch.Tensor, *, iters: int = 4, axis: int = 0) -> torch.Tensor:
    """IterNorm of the module docstring: ``[N, D] -> [N, D]``, fp32."""
    if iters < 0:
        raise ValueError(f"--iters must be >= 0, got {iters}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc, sigma = _centred_covariance(_at_least_fp32(x), axis)
        trace = sigma.diagonal().sum()
        sigma_n = sigma / trace
        p = torch.eye(sigma.shape[0], device=x.device, dtype=sigma.dtype)
        for _ in range(iters):
            p = 1.5 * p - 0.5 * torch.linalg.matrix_power(p, 3) @ sigma_n
        return _apply(p / trace.sqrt(), xc, axis)


def spectral_power_transform(
    x: torch.Tensor, *, power: float = -0.5, axis: int = 0, eps: float = 1e-6
) -> torch.Tensor:
    """``U diag(λ^p) Uᵀ`` applied to the centred embedding (module docstring), fp32 (eigh in fp64)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc, sigma = _centred_covariance(_at_least_fp32(x), axis)
        eigenvalues, u = torch.linalg.eigh(sigma.double())
        eigenvalues = eigenvalues.clamp_min(eps * eigenvalues.max().clamp_min(1e-30))
        w = (u * eigenvalues.pow(power)) @ u.t()
        return _apply(w.to(xc.dtype), xc, axis)


def group_zca_whitening(
    x: torch.Tensor, *, groups: int, permutation: torch.Tensor | None = None
) -> torch.Tensor:
    """CW-RGP's group ZCA of one sub-batch ``[w, emb]`` (module docstring); ``permutation`` of the ``emb``
    features (None: no random grouping, the original's ``--no_rg``)."""
    emb = x.shape[1]
    if emb % groups:
        raise ValueError(f"--emb {emb} is not divisible by --group {groups}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _at_least_fp32(x)
        if permutation is not None:
            x = x[:, permutation]
        xc = x - x.mean(dim=1, keepdim=True)
        size = emb // groups
        if size < 2:
            raise ValueError(f"--group {groups} leaves fewer than 2 features per group")
        parts = []
        for g in range(groups):
            xg = xc[:, g * size : (g + 1) * size]
            sigma = xg @ xg.t() / (size - 1)
            u, s, _ = torch.linalg.svd(sigma)
            parts.append((u * s.rsqrt()) @ u.t() @ xg)
        z = torch.cat(parts, dim=1)
        if permutation is not None:
            z = z[:, torch.argsort(permutation)]
        return z
