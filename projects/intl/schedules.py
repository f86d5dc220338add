"""The learning-rate schedules of ``intl-train`` and ``cwrgp-train``, per optimisation step.

* INTL (Weng et al., "Modulate Your Spectrum in Self-Supervised Learning", ICLR 2024, arXiv:2305.16789;
  ``main.py`` ``adjust_learning_rate``), :func:`linear_warmup_cosine_lr`: for step ``s`` of ``S`` with ``W``
  warm-up steps, ``base·(s+1)/W`` for ``s < W``, then ``final + (base − final)·q`` with
  ``q = ½(1 + cos(π(s − W + 1)/(S − W)))``; INTL uses ``base = --lr · --bs / 256``, ``final = 0.001·base`` and
  ``W`` = ``--warmup_eps`` (2) epochs.
* CW-RGP (Weng et al., "An Investigation into Whitening Loss for Self-supervised Learning", NeurIPS 2022,
  arXiv:2210.03586; W-MSE's ``base/train.py``), :func:`cwrgp_lr`: a linear warm-up over ``--warmup_iters``
  steps, then ``MultiStepLR`` (``--lr_step step``) or ``CosineAnnealingWarmRestarts`` (``--lr_step cos``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["cosine_restarts", "cwrgp_lr", "linear_warmup_cosine_lr"]


def linear_warmup_cosine_lr(
    base_lr: float, step: int, total_steps: int, warmup_steps: int, final_lr: float | None = None
) -> float:
    """INTL's per-step rate (module docstring); ``final_lr`` defaults to ``0.001·base_lr`` as in INTL."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup steps < total steps, got {warmup_steps} and {total_steps}")
    end = 0.001 * base_lr if final_lr is None else final_lr
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    q = 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps + 1) / (total_steps - warmup_steps)))
    return end + (base_lr - end) * q


def cosine_restarts(base: float, epoch: float, t0: int, t_mult: int, eta_min: float) -> float:
    """``CosineAnnealingWarmRestarts`` at the (fractional) ``epoch``."""
    if epoch >= t0:
        if t_mult == 1:
            t_cur, t_i = epoch % t0, t0
        else:
            n = int(math.log(epoch / t0 * (t_mult - 1) + 1, t_mult))
            t_cur, t_i = epoch - t0 * (t_mult**n - 1) / (t_mult - 1), t0 * t_mult**n
    else:
        t_cur, t_i = epoch, t0
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def cwrgp_lr(step: int, iters_per_epoch: int, args: Any) -> float:
    """CW-RGP's rate of global step ``step``: ``--lr · (step + 1) / --warmup_iters`` during the warm-up, then
    ``--lr_step``: ``step`` = ``MultiStepLR`` at epochs ``--epochs − d`` for ``d`` in ``--drop`` (×``--drop_gamma``
    each; the original's warm-up overwrites the rate, so a drop that falls inside the warm-up is lost, here too);
    ``cos`` = ``CosineAnnealingWarmRestarts(--T0, --Tmult, --eta_min)`` stepped after every post-warm-up
    iteration at ``epoch + n_iter / iters`` (W-MSE); ``none`` = ``--lr``."""
    base, warmup = args.lr, args.warmup_iters
    if step < warmup:
        return base * (step + 1) / warmup
    if args.lr_step == "step":
        epoch = step // iters_per_epoch
        milestones = [args.epochs - d for d in args.drop]
        drops = sum(1 for m in milestones if m <= epoch and m * iters_per_epoch >= warmup)
        return base * args.drop_gamma**drops
    if args.lr_step == "cos" and step > 0:
        epoch, n = divmod(step - 1, iters_per_epoch)
        return cosine_restarts(
            base, epoch + n / iters_per_epoch, args.T0 or args.epochs, args.Tmult, args.eta_min
        )
    return base
