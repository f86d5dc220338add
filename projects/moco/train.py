"""MoCo pre-training: ``moco-train``, ``python -m selfsup.moco.train`` or under ``torchrun``.

The set-up of :class:`MoCoTrainer` on the shared runtime (:mod:`selfsup.shared.runtime.trainer`); the model is
in :mod:`.model`, the objective in :mod:`.loss`. Outputs keep the unofficial MoCo's layout:
``OUTPUT_ROOT/DATASET_NAME/EXP_VERSION/`` with ``weight/ckpt_<epoch>.pkl`` every ``--save_weight_epoch``
epochs (``ckpt_E`` = weights after 0-based epoch E, as in the original; ``weight/ckpt_last.pkl`` after the
others and on signals), ``loss/loss.csv`` and ``loss/loss.png``, ``tb/`` (TensorBoard) and ``config.json``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from selfsup.moco.cli import parse_args
from selfsup.moco.loss import info_nce_loss
from selfsup.moco.model import MoCo
from selfsup.moco.transforms import moco_eveningglow_transform, moco_v2_transform
from selfsup.shared.data import SeededTransformDataset, TwoCropsTransform, build_dataset
from selfsup.shared.distributed import convert_sync_batchnorm
from selfsup.shared.models.backbones import BackboneConfig, build_backbone_from_config
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import LRSchedule, apply_lr
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.plotting import plot_log_column
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

#: the original's ``nn.DataParallel(Resnet50)`` keys: ``module.resnet.<torchvision key>``
PREFIX = "module.resnet."


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.output_root) / args.dataset_name / args.exp_version


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(name=args.arch, width=args.width, cifar_stem=args.cifar_stem)


def input_normalization(aug_plus: bool) -> str:
    """The ``NORMALIZATION`` name the pre-training views use: MoCo v2's ImageNet constants, else the original's 0.5."""
    return "imagenet" if aug_plus else "half"


def build_model(args: argparse.Namespace) -> MoCo:
    return MoCo(
        build_backbone_from_config(backbone_config(args)),
        dim=args.feature_dim,
        num_keys=args.num_keys,
        momentum=args.momentum,
        temperature=args.temperature,
        mlp=args.mlp,
        shuffle_bn=args.shuffle_bn,
        bn_splits=args.bn_splits,
    )


def build_schedule(args: argparse.Namespace, iters_per_epoch: int) -> LRSchedule:
    """Per-epoch step decay ×0.1 at ``--schedule`` (120, 160: the original's intended schedule) or ``--cos``."""
    if args.cos:
        return LRSchedule("cosine", args.lr, args.max_epoch, iters_per_epoch)
    return LRSchedule("step", args.lr, args.max_epoch, iters_per_epoch, milestones=tuple(args.schedule))


class MoCoTrainer:
    """MoCo on the runtime: two-crop data, query/key encoders with the queue, SGD, InfoNCE."""

    prog = "moco-train"
    project = "moco"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def layout(self, args: argparse.Namespace) -> RunLayout:
        out = run_dir(args)
        resume = args.resume
        if resume == "auto" and args.start_epoch is not None:
            resume = str(out / "weight" / f"ckpt_{args.start_epoch}.pkl")
        configs = (out / "config.json", out / "config.yml") if args.save_config else (out / "config.json",)
        return RunLayout(
            run_dir=out,
            last_checkpoint=out / "weight" / "ckpt_last.pkl",
            resume=resume,
            resume_patterns=("ckpt_*.pkl",),
            config_files=configs,  # config.yml: JSON is valid YAML
            csv_log=out / "loss" / "loss.csv",
            tensorboard_dir=out / "tb",
            record_name="MoCoConfig",
        )

    def build(self, ctx: RunContext) -> Parts:
        args, env = self.args, ctx.env
        self.ctx = ctx
        if args.batch_size % env.world_size:
            raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {env.world_size} ranks")
        ctx.record["args"]["backbone"] = backbone_config(args).to_dict()
        dataset = build_dataset(
            args.dataset,
            root=args.dataset_root,
            split="train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        )
        recipe = moco_v2_transform if args.aug_plus else moco_eveningglow_transform
        scale = {} if args.crop_min is None else {"min_scale": args.crop_min}
        seeded = SeededTransformDataset(
            dataset, TwoCropsTransform(recipe(crop=args.crop, **scale)), seed=args.seed
        )
        self.data = training_data(
            seeded,
            env=env,
            per_rank_batch=args.batch_size // env.world_size,
            seed=args.seed,
            num_workers=args.num_workers,
        )
        self.model = model = build_model(args).to(env.device)
        if args.sync_bn:
            model.encoder_q = convert_sync_batchnorm(model.encoder_q)
            model.encoder_k = convert_sync_batchnorm(model.encoder_k)
        self.optimizer = build_optimizer(
            "sgd",
            model.encoder_q.parameters(),
            lr=args.lr,
            momentum=args.SGD_momentum,
            weight_decay=args.weight_decay,
        )
        self.schedule = build_schedule(args, self.data.iters_per_epoch(env.world_size))
        self.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        return Parts(
            self.data, model, self.optimizer, args.max_epoch, args.log_every, broadcast_buffers=False
        )

    # ------------------------------------------------------------------ start, resume
    def start_fresh(self) -> None:
        """The original's start-up pass: the key encoder copies the query encoder, the queue fills with keys."""
        self.model.momentum_update(0.0)
        self.data.sampler.set_epoch(-1)
        self.data.dataset.set_epoch(-1)
        self.model.fill_queue(
            views[1].to(self.ctx.device, non_blocking=True) for views, _ in self.data.loader
        )
        self.ctx.log.info("queue filled with %d real keys", self.model.num_keys)

    def before_loop(self) -> None:
        for encoder in (self.model.encoder_q, self.model.encoder_k):
            prepare_model(encoder, channels_last=self.args.channels_last, compile_model=self.args.compile)

    def restore(self, ckpt: dict[str, Any]) -> None:
        saved, flags = BackboneConfig(**ckpt["backbone"]), backbone_config(self.args)
        if saved != flags:
            raise ValueError(
                f"--resume: the checkpoint's backbone {saved} differs from the flags' {flags}; "
                "pass the same --arch/--width/--cifar_stem"
            )
        if ckpt["queue"].shape != self.model.queue.shape:
            raise ValueError(
                f"--resume: checkpoint queue {tuple(ckpt['queue'].shape)} != --num_keys/--feature_dim "
                f"{tuple(self.model.queue.shape)}"
            )
        n = len(PREFIX)
        self.model.encoder_q.load_state_dict({k[n:]: v for k, v in ckpt["encoder"].items()})
        self.model.encoder_k.load_state_dict({k[n:]: v for k, v in ckpt["momentum_encoder"].items()})
        self.model.queue.copy_(ckpt["queue"])
        self.model.queue_ptr.fill_(ckpt["queue_ptr"])

    # ------------------------------------------------------------------ the step
    def on_epoch_start(self, epoch: int) -> None:
        apply_lr(self.optimizer, self.schedule.lr_at(epoch, 0))
        self.model.train()

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One MoCo iteration in the original's order: InfoNCE, SGD step on the query encoder, then the
        momentum update of the key encoder and the queue update."""
        views, _ = batch
        x_q, x_k = (v.to(self.ctx.device, non_blocking=True, memory_format=self.memory_format) for v in views)
        with autocast(self.ctx.precision, x_q.device):
            q, k = self.runner(x_q, x_k)
            loss = info_nce_loss(q, k, self.model.queue.detach(), self.model.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        self.ctx.scaler.scale(loss).backward()
        self.ctx.scaler.step(self.optimizer)
        self.ctx.scaler.update()
        self.model.momentum_update()
        self.model.enqueue(k)
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_entries(self) -> dict[str, Any]:
        def prefixed(module: torch.nn.Module) -> dict[str, torch.Tensor]:
            return {PREFIX + k: v.detach().cpu() for k, v in module.state_dict().items()}

        return {
            "encoder": prefixed(self.model.encoder_q),
            "momentum_encoder": prefixed(self.model.encoder_k),
            "queue": self.model.queue.detach().cpu(),
            "queue_ptr": int(self.model.queue_ptr),
        }

    def export(self) -> Export:
        return Export(
            {
                "state_dict_location": "encoder",
                "prefix": PREFIX,
                "drop_prefixes": ["fc."],
                "ema_location": "momentum_encoder",
            },
            backbone=backbone_config(self.args),
            input_normalization=input_normalization(self.args.aug_plus),
            input_size=self.args.crop,
        )

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        weight = run_dir(self.args) / "weight"
        if epoch % self.args.save_weight_epoch == 0 or epoch + 1 == self.args.max_epoch:
            return [weight / f"ckpt_{epoch}.pkl"]
        return [weight / "ckpt_last.pkl"]

    # ------------------------------------------------------------------ plots
    def _plot(self) -> None:
        if self.ctx.env.is_main:
            loss_dir = run_dir(self.args) / "loss"
            plot_log_column(
                loss_dir / "loss.csv",
                loss_dir / "loss.png",
                title=self.args.exp_version,
                ylabel="InfoNCE loss",
                logger=self.ctx.log,
            )

    def after_step(self, step: int) -> None:
        if self.args.plot_iter and step % self.args.plot_iter == 0:
            self._plot()

    def finish(self, result: Any) -> None:
        if result.stopped_by != "signal":
            self._plot()


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Run pre-training; returns the path of the last checkpoint written."""
    return train_to_checkpoint(MoCoTrainer(args), args, argv)


def _smoke_flags(data: Path, out: Path) -> list[str]:
    return [
        "--dataset", "npz", "--dataset_root", str(data), "--output_root", str(out), "--arch", "resnet18",
        "--width", "4", "--cifar_stem", "--crop", "16", "--batch_size", "64", "--num_keys", "64",
        "--max_epoch", "1", "--num_workers", "0", "--plot_iter", "0", "--no_progress", "--no_tensorboard",
    ]  # fmt: skip


TRAINER = TrainerEntry(
    name="moco",
    prog="moco-train",
    module="selfsup.moco.train",
    parse_args=parse_args,
    method=MoCoTrainer,
    smoke_flags=_smoke_flags,
)


def main(argv: list[str] | None = None) -> int:
    return run_trainer(TRAINER, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
