"""The epoch loop every trainer shares: resumable position, logging windows, checkpoint triggers, pre-emption.

A trainer supplies what is its own (one training step, what happens at the start of an epoch, how a checkpoint
is written) and :func:`run_epochs` supplies the rest, identically for every project:

* the position: epochs ``start_epoch .. max_epoch-1``; in the resumed epoch the sampler skips the
  ``start_iter · per_rank_batch`` samples already seen (``ResumableSampler.set_start``), so a resumed run sees
  exactly the batches an uninterrupted run would have seen;
* a logging window: the scalars a step returns stay on the device and are summed there (no host sync per step);
  every ``log_every`` steps and at the end of each epoch their means, the learning rate and images/s go to the
  console, the CSV log and TensorBoard;
* checkpoint triggers: ``save_last(epoch, iteration, step)`` every ``ckpt_interval`` steps (not on an epoch's
  last step), on SIGTERM/SIGUSR1 (then the loop returns and, on SIGUSR1 under Slurm, requeues the job) and at
  ``max_iters``; ``save_epoch(epoch, step)`` after each epoch. The ``(epoch, iteration)`` a trigger receives is
  where a resumed run continues: ``(epoch + 1, 0)`` once an epoch is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup.shared.runtime.logger import MetricLogger, progress
from selfsup.shared.runtime.preemption import PreemptionGuard

__all__ = ["LoopResult", "LoopSpec", "run_epochs"]

#: ``train_step(batch) -> (scalars, images)``: detached 0-d tensors to log (summed on the device over a
#: window) and the number of images of this rank's batch.
StepFn = Callable[[Any], tuple[Mapping[str, torch.Tensor], int]]


@dataclass(frozen=True)
class LoopSpec:
    """Where the loop starts and stops, and how often it logs and checkpoints."""

    start_epoch: int
    start_iter: int
    start_step: int
    max_epoch: int
    per_rank_batch: int
    iters_per_epoch: int
    world_size: int = 1
    log_every: int = 10
    ckpt_interval: int = 0
    max_iters: int = 0
    show_progress: bool = False

    @classmethod
    def from_flags(
        cls,
        args: Any,
        *,
        start: tuple[int, int, int],
        max_epoch: int,
        log_every: int,
        num_samples: int,
        per_rank_batch: int,
        world_size: int,
        is_main: bool,
        drop_last: bool = False,
    ) -> LoopSpec:
        """The spec of a run: ``start`` = ``(epoch, iteration, step)``, the common flags ``--ckpt_interval``,
        ``--max_iters`` and ``--no_progress`` from ``args``, and the iterations per epoch of a sampler that
        pads ``num_samples`` to a multiple of ``world_size`` (``ResumableSampler``); with ``drop_last`` each rank's
        incomplete last batch is dropped (the loader's ``drop_last``)."""
        per_rank_samples = -(-num_samples // world_size)
        if drop_last and per_rank_samples < per_rank_batch:
            raise ValueError(
                f"the {num_samples} training images give each of the {world_size} ranks fewer than one batch "
                f"of {per_rank_batch}; lower the batch size (--batch_size or --bs)"
            )
        return cls(
            start_epoch=start[0],
            start_iter=start[1],
            start_step=start[2],
            max_epoch=max_epoch,
            per_rank_batch=per_rank_batch,
            iters_per_epoch=(
                per_rank_samples // per_rank_batch if drop_last else -(-per_rank_samples // per_rank_batch)
            ),
            world_size=world_size,
            log_every=log_every,
            ckpt_interval=args.ckpt_interval,
            max_iters=args.max_iters,
            show_progress=is_main and not args.no_progress,
        )


@dataclass(frozen=True)
class LoopResult:
    """The last checkpoint written, the global step reached, and why the loop ended."""

    checkpoint: Path | None
    step: int
    stopped_by: str  # "end", "signal" or "max_iters"


def _set_epoch(objects: Iterable[Any], epoch: int) -> None:
    for obj in objects:
        obj.set_epoch(epoch)


def run_epochs(
    spec: LoopSpec,
    *,
    loader: Iterable[Any],
    sampler: Any,
    epoch_aware: Iterable[Any],
    train_step: StepFn,
    on_epoch_start: Callable[[int], None],
    save_last: Callable[[int, int, int], Path | None],
    save_epoch: Callable[[int, int], Path | None],
    optimizer: torch.optim.Optimizer,
    metrics: MetricLogger,
    log: logging.Logger,
    after_step: Callable[[int], None] | None = None,
    log_extras: Callable[[], Mapping[str, float | int]] | None = None,
) -> LoopResult:
    """Run the epochs of ``spec`` (see the module docstring); returns the last checkpoint and the step.

    ``sampler`` is a :class:`~selfsup.shared.data.ResumableSampler`; ``epoch_aware`` are further objects with
    ``set_epoch`` (datasets whose augmentation is seeded per epoch). ``after_step(step)`` runs after every step
    (for example to redraw a loss plot every N steps); ``log_extras()`` adds values to every log line (counts
    that are not per-step means, such as the images skipped so far; ints are logged as ints).
    """
    step = spec.start_step
    saved: Path | None = None
    epoch_aware = list(epoch_aware)
    with PreemptionGuard() as guard:
        for epoch in range(spec.start_epoch, spec.max_epoch):
            sampler.set_epoch(epoch)
            _set_epoch(epoch_aware, epoch)
            first = spec.start_iter if epoch == spec.start_epoch else 0
            sampler.set_start(first * spec.per_rank_batch)
            on_epoch_start(epoch)
            window: dict[str, torch.Tensor] = {}
            window_iters, window_images, window_start = 0, 0, time.perf_counter()
            batches = progress(loader, total=len(loader), desc=f"epoch {epoch}", enabled=spec.show_progress)
            for iteration, batch in enumerate(batches, start=first):
                scalars, images = train_step(batch)
                step += 1
                for name, value in scalars.items():
                    window[name] = window[name] + value if name in window else value
                window_iters += 1
                window_images += images * spec.world_size
                done_epoch = iteration + 1 == spec.iters_per_epoch
                if step % spec.log_every == 0 or done_epoch:
                    elapsed = time.perf_counter() - window_start
                    means: dict[str, float | int] = {
                        name: float(total) / window_iters for name, total in window.items()
                    }
                    if log_extras is not None:
                        means.update(log_extras())
                    lr = optimizer.param_groups[0]["lr"]
                    rate = window_images / elapsed
                    metrics.log(step, epoch=epoch, **means, lr=lr, images_per_s=rate)
                    shown = " ".join(
                        f"{name} {value}" if isinstance(value, int) else f"{name} {value:.4f}"
                        for name, value in means.items()
                    )
                    log.info(
                        "epoch %d iter %d step %d %s lr %.4g %.1f img/s",
                        epoch,
                        iteration,
                        step,
                        shown,
                        lr,
                        rate,
                    )
                    window, window_iters, window_images = {}, 0, 0
                    window_start = time.perf_counter()
                if after_step is not None:
                    after_step(step)
                resume_at = (epoch + 1, 0) if done_epoch else (epoch, iteration + 1)
                if spec.ckpt_interval and step % spec.ckpt_interval == 0 and not done_epoch:
                    saved = save_last(*resume_at, step)
                if guard.should_stop():
                    saved = save_last(*resume_at, step)
                    log.warning(
                        "signal %s: checkpoint %s written at step %d; exiting", guard.received, saved, step
                    )
                    guard.requeue_if_slurm()
                    return LoopResult(saved, step, "signal")
                if spec.max_iters and step >= spec.max_iters:
                    saved = save_last(*resume_at, step)
                    log.info("--max_iters %d reached; checkpoint %s", spec.max_iters, saved)
                    return LoopResult(saved, step, "max_iters")
            saved = save_epoch(epoch, step)
    return LoopResult(saved, step, "end")
