"""SwAV's learning-rate schedule (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", NeurIPS 2020, arXiv:2006.09882; ``main_swav.py``), one rate per iteration:

    warm-up:  np.linspace(start_warmup, base, W)              W = warmup_epochs · iters_per_epoch
    then:     final + ½ (base − final) (1 + cos(π t / T))     t = 0 … T−1, T = (epochs − warmup_epochs) · iters_per_epoch

``swav-unmix-train`` reads entry ``global_step`` of the array at every iteration, as the original does.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["swav_lr_at", "warmup_cosine_schedule"]


def _check_lengths(epochs: int, iters_per_epoch: int, warmup_epochs: int) -> None:
    if epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {epochs}")
    if iters_per_epoch <= 0:
        raise ValueError(
            f"iterations per epoch must be > 0 (is the data loader empty?), got {iters_per_epoch}"
        )
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"--warmup_epochs must be in [0, --epochs) = [0, {epochs}), got {warmup_epochs}")


def warmup_cosine_schedule(
    base_lr: float,
    final_lr: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """SwAV's per-iteration schedule, one entry per iteration (length ``epochs·iters_per_epoch``)."""
    _check_lengths(epochs, iters_per_epoch, warmup_epochs)
    warmup = np.linspace(start_warmup, base_lr, warmup_epochs * iters_per_epoch)
    total = (epochs - warmup_epochs) * iters_per_epoch
    t = np.arange(total)
    cosine = final_lr + 0.5 * (base_lr - final_lr) * (1.0 + np.cos(np.pi * t / total))
    return np.concatenate([warmup, cosine])


def swav_lr_at(
    base_lr: float, final_lr: float, step: int, total_steps: int, warmup_steps: int, start_warmup: float
) -> float:
    """Entry ``step`` of :func:`warmup_cosine_schedule` (``total_steps`` long, ``warmup_steps`` of warm-up)
    without building the array."""
    if step < warmup_steps:
        if warmup_steps == 1:
            return float(start_warmup)  # np.linspace(a, b, 1) == [a]
        return start_warmup + (base_lr - start_warmup) * step / (warmup_steps - 1)
    t, span = step - warmup_steps, total_steps - warmup_steps
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t / span))
