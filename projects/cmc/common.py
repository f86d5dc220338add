"""What ``cmc-train`` and ``cmc-moco-ins-train`` share on the trainer runtime (:mod:`selfsup.shared.runtime.trainer`):
the original's run layout and checkpoint entries, the data with Image Mixture, the encoders' device set-up and the
SGD step. The two Method classes (:mod:`.train`, :mod:`.train_moco_ins`) compose these pieces.

* runs live in ``<--model_path>/<model name>/`` (the original's name, e.g.
  ``memory_nce_16384_alexnet_lr_0.03_decay_0.0001_bsz_128_view_Lab``), TensorBoard in ``<--tb_path>/<name>/``;
* ``ckpt_epoch_<E>.pth`` every ``--save_freq`` epochs and the last epoch (``E`` 1-based, as in the original:
  the runtime's resume position after an epoch), ``current.pth`` after every epoch and on ``--ckpt_interval``,
  SIGTERM/SIGUSR1 or ``--max_iters``; ``--resume auto`` takes the ``*.pth`` of the run with the most progress;
* the memory-bank negatives (CMC, InsDis) come from a generator of their own on each rank
  (:class:`NegativeDraws`, seeded from ``--seed`` and the rank), whose states every checkpoint holds (one per
  rank, ``negatives_rng``);
* each checkpoint holds the original's entries (``opt`` as a plain dict, ``model`` and ``contrast`` with the
  original keys, ``optimizer``, ``epoch``, ``model_ema`` for MoCo), so the original ``LinearProbing.py`` and
  ``eval_moco_ins.py`` could read them, next to ``state`` (the full state of every module, with the queue
  pointer) and the runtime's schema; ``selfsup-eval`` imports it as the original layout
  (``export: {original_format: cmc | cmc_insdis}``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.shared.data import SeededTransformDataset, build_dataset
from selfsup.shared.data.instances import InstanceIndexed
from selfsup.shared.data.mixtures import build_image_mixture
from selfsup.shared.data.sampling import mix_seed
from selfsup.shared.distributed import DistEnv, all_gather_no_grad
from selfsup.shared.distributed.collectives import comm_device
from selfsup.shared.models.split_batchnorm import convert_split_batchnorm
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import apply_lr, step_lr
from selfsup.shared.runtime.precision import check_precision, prepare_model, resolve_precision
from selfsup.shared.runtime.trainer import RunLayout, TrainingData, training_data

__all__ = [
    "LAST_CHECKPOINT",
    "NEGATIVES_KEY",
    "NegativeDraws",
    "ScaledSGD",
    "amp_precision",
    "batch_inputs",
    "epoch_checkpoints",
    "original_checkpoint",
    "prepare_encoders",
    "restore_modules",
    "run_layout",
    "set_epoch_lr",
    "training_set",
]

LAST_CHECKPOINT = "current.pth"
#: checkpoint entry with the state of every rank's generator of negatives (``[world_size, n]`` uint8, rank order)
NEGATIVES_KEY = "negatives_rng"
#: ``mix_seed(--seed, NEGATIVES_TAG, rank)`` seeds a rank's negatives; negative, so that it never equals the
#: ``(seed, epoch)`` / ``(seed, epoch, index)`` seeds of the sampler and the augmentations
NEGATIVES_TAG = -17
CHECKPOINT_GLOB = "*.pth"
#: the Image-Mixture fork's ``--IM*`` parameters passed to :func:`~selfsup.shared.data.build_image_mixture`
IM_FLAGS = (
    "g_alpha",
    "g_num",
    "g_prob",
    "r_beta",
    "r_prob",
    "r_num",
    "r_pixel_decay",
    "mask_size",
    "cutout_p",
    "cutout_inside",
    "mask_color",
    "random_erasing_prob",
    "area_ratio_range",
    "min_aspect_ratio",
    "max_attempt",
)


def amp_precision(args: argparse.Namespace, device: torch.device) -> str:
    """``--amp`` (apex O2 in the original) is fp16 autocast on CUDA and bf16 on CPU; else ``--precision``."""
    check_precision(args.precision, device)
    if args.amp:
        return "fp16" if device.type == "cuda" else "bf16"
    return resolve_precision(args.precision, device)


def run_layout(args: argparse.Namespace, name: str, log_fields: tuple[str, ...]) -> RunLayout:
    """The original's folders for the run called ``name`` (module docstring)."""
    out = Path(args.model_path) / name
    return RunLayout(
        run_dir=out,
        last_checkpoint=out / LAST_CHECKPOINT,
        resume=args.resume or None,
        resume_patterns=(CHECKPOINT_GLOB,),
        config_files=(out / "config.json",),
        csv_log=out / "log.csv",
        tensorboard_dir=Path(args.tb_path) / name,
        log_fields=log_fields,
        record_name="CMCConfig",
        data_flag="--data_folder",
    )


def epoch_checkpoints(args: argparse.Namespace, run_dir: Path, epoch: int) -> list[Path]:
    """After 0-based ``epoch``: ``current.pth``, and ``ckpt_epoch_<epoch + 1>.pth`` on ``--save_freq`` and at
    the end."""
    done = epoch + 1  # the original's 1-based epoch number
    paths = [run_dir / LAST_CHECKPOINT]
    if done % args.save_freq == 0 or done == args.epochs:
        paths.append(run_dir / f"ckpt_epoch_{done}.pth")
    return paths


def training_set(
    args: argparse.Namespace, env: DistEnv, view_transform: Callable[[Any], torch.Tensor]
) -> TrainingData:
    """``--dataset`` / ``--data_folder`` with per-item seeded views, ``--IM`` mixtures, and the instance index
    (``(x, target, index)`` batches), split over the ranks."""
    if args.batch_size % env.world_size:
        raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {env.world_size} ranks")
    dataset = build_dataset(
        args.dataset,
        root=args.data_folder,
        split="train",
        download=args.download,
        skip_corrupt=args.skip_corrupt,
    )
    views: Any = SeededTransformDataset(dataset, view_transform, seed=args.seed)
    if args.IM:
        views = build_image_mixture(views, args.IM_type, **{name: getattr(args, name) for name in IM_FLAGS})
    return training_data(
        InstanceIndexed(views),
        env=env,
        per_rank_batch=args.batch_size // env.world_size,
        seed=args.seed,
        num_workers=args.num_workers,
    )


def prepare_encoders(
    encoders: Mapping[str, nn.Module],
    others: tuple[nn.Module, ...],
    args: argparse.Namespace,
    device: torch.device,
    *,
    speed_flags: bool,
) -> bool:
    """``--bn_splits`` (the original's per-GPU BN under DataParallel) in every encoder, everything to
    ``device``, then, where ``speed_flags``, ``--channels_last`` (every encoder) and ``--compile`` (the trained
    one, ``encoders["model"]``). Returns whether inputs go channels-last."""
    for module in encoders.values():
        convert_split_batchnorm(module, args.bn_splits)
    for module in (*encoders.values(), *others):
        module.to(device)
    channels_last = bool(args.channels_last and speed_flags)
    for name, module in encoders.items():
        compile_model = bool(args.compile and speed_flags and name == "model")
        prepare_model(module, channels_last=channels_last, compile_model=compile_model)
    return channels_last


class NegativeDraws:
    """Where a rank draws its memory-bank negatives from: a ``torch.Generator`` of its own on the run's device,
    seeded with ``mix_seed(--seed, NEGATIVES_TAG, rank)``, so that the ranks of a DDP run draw independent
    negatives (the original, one process under DataParallel, drew them for the whole batch from the global RNG).

    :meth:`state` (a collective: every rank calls it) gathers every rank's generator state for the checkpoint;
    :meth:`load` gives each rank its own back and refuses a checkpoint of another world size.
    """

    def __init__(self, seed: int, env: DistEnv) -> None:
        self.rank, self.world_size = env.rank, env.world_size
        self.generator = torch.Generator(device=env.device)
        self.generator.manual_seed(mix_seed(seed, NEGATIVES_TAG, env.rank))

    def state(self) -> torch.Tensor:
        """``[world_size, n]`` uint8: every rank's generator state, in rank order (collective)."""
        local = self.generator.get_state().unsqueeze(0)
        return all_gather_no_grad(local.to(comm_device())).cpu()

    def load(self, ckpt: Mapping[str, Any], log: logging.Logger, flag: str = "--resume") -> None:
        """Take this rank's generator state from ``ckpt`` (written by :meth:`state`). A checkpoint written
        before these generators existed (negatives from the global RNG) resumes with them freshly seeded."""
        states = ckpt.get(NEGATIVES_KEY)
        if states is None:
            log.warning(
                "%s: the checkpoint holds no state of the generators of negatives (written by an older "
                "version); their draws restart from --seed",
                flag,
            )
            return
        if states.shape[0] != self.world_size:
            raise ValueError(
                f"{flag}: the checkpoint was written by {states.shape[0]} process(es), this run has "
                f"{self.world_size}; resume with {states.shape[0]} (each rank draws its own negatives)"
            )
        try:
            self.generator.set_state(states[self.rank].clone())
        except RuntimeError as err:
            raise ValueError(
                f"{flag}: the generator state of the negatives does not fit this device ({err})"
            ) from err


@dataclass
class ScaledSGD:
    """The originals' SGD (``--learning_rate``, ``--momentum``, ``--weight_decay``) behind the run's loss
    scaler; :meth:`backward` and :meth:`step` are the two halves of an optimisation step."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, model: nn.Module, args: argparse.Namespace, scaler: torch.amp.GradScaler) -> ScaledSGD:
        optimizer = build_optimizer(
            "sgd",
            model.parameters(),
            lr=args.learning_rate,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        )
        return cls(optimizer, scaler)

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()


def set_epoch_lr(optimizer: torch.optim.Optimizer, args: argparse.Namespace, epoch: int) -> None:
    """The originals' step decay: ``--learning_rate`` × ``--lr_decay_rate`` per passed ``--lr_decay_epochs``."""
    apply_lr(optimizer, step_lr(args.learning_rate, epoch, args.lr_decay_epochs, args.lr_decay_rate))


def batch_inputs(batch: Any, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, target, index)`` from the loader -> ``x`` (fp32, on ``device``, channels-last if asked) and the
    instance ids."""
    x, _target, index = batch
    x = x.to(device, non_blocking=True).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, index.to(device, non_blocking=True)


def original_checkpoint(
    original: Mapping[str, Any], modules: Mapping[str, nn.Module], record: Mapping[str, Any]
) -> dict[str, Any]:
    """The original layout's entries: ``original`` (``model``, ``contrast``[, ``model_ema``] with the original
    keys), ``opt`` (the resolved flags as a plain dict), and ``state`` (every module's full ``state_dict``;
    the memories are the same tensors as ``contrast``'s, so the file stores them once)."""
    return {
        **original,
        "opt": dict(record["args"]),
        "state": {name: module.state_dict() for name, module in modules.items()},
    }


def restore_modules(
    ckpt: Mapping[str, Any], modules: Mapping[str, nn.Module], *, method: str, args: argparse.Namespace
) -> None:
    """Load ``state`` into ``modules`` after checking that the checkpoint is this method's with this ``--model``."""
    if ckpt.get("method") != method:
        raise ValueError(
            f"--resume: the checkpoint was written by project {ckpt.get('project')!r}, method "
            f"{ckpt.get('method')!r}; this run is cmc/{method}"
        )
    saved_model = ckpt["args"]["args"].get("model")
    if saved_model != args.model:
        raise ValueError(f"--resume: the checkpoint's --model is {saved_model!r}, not {args.model!r}")
    for name, module in modules.items():
        try:
            module.load_state_dict(ckpt["state"][name])
        except RuntimeError as err:
            raise ValueError(f"--resume: {name} state does not fit the flags ({err})") from err
