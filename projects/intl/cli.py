"""Command line of ``intl-train``: ``winci-ai/INTL`` ``cfg.py`` flags with their defaults (spec ``intl.md`` §6).

selfsup's common flags come through argparse ``parents=`` (without their ``--arch``: INTL's own ``-a/--arch`` names
its networks, ``resnet50x2`` and the like included). ``--dataset imagenet|in100`` (the original's) name an image
folder at ``--data_path``; ``cifar10``/``cifar100`` select those datasets; with neither, the embedded digits.
``--cifar`` applies ``cifar/main.py``'s recipe (weight decay on every parameter, fp32, the dataset's mean/std).
"""

from __future__ import annotations

import argparse

from selfsup.intl.transforms import MULTI_CROP
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.config import HelpFormatter, common_parser, resolve_dataset

__all__ = ["ARCH_ALIASES", "build_parser", "parse_args"]

#: INTL's names of the wide ResNets -> selfsup's.
ARCH_ALIASES = {"resnet50x2": "resnet50w2", "resnet50x4": "resnet50w4", "resnet50x5": "resnet50w5"}
ORIGINAL_DATASETS = ("imagenet", "in100")
METHODS = ("intl", "intl_m")


def _arch(text: str) -> str:
    name = ARCH_ALIASES.get(text, text)
    if name not in ARCHITECTURES:
        known = sorted({*ARCHITECTURES, *ARCH_ALIASES})
        raise argparse.ArgumentTypeError(f"unknown architecture {text!r}; expected one of {', '.join(known)}")
    return name


def build_parser(prog: str = "intl-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="INTL pre-training (winci-ai/INTL main.py): IterNorm whitening with the trace loss, "
        "optionally with an EMA target and multi-crop, on one process, under torchrun or Slurm.",
        formatter_class=HelpFormatter,
        parents=[common_parser(dataset_aliases=ORIGINAL_DATASETS, root_flag="--data_path", backbone=False)],
    )
    g = parser.add_argument_group("the original's flags (cfg.py)")
    g.add_argument(
        "-a", "--arch", type=_arch, default="resnet50", help="backbone (resnet50x2 = resnet50w2, ...)"
    )
    g.add_argument("--data_path", default=None, help="ImageNet-style folder (train/ and val/)")
    g.add_argument(
        "-j", "--workers", type=int, default=24, help="data-loading workers in all (divided by ranks)"
    )
    g.add_argument("--epochs", type=int, default=100, help="training epochs")
    g.add_argument(
        "--start-epoch", type=int, default=0, help="parsed; a resumed run takes it from the checkpoint"
    )
    g.add_argument("--bs", type=int, default=256, help="global batch size (divided by ranks)")
    g.add_argument("--lr", type=float, default=0.5, help="base learning rate, scaled by --bs/256")
    g.add_argument(
        "--wd", "--weight-decay", dest="wd", type=float, default=1e-5, help="weight decay (not on 1-D params)"
    )
    g.add_argument(
        "-p", "--print-freq", dest="print_freq", type=int, default=100, help="log every N iterations"
    )
    g.add_argument("--resume", default="", help="checkpoint to resume from, or 'auto' (the run's newest)")
    g.add_argument(
        "--world-size", dest="world_size", type=int, default=1, help="accepted; from the environment"
    )
    g.add_argument("--rank", type=int, default=0, help="accepted; from the environment")
    g.add_argument(
        "--dist-url", dest="dist_url", default="tcp://localhost:10001", help="accepted; from the environment"
    )
    g.add_argument("--dist-backend", dest="dist_backend", default=None, help="torch.distributed backend")
    g.add_argument("--method", choices=METHODS, default="intl", help="intl, or intl_m (EMA target)")
    g.add_argument("--env_name", default="INTL", help="run name: ckpt_<env_name>.pth.tar")
    g.add_argument("--iters", type=int, default=4, help="IterNorm Newton iterations T")
    g.add_argument("--warmup_eps", type=int, default=2, help="warm-up epochs")
    g.add_argument("--nmb_crops", type=int, nargs="+", default=[1, 1], help="crops per entry")
    g.add_argument("--crops_size", type=int, nargs="+", default=[224, 224], help="crop sides")
    g.add_argument(
        "--min_scale_crops", type=float, nargs="+", default=[0.08, 0.08], help="RandomResizedCrop min"
    )
    g.add_argument(
        "--max_scale_crops", type=float, nargs="+", default=[1.0, 1.0], help="RandomResizedCrop max"
    )
    g.add_argument(
        "--gaussian_prob", type=float, nargs="+", default=[1.0, 0.1], help="blur probability per entry"
    )
    g.add_argument(
        "--solarization_prob", type=float, nargs="+", default=[0.0, 0.2], help="solarize probability"
    )
    g.add_argument(
        "--multi-crop", dest="multi_crop", action="store_true", help="2x224, 192, 160, 128, 96 crops"
    )
    g.add_argument("--projection_layers", type=int, default=3, help="projector layers")
    g.add_argument("--projection_size", type=int, default=8192, help="projector hidden units")
    g.add_argument("--emb", type=int, default=8192, help="embedding dimension")
    g.add_argument("--m", type=float, default=0.996, help="base EMA momentum (intl_m), cosine-scheduled to 1")
    g.add_argument(
        "--axis", type=int, choices=(0, 1), default=0, help="0: per-sample centring, N x N; 1: D x D"
    )
    ours = parser.add_argument_group("selfsup additions")
    ours.add_argument(
        "--spectral_power",
        type=float,
        default=None,
        help="replace IterNorm by the exact spectral transform Σ^p (eigendecomposition; -0.5 = whitening)",
    )
    ours.add_argument("--ckpt_dir", default="ckpt", help="checkpoint folder (the original's ./ckpt)")
    ours.add_argument(
        "--cifar",
        action="store_true",
        help="cifar/main.py's recipe: weight decay on every parameter, fp32, the dataset's mean/std",
    )
    ours.add_argument("--stem_padding", type=int, default=None, help="conv1 padding (INTL's CIFAR stem: 2)")
    ours.add_argument(
        "--width", type=int, default=None, help="base width of the ResNet (default: the arch's)"
    )
    ours.add_argument(
        "--save_freq", type=int, default=100, help="keep ckpt_<env>_<epoch>.pth.tar every N epochs"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.multi_crop:
        for key, value in MULTI_CROP.items():
            setattr(args, key, list(value))
    lists = (
        "nmb_crops",
        "crops_size",
        "min_scale_crops",
        "max_scale_crops",
        "gaussian_prob",
        "solarization_prob",
    )
    lengths = {name: len(getattr(args, name)) for name in lists}
    if len(set(lengths.values())) != 1:
        parser.error(f"the crop flags need one value per --nmb_crops entry, got {lengths}")
    if sum(args.nmb_crops) < 2:
        parser.error(f"--nmb_crops {args.nmb_crops}: INTL needs at least 2 crops")
    if args.bs < 2:
        parser.error(f"--bs must be >= 2, got {args.bs}")
    if args.iters < 0:
        parser.error(f"--iters must be >= 0, got {args.iters}")
    if args.m < 0 or args.m > 1:
        parser.error(f"--m must be in [0, 1], got {args.m}")
    args.original_dataset = args.dataset
    args.dataset = resolve_dataset(args, root_flag="data_path", aliases=ORIGINAL_DATASETS)
    return args
