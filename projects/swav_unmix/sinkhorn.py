"""Distributed Sinkhorn-Knopp (facebookresearch/swav ``distributed_sinkhorn``, spec ``swav_unmix.md`` §3).

Soft codes ``Q`` for ``b`` samples per rank (``B = b · world_size`` in all) and ``K`` prototypes, from the scores
``S`` (``b x K``, cosines):

    Q = exp(S / ε)ᵀ;   Q ← Q / Σ_all Q
    repeat n times:  Q ← Q / (rows summed over all ranks) / K;   Q ← Q / (local column sums) / B
    return (B · Q)ᵀ                                   (each sample's codes sum to 1)

ε = ``--epsilon`` (0.05), n = ``--sinkhorn_iterations`` (3). It always runs in fp32, with autocast disabled:
``exp(1/0.05) = e²⁰`` overflows fp16. The row sums (and the total) are all-reduced over ``group``, so the result
equals one process's run on the concatenated scores; at world size 1 nothing is communicated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["distributed_sinkhorn"]


def _all_reduce(t: torch.Tensor, group: Any) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(t, group=group)
    return t


def _world(group: Any) -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


@torch.no_grad()
def distributed_sinkhorn(
    scores: torch.Tensor, *, epsilon: float = 0.05, iterations: int = 3, group: Any = None
) -> torch.Tensor:
    """Codes ``[b, K]`` for this rank's ``scores`` ``[b, K]`` (equations in the module docstring)."""
    if epsilon <= 0:
        raise ValueError(f"--epsilon must be > 0, got {epsilon}")
    if iterations < 0:
        raise ValueError(f"--sinkhorn_iterations must be >= 0, got {iterations}")
    with torch.autocast(device_type=scores.device.type, enabled=False):
        q = torch.exp(scores.float() / epsilon).t()
        total_samples = q.shape[1] * _world(group)
        num_prototypes = q.shape[0]
        q /= _all_reduce(torch.sum(q), group)
        for _ in range(iterations):
            q /= _all_reduce(torch.sum(q, dim=1, keepdim=True), group)
            q /= num_prototypes
            q /= torch.sum(q, dim=0, keepdim=True)
            q /= total_samples
        q *= total_samples
        return q.t()
