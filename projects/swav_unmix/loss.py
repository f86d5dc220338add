"""The objectives of ``swav-unmix-train``: SwAV's swapped prediction and Un-Mix's three-term loss over it.

**SwAV** (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS
2020, arXiv:2006.09882, eq. 1-3; spec ``swav_unmix.md`` §3). For crops ``v = 0..V−1`` of a batch of ``B``
images, unit embeddings ``z_v``, prototypes ``C`` (``K`` rows, unit norm), scores ``s_v = z_v Cᵀ`` (``B x K``)
and codes ``q_a`` of the assignment crops ``a ∈ A`` (``--crops_for_assign``: :func:`~.codes.assignment_codes`,
the queue's scores prepended, then :func:`~.sinkhorn.distributed_sinkhorn`, no gradient)::

    p_v = softmax(s_v / τ)                          τ = ``--temperature``
    ℓ(q_a, p_v) = − (1/B) Σ_n Σ_k q_a[n, k] · log p_v[n, k]
    L_SwAV = (1/|A|) Σ_{a ∈ A} (1/(V−1)) Σ_{v ≠ a} ℓ(q_a, p_v)

**Un-Mix** (Shen et al., "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual Representation Learning",
AAAI 2022, arXiv:2003.05438; ``main_swav_unmix.py``, spec §4). The forward list holds every original crop
and, after each pair ``(c_k, c_{k+1})``, the mixed crop ``m_k`` of ``c_k`` with its batch-reversed copy
(:func:`~.unmix.mix_crops`, weight λ); its outputs split into the original set ``[c0, c1, c2, …]`` and the mixed
set ``[m0, c1, m2, …]`` (:func:`~.unmix.split_unmix_rows`)::

    L = L_ori + λ · L_mix + (1 − λ) · L_mix_rev
    L_ori     = L_SwAV(original set)
    L_mix     = L_SwAV(mixed set), crop 0's codes those of m0
    L_mix_rev = L_SwAV(mixed set), crop 0's codes those of flip_batch(m0) (sample n's other crops predict the
                code of the reversed batch's n-th mixed image, the mixture's other source)

The three terms run in this order, each advancing the queue. The predictions are computed in fp32 whatever the
autocast precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.swav_unmix.codes import assignment_codes
from selfsup.swav_unmix.queue import EmbeddingQueue
from selfsup.swav_unmix.unmix import split_unmix_rows

__all__ = ["swapped_prediction_loss", "swav_loss", "unmix_loss"]


def swapped_prediction_loss(
    scores: torch.Tensor, codes: Mapping[int, torch.Tensor], *, batch_size: int, temperature: float = 0.1
) -> torch.Tensor:
    """``L_SwAV`` of the module docstring from given codes. ``scores``: ``[V·B, K]``, crop ``v`` in rows
    ``v·B .. (v+1)·B``; ``codes``: assignment crop index -> ``[B, K]`` codes. Returns a 0-d fp32 tensor."""
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
        # −mean_n Σ_k q·log p_v for every v at once, then Σ_{v≠a}: indexing the V values instead of log p
        # itself avoids copying V−1 score matrices (and scattering their gradient back); same sums, same order
        per_view = -(q.float().unsqueeze(0) * log_p).sum(dim=2).mean(dim=1)
        loss = loss + per_view[others].sum() / (num_crops - 1)
    return loss / len(codes)


def swav_loss(
    scores: torch.Tensor,
    embedding: torch.Tensor,
    *,
    batch_size: int,
    prototypes: torch.Tensor,
    crops_for_assign: Sequence[int],
    queue: EmbeddingQueue | None = None,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    reverse_first: bool = False,
    group: Any = None,
) -> torch.Tensor:
    """``L_SwAV``: the codes of the assignment crops (queue + Sinkhorn; crop 0 batch-reversed when
    ``reverse_first``, as ``L_mix_rev`` needs), then the swapped prediction. ``scores``/``embedding``:
    ``[V·B, K]``/``[V·B, feat_dim]`` (the embedding detached); advances ``queue``."""
    codes = assignment_codes(
        scores,
        embedding,
        batch_size=batch_size,
        crops_for_assign=crops_for_assign,
        prototypes=prototypes,
        queue=queue,
        epsilon=epsilon,
        sinkhorn_iterations=sinkhorn_iterations,
        reverse_first=reverse_first,
        group=group,
    )
    return swapped_prediction_loss(scores, codes, batch_size=batch_size, temperature=temperature)


def unmix_loss(
    scores: torch.Tensor, embedding: torch.Tensor, lam: float, *, batch_size: int, **swav: Any
) -> dict[str, torch.Tensor]:
    """``L = L_ori + λ·L_mix + (1−λ)·L_mix_rev`` on the outputs of the Un-Mix forward list
    (``[c0, c1, m0, c2, c3, m2, …]``, ``[3P·B, …]``); ``swav``: the keyword arguments of :func:`swav_loss`.
    Returns ``loss`` (with grad), the three terms and ``lam`` (0-d fp32)."""
    scores_ori, scores_mix = split_unmix_rows(scores, batch_size)
    emb_ori, emb_mix = split_unmix_rows(embedding, batch_size)
    loss_ori = swav_loss(scores_ori, emb_ori, batch_size=batch_size, **swav)
    loss_mix = swav_loss(scores_mix, emb_mix, batch_size=batch_size, **swav)
    loss_mix_rev = swav_loss(scores_mix, emb_mix, batch_size=batch_size, reverse_first=True, **swav)
    return {
        "loss": loss_ori + lam * loss_mix + (1.0 - lam) * loss_mix_rev,
        "loss_ori": loss_ori,
        "loss_mix": loss_mix,
        "loss_mix_rev": loss_mix_rev,
        "lam": torch.tensor(lam, dtype=torch.float32, device=scores.device),
    }
