"""Learning-rate schedules of the reproduced papers, as pure functions plus one frozen description.

* step (official MoCo ``--schedule 120 160``, CMC ``--lr_decay_epochs``, SwAV/INTL linear eval MultiStepLR):
  ``lr = base · γ^{#{m ∈ milestones : m ≤ epoch}}`` with 0-based epochs. CMC counts 1-based epochs and decays
  when ``m < epoch``, which is ``step_lr(base, epoch − 1, …)``.
* cosine (official MoCo v2 ``--cos``; SwAV linear eval ``CosineAnnealingLR``):
  ``lr = final + ½(base − final)(1 + cos(π·epoch/epochs))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "LRSchedule",
    "apply_lr",
    "cosine_lr",
    "step_lr",
]

SCHEDULE_KINDS = ("constant", "step", "cosine")


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

    ``kind``: ``constant``; ``step`` (``milestones``, ``gamma``); ``cosine`` (to ``final_lr``).
    ``per_iteration`` defaults to False: a per-epoch schedule ignores ``iteration_in_epoch``.
    """

    kind: str
    base_lr: float
    epochs: int
    iters_per_epoch: int = 1
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    final_lr: float = 0.0
    per_iteration: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"unknown lr schedule {self.kind!r}; expected one of {', '.join(SCHEDULE_KINDS)}"
            )
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.per_iteration is None:
            object.__setattr__(self, "per_iteration", False)
        _check_lengths(self.epochs, self.iters_per_epoch, self.warmup_epochs)

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
        return cosine_lr(self.base_lr, step / spe, self.epochs, self.final_lr)


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's ``lr`` to ``lr · group.get("lr_scale", 1.0)``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
