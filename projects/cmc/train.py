"""``cmc-train``: CMC pre-training (HobbitLong/CMC ``train_CMC.py``), one process, torchrun or Slurm.

Tian, Krishnan and Isola, "Contrastive Multiview Coding" (ECCV 2020, arXiv:1906.05849). Each image is split into
two views, L and ab (``--view Lab``) or Y and CbCr (``--view YCbCr``); one encoder per view
(``--model alexnet`` or ``resnet{18,50,101}v{1,2,3}``) maps it to a unit vector, and each view's features are
scored against the *other* view's memory bank (``--nce_k`` uniform negatives, NCE with the one-time constant Z or
``--softmax`` cross-entropy); the loss is the sum over both directions (:mod:`selfsup.cmc.contrast`,
:mod:`selfsup.cmc.loss`). ``--IM`` adds the Image-Mixture fork's dataset-level mixtures.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from selfsup.cmc.cli import parse_cmc_args
from selfsup.cmc.contrast import CMCContrast
from selfsup.cmc.engine import ContrastTrainer, run_main
from selfsup.cmc.loss import nce_loss, softmax_loss
from selfsup.cmc.model import build_cmc_model
from selfsup.cmc.transforms import cmc_transform


def run_name(args) -> str:
    """The original's model name: ``memory_{nce|softmax}_{K}_{model}_lr_{lr}_decay_{wd}_bsz_{bs}[_amp_{O}]_view_{view}``."""
    name = (
        f"memory_{'softmax' if args.softmax else 'nce'}_{args.nce_k}_{args.model}_lr_{args.learning_rate}"
        f"_decay_{args.weight_decay}_bsz_{args.batch_size}"
    )
    if args.amp:
        name += f"_amp_{args.opt_level}"
    return f"{name}_view_{args.view}"


class CMCTrainer(ContrastTrainer):
    """Two views, two encoders, two memory banks (the original's ``NCEAverage``)."""

    prog = "cmc-train"
    method = "cmc"
    log_fields = ("loss", "l_loss", "ab_loss", "l_prob", "ab_prob")

    def run_name(self) -> str:
        return run_name(self.args)

    def view_transform(self) -> Callable[[Any], torch.Tensor]:
        args = self.args
        return cmc_transform(size=args.image_size, crop_low=args.crop_low, view=args.view)

    def build(self, num_data: int) -> None:
        args = self.args
        self.model = build_cmc_model(args.model, feat_dim=args.feat_dim, cifar_stem=args.cifar_stem)
        self.contrast = CMCContrast(
            num_data=num_data,
            dim=args.feat_dim,
            num_negatives=args.nce_k,
            temperature=args.nce_t,
            momentum=args.nce_m,
            use_softmax=args.softmax,
        )
        self.num_data = num_data

    def step_scalars(
        self, runner: nn.Module, x: torch.Tensor, index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with self.autocast():
            feat_l, feat_ab = runner(x)
        out_l, out_ab = self.contrast(feat_l, feat_ab, index)
        if self.args.softmax:
            l_loss, ab_loss = softmax_loss(out_l), softmax_loss(out_ab)
        else:
            l_loss, ab_loss = nce_loss(out_l, self.num_data), nce_loss(out_ab, self.num_data)
        # the original logs the mean positive "probability" (column 0 of each output)
        return {
            "loss": l_loss + ab_loss,
            "l_loss": l_loss,
            "ab_loss": ab_loss,
            "l_prob": out_l[:, 0].mean(),
            "ab_prob": out_ab[:, 0].mean(),
        }


def main(argv: list[str] | None = None) -> int:
    return run_main(CMCTrainer, parse_cmc_args, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
