"""What ``cmc-train`` and ``cmc-moco-ins-train`` share: set-up, data, checkpoints, resume and the epoch loop.

A :class:`ContrastTrainer` subclass supplies the method (the encoders, the contrast module and the loss of one
step); this module supplies the rest, in the original's layout:

* runs live in ``<--model_path>/<model name>/`` (the original's name, e.g.
  ``memory_nce_16384_alexnet_lr_0.03_decay_0.0001_bsz_128_view_Lab``), TensorBoard in ``<--tb_path>/<name>/``;
* ``ckpt_epoch_<E>.pth`` every ``--save_freq`` epochs (``E`` 1-based, as in the original) and the last epoch,
  ``current.pth`` after every epoch and on ``--ckpt_interval``, SIGTERM/SIGUSR1 or ``--max_iters``;
* each checkpoint holds the original's entries (``opt`` as a plain dict, ``model`` and ``contrast`` with the
  original keys, ``optimizer``, ``epoch``, ``model_ema`` for MoCo), so the original ``LinearProbing.py`` and
  ``eval_moco_ins.py`` could read them, next to selfsup's training state (full contrast state with the queue
  pointer, grad scaler, iteration, global step, every RNG, the run record); ``torch.load(weights_only=True)``
  reads all of it, and ``selfsup-eval`` imports it as the original layout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.shared.checkpoints.io import atomic_save, find_latest_checkpoint, load_training_checkpoint
from selfsup.shared.data import SeededTransformDataset, build_dataset, build_training_loader
from selfsup.shared.data.instances import InstanceIndexed
from selfsup.shared.data.mixtures import build_image_mixture
from selfsup.shared.distributed import DistEnv, cleanup, init_distributed
from selfsup.shared.models.split_batchnorm import convert_split_batchnorm
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import apply_lr, step_lr
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.entrypoint import run_reporting_errors
from selfsup.shared.runtime.logger import MetricLogger, get_logger
from selfsup.shared.runtime.loop import LoopSpec, run_epochs
from selfsup.shared.runtime.precision import (
    autocast,
    check_precision,
    make_grad_scaler,
    prepare_model,
    resolve_precision,
)
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything

__all__ = ["ContrastTrainer", "amp_precision", "run_main"]

CHECKPOINT_GLOB = "*.pth"
LAST_CHECKPOINT = "current.pth"
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
    if args.amp:
        return "fp16" if device.type == "cuda" else "bf16"
    return resolve_precision(args.precision, device)


class ContrastTrainer:
    """One training run of the CMC repository's trainers; subclasses define the method (see module docstring)."""

    prog = "cmc"
    method = "cmc"
    crop_flag = "crop_low"
    #: whether ``--channels_last`` and ``--compile`` take effect (see ``MocoInsTrainer`` for the exception)
    applies_speed_flags = True

    # ------------------------------------------------------------------ the method (subclass hooks)
    def run_name(self) -> str:
        raise NotImplementedError

    def view_transform(self) -> Callable[[Any], torch.Tensor]:
        raise NotImplementedError

    def build(self, num_data: int) -> None:
        """Create ``self.model`` (trained), ``self.contrast`` and any other state module."""
        raise NotImplementedError

    def step_scalars(
        self, runner: nn.Module, x: torch.Tensor, index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Forward and loss of one batch; ``scalars["loss"]`` is what is minimised (fp32, with grad)."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """State updates after ``optimizer.step()`` (the MoCo key encoder's EMA)."""

    def state_modules(self) -> dict[str, nn.Module]:
        """Modules whose full ``state_dict`` goes into the checkpoint (beside the original entries)."""
        return {"model": self.model, "contrast": self.contrast}

    def original_entries(self) -> dict[str, Any]:
        """The original checkpoint's ``model``/``contrast`` (and ``model_ema``) entries."""
        return {"model": self.model.original_state_dict(), "contrast": self.contrast.original_state_dict()}

    def export(self) -> dict[str, Any]:
        """How ``selfsup-eval`` finds the encoder: the original layout's checkpoint format."""
        return {"original_format": "cmc"}

    # ------------------------------------------------------------------ set-up
    def __init__(self, args: argparse.Namespace, argv: list[str] | None) -> None:
        self.args = args
        self.argv = list(sys.argv if argv is None else argv)
        self.model: nn.Module
        self.contrast: nn.Module

    def run_dir(self) -> Path:
        return Path(self.args.model_path) / self.run_name()

    def make_data(self, env: DistEnv, per_rank_batch: int):
        args = self.args
        dataset = build_dataset(
            args.dataset,
            root=args.data_folder,
            split="train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        )
        seeded = SeededTransformDataset(dataset, self.view_transform(), seed=args.seed)
        mixed = seeded
        if args.IM:
            flags = {name: getattr(args, name) for name in IM_FLAGS}
            mixed = build_image_mixture(seeded, args.IM_type, **flags)
        indexed = InstanceIndexed(mixed)
        sampler, loader = build_training_loader(
            indexed,
            batch_size=per_rank_batch,
            seed=args.seed,
            num_workers=args.num_workers,
            num_replicas=env.world_size,
            rank=env.rank,
        )
        return indexed, sampler, loader

    def checkpoint(self, optimizer, scaler, *, epoch: int, iteration: int, step: int) -> dict[str, Any]:
        opt = {k: v for k, v in self.record["args"].items()}
        return {
            **self.original_entries(),
            "opt": opt,
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "format": "selfsup",
            "format_version": 1,
            "project": "cmc",
            "method": self.method,
            "export": self.export(),
            "state": {name: module.state_dict() for name, module in self.state_modules().items()},
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "global_step": step,
            "rng": capture_rng_state(),
            "args": self.record,
        }

    def restore(self, ckpt: Mapping[str, Any], optimizer, scaler) -> tuple[int, int, int]:
        if ckpt.get("project") != "cmc" or ckpt.get("method") != self.method:
            raise ValueError(
                f"--resume: the checkpoint was written by project {ckpt.get('project')!r}, method "
                f"{ckpt.get('method')!r}; this run is cmc/{self.method}"
            )
        saved_model = ckpt["args"]["args"].get("model")
        if saved_model != self.args.model:
            raise ValueError(
                f"--resume: the checkpoint's --model is {saved_model!r}, not {self.args.model!r}"
            )
        for name, module in self.state_modules().items():
            try:
                module.load_state_dict(ckpt["state"][name])
            except RuntimeError as err:
                raise ValueError(f"--resume: {name} state does not fit the flags ({err})") from err
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        return ckpt["epoch"], ckpt["iteration"], ckpt["global_step"]

    def resolve_resume(self) -> Path | None:
        resume = self.args.resume
        if not resume:
            return None
        if resume == "auto":
            return find_latest_checkpoint(self.run_dir(), CHECKPOINT_GLOB)
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist (give a checkpoint file or 'auto')")
        return path

    # ------------------------------------------------------------------ the run
    def train(self) -> Path:
        """Pre-train; returns the path of the last checkpoint written."""
        args = self.args
        malloc = None if args.no_malloc_tuning else tune_malloc()
        env = init_distributed(args.dist_backend, args.device)
        check_precision(args.precision, env.device)
        self.precision = amp_precision(args, env.device)
        log = get_logger(self.prog, env.is_main)
        log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
        log.info("precision %s on %s", self.precision, env.device)
        if args.batch_size % env.world_size:
            raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {env.world_size} ranks")
        per_rank_batch = args.batch_size // env.world_size
        seed_everything(args.seed)
        out = self.run_dir()
        self.record = run_record(freeze(args, "CMCConfig"), self.argv)
        self.record["world_size"] = env.world_size
        self.record["precision_resolved"] = self.precision
        if env.is_main:
            save_run_config(self.record, out / "config.json")

        dataset, sampler, loader = self.make_data(env, per_rank_batch)
        self.device = env.device
        self.build(len(dataset))
        for name in ("model", "model_ema"):  # --bn_splits: the original's per-GPU BN under DataParallel
            if name in self.state_modules():
                convert_split_batchnorm(self.state_modules()[name], args.bn_splits)
        for module in self.state_modules().values():
            module.to(env.device)
        channels_last = args.channels_last and self.applies_speed_flags
        for name in ("model", "model_ema"):  # --channels_last (both encoders), --compile (the trained one)
            if name in self.state_modules():
                compile_model = args.compile and self.applies_speed_flags and name == "model"
                prepare_model(
                    self.state_modules()[name], channels_last=channels_last, compile_model=compile_model
                )
        optimizer = build_optimizer(
            "sgd",
            self.model.parameters(),
            lr=args.learning_rate,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
        )
        scaler = make_grad_scaler(self.precision, env.device)
        start_epoch, start_iter, step = 0, 0, 0
        resume_path = self.resolve_resume()
        if resume_path is not None:
            ckpt = load_training_checkpoint(resume_path)
            start_epoch, start_iter, step = self.restore(ckpt, optimizer, scaler)
            log.info(
                "resumed from %s at epoch %d, iteration %d (step %d)",
                resume_path,
                start_epoch,
                start_iter,
                step,
            )

        runner: nn.Module = self.model
        if env.is_distributed:
            runner = DistributedDataParallel(
                self.model,
                device_ids=[env.device.index] if env.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        metrics = MetricLogger(
            out / "log.csv",
            fieldnames=["global_step", "epoch", *self.log_fields, "lr", "images_per_s"],
            tensorboard_dir=None if args.no_tensorboard else Path(args.tb_path) / self.run_name(),
            enabled=env.is_main,
            resume_step=step if resume_path is not None else None,
        )

        def save(path: Path, epoch: int, iteration: int, step: int) -> Path:
            if env.is_main:
                state = self.checkpoint(optimizer, scaler, epoch=epoch, iteration=iteration, step=step)
                atomic_save(state, path)
            return path

        def step_fn(batch) -> tuple[dict[str, torch.Tensor], int]:
            x, _target, index = batch
            x = x.to(env.device, non_blocking=True).float()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            index = index.to(env.device, non_blocking=True)
            scalars = self.step_scalars(runner, x, index)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(scalars["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            self.after_optimizer_step()
            return {name: value.detach() for name, value in scalars.items()}, x.shape[0]

        def on_epoch_start(epoch: int) -> None:
            apply_lr(optimizer, step_lr(args.learning_rate, epoch, args.lr_decay_epochs, args.lr_decay_rate))
            self.model.train()

        def save_epoch(epoch: int, step: int) -> Path:
            done = epoch + 1  # the original's 1-based epoch number
            last = save(out / LAST_CHECKPOINT, done, 0, step)
            if done % args.save_freq == 0 or done == args.epochs:
                return save(out / f"ckpt_epoch_{done}.pth", done, 0, step)
            return last

        spec = LoopSpec.from_flags(
            args,
            start=(start_epoch, start_iter, step),
            max_epoch=args.epochs,
            log_every=args.print_freq,
            num_samples=len(dataset),
            per_rank_batch=per_rank_batch,
            world_size=env.world_size,
            is_main=env.is_main,
        )
        result = run_epochs(
            spec,
            loader=loader,
            sampler=sampler,
            epoch_aware=[dataset],
            train_step=step_fn,
            on_epoch_start=on_epoch_start,
            save_last=lambda epoch, iteration, step: save(out / LAST_CHECKPOINT, epoch, iteration, step),
            save_epoch=save_epoch,
            optimizer=optimizer,
            metrics=metrics,
            log=log,
        )
        metrics.close()
        cleanup()
        return result.checkpoint or out / LAST_CHECKPOINT

    log_fields: tuple[str, ...] = ("loss",)

    def autocast(self):
        return autocast(self.precision, self.device)


def run_main(
    trainer_cls: type[ContrastTrainer],
    parse: Callable[[list[str] | None], argparse.Namespace],
    argv: list[str] | None,
) -> int:
    """Console entry point: parse, train, and turn bad input into a one-line error (exit status 2)."""
    args = parse(argv)
    trainer = trainer_cls(args, argv if argv is not None else sys.argv)
    return run_reporting_errors(trainer_cls.prog, trainer.train)
