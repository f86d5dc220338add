"""The objectives of ``cmc-train`` and ``cmc-moco-ins-train`` as the trainers run them, on the contrast's scores.

The scores come from :mod:`selfsup.cmc.contrast` (which owns the memory banks, the queue and the constants Z;
these functions hold no state). Each row of a score matrix is one anchor: column 0 its positive, columns 1..K
its negatives (uniform memory rows, or the MoCo queue). One term per row set, :func:`contrast_loss`:

* NCE (the default; Wu et al. 2018, §3.2): :func:`nce_loss` on ``P = exp(s/τ)/Z`` with the constant Z set once
  from the first batch (``Z = N · mean exp(s/τ)``);
* softmax cross-entropy (``--softmax``; CMC's and MoCo's (K+1)-way form): :func:`softmax_loss` on ``s/τ``.

The trainers' objectives (:func:`cmc_objective`, :func:`instance_objective`):

* CMC (Tian, Krishnan and Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849), two
  views L and ab (or Y and CbCr), each scored against the *other* view's memory bank, summed over both
  directions:

      L_CMC = L(s_l) + L(s_ab),   s_l[b, j] = ⟨m_ab[i_bj], z_l,b⟩,   s_ab[b, j] = ⟨m_l[i_bj], z_ab,b⟩

  with unit features ``z`` of the two encoders, memories ``m_l``, ``m_ab`` (``--nce_m`` running averages of
  each image's features), ``i_b0`` the image itself and ``i_b1..K`` uniform (``--nce_k``);
* InsDis (Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018,
  arXiv:1805.01978): one RGB encoder against its own memory bank, ``L(s)`` with
  ``s[b, j] = ⟨m[i_bj], z_b⟩``;
* MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
  arXiv:1911.05722, Eq. 1), the CMC repository's variant: ``L(s)`` with ``s[b] = [⟨q_b, k_b⟩, ⟨q_b, queue_j⟩]``,
  keys ``k`` from the parameter-EMA key encoder with shuffle BN and a queue of ``--nce_k`` keys.

``L`` is the mean over the batch; the scores and the losses are fp32 whatever the encoders' precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cmc_objective", "contrast_loss", "instance_objective", "nce_loss", "softmax_loss"]


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


def contrast_loss(scores: torch.Tensor, *, softmax: bool, num_data: int) -> torch.Tensor:
    """One set of anchors' term ``L(s)``: :func:`softmax_loss` of the logits ``s/τ`` with ``softmax``
    (``--softmax``), else :func:`nce_loss` of the probabilities ``exp(s/τ)/Z`` with ``P_n = 1/num_data``."""
    return softmax_loss(scores) if softmax else nce_loss(scores, num_data)


def cmc_objective(
    out_l: torch.Tensor, out_ab: torch.Tensor, *, softmax: bool, num_data: int
) -> dict[str, torch.Tensor]:
    """CMC's two-view objective ``L_CMC = L(s_l) + L(s_ab)`` (module docstring), from
    :class:`~selfsup.cmc.contrast.CMCContrast`'s ``(out_l, out_ab)``.

    Returns ``loss`` (minimised), the two terms ``l_loss`` = L(s_l) (L anchors against the ab memory) and
    ``ab_loss`` = L(s_ab), and, as the original logs them, the mean positive "probability" (column 0) of each
    view, ``l_prob`` and ``ab_prob``."""
    l_loss = contrast_loss(out_l, softmax=softmax, num_data=num_data)
    ab_loss = contrast_loss(out_ab, softmax=softmax, num_data=num_data)
    return {
        "loss": l_loss + ab_loss,
        "l_loss": l_loss,
        "ab_loss": ab_loss,
        "l_prob": out_l[:, 0].mean(),
        "ab_prob": out_ab[:, 0].mean(),
    }


def instance_objective(out: torch.Tensor, *, softmax: bool, num_data: int) -> dict[str, torch.Tensor]:
    """InsDis's and (CMC-repository) MoCo's objective ``L(s)`` (module docstring), from
    :class:`~selfsup.cmc.contrast.InsDisContrast` or :class:`~selfsup.cmc.contrast.MoCoContrast`; returns
    ``loss`` and ``prob``, the mean positive column as the original logs it."""
    return {"loss": contrast_loss(out, softmax=softmax, num_data=num_data), "prob": out[:, 0].mean()}
