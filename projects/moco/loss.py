"""InfoNCE of MoCo, as a pure function of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_logits(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the (K+1)-way InfoNCE classification in MoCo.

    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
    arXiv:1911.05722, Eq. (1):

        L_q = -log( exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{j=1..K} exp(q·κ_j/τ)) )

    Args:
        q: query features, shape ``[N, D]``, L2-normalised (``f_q(x_q)``).
        k: positive keys, shape ``[N, D]``, L2-normalised, no gradient (``f_k(x_k)``).
        queue: negative keys κ_j, shape ``[K, D]`` (``--num_keys`` = ``--moco-k`` = K).
        temperature: τ (``--temperature`` = ``--moco-t``; 0.07 in MoCo v1, 0.2 in v2).

    Returns:
        ``logits`` ``[N, 1 + K]`` = ``[q·k₊, q·queueᵀ] / τ`` and ``labels`` ``[N]`` of zeros (the positive is
        column 0). Computed in fp32 whatever the autocast precision of the encoders.
    """
    q, k, queue = q.float(), k.float(), queue.float()
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.t()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, labels


def info_nce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss over the batch: cross-entropy of :func:`info_nce_logits` with label 0."""
    logits, labels = info_nce_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, labels)
