"""Command line of the MoCo trainer: the unofficial MoCo v1's flags (same names and defaults), the official
MoCo's v2 switches (``--mlp``, ``--aug-plus``, ``--cos``, ``--moco-*`` aliases) and selfsup's common flags."""

from __future__ import annotations

import argparse

from selfsup.shared.runtime.config import HelpFormatter, common_parser, resolve_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moco-train",
        description="MoCo pre-training (unofficial MoCo v1 of eveningglow/MoCo, M0-M3 ablations, MoCo v2 options)",
        parents=[common_parser()],
        formatter_class=HelpFormatter,
    )
    eg = parser.add_argument_group("unofficial MoCo v1 (eveningglow/MoCo train.py)")
    eg.add_argument("--dataset_root", default=None, help="image folder (class sub-folders) or dataset root")
    eg.add_argument("--output_root", default="output", help="results root")
    eg.add_argument(
        "--dataset_name",
        default=None,
        help="sub-folder of --output_root; default: the original's IMAGENET-64 for image folders, "
        "else the --dataset name in capitals (DIGITS, CIFAR10, ...)",
    )
    eg.add_argument("--exp_version", default="v1", help="sub-folder: OUTPUT_ROOT/DATASET_NAME/EXP_VERSION")
    eg.add_argument("--batch_size", type=int, default=256, help="global batch size (split over ranks)")
    eg.add_argument("--lr", type=float, default=0.03, help="initial learning rate")
    eg.add_argument("--SGD_momentum", type=float, default=0.9, help="SGD momentum")
    eg.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay")
    eg.add_argument("--temperature", "--moco-t", dest="temperature", type=float, default=0.07, help="tau")
    eg.add_argument(
        "--momentum", "--moco-m", dest="momentum", type=float, default=0.999, help="key-encoder m"
    )
    eg.add_argument("--shuffle_bn", action="store_true", help="shuffle BN on the key encoder")
    eg.add_argument(
        "--feature_dim", "--moco-dim", dest="feature_dim", type=int, default=128, help="output dim"
    )
    eg.add_argument("--num_keys", "--moco-k", dest="num_keys", type=int, default=4096, help="queue size K")
    eg.add_argument("--resize", type=int, default=84, help="unused in pre-training (kept for compatibility)")
    eg.add_argument("--crop", type=int, default=64, help="RandomResizedCrop size")
    eg.add_argument("--max_epoch", type=int, default=50000, help="number of epochs")
    eg.add_argument("--eval_epoch", type=int, default=10, help="unused in the original; kept")
    eg.add_argument("--plot_iter", type=int, default=1000, help="redraw the loss plot every N iterations")
    eg.add_argument("--save_weight_epoch", type=int, default=10, help="write weight/ckpt_<epoch>.pkl every N")
    eg.add_argument("--num_workers", type=int, default=16, help="data-loading worker processes per rank")
    eg.add_argument("--save_config", action="store_true", help="also write config.yml beside the run")
    eg.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="checkpoint file, or 'auto' (also plain --resume) for the newest one in the run's weight/ folder",
    )
    eg.add_argument(
        "--start_epoch", type=int, default=None, help="with --resume auto: load weight/ckpt_<N>.pkl"
    )
    v2 = parser.add_argument_group("MoCo v2 options (official facebookresearch/moco names)")
    v2.add_argument("--mlp", action="store_true", help="2-layer MLP projection head")
    v2.add_argument("--aug-plus", dest="aug_plus", action="store_true", help="MoCo v2 augmentation")
    v2.add_argument("--cos", action="store_true", help="cosine learning-rate schedule")
    v2.add_argument(
        "--crop-min",
        dest="crop_min",
        type=float,
        default=None,
        help="smallest RandomResizedCrop area fraction (MoCo v3's name); default: the recipe's own, "
        "0.08 for the original's augmentation and 0.2 with --aug-plus",
    )
    v2.add_argument(
        "--schedule",
        type=int,
        nargs="*",
        default=[120, 160],
        help="epochs at which the lr is multiplied by 0.1 (when not --cos)",
    )
    emu = parser.add_argument_group("BN emulation and synchronisation")
    emu.add_argument(
        "--bn_splits",
        type=int,
        default=1,
        help="per-device BN of nn.DataParallel emulated on one device: each encoder's BN normalises this "
        "many sub-batches separately (the original ran on 6 GPUs); needed for --shuffle_bn to matter on one device",
    )
    emu.add_argument(
        "--sync_bn", action="store_true", help="SyncBatchNorm across ranks (then shuffle BN is moot)"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.dataset = resolve_dataset(args)
    if args.dataset_name is None:
        args.dataset_name = "IMAGENET-64" if args.dataset == "imagefolder" else args.dataset.upper()
    checks = {
        "--batch_size": args.batch_size >= 1,
        "--num_keys": args.num_keys >= 1,
        "--max_epoch": args.max_epoch >= 1,
        "--save_weight_epoch": args.save_weight_epoch >= 1,
        "--bn_splits": args.bn_splits >= 1,
        "--crop": args.crop >= 8,
        "--num_workers": args.num_workers >= 0,
        "--lr": args.lr > 0,
        "--temperature": args.temperature > 0,
        "--feature_dim": args.feature_dim >= 1,
    }
    for flag, ok in checks.items():
        if not ok:
            parser.error(f"{flag}: invalid value {getattr(args, flag.lstrip('-'))}")
    if not 0.0 <= args.momentum <= 1.0:
        parser.error(f"--momentum must lie in [0, 1], got {args.momentum}")
    if args.dataset == "imagefolder" and not args.dataset_root:
        parser.error("--dataset imagefolder needs --dataset_root (a folder with one sub-folder per class)")
    if args.dataset in ("npz",) and not args.dataset_root:
        parser.error("--dataset npz needs --dataset_root pointing at the .npz file")
    if args.start_epoch is not None and args.resume not in (None, "auto"):
        parser.error("--start_epoch goes with --resume auto (or no --resume), not with a checkpoint path")
    return args
