"""The two objectives of CMC, InsDis and their MoCo variant, as pure functions of the contrast's scores.

The scores come from :mod:`selfsup.cmc.contrast` (which owns the memory banks, the queue and the constants Z);
these functions hold no state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nce_loss", "softmax_loss"]


def nce_loss(probs: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """Noise-contrastive estimation loss over one positive and K noise samples (the originals' NCECriterion).

    Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018,
    arXiv:1805.01978, §3.2; used per view by Tian et al., "Contrastive Multiview Coding", ECCV 2020,
    arXiv:1906.05849, when training without ``--softmax``. With the posterior that sample j of row b comes
    from the data, ``h = P / (P + m·P_n)``:

        L = −(1/B) Σ_b [ log( P_b0 / (P_b0 + m·P_n + ε) ) + Σ_{j=1..K} log( m·P_n / (P_bj + m·P_n + ε) ) ]

    Symbols:
        P_bj: ``probs[b, j]`` = exp(s_bj/τ)/Z, the model's (approximately normalised) probability of the
            pair; column 0 is the positive, columns 1..K the noise samples (``CMCContrast`` /
            ``InsDisContrast`` / ``MoCoContrast`` in NCE mode).
        m: the number of noise samples per positive, m = K = ``probs.shape[1] − 1`` (``--nce_k``).
        P_n: the uniform noise distribution, 1/N with N = ``num_data`` (the training-set size).
        ε: ``eps`` (1e-7 in the original), in the denominators only.
        B: the batch size.

    Args:
        probs: ``[B, K+1]``, positive first.
        num_data: N.
        eps: ε.

    Returns:
        The mean loss over the batch, a 0-dim tensor (the original returns shape ``[1]``). Computed in fp32
        whatever the input dtype.
    """
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be [B, K+1] with K >= 1, got shape {tuple(probs.shape)}")
    if num_data < 1:
        raise ValueError(f"num_data must be positive, got {num_data}")
    probs = probs.float()
    batch, m = probs.shape[0], probs.shape[1] - 1
    noise = m * (1.0 / float(num_data))  # m·P_n
    p_pos = probs[:, 0]
    log_d1 = torch.div(p_pos, p_pos.add(noise + eps)).log()
    p_neg = probs[:, 1:]
    log_d0 = torch.div(torch.full_like(p_neg, noise), p_neg.add(noise + eps)).log()
    return -(log_d1.sum() + log_d0.sum()) / batch


def softmax_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over one positive and K negatives, target 0 (the originals' NCESoftmaxLoss).

    The (K+1)-way classification form of the contrastive loss (Tian et al., "Contrastive Multiview Coding",
    ECCV 2020, arXiv:1906.05849; He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020, arXiv:1911.05722, Eq. 1), selected by ``--softmax``:

        L = −(1/B) Σ_b log( exp(s_b0/τ) / Σ_{j=0..K} exp(s_bj/τ) )

    Symbols:
        s_bj/τ: ``logits[b, j]``, scores already divided by τ (``--nce_t``) in the contrast's softmax mode;
            column 0 is the positive.
        K: ``logits.shape[1] − 1`` (``--nce_k``).
        B: the batch size.

    Args:
        logits: ``[B, K+1]``, positive first.

    Returns:
        The mean loss over the batch, a 0-dim tensor, computed in fp32.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, K+1], got shape {tuple(logits.shape)}")
    logits = logits.float()
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)
