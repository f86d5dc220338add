"""SwAV's ``eval_semisup.py`` command line (fine-tuning on 1 % or 10 % of the labels), run by the shared harness.

``python -m selfsup.swav_unmix.eval_semisup --data_path DIR --pretrained CKPT --labels_perc 1|10`` fine-tunes
the whole network with a linear head on the pooled feature (the original's ``projection_head`` with
``hidden_mlp 0``, default init) in train mode (presets ``swav_1pct`` / ``swav_10pct``; spec ``swav_unmix.md``
§7): two SGD parameter groups, trunk ``--lr 0.01`` and head ``--lr_last_layer 0.2``, momentum 0.9, weight decay
0, ×``--gamma 0.2`` at ``--decay_epochs 12 16``, ``--epochs 20``, ``--batch_size 32`` per process, SyncBN under
DDP, RandomResizedCrop 224 + flip / Resize 256 + CenterCrop 224 with SwAV's 0.228 std; the best (top-1, top-5)
by top-1 is reported. As in the original, ``--lr`` and ``--lr_last_layer`` default to the 10 % values for both
subsets; the README's 1 % values (``--lr 0.02 --lr_last_layer 5``) are passed on the command line. The result
goes to ``<--dump_path>/eval_semisup.json``, the labelled subset to ``eval_semisup.subset.txt`` and the model
state after every epoch to ``eval_semisup.state.pth`` (a run restarts from it when it exists).

What is not honoured exactly (besides the notes of :mod:`selfsup.swav_unmix.eval_linear` on ``--pretrained``,
``--arch``, the distributed flags, ``--data_path cifar10|cifar100`` and the written files):

* ImageNet subsets: the SimCLR lists shipped with selfsup (byte-identical) instead of a download at run time.
  Other data (digits, CIFAR, ...): a class-balanced subset of ``--labels_perc`` % of the train images drawn
  with seed 0 (the SimCLR lists exist for ImageNet only).
* SyncBN only on CUDA (SyncBatchNorm has no CPU kernel; the result notes it).
* Un-Mix's CIFAR flags (``--num_labels``, ``--crop_size``) belong to its ``eval_linear.py``; they are accepted
  here too, with the same meaning.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from selfsup.shared.runtime.config import HelpFormatter
from selfsup.swav_unmix.eval_linear import common_parser, data_overrides, resolve_data, run

__all__ = ["build_parser", "main", "protocol"]

#: ``--labels_perc`` -> harness preset.
PRESETS = {"1": "swav_1pct", "10": "swav_10pct"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.swav_unmix.eval_semisup",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
        parents=[common_parser()],
    )
    parser.add_argument(
        "--labels_perc",
        choices=tuple(PRESETS),
        default="10",
        help="fine-tune on 1 %% or 10 %% of the labels (ImageNet: the SimCLR lists, shipped)",
    )
    optim = parser.add_argument_group("optimisation (the original's)")
    optim.add_argument("--epochs", type=int, default=20, help="training epochs")
    optim.add_argument("--batch_size", type=int, default=32, help="batch size per process (global: × world)")
    optim.add_argument(
        "--lr", type=float, default=0.01, help="trunk learning rate (README for 1 %%: 0.02; default 0.01)"
    )
    optim.add_argument(
        "--lr_last_layer",
        type=float,
        default=0.2,
        help="head learning rate (README for 1 %%: 5; default 0.2)",
    )
    optim.add_argument("--decay_epochs", type=int, nargs="+", default=[12, 16], help="lr decay epochs")
    optim.add_argument("--gamma", type=float, default=0.2, help="lr decay factor")
    return parser


def protocol(args: argparse.Namespace, world_size: int = 1) -> dict[str, Any]:
    """The harness preset and overrides equivalent to the original command line."""
    return {
        "preset": PRESETS[args.labels_perc],
        "lr_backbone": args.lr,
        "lr_head": args.lr_last_layer,
        "batch_size": args.batch_size * world_size,
        "test_batch_size": args.batch_size,
        "epochs": args.epochs,
        "schedule": "step",
        "milestones": tuple(args.decay_epochs),
        "gamma": args.gamma,
        **data_overrides(args),
    }


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_data(parser, args)
    return run(parser, args, "semisup", protocol)[0]


if __name__ == "__main__":
    sys.exit(main())
