"""``swav-unmix-train``: SwAV with Un-Mix (``main_swav_unmix.py``), one process, torchrun or Slurm.

The set-up of :class:`SwAVUnMixTrainer` on the shared runtime (:mod:`selfsup.shared.runtime.trainer`): the views
are in :mod:`.transforms`, the network in :mod:`.model`, the objectives in :mod:`.loss` (codes: :mod:`.codes`,
mixtures: :mod:`.unmix`), the schedule in :mod:`.schedules`. Per iteration (spec ``swav_unmix.md`` §3-5): the
rate of the warm-up + cosine array; the prototypes re-normalised; with Un-Mix (``--run_swav false``) the mixed
crops; one forward of all crops; the loss; backward (loss scaling for fp16); prototype gradients dropped for the
first ``--freeze_prototypes_niters`` iterations; a LARC step (trust 0.001, no clip, every parameter).

Outputs in ``--dump_path`` (the original's layout): ``checkpoint.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``) with the original's ``epoch``, ``state_dict``
(``module.``-prefixed) and ``optimizer`` next to every rank's queue and selfsup's schema;
``checkpoints/ckp-<epoch>.pth`` every ``--checkpoint_freq`` epochs and at the end; ``queue<rank>.pth``
(``{"queue": ...}``); ``config.json``, ``log.csv`` and ``tb/``. A run restarts automatically from
``checkpoint.pth.tar`` when it exists, as the original does. Registered twice (``swav``, ``unmix``): one trainer,
``--run_swav true|false``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.data import SeededTransformDataset, build_dataset
from selfsup.shared.distributed import DistEnv, sync_batchnorm_on
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import apply_lr
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.precision import autocast, prepare_model, resolve_precision
from selfsup.shared.runtime.registry import TrainerEntry
from selfsup.shared.runtime.trainer import (
    Export,
    Parts,
    RunContext,
    RunLayout,
    train_to_checkpoint,
    training_data,
)
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.loss import swav_loss, unmix_loss
from selfsup.swav_unmix.model import SwAVModel
from selfsup.swav_unmix.queue import EmbeddingQueue, effective_queue_length, gather_queues, rank_queue
from selfsup.swav_unmix.schedules import warmup_cosine_schedule
from selfsup.swav_unmix.transforms import input_normalization, multicrop_transform
from selfsup.swav_unmix.unmix import mix_crops

__all__ = ["SWAV", "UNMIX", "SwAVUnMixTrainer", "backbone_config", "build_model", "main", "train"]

LAST_CHECKPOINT = "checkpoint.pth.tar"


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(
        name=args.arch, width=args.width, cifar_stem=args.cifar_stem, stem_padding=args.stem_padding
    )


def build_model(args: argparse.Namespace) -> SwAVModel:
    return SwAVModel(
        backbone_config(args),
        hidden_mlp=args.hidden_mlp,
        feat_dim=args.feat_dim,
        nmb_prototypes=args.nmb_prototypes,
        forward_mode=args.forward_mode,
    )


def run_precision(args: argparse.Namespace, device: torch.device) -> str:
    """``--precision`` when given; else ``--use_fp16 true``: fp16 on CUDA (apex O1 in the original), bf16 on a
    CPU with native bf16, fp32 otherwise; ``--use_fp16 false``: fp32."""
    if args.precision is not None:
        return resolve_precision(args.precision, device)
    if not args.use_fp16:
        return "fp32"
    return "fp16" if device.type == "cuda" else resolve_precision("auto", device)


def _sync_bn(model: nn.Module, args: argparse.Namespace, env: DistEnv, log: logging.Logger) -> nn.Module:
    """SyncBN over all ranks (``--sync_bn pytorch``) or groups of ``--syncbn_process_group_size``
    (``apex``); not on CPU, where torch has no SyncBN kernel (each rank then normalises its own batch)."""
    if not env.is_distributed or env.device.type == "cpu":
        return sync_batchnorm_on(model, env.device, log)
    group = None
    if args.sync_bn == "apex":
        size = args.syncbn_process_group_size
        if env.world_size % size:
            raise ValueError(
                f"--syncbn_process_group_size {size} does not divide the world size {env.world_size}"
            )
        group, _ = dist.new_subgroups(size)
    return sync_batchnorm_on(model, env.device, log, group)


class SwAVUnMixTrainer:
    """SwAV / Un-Mix on the runtime: multi-crop data, trunk + head + prototypes, per-rank queue, LARC."""

    prog = "swav-unmix-train"
    project = "swav_unmix"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.dump_path)
        self.queue: EmbeddingQueue | None = None
        self.resumed_at = (0, 0)  # (epoch, iteration) of the checkpoint the run restarted from

    def layout(self, args: argparse.Namespace) -> RunLayout:
        terms = () if args.run_swav else ("loss_ori", "loss_mix", "loss_mix_rev", "lam")
        return RunLayout(
            run_dir=self.out,
            last_checkpoint=self.out / LAST_CHECKPOINT,
            resume="auto",  # the original restarts from dump_path/checkpoint.pth.tar by itself
            resume_flag="--dump_path",
            data_flag="--data_path",
            config_files=(self.out / "config.json",),
            csv_log=self.out / "log.csv",
            tensorboard_dir=self.out / "tb",
            log_fields=("loss", *terms),
            record_name="SwAVUnMixConfig",
        )

    def resolve_precision(self, args: argparse.Namespace, device: torch.device) -> str:
        return run_precision(args, device)

    def build(self, ctx: RunContext) -> Parts:
        args, env = self.args, ctx.env
        self.ctx = ctx
        data = build_dataset(
            args.dataset,
            root=args.data_path,
            split="train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        )
        dataset = SeededTransformDataset(data, multicrop_transform(args), seed=args.seed)
        self.data = training_data(
            dataset,
            env=env,
            per_rank_batch=args.batch_size,
            seed=args.seed,
            num_workers=args.workers,
            drop_last=True,
        )
        self.lr_schedule = warmup_cosine_schedule(
            args.base_lr,
            args.final_lr,
            args.epochs,
            self.data.iters_per_epoch(env.world_size),
            args.warmup_epochs,
            args.start_warmup,
        )
        self.model = model = _sync_bn(build_model(args), args, env, ctx.log).to(env.device)
        prepare_model(model, channels_last=args.channels_last, compile_model=args.compile)
        self.optimizer = build_optimizer(
            "larc",
            model.parameters(),
            lr=args.base_lr,
            momentum=0.9,
            weight_decay=args.wd,
            eta=0.001,
            clip=False,
        )
        self.queue_length = effective_queue_length(args.queue_length, args.batch_size, env.world_size)
        if args.queue_length and not self.queue_length:
            ctx.log.warning(
                "--queue_length %d is shorter than the global batch %d: no queue (as in the original)",
                args.queue_length,
                args.batch_size * env.world_size,
            )
        return Parts(self.data, model, self.optimizer, args.epochs, args.log_every)

    def _new_queue(self) -> EmbeddingQueue:
        rows = self.queue_length // self.ctx.env.world_size
        return EmbeddingQueue(len(self.args.crops_for_assign), rows, self.args.feat_dim).to(self.ctx.device)

    def restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self.model.load_original_state_dict(ckpt["state_dict"])
            self.queue = rank_queue(ckpt, self.ctx.env.rank, self.ctx.env.world_size, self._new_queue)
        except ValueError as err:
            raise ValueError(f"{self.out / LAST_CHECKPOINT}: {err}") from err
        self.resumed_at = (int(ckpt["epoch"]), int(ckpt["iteration"]))

    # ------------------------------------------------------------------ the step
    def on_epoch_start(self, epoch: int) -> None:
        self.model.train()
        if self.queue_length > 0 and epoch >= self.args.epoch_queue_starts and self.queue is None:
            self.queue = self._new_queue()
            self.ctx.log.info(
                "epoch %d: queue of %d embeddings per rank started", epoch, self.queue.queue.shape[1]
            )
        if self.queue is not None and not (epoch == self.resumed_at[0] and self.resumed_at[1] > 0):
            self.queue.reset_use()  # a resumed epoch keeps the flag it was saved with

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One iteration of ``main_swav_unmix.py``'s ``train``; ``ctx.global_step`` is the iteration."""
        args, model, optimizer, scaler = self.args, self.model, self.optimizer, self.ctx.scaler
        iteration = self.ctx.global_step
        apply_lr(optimizer, float(self.lr_schedule[iteration]))
        model.normalize_prototypes()
        crops = [c.to(self.ctx.device, non_blocking=True) for c in batch[0]]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        mixed = None if args.run_swav else mix_crops(crops, unmix_prob=args.unmix_prob, beta=args.unmix_beta)
        with autocast(self.ctx.precision, crops[0].device):
            embedding, scores = self.runner(crops if mixed is None else mixed.crops)
        swav = dict(
            batch_size=crops[0].shape[0],
            prototypes=model.prototypes.weight.detach(),
            crops_for_assign=args.crops_for_assign,
            queue=self.queue,
            temperature=args.temperature,
            epsilon=args.epsilon,
            sinkhorn_iterations=args.sinkhorn_iterations,
        )
        if mixed is None:
            scalars = {"loss": swav_loss(scores, embedding.detach(), **swav)}
        else:
            scalars = unmix_loss(scores, embedding.detach(), mixed.lam, **swav)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scalars["loss"]).backward()
        if iteration < args.freeze_prototypes_niters:
            for name, p in model.named_parameters():
                if "prototypes" in name:
                    p.grad = None
        scaler.step(optimizer)
        scaler.update()
        return scalars

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_entries(self) -> dict[str, Any]:
        return {
            "state_dict": self.model.original_state_dict(),
            **gather_queues(self.queue, self.ctx.env.world_size),
        }

    def export(self) -> Export:
        return Export(
            {
                "state_dict_location": "state_dict",
                "prefix": "module.",
                "drop_prefixes": ["projection_head.", "prototypes."],
            },
            method="swav" if self.args.run_swav else "unmix",
            backbone=backbone_config(self.args),
            input_normalization=input_normalization(self.args),
            input_size=max(self.args.size_crops),
        )

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        paths = [self.out / LAST_CHECKPOINT]
        if epoch % self.args.checkpoint_freq == 0 or epoch == self.args.epochs - 1:
            paths.append(self.out / "checkpoints" / f"ckp-{epoch}.pth")
        return paths

    def after_save(self, path: Path) -> None:
        if self.queue is not None:
            atomic_save(
                {"queue": self.queue.queue.detach().cpu()}, self.out / f"queue{self.ctx.env.rank}.pth"
            )


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    return train_to_checkpoint(SwAVUnMixTrainer(args), args, argv)


def _smoke_flags(data: Path, out: Path, *, variant: tuple[str, ...]) -> list[str]:
    return [
        "--dataset", "npz", "--data_path", str(data), "--dump_path", str(out), "--arch", "resnet18",
        "--width", "8", "--cifar_stem", "--size_crops", "16", "8", "--nmb_crops", "2", "2",
        "--min_scale_crops", "0.3", "0.1", "--max_scale_crops", "1", "0.3", "--batch_size", "32",
        "--nmb_prototypes", "20", "--hidden_mlp", "32", "--feat_dim", "16", "--epochs", "1",
        "--warmup_epochs", "0", "--freeze_prototypes_niters", "2", "--workers", "0", "--use_fp16", "false",
        "--no_progress", "--no_tensorboard", *variant,
    ]  # fmt: skip


def _entry(name: str, variant: tuple[str, ...]) -> TrainerEntry:
    return TrainerEntry(
        name=name,
        prog="swav-unmix-train",
        module="selfsup.swav_unmix.train",
        parse_args=parse_args,
        method=SwAVUnMixTrainer,
        smoke_flags=partial(_smoke_flags, variant=variant),
        resume_flags=(),  # always restarts from --dump_path/checkpoint.pth.tar
    )


SWAV = _entry("swav", ("--run_swav", "true"))
UNMIX = _entry("unmix", ("--run_swav", "false", "--unmix_prob", "0.5"))


def main(argv: list[str] | None = None) -> int:
    return run_trainer(SWAV, argv)  # both entries parse and train alike; --run_swav picks the method


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
