"""Learning-rate schedules of the reproduced papers, as pure functions plus one frozen description.

* step (official MoCo ``--schedule 120 160``, CMC ``--lr_decay_epochs``, SwAV/INTL linear eval MultiStepLR):
  ``lr = base · γ^{#{m ∈ milestones : m ≤ epoch}}`` with 0-based epochs. CMC counts 1-based epochs and decays
  when ``m < epoch``, which is ``step_lr(base, epoch − 1, …)``.
* cosine (official MoCo v2 ``--cos``; SwAV linear eval ``CosineAnnealingLR``):
  ``lr = final + ½(base − final)(1 + cos(π·epoch/epochs))``.
* warmup + cosine per iteration (SwAV, Caron et al., "Unsupervised Learning of Visual Features by Contrasting
  Cluster Assignments", NeurIPS 2020, arXiv:2006.09882): ``np.linspace(start_warmup, base, W)`` over the
  ``W = warmup_epochs·iters_per_epoch`` warm-up steps, then ``final + ½(base − final)(1 + cos(π t / T))`` for
  ``t = 0 … T−1``, ``T = (epochs − warmup_epochs)·iters_per_epoch``.
* linear warm-up + cosine per step (INTL, Weng et al., "Modulate Your Spectrum in Self-Supervised Learning",
  ICLR 2024, arXiv:2305.16789): ``base·(s+1)/W`` for ``s < W``, then ``final + (base − final)·q`` with
  ``q = ½(1 + cos(π(s'+1)/(S − W)))``, ``s' = s − W``; INTL uses ``final = 0.001·base`` and ``W`` = 2 epochs.
* the unofficial MoCo's linear-eval decay (eveningglow/MoCo ``test.py``): set to ``base · 0.2^{⌊e/20⌋}`` after
  epoch e (1-based), i.e. epoch e runs at ``base · 0.2^{⌊(e−1)/20⌋}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "LRSchedule",
    "apply_lr",
    "cosine_lr",
    "eveningglow_linear_lr",
    "linear_warmup_cosine_lr",
    "step_lr",
    "warmup_cosine_schedule",
]

SCHEDULE_KINDS = ("constant", "step", "cosine", "warmup_cosine", "linear_warmup_cosine")


def step_lr(base_lr: float, epoch: float, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """``base_lr · gamma^k`` with ``k`` the number of milestones ``<= epoch`` (0-based epochs, official
    MoCo)."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


def cosine_lr(base_lr: float, epoch: float, total_epochs: float, final_lr: float = 0.0) -> float:
    """Half-cosine from ``base_lr`` at epoch 0 to ``final_lr`` at ``total_epochs`` (``epoch`` may be
    fractional)."""
    if total_epochs <= 0:
        raise ValueError(f"cosine schedule needs total epochs (--epochs) > 0, got {total_epochs}")
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * epoch / total_epochs))


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


def _swav_lr_at(
    base_lr: float, final_lr: float, step: int, total_steps: int, warmup_steps: int, start_warmup: float
) -> float:
    """Entry ``step`` of :func:`warmup_cosine_schedule` without building the array."""
    if step < warmup_steps:
        if warmup_steps == 1:
            return float(start_warmup)  # np.linspace(a, b, 1) == [a]
        return start_warmup + (base_lr - start_warmup) * step / (warmup_steps - 1)
    t, span = step - warmup_steps, total_steps - warmup_steps
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t / span))


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


def eveningglow_linear_lr(base_lr: float, epoch_1based: int, gamma: float = 0.2, every: int = 20) -> float:
    """Rate in effect during epoch ``e`` (1-based) of the unofficial MoCo linear eval.

    The original trains epoch ``e`` and then sets ``lr = base · 0.2^⌊e/20⌋`` for the next epoch, so epoch
    ``e`` runs at ``base · 0.2^⌊(e−1)/20⌋``: 10 for epochs 1–20, 2 for 21–40, 0.4 for 41–60, … (base 10).
    """
    if epoch_1based < 1:
        raise ValueError(f"the eveningglow linear-eval schedule counts epochs from 1, got {epoch_1based}")
    return base_lr * gamma ** ((epoch_1based - 1) // every)


def _check_lengths(epochs: int, iters_per_epoch: int, warmup_epochs: int) -> None:
    if epochs <= 0:
        raise ValueError(f"--epochs must be > 0, got {epochs}")
    if iters_per_epoch <= 0:
        raise ValueError(
            f"iterations per epoch must be > 0 (is the data loader empty?), got {iters_per_epoch}"
        )
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"--warmup_epochs must be in [0, --epochs) = [0, {epochs}), got {warmup_epochs}")


@dataclass(frozen=True)
class LRSchedule:
    """One learning-rate schedule, evaluated at ``(epoch, iteration_in_epoch)`` (both 0-based).

    ``kind``: ``constant``; ``step`` (``milestones``, ``gamma``); ``cosine`` (to ``final_lr``);
    ``warmup_cosine`` (SwAV: ``warmup_epochs``, ``start_warmup``, ``final_lr``); ``linear_warmup_cosine``
    (INTL: ``warmup_epochs``, ``final_lr``, which INTL sets to ``0.001·base_lr``). ``per_iteration`` defaults
    to True for the two warm-up kinds and False otherwise; a per-epoch schedule ignores
    ``iteration_in_epoch``, and a per-epoch warm-up kind treats each epoch as one step.
    """

    kind: str
    base_lr: float
    epochs: int
    iters_per_epoch: int = 1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    final_lr: float = 0.0
    start_warmup: float = 0.0
    per_iteration: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"unknown lr schedule {self.kind!r}; expected one of {', '.join(SCHEDULE_KINDS)}"
            )
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.per_iteration is None:
            object.__setattr__(self, "per_iteration", self.kind in ("warmup_cosine", "linear_warmup_cosine"))
        _check_lengths(self.epochs, self.iters_per_epoch, self.warmup_epochs)
        if self.kind == "linear_warmup_cosine" and self.warmup_epochs == 0:
            raise ValueError("the linear_warmup_cosine schedule needs --warmup_epochs >= 1")

    @property
    def _steps_per_epoch(self) -> int:
        return self.iters_per_epoch if self.per_iteration else 1

    def lr_at(self, epoch: int, iteration_in_epoch: int = 0) -> float:
        """Learning rate for iteration ``iteration_in_epoch`` of epoch ``epoch`` (both 0-based)."""
        if epoch < 0 or not 0 <= iteration_in_epoch < self.iters_per_epoch:
            raise ValueError(
                f"lr_at needs epoch >= 0 and 0 <= iteration < {self.iters_per_epoch}, "
                f"got epoch {epoch}, iteration {iteration_in_epoch}"
            )
        if self.kind == "constant":
            return float(self.base_lr)
        if self.kind == "step":
            return step_lr(self.base_lr, epoch, self.milestones, self.gamma)
        if epoch >= self.epochs:
            raise ValueError(
                f"epoch {epoch} is past the end of the {self.kind} schedule (--epochs {self.epochs})"
            )
        spe = self._steps_per_epoch
        step = epoch * spe + (iteration_in_epoch if self.per_iteration else 0)
        if self.kind == "cosine":
            return cosine_lr(self.base_lr, step / spe, self.epochs, self.final_lr)
        if self.kind == "warmup_cosine":
            return _swav_lr_at(
                self.base_lr,
                self.final_lr,
                step,
                self.epochs * spe,
                self.warmup_epochs * spe,
                self.start_warmup,
            )
        return linear_warmup_cosine_lr(
            self.base_lr, step, self.epochs * spe, self.warmup_epochs * spe, final_lr=self.final_lr
        )


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's ``lr`` to ``lr · group.get("lr_scale", 1.0)``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
