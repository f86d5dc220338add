"""The objectives of INTL and CW-RGP as the trainers run them, computed in fp32.

Papers: Weng et al., "Modulate Your Spectrum in Self-Supervised Learning" (ICLR 2024, arXiv:2305.16789), and
Weng et al., "An Investigation into Whitening Loss for Self-supervised Learning" (NeurIPS 2022,
arXiv:2210.03586). Spec ``intl.md`` §4.2 and App. A. The whitening transforms themselves are in
:mod:`.whitening`.

* alignment ``MSE_n(a, b) = 2 − 2 · mean_i ⟨a_i/‖a_i‖, b_i/‖b_i‖⟩`` (:func:`normalized_mse`);
* trace loss (:func:`trace_loss`), ``axis=0``: ``d_i = Σ_j (Z_ij − mean_j Z_ij)² / (D − 1)`` (the per-sample
  variance over the ``D`` features, the diagonal of the ``N × N`` covariance) and ``TL = Σ_i (d_i − 1)²``;
  ``axis=1``: the per-feature variances over the batch, ``TL = Σ_j (d_j − 1)²``;
* trade-off β = ``(log₂(bs) − 3) · 0.01`` for ``axis=0`` with the **global** batch ``bs`` (``--bs``), and
  ``(log₂(emb) − 3) · 0.01`` for ``axis=1`` (:func:`trade_off`);
* whitening of one crop's projector output (:func:`whiten`): all-gathered over the ranks **with gradient**
  (the global batch, as the original's ``FullGatherLayer``), then ``t = IterNorm_T(X)`` (``--iters`` T,
  ``--axis``) or the exact spectral power ``Σ^p`` (``--spectral_power p``), fp32;
* ``intl`` (:func:`intl_loss`), crops ``t_0 … t_{V−1}`` whitened separately:
  ``L = (1/(V−1)) Σ_{v≥1} [ MSE_n(t_v, t_0) + β (TL(t_v) + TL(t_0)) ]``, no stop-gradient;
* ``intl_m`` (:func:`intl_m_loss`), target ``t_k`` of the EMA network on crop 0 (no gradient):
  ``L = (1/(V−1)) Σ_{v≥1} [ MSE_n(t_v, t_k) + β TL(t_v) ]``;
* :func:`intl_objective`: the whole INTL step's loss from the projector outputs (whitening, β, ``intl`` or
  ``intl_m``);
* CW-RGP (:func:`whitened_pairwise_loss`), head outputs ``H`` of ``V`` views of a batch of ``bs``: repeated
  ``--w_iter`` times, a random partition of the batch into sub-batches of ``w = --w_size``
  (``torch.randperm(bs)``); each view's sub-batch ``H_s`` is whitened by group ZCA with random grouping
  (:func:`~selfsup.intl.whitening.group_zca_whitening`, ``--group`` groups, the ``--emb`` features permuted by a
  fresh ``torch.randperm(emb)`` per sub-batch and view, none with ``--no_rg``), giving ``Z``; then
  ``L = mean_{i<j} MSE_n(Z_i, Z_j)`` over the view pairs on the whole batch (:func:`pairwise_mse_loss`; with
  ``normalize=False``, the original's ``--no_norm``: ``F.mse_loss``, the mean over every element), averaged over
  the ``w_iter`` repetitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup.intl.whitening import group_zca_whitening, iter_norm, spectral_power_transform
from selfsup.shared.distributed import all_gather_with_grad

__all__ = [
    "intl_loss",
    "intl_m_loss",
    "intl_objective",
    "normalized_mse",
    "pairwise_mse_loss",
    "trace_loss",
    "trade_off",
    "whiten",
    "whitened_pairwise_loss",
]


def normalized_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``2 − 2 · mean_i cos(a_i, b_i)`` in fp32."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    return 2 - 2 * (a * b).sum(dim=1).mean()


def trace_loss(z: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """``Σ (d − 1)²`` over the per-sample (``axis=0``) or per-feature (``axis=1``) variances, fp32."""
    z = z.float()
    if axis == 0:
        zc = z - z.mean(dim=1, keepdim=True)
        d = zc.pow(2).sum(dim=1) / (z.shape[1] - 1)
    elif axis == 1:
        zc = z - z.mean(dim=0, keepdim=True)
        d = zc.pow(2).sum(dim=0) / (z.shape[0] - 1)
    else:
        raise ValueError(f"--axis must be 0 or 1, got {axis}")
    return (d - 1).pow(2).sum()


def trade_off(batch_size: int, emb: int, axis: int = 0) -> float:
    """INTL's β (``cal_trade_off``): from the global batch for ``axis=0``, from ``--emb`` for ``axis=1``."""
    size = batch_size if axis == 0 else emb
    if size < 1:
        raise ValueError(f"trade_off needs a positive {'--bs' if axis == 0 else '--emb'}, got {size}")
    return (math.log2(size) - 3) * 0.01


def intl_loss(whitened: Sequence[torch.Tensor], *, beta: float, axis: int = 0) -> torch.Tensor:
    """``intl``: every crop against crop 0, trace loss on both (module docstring)."""
    if len(whitened) < 2:
        raise ValueError("intl_loss needs at least 2 crops")
    anchor = whitened[0]
    tl_anchor = trace_loss(anchor, axis)
    terms = [normalized_mse(t, anchor) + beta * (trace_loss(t, axis) + tl_anchor) for t in whitened[1:]]
    return torch.stack(terms).sum() / (len(whitened) - 1)


def intl_m_loss(
    online: Sequence[torch.Tensor], target: torch.Tensor, *, beta: float, axis: int = 0
) -> torch.Tensor:
    """``intl_m``: crops 1 … V−1 of the online network against the EMA target of crop 0 (``online`` holds the
    ``V − 1`` online outputs)."""
    if len(online) < 1:
        raise ValueError("intl_m_loss needs at least one online crop")
    target = target.detach()
    terms = [normalized_mse(t, target) + beta * trace_loss(t, axis) for t in online]
    return torch.stack(terms).sum() / len(online)


def pairwise_mse_loss(views: Sequence[torch.Tensor], *, normalize: bool = True) -> torch.Tensor:
    """CW-RGP: mean over the pairs ``i < j`` of ``MSE_n(z_i, z_j)`` (or ``F.mse_loss``)."""
    if len(views) < 2:
        raise ValueError("pairwise_mse_loss needs at least 2 views (--num_samples)")
    terms = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            if normalize:
                terms.append(normalized_mse(views[i], views[j]))
            else:
                terms.append(F.mse_loss(views[i].float(), views[j].float()))
    return torch.stack(terms).mean()


def whiten(
    x: torch.Tensor, *, iters: int = 4, axis: int = 0, spectral_power: float | None = None
) -> torch.Tensor:
    """One crop's projector output all-gathered with gradient over the ranks, then IterNorm (or the exact
    spectral power) over the global batch, fp32."""
    x = all_gather_with_grad(x.float())
    if spectral_power is not None:
        return spectral_power_transform(x, power=spectral_power, axis=axis)
    return iter_norm(x, iters=iters, axis=axis)


def intl_objective(
    outputs: Sequence[torch.Tensor],
    target: torch.Tensor | None = None,
    *,
    batch_size: int,
    emb: int,
    axis: int = 0,
    iters: int = 4,
    spectral_power: float | None = None,
) -> torch.Tensor:
    """The loss of one INTL step from this rank's projector outputs: ``outputs`` of every crop (``intl``), or
    of crops 1 … V−1 of the online network with ``target`` the EMA network's output on crop 0 (``intl_m``).
    Each is whitened over the global batch (:func:`whiten`, online crops first), β from the global
    ``batch_size`` (``--bs``) or ``emb`` (module docstring)."""
    beta = trade_off(batch_size, emb, axis)
    whitened = [whiten(t, iters=iters, axis=axis, spectral_power=spectral_power) for t in outputs]
    if target is None:
        return intl_loss(whitened, beta=beta, axis=axis)
    whitened_target = whiten(target, iters=iters, axis=axis, spectral_power=spectral_power)
    return intl_m_loss(whitened, whitened_target, beta=beta, axis=axis)


def whitened_pairwise_loss(
    h: torch.Tensor,
    num_views: int,
    *,
    w_size: int,
    w_iter: int,
    groups: int,
    random_groups: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """CW-RGP's loss of the head outputs ``h`` ``[num_views · bs, emb]`` (views stacked in order); module
    docstring. Random draws from the CPU generator, in the original's order: per repetition ``randperm(bs)``, then
    per sub-batch and view ``randperm(emb)``."""
    if h.shape[0] % num_views:
        raise ValueError(f"{h.shape[0]} rows do not split into {num_views} views")
    bs, emb = h.shape[0] // num_views, h.shape[1]
    if bs % w_size:
        raise ValueError(f"the batch of {bs} is not a multiple of --w_size {w_size}")
    total = torch.zeros((), device=h.device)
    for _ in range(w_iter):
        z = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        for idx in torch.randperm(bs).view(-1, w_size):
            for view in range(num_views):
                rows = (idx + view * bs).to(h.device)
                perm = torch.randperm(emb).to(h.device) if random_groups else None
                z[rows] = group_zca_whitening(h[rows], groups=groups, permutation=perm)
        total = total + pairwise_mse_loss(z.chunk(num_views), normalize=normalize)
    return total / w_iter
