"""``cmc-train``: CMC pre-training (HobbitLong/CMC ``train_CMC.py``), one process, torchrun or Slurm.

Tian, Krishnan and Isola, "Contrastive Multiview Coding" (ECCV 2020, arXiv:1906.05849). Each image is split into
two views, L and ab (``--view Lab``) or Y and CbCr (``--view YCbCr``); one encoder per view
(``--model alexnet`` or ``resnet{18,50,101}v{1,2,3}``, :mod:`.model`) maps it to a unit vector, and each view's
features are scored against the *other* view's memory bank (:class:`~selfsup.cmc.contrast.CMCContrast`); the
objective, NCE with the one-time constant Z or ``--softmax`` cross-entropy summed over both directions, is
:func:`selfsup.cmc.loss.cmc_objective`. Each rank draws its ``--nce_k`` negatives from a generator of its own
(:class:`~selfsup.cmc.common.NegativeDraws`). ``--IM`` adds the Image-Mixture fork's dataset-level mixtures. The run
layout and checkpoints are the original's (:mod:`.common`), on the shared trainer runtime.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from selfsup.cmc import common
from selfsup.cmc.cli import parse_cmc_args
from selfsup.cmc.contrast import CMCContrast
from selfsup.cmc.loss import cmc_objective
from selfsup.cmc.model import build_cmc_model
from selfsup.cmc.transforms import cmc_transform
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.precision import autocast
from selfsup.shared.runtime.registry import TrainerEntry
from selfsup.shared.runtime.trainer import Export, Parts, RunContext, RunLayout, train_to_checkpoint


def run_name(args: argparse.Namespace) -> str:
    """The original's model name: ``memory_{nce|softmax}_{K}_{model}_lr_{lr}_decay_{wd}_bsz_{bs}[_amp_{O}]_view_{view}``."""
    name = (
        f"memory_{'softmax' if args.softmax else 'nce'}_{args.nce_k}_{args.model}_lr_{args.learning_rate}"
        f"_decay_{args.weight_decay}_bsz_{args.batch_size}"
    )
    if args.amp:
        name += f"_amp_{args.opt_level}"
    return f"{name}_view_{args.view}"


class CMCTrainer:
    """Two views, two encoders, two memory banks (the original's ``NCEAverage``), SGD."""

    prog = "cmc-train"
    project = "cmc"
    method = "cmc"
    log_fields = ("loss", "l_loss", "ab_loss", "l_prob", "ab_prob")

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = Path(args.model_path) / run_name(args)

    def layout(self, args: argparse.Namespace) -> RunLayout:
        return common.run_layout(args, run_name(args), self.log_fields)

    def resolve_precision(self, args: argparse.Namespace, device: torch.device) -> str:
        return common.amp_precision(args, device)

    def build(self, ctx: RunContext) -> Parts:
        args = self.args
        self.ctx, self.record = ctx, ctx.record
        view = cmc_transform(size=args.image_size, crop_low=args.crop_low, view=args.view)
        self.data = common.training_set(args, ctx.env, view)
        self.build_modules(len(self.data.dataset))  # type: ignore[arg-type]
        self.channels_last = common.prepare_encoders(
            {"model": self.model}, (self.contrast,), args, ctx.device, speed_flags=True
        )
        self.sgd = common.ScaledSGD.build(self.model, args, ctx.scaler)
        self.negatives = common.NegativeDraws(args.seed, ctx.env)
        return Parts(
            self.data, self.model, self.sgd.optimizer, args.epochs, args.print_freq, broadcast_buffers=False
        )

    def build_modules(self, num_data: int) -> None:
        """The two-stream encoder and the contrast of ``num_data`` memory rows (in this order: the RNG)."""
        args = self.args
        self.num_data = num_data
        self.model = build_cmc_model(args.model, feat_dim=args.feat_dim, cifar_stem=args.cifar_stem)
        self.contrast = CMCContrast(
            num_data=num_data,
            dim=args.feat_dim,
            num_negatives=args.nce_k,
            temperature=args.nce_t,
            momentum=args.nce_m,
            use_softmax=args.softmax,
        )

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "contrast": self.contrast}

    def restore(self, ckpt: dict[str, Any]) -> None:
        common.restore_modules(ckpt, self.modules(), method=self.method, args=self.args)
        self.negatives.load(ckpt, self.ctx.log)

    def on_epoch_start(self, epoch: int) -> None:
        common.set_epoch_lr(self.sgd.optimizer, self.args, epoch)
        self.model.train()

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Both encoders (autocast), both memory banks' scores and updates, ``L_CMC``, SGD."""
        x, index = common.batch_inputs(batch, self.ctx.device, self.channels_last)
        with autocast(self.ctx.precision, self.ctx.device):
            feat_l, feat_ab = self.runner(x)
        out_l, out_ab = self.contrast(feat_l, feat_ab, index, generator=self.negatives.generator)
        scalars = cmc_objective(out_l, out_ab, softmax=self.args.softmax, num_data=self.num_data)
        self.sgd.backward(scalars["loss"])
        self.sgd.step()
        return scalars

    def checkpoint_entries(self) -> dict[str, Any]:
        original = {
            "model": self.model.original_state_dict(),
            "contrast": self.contrast.original_state_dict(),
        }
        entries = common.original_checkpoint(original, self.modules(), self.record)
        return {**entries, common.NEGATIVES_KEY: self.negatives.state()}

    def export(self) -> Export:
        return Export({"original_format": "cmc"}, method=self.method, input_size=self.args.image_size)

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        return common.epoch_checkpoints(self.args, self.run_dir, epoch)


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    return train_to_checkpoint(CMCTrainer(args), args, argv)


def _smoke_flags(data: Path, out: Path) -> list[str]:
    return [
        "--dataset", "npz", "--data_folder", str(data), "--model_path", str(out), "--tb_path", str(out / "tb"),
        "--model", "resnet18v1", "--image_size", "16", "--batch_size", "64", "--nce_k", "64", "--epochs", "1",
        "--num_workers", "0", "--print_freq", "1", "--no_progress", "--no_tensorboard",
    ]  # fmt: skip


TRAINER = TrainerEntry(
    name="cmc",
    prog="cmc-train",
    module="selfsup.cmc.train",
    parse_args=parse_cmc_args,
    method=CMCTrainer,
    smoke_flags=_smoke_flags,
    run_record_keys=("args", "opt"),
)


def main(argv: list[str] | None = None) -> int:
    return run_trainer(TRAINER, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
