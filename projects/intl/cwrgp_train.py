"""``cwrgp-train``: CW-RGP pre-training (``winci-ai/CW-RGP`` ``base/train.py --method cwrgp``, set up as W-MSE),
one process. Weng et al., "An Investigation into Whitening Loss for Self-supervised Learning" (NeurIPS 2022,
arXiv:2210.03586); spec ``intl.md`` App. A. Flags and their defaults: :mod:`.cwrgp_cli`.

The set-up of :class:`CWRGPTrainer` on the shared runtime (:mod:`selfsup.shared.runtime.trainer`). Per step
(``base/methods/cwrgp.py``): the learning rate of :func:`~selfsup.intl.schedules.cwrgp_lr`; the
``--num_samples`` views of each image through :meth:`~selfsup.intl.model.CWRGPModel.embed_views` (the encoder
one view at a time, the head once on all views concatenated); then CW-RGP's loss,
:func:`~selfsup.intl.loss.whitened_pairwise_loss` (``--w_iter`` random partitions into sub-batches of
``--w_size``, group ZCA with random grouping, normalised MSE over the view pairs; the permutations are drawn
from the CPU generator in the original's order). Adam (``--lr``, L2 ``--weight_decay``); fp32 unless
``--precision`` (the whitening and the loss always run in fp32).

Network (:class:`~selfsup.intl.model.CWRGPModel`): ResNet (``--arch resnet18``, zero-initialised residual BN) with
a 3×3/1 ``conv1`` and **no max-pool for every dataset** (selfsup's ``cifar_stem``); the original removes the
max-pool for CIFAR only and keeps it for STL-10 and Tiny-ImageNet (3×3 conv then 3×3/2 max-pool: 32×32 maps
at ``layer1`` for 64-px crops, 64×64 here, about 4× the encoder's compute). Head: ``--head_layers`` − 1 ×
[Linear(``--head_size``) → BN1d → ReLU] → Linear(``--emb``).

Data (W-MSE's order, :func:`~selfsup.intl.transforms.wmse_transform`): crops of 32 px for CIFAR-10/100, 64 px
for STL-10 (``train+unlabeled``) and Tiny-ImageNet (``--dataset tiny_in``: the image folder ``--data_path``
with ``train/`` and ``val/`` in class folders; any image folder is treated the same), the native size of the
others (``digits``, ``npz``: 32); normalised with ``dataset_info(name).mean/std`` (W-MSE's constants differ in
the 2nd-3rd digit for CIFAR-100 and STL-10; an image folder uses ImageNet's, W-MSE's Tiny-ImageNet ones are
(0.480, 0.448, 0.398) / (0.277, 0.269, 0.282)). Batches of ``--bs`` (last incomplete batch dropped).

Checkpoints in ``--ckpt_dir``: ``checkpoint_<env_name>_<epoch:04d>.pth.tar`` (0-based epoch, as the original)
every ``--save_freq`` (500) epochs, and ``checkpoint_<env_name>.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``). Each holds the original's ``epoch``, ``arch``,
``state_dict`` (``model.module.*``, ``head.*``) and ``optimizer``, next to selfsup's training state, whose
``export`` lets ``selfsup-eval`` read the encoder. ``config.json``, ``log.csv`` and ``eval.csv`` sit in
``--ckpt_dir/<env_name>/``.

Evaluation (:meth:`CWRGPTrainer.after_epoch`; ``--eval_every`` 10, from epoch ``--epochs − drop[0]`` on every
``--eval_every_drop`` 5, as the original; 0: never): the last checkpoint through ``selfsup-eval``'s ``nn5`` kNN
preset (``k`` = ``--knn``) and ``intl_cifar`` linear preset (Adam probe on cached features), both with the
training normalisation (W-MSE's evaluation uses each dataset's own constants), logged to ``eval.csv`` as
``acc_knn``, ``acc``, ``acc_5`` (the original's names).

Differences from the original besides the stem: ``--lr_step cos`` follows W-MSE (the cosine steps after the
warm-up; CW-RGP's ``train.py`` reads a missing ``cfg.warmup_cnt`` there and stops); ``--start_epoch`` only comes
from a resumed checkpoint; augmentation flags other than ``--crop_s0`` keep their defaults; one process (the
original's ``nn.DataParallel`` splits the encoder's BatchNorm batch over the GPUs).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from selfsup.intl.cwrgp_cli import parse_args
from selfsup.intl.loss import whitened_pairwise_loss
from selfsup.intl.model import CWRGPModel
from selfsup.intl.schedules import cwrgp_lr
from selfsup.intl.train import checkpoint_layout
from selfsup.intl.transforms import multi_view, wmse_transform
from selfsup.shared.data import SeededTransformDataset, build_dataset, dataset_info
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.schedules import apply_lr
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.logger import MetricLogger
from selfsup.shared.runtime.precision import autocast, prepare_model
from selfsup.shared.runtime.registry import TrainerEntry
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state
from selfsup.shared.runtime.trainer import (
    Export,
    Parts,
    RunContext,
    RunLayout,
    train_to_checkpoint,
    training_data,
)

__all__ = [
    "TRAINER",
    "CWRGPTrainer",
    "backbone_config",
    "build_model",
    "evaluation_due",
    "image_size",
    "main",
    "train",
]

#: where ``selfsup-eval`` finds the encoder in a checkpoint.
EXPORT = {"state_dict_location": "state_dict", "prefix": "model.module.", "drop_prefixes": []}


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(name=args.arch, width=args.width, cifar_stem=True)


def build_model(args: argparse.Namespace) -> CWRGPModel:
    return CWRGPModel(
        backbone_config(args), head_size=args.head_size, emb=args.emb, head_layers=args.head_layers
    )


def image_size(dataset: str) -> int:
    """W-MSE's crop side: 64 for STL-10 and image folders (Tiny-ImageNet), else the native side (CIFAR: 32)."""
    return 64 if dataset in ("stl10", "imagefolder") else dataset_info(dataset).image_size


def evaluation_due(epoch: int, args: Any) -> bool:
    """After 0-based ``epoch``: every ``--eval_every`` epochs, every ``--eval_every_drop`` from epoch
    ``--epochs − drop[0]`` on (the original's switch); never with ``--eval_every 0``."""
    if args.eval_every == 0:
        return False
    dropped = bool(args.drop) and epoch >= args.epochs - args.drop[0]
    every = args.eval_every_drop if dropped else args.eval_every
    return every > 0 and (epoch + 1) % every == 0


def evaluate(path: Path, args: Any, device: torch.device, normalization: str) -> dict[str, float]:
    """5-NN (``nn5``) and linear (``intl_cifar``) accuracy of checkpoint ``path``; every RNG is left as found,
    so a resumed run matches an uninterrupted one."""
    rng = capture_rng_state()
    sizes = {"resize": 64, "crop": 64} if args.dataset == "imagefolder" else {}
    try:
        with tempfile.TemporaryDirectory(prefix="cwrgp-eval-") as cache:
            common = dict(
                dataset=args.dataset,
                root=args.data_path,
                device=device,
                download=args.download,
                cache_dir=cache,
                normalization=normalization,
                **sizes,
            )
            knn = evaluate_checkpoint("knn", path, preset="nn5", k=args.knn, **common)
            linear = evaluate_checkpoint("linear", path, preset="intl_cifar", **common)
    finally:
        restore_rng_state(rng)
    return {"acc_knn": knn["top1"], "acc": linear["top1"], "acc_5": linear["top5"]}


class CWRGPTrainer:
    """CW-RGP on the runtime (one process): W-MSE views, encoder + head, Adam, the whitened pairwise loss,
    evaluation during training."""

    prog = "cwrgp-train"
    project = "cwrgp"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def layout(self, args: argparse.Namespace) -> RunLayout:
        return checkpoint_layout(args, stem="checkpoint", record_name="CWRGPConfig")

    def build(self, ctx: RunContext) -> Parts:
        args, env = self.args, ctx.env
        self.ctx = ctx
        if env.is_distributed:
            raise ValueError("cwrgp-train runs on one process (the original: one process, nn.DataParallel)")
        ctx.record.pop("world_size", None)  # the run record of a one-process trainer, as before the runtime
        info = dataset_info(args.dataset)
        view = wmse_transform(image_size(args.dataset), (info.mean, info.std), min_scale=args.crop_s0)
        raw = build_dataset(
            args.dataset,
            root=args.data_path,
            split="train+unlabeled" if args.dataset == "stl10" else "train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        )
        self.data = training_data(
            SeededTransformDataset(raw, multi_view([view] * args.num_samples), seed=args.seed),
            env=env,
            per_rank_batch=args.bs,
            seed=args.seed,
            num_workers=args.num_workers,
            drop_last=True,
        )
        self.iters_per_epoch = self.data.iters_per_epoch(env.world_size)
        self.model = model = build_model(args).to(env.device)
        for part in (model.model, model.head):
            prepare_model(part, channels_last=args.channels_last, compile_model=args.compile)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        return Parts(self.data, None, self.optimizer, args.epochs, args.log_every)

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_original_state_dict(ckpt["state_dict"])

    def before_loop(self) -> None:
        self.eval_log = MetricLogger(
            Path(self.args.ckpt_dir) / self.args.env_name / "eval.csv",
            fieldnames=["global_step", "epoch", "acc_knn", "acc", "acc_5"],
            enabled=self.args.eval_every > 0,
            resume_step=self.ctx.global_step if self.ctx.resumed_from is not None else None,
        )

    def on_epoch_start(self, epoch: int) -> None:
        self.model.train()

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """lr, the views through encoder and head, CW-RGP's loss, scaled backward, Adam."""
        args, ctx = self.args, self.ctx
        views = [v.to(ctx.device, non_blocking=True) for v in batch[0]]
        if args.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        apply_lr(self.optimizer, cwrgp_lr(ctx.global_step, self.iters_per_epoch, args))
        with autocast(ctx.precision, views[0].device):
            h = self.model.embed_views(views)
        loss = whitened_pairwise_loss(
            h, len(views), w_size=args.w_size, w_iter=args.w_iter, groups=args.group,
            random_groups=args.rand_group, normalize=args.norm,
        )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(self.optimizer)
        ctx.scaler.update()
        return {"loss": loss.detach()}

    def checkpoint_entries(self) -> dict[str, Any]:
        return {"arch": self.args.arch, "state_dict": self.model.original_state_dict()}

    def export(self) -> Export:
        return Export(
            EXPORT,
            method=self.args.method,
            backbone=backbone_config(self.args),
            input_normalization=self.args.dataset,
            input_size=image_size(self.args.dataset),
        )

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        args, ckpt_dir = self.args, Path(self.args.ckpt_dir)
        paths = [ckpt_dir / f"checkpoint_{args.env_name}.pth.tar"]
        if (epoch + 1) % args.save_freq == 0:  # the original's 0-based epoch in the name
            paths.append(ckpt_dir / f"checkpoint_{args.env_name}_{epoch:04d}.pth.tar")
        return paths

    def after_epoch(self, epoch: int, step: int, checkpoint: Path) -> None:
        if evaluation_due(epoch, self.args):
            scores = evaluate(checkpoint, self.args, self.ctx.device, self.args.dataset)
            self.ctx.log.info("epoch %d: acc_knn %.2f acc %.2f acc_5 %.2f", epoch, *scores.values())
            self.eval_log.log(step, epoch=epoch, **scores)

    def finish(self, result: Any) -> None:
        self.eval_log.close()


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    return train_to_checkpoint(CWRGPTrainer(args), args, argv)


def _smoke_flags(data: Path, out: Path) -> list[str]:
    return [
        "--dataset", "npz", "--data_path", str(data), "--ckpt_dir", str(out), "--arch", "resnet18",
        "--width", "4", "--bs", "32", "--w_size", "16", "--emb", "64", "--group", "2", "--head_size", "32",
        "--epochs", "1", "--warmup_iters", "2", "--num_workers", "0", "--eval_every", "0", "--no_progress",
        "--no_tensorboard",
    ]  # fmt: skip


TRAINER = TrainerEntry(
    name="cwrgp",
    prog="cwrgp-train",
    module="selfsup.intl.cwrgp_train",
    parse_args=parse_args,
    method=CWRGPTrainer,
    smoke_flags=_smoke_flags,
    distributed=False,
)


def main(argv: list[str] | None = None) -> int:
    return run_trainer(TRAINER, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
