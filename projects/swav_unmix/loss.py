"""The SwAV swapped-prediction loss (Caron et al., arXiv:2006.09882, eq. 1-3; spec ``swav_unmix.md`` §3).

For crops ``v = 0..V−1`` of a batch of ``B`` images, scores ``s_v = z_v Cᵀ`` (``B x K``) and codes ``q_a`` of the
assignment crops ``a ∈ A`` (``--crops_for_assign``, from :func:`~.sinkhorn.distributed_sinkhorn`):

    p_v = softmax(s_v / τ)                          τ = ``temperature`` = ``--temperature``
    ℓ(q_a, p_v) = − (1/B) Σ_n Σ_k q_a[n, k] · log p_v[n, k]
    L = (1/|A|) Σ_{a ∈ A} (1/(V−1)) Σ_{v ≠ a} ℓ(q_a, p_v)

The codes carry no gradient; the predictions are computed in fp32 whatever the autocast precision.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["swapped_prediction_loss"]


def swapped_prediction_loss(
    scores: torch.Tensor, codes: Mapping[int, torch.Tensor], *, batch_size: int, temperature: float = 0.1
) -> torch.Tensor:
    """``L`` of the module docstring. ``scores``: ``[V·B, K]``, crop ``v`` in rows ``v·B .. (v+1)·B``;
    ``codes``: assignment crop index -> ``[B, K]`` codes. Returns a 0-d fp32 tensor."""
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    num_crops, rest = divmod(scores.shape[0], batch_size)
    if rest or num_crops < 2:
        raise ValueError(f"scores have {scores.shape[0]} rows: not at least 2 crops of batch {batch_size}")
    if not codes:
        raise ValueError("swapped_prediction_loss needs codes of at least one crop (--crops_for_assign)")
    log_p = F.log_softmax(scores.float().view(num_crops, batch_size, -1) / temperature, dim=2)
    loss = scores.new_zeros((), dtype=torch.float32)
    for crop_id, q in codes.items():
        others = [v for v in range(num_crops) if v != crop_id]
        # Σ_{v≠a} −mean_n Σ_k q·log p_v, computed for all v at once
        per_view = -(q.float().unsqueeze(0) * log_p[others]).sum(dim=2).mean(dim=1)
        loss = loss + per_view.sum() / (num_crops - 1)
    return loss / len(codes)
