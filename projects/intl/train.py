"""``intl-train``: INTL pre-training (``winci-ai/INTL`` ``main.py``), one process, torchrun or Slurm.

The set-up of :class:`INTLTrainer` on the shared runtime (:mod:`selfsup.shared.runtime.trainer`); the network is
in :mod:`.model`, the objective (whitening over the global batch + trace loss) in :mod:`.loss`, the schedule in
:mod:`.schedules`. Per step (spec ``intl.md`` §4-5): the learning rate of the linear warm-up + cosine (``base =
--lr · --bs / 256``, ``--warmup_eps`` epochs, down to 0.001·base); for ``--method intl_m`` the EMA update of the
target with the cosine momentum schedule from ``--m``; each crop through the network separately (under
autocast), then :func:`~selfsup.intl.loss.intl_objective` (fp32); backward with loss scaling for fp16; SGD with
momentum 0.9 and no weight decay on 1-D parameters (every parameter with ``--cifar``).

Checkpoints go to ``--ckpt_dir`` in the original's names: ``ckpt_<env_name>.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``), ``ckpt_<env_name>_<epoch:04d>.pth.tar`` every
``--save_freq`` epochs and at the end; each holds the original's ``epoch``, ``arch``, ``state_dict`` (DDP keys,
EMA networks included) and ``optimizer`` next to selfsup's training state. ``config.json`` and ``log.csv`` sit in
``--ckpt_dir/<env_name>/``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from selfsup.intl.cli import parse_args
from selfsup.intl.loss import intl_objective
from selfsup.intl.model import INTLModel, ema_momentum
from selfsup.intl.schedules import linear_warmup_cosine_lr
from selfsup.intl.transforms import crop_plan, intl_crop_transform, multi_view
from selfsup.shared.data import SeededTransformDataset, build_dataset, dataset_info
from selfsup.shared.data.transforms import NORMALIZATION
from selfsup.shared.distributed import sync_batchnorm_on
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.optimizers import build_optimizer, split_param_groups
from selfsup.shared.optim.schedules import apply_lr
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.precision import autocast, prepare_model
from selfsup.shared.runtime.registry import TrainerEntry
from selfsup.shared.runtime.trainer import (
    Export,
    Parts,
    RunContext,
    RunLayout,
    train_to_checkpoint,
    training_data,
)

__all__ = ["INTL", "INTL_M", "INTLTrainer", "backbone_config", "build_model", "main", "train"]


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(
        name=args.arch, width=args.width, cifar_stem=args.cifar_stem, stem_padding=args.stem_padding
    )


def build_model(args: argparse.Namespace) -> INTLModel:
    return INTLModel(
        backbone_config(args),
        projection_layers=args.projection_layers,
        projection_size=args.projection_size,
        emb=args.emb,
        ema=args.method == "intl_m",
    )


def input_normalization(args: argparse.Namespace) -> tuple[str, tuple]:
    """``(name, (mean, std))``: the dataset's constants with ``--cifar``, ImageNet's otherwise."""
    if args.cifar:
        info = dataset_info(args.dataset)
        return args.dataset, (info.mean, info.std)
    return "imagenet", NORMALIZATION["imagenet"]


def checkpoint_layout(args: argparse.Namespace, *, stem: str, record_name: str) -> RunLayout:
    """The originals' layout (INTL ``ckpt``, CW-RGP ``checkpoint``): ``--ckpt_dir/<stem>_<env_name>.pth.tar``
    and ``<stem>_<env_name>_<epoch>.pth.tar``; ``config.json``, ``log.csv`` and ``tb/`` in
    ``--ckpt_dir/<env_name>/``."""
    ckpt_dir, run_dir = Path(args.ckpt_dir), Path(args.ckpt_dir) / args.env_name
    return RunLayout(
        run_dir=run_dir,
        last_checkpoint=ckpt_dir / f"{stem}_{args.env_name}.pth.tar",
        resume=args.resume,
        resume_patterns=(f"{stem}_{args.env_name}_*.pth.tar",),
        config_files=(run_dir / "config.json",),
        csv_log=run_dir / "log.csv",
        tensorboard_dir=run_dir / "tb",
        record_name=record_name,
        data_flag="--data_path",
    )


class INTLTrainer:
    """INTL on the runtime: multi-crop data, trunk + projector (+ EMA target), SGD, the INTL objective."""

    prog = "intl-train"
    project = "intl"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def layout(self, args: argparse.Namespace) -> RunLayout:
        return checkpoint_layout(args, stem="ckpt", record_name="INTLConfig")

    def build(self, ctx: RunContext) -> Parts:
        args, env = self.args, ctx.env
        self.ctx = ctx
        if args.bs % env.world_size:
            raise ValueError(f"--bs {args.bs} is not divisible by the {env.world_size} ranks")
        mean_std = input_normalization(args)[1]
        views = [
            intl_crop_transform(size, lo, hi, blur=blur, solarize=sol, mean_std=mean_std)
            for size, lo, hi, blur, sol in crop_plan(args)
        ]
        raw = build_dataset(
            args.dataset,
            root=args.data_path,
            split="train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        )
        self.data = training_data(
            SeededTransformDataset(raw, multi_view(views), seed=args.seed),
            env=env,
            per_rank_batch=args.bs // env.world_size,
            seed=args.seed,
            num_workers=-(-args.workers // env.world_size),
            drop_last=True,
        )
        iters_per_epoch = self.data.iters_per_epoch(env.world_size)
        self.total_steps = args.epochs * iters_per_epoch
        self.warmup_steps = args.warmup_eps * iters_per_epoch
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"--warmup_eps {args.warmup_eps} must be smaller than --epochs {args.epochs}")
        self.base_lr = args.lr * args.bs / 256
        self.model = model = sync_batchnorm_on(build_model(args), env.device, ctx.log).to(env.device)
        prepare_model(model, channels_last=args.channels_last, compile_model=args.compile)
        groups = split_param_groups(model, args.wd, exclude_bias_and_norm=not args.cifar)
        self.optimizer = build_optimizer("sgd", groups, lr=self.base_lr, momentum=0.9, weight_decay=args.wd)
        return Parts(self.data, model, self.optimizer, args.epochs, args.print_freq)

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_original_state_dict(ckpt["state_dict"])

    def on_epoch_start(self, epoch: int) -> None:
        self.model.train()

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """lr, EMA update (``intl_m``), each crop's forward (the EMA target's on crop 0 first), the INTL
        objective, scaled backward, SGD."""
        args, ctx, model, step = self.args, self.ctx, self.model, self.ctx.global_step
        crops = [c.to(ctx.device, non_blocking=True) for c in batch[0]]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        lr = linear_warmup_cosine_lr(self.base_lr, step, self.total_steps, self.warmup_steps)
        apply_lr(self.optimizer, lr)
        if model.ema:
            model.momentum_update(ema_momentum(step, self.total_steps, args.m))
        with autocast(ctx.precision, crops[0].device):
            target = model.forward_target(crops[0]) if model.ema else None
            outputs = [self.runner(x) for x in crops[1 if model.ema else 0 :]]
        loss = intl_objective(
            outputs, target, batch_size=args.bs, emb=args.emb, axis=args.axis, iters=args.iters,
            spectral_power=args.spectral_power,
        )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(self.optimizer)
        ctx.scaler.update()
        return {"loss": loss.detach()}

    def checkpoint_entries(self) -> dict[str, Any]:
        if not self.ctx.env.is_main:  # only rank 0 writes: no copy of the weights elsewhere
            return {}
        return {"arch": self.args.arch, "state_dict": self.model.original_state_dict()}

    def export(self) -> Export:
        ema = self.args.method == "intl_m"
        return Export(
            {
                "state_dict_location": "state_dict",
                "prefix": "module.backbone.",
                "ema_location": "state_dict" if ema else None,
                "ema_prefix": "module.momentum_backbone.",
                "drop_prefixes": [],
            },
            method=self.args.method,
            backbone=backbone_config(self.args),
            input_normalization=input_normalization(self.args)[0],
            input_size=max(self.args.crops_size),
        )

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        args, ckpt_dir = self.args, Path(self.args.ckpt_dir)
        paths = [ckpt_dir / f"ckpt_{args.env_name}.pth.tar"]
        if (epoch + 1) % args.save_freq == 0 or epoch + 1 == args.epochs:
            paths.append(ckpt_dir / f"ckpt_{args.env_name}_{epoch + 1:04d}.pth.tar")
        return paths


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    return train_to_checkpoint(INTLTrainer(args), args, argv)


def _smoke_flags(data: Path, out: Path) -> list[str]:
    return [
        "--dataset", "npz", "--data_path", str(data), "--ckpt_dir", str(out), "--arch", "resnet18",
        "--width", "4", "--cifar_stem", "--crops_size", "16", "16", "--bs", "64", "--projection_size", "32",
        "--emb", "32", "--epochs", "1", "--warmup_eps", "0", "-j", "0", "--no_progress", "--no_tensorboard",
    ]  # fmt: skip


def _smoke_flags_intl_m(data: Path, out: Path) -> list[str]:
    return [*_smoke_flags(data, out), "--method", "intl_m"]


INTL = TrainerEntry(
    name="intl",
    prog="intl-train",
    module="selfsup.intl.train",
    parse_args=parse_args,
    method=INTLTrainer,
    smoke_flags=_smoke_flags,
)
#: ``--method intl_m``: the EMA target on crop 0
INTL_M = TrainerEntry(
    name="intl_m",
    prog="intl-train",
    module="selfsup.intl.train",
    parse_args=parse_args,
    method=INTLTrainer,
    smoke_flags=_smoke_flags_intl_m,
)


def main(argv: list[str] | None = None) -> int:
    return run_trainer(INTL, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
