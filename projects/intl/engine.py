"""What ``intl-train`` and ``cwrgp-train`` share around their own step: the seeded multi-view training loader,
finding and restoring a resume checkpoint, and selfsup's training-state entries that sit next to the
original's ``epoch`` / ``arch`` / ``state_dict`` / ``optimizer`` in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from selfsup.shared.checkpoints.io import find_latest_checkpoint, load_training_checkpoint
from selfsup.shared.data import ResumableSampler, SeededTransformDataset, build_training_loader
from selfsup.shared.distributed import DistEnv
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.runtime.loop import LoopSpec
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state

__all__ = ["TrainingData", "find_resume", "restore_training_state", "selfsup_entries", "training_data"]


@dataclass(frozen=True)
class TrainingData:
    """The augmented dataset, its resumable sampler and loader, and the loop's data-dependent settings."""

    dataset: SeededTransformDataset
    sampler: ResumableSampler
    loader: DataLoader
    spec_args: dict[str, Any]

    def loop_spec(self, args: Any, start: tuple[int, int, int]) -> LoopSpec:
        """The :class:`LoopSpec` from ``start`` = ``(epoch, iteration, step)`` and the common flags."""
        return LoopSpec.from_flags(args, start=start, **self.spec_args)


def training_data(
    raw: Dataset,
    transform: Callable[[Any], Any],
    *,
    seed: int,
    per_rank_batch: int,
    num_workers: int,
    env: DistEnv,
    max_epoch: int,
    log_every: int,
) -> TrainingData:
    """``raw`` (items ``(PIL image, target)``) with ``transform`` seeded per (seed, epoch, item), this rank's
    loader of full batches (``drop_last``, as both originals)."""
    dataset = SeededTransformDataset(raw, transform, seed=seed)
    sampler, loader = build_training_loader(
        dataset,
        batch_size=per_rank_batch,
        seed=seed,
        num_workers=num_workers,
        num_replicas=env.world_size,
        rank=env.rank,
        drop_last=True,
    )
    spec_args = dict(
        max_epoch=max_epoch,
        log_every=log_every,
        num_samples=len(dataset),
        per_rank_batch=per_rank_batch,
        world_size=env.world_size,
        is_main=env.is_main,
        drop_last=True,
    )
    return TrainingData(dataset, sampler, loader, spec_args)


def find_resume(resume: str, last_path: Path, pattern: str) -> Path | None:
    """``--resume``: ``""`` = start fresh; ``auto`` = ``last_path`` if it exists, else the checkpoint matching
    ``pattern`` beside it with the most progress (or fresh); anything else is a file that must exist."""
    if resume == "auto":
        return last_path if last_path.is_file() else find_latest_checkpoint(last_path.parent, pattern)
    if not resume:
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} does not exist (give a checkpoint file or 'auto')")
    return path


def restore_training_state(
    path: Path,
    *,
    project: str,
    model: nn.Module,
    own_key: Callable[[str], str],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> tuple[int, int, int]:
    """Load a checkpoint of ``project`` written by its trainer: the model from the original ``state_dict``
    (each key mapped back to the model's own by ``own_key``), optimiser, loss scaler and every RNG; returns
    ``(epoch, iteration, global_step)`` to continue from."""
    ckpt = load_training_checkpoint(path)
    if ckpt.get("project") != project:
        raise ValueError(f"--resume: {path} is not a {project} checkpoint (project {ckpt.get('project')!r})")
    state = {own_key(k): v for k, v in ckpt["state_dict"].items()}
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"--resume: {path} does not fit the flags (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"--resume: {path} does not fit the flags ({reason})") from err
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt["iteration"], ckpt["global_step"]


def selfsup_entries(
    *,
    project: str,
    method: str,
    backbone: BackboneConfig,
    export: dict[str, Any],
    input_normalization: str,
    scaler: torch.amp.GradScaler,
    iteration: int,
    global_step: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """selfsup's entries of a training checkpoint (format, what ``selfsup-eval`` exports, the resume state
    with the current RNG states, and the run record)."""
    return {
        "format": "selfsup",
        "format_version": 1,
        "project": project,
        "method": method,
        "backbone": backbone.to_dict(),
        "export": export,
        "input_normalization": input_normalization,
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "global_step": global_step,
        "rng": capture_rng_state(),
        "args": record,
    }
