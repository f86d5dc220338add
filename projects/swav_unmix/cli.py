"""Command line of ``swav-unmix-train``: ``main_swav_unmix.py``'s flags with its defaults (spec ``swav_unmix.md`` §6).

Booleans take the original's ``bool_flag`` spellings (``--use_fp16 true``, ``--run_swav False``). selfsup's common
flags (dataset, precision, device, run control) come through argparse ``parents=``. ``--data_path`` is the
training image folder (the original passes ``.../imagenet/train``); ``cifar10`` / ``cifar100`` select those
datasets as the Un-Mix CIFAR code does; without it the embedded digits are used.
"""

from __future__ import annotations

import argparse

from selfsup.shared.data import DATASET_NAMES
from selfsup.shared.runtime.config import HelpFormatter, common_parser

__all__ = ["FORWARD_MODES", "bool_flag", "build_parser", "parse_args"]

#: How crops go through the trunk: one call per run of equal resolutions (the original), or one call per crop.
FORWARD_MODES = ("grouped", "per_crop")
#: ``--data_path`` values that name a dataset instead of a folder (the Un-Mix CIFAR code).
NAMED_DATA_PATHS = ("cifar10", "cifar100")

_TRUE = {"on", "true", "1", "yes"}
_FALSE = {"off", "false", "0", "no"}


def bool_flag(text: str) -> bool:
    """SwAV's ``bool_flag``: on/true/1 or off/false/0 (any case)."""
    lowered = str(text).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, on/off, 1/0), got {text!r}")


def build_parser(prog: str = "swav-unmix-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="SwAV pre-training with Un-Mix image mixtures (main_swav_unmix.py), on one process, "
        "under torchrun or Slurm.",
        formatter_class=HelpFormatter,
        parents=[common_parser(root_flag="--data_path")],
    )
    data = parser.add_argument_group("data (the original's flags)")
    data.add_argument(
        "--data_path",
        default=None,
        help="training image folder (class sub-folders), or cifar10/cifar100; default: the embedded digits",
    )
    data.add_argument("--nmb_crops", type=int, nargs="+", default=[2], help="crops per resolution")
    data.add_argument("--size_crops", type=int, nargs="+", default=[224], help="side of each resolution")
    data.add_argument(
        "--min_scale_crops", type=float, nargs="+", default=[0.14], help="RandomResizedCrop min"
    )
    data.add_argument("--max_scale_crops", type=float, nargs="+", default=[1.0], help="RandomResizedCrop max")
    data.add_argument(
        "--cifar_aug",
        type=bool_flag,
        default=None,
        help="the Un-Mix CIFAR code's views (colour strength 0.5, no blur, CIFAR mean/std); "
        "default: on for --data_path cifar10|cifar100",
    )

    swav = parser.add_argument_group("SwAV")
    swav.add_argument("--crops_for_assign", type=int, nargs="+", default=[0, 1], help="crops that get codes")
    swav.add_argument("--temperature", type=float, default=0.1, help="softmax temperature τ")
    swav.add_argument("--epsilon", type=float, default=0.05, help="Sinkhorn regularisation ε")
    swav.add_argument("--sinkhorn_iterations", type=int, default=3, help="Sinkhorn-Knopp iterations")
    swav.add_argument("--feat_dim", type=int, default=128, help="embedding dimension")
    swav.add_argument("--nmb_prototypes", type=int, default=3000, help="number of prototypes")
    swav.add_argument("--queue_length", type=int, default=0, help="queue length over all ranks (0: none)")
    swav.add_argument("--epoch_queue_starts", type=int, default=15, help="epoch at which the queue starts")

    unmix = parser.add_argument_group("Un-Mix")
    unmix.add_argument(
        "--run_swav", type=bool_flag, default=False, help="true: plain SwAV; false: SwAV with Un-Mix"
    )
    unmix.add_argument(
        "--unmix_prob",
        type=float,
        default=0.0,
        help="probability of the global (mixup) mixture per iteration; else region (CutMix)",
    )
    unmix.add_argument("--unmix_beta", type=float, default=1.0, help="λ ~ Beta(β, β)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=100, help="training epochs")
    optim.add_argument("--batch_size", type=int, default=64, help="batch size per rank")
    optim.add_argument("--base_lr", type=float, default=4.8, help="learning rate after warm-up")
    optim.add_argument("--final_lr", type=float, default=0.0, help="final learning rate of the cosine")
    optim.add_argument(
        "--freeze_prototypes_niters", type=int, default=313, help="iterations with frozen prototypes"
    )
    optim.add_argument("--wd", type=float, default=1e-6, help="weight decay")
    optim.add_argument("--warmup_epochs", type=int, default=10, help="linear warm-up epochs")
    optim.add_argument(
        "--start_warmup", type=float, default=0.0, help="learning rate at the start of warm-up"
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--hidden_mlp", type=int, default=2048, help="hidden units of the projection head (0: linear)"
    )
    model.add_argument(
        "--stem_padding",
        type=int,
        default=None,
        help="conv1 zero padding (the Un-Mix CIFAR code pads by 2: ConstantPad2d(1) + padding 1); "
        "default: 3, or 1 with --cifar_stem",
    )
    model.add_argument(
        "--checkpoint_freq", type=int, default=25, help="keep checkpoints/ckp-<epoch>.pth every N"
    )
    model.add_argument(
        "--use_fp16",
        type=bool_flag,
        default=True,
        help="mixed precision: fp16 autocast with loss scaling on "
        "CUDA, bf16 on a CPU with native bf16 (else fp32); --precision overrides",
    )
    model.add_argument("--sync_bn", choices=("pytorch", "apex"), default="pytorch", help="SyncBN flavour")
    model.add_argument(
        "--syncbn_process_group_size",
        type=int,
        default=8,
        help="ranks per SyncBN group with --sync_bn apex (pytorch: all ranks)",
    )
    model.add_argument("--dump_path", default=".", help="run folder: checkpoints, queues, logs")
    model.add_argument(
        "--forward_mode",
        choices=FORWARD_MODES,
        default="grouped",
        help="grouped: one trunk call per resolution (the original; BN statistics over the group); "
        "per_crop: one call per crop",
    )

    dist = parser.add_argument_group("distributed (read from the torchrun/Slurm environment)")
    dist.add_argument("--dist_url", default="env://", help="accepted; the address comes from the environment")
    dist.add_argument("--world_size", type=int, default=-1, help="accepted; set from the environment")
    dist.add_argument("--rank", type=int, default=0, help="accepted; set from the environment")
    dist.add_argument("--local_rank", type=int, default=0, help="accepted; set from the environment")
    dist.add_argument("--workers", type=int, default=10, help="data-loading workers per rank")
    parser.set_defaults(seed=31, precision=None, arch="resnet50")
    return parser


def _same_lengths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    n = len(args.nmb_crops)
    for flag in ("size_crops", "min_scale_crops", "max_scale_crops"):
        if len(getattr(args, flag)) != n:
            parser.error(f"--{flag} needs one value per --nmb_crops entry ({n}), got {getattr(args, flag)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    _same_lengths(parser, args)
    total = sum(args.nmb_crops)
    if any(n < 1 for n in args.nmb_crops):
        parser.error(f"--nmb_crops must be positive, got {args.nmb_crops}")
    if any(not 0 <= c < total for c in args.crops_for_assign):
        parser.error(f"--crops_for_assign must index the {total} crops, got {args.crops_for_assign}")
    if total < 2:
        parser.error(
            "--nmb_crops must give at least 2 crops in total (each code is predicted from another crop)"
        )
    if not args.run_swav and any(n % 2 for n in args.nmb_crops):
        parser.error(
            f"--nmb_crops {args.nmb_crops}: Un-Mix mixes crops in pairs of the same resolution, so each entry "
            "must be even (or pass --run_swav true)"
        )
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.unmix_prob <= 1.0:
        parser.error(f"--unmix_prob must be in [0, 1], got {args.unmix_prob}")
    if args.unmix_beta <= 0:
        parser.error(f"--unmix_beta must be > 0, got {args.unmix_beta}")
    if args.data_path in NAMED_DATA_PATHS:
        if args.dataset is None:
            args.dataset = args.data_path
        args.data_path = None
    if args.dataset is None:
        args.dataset = "imagefolder" if args.data_path else "digits"
    if args.dataset not in DATASET_NAMES:
        parser.error(f"--dataset {args.dataset!r} unknown")
    if args.cifar_aug is None:
        args.cifar_aug = args.dataset in NAMED_DATA_PATHS
    return args
