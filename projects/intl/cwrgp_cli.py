"""Command line of ``cwrgp-train``: the flags of ``winci-ai/CW-RGP`` ``base/cfg.py`` (W-MSE's ``cfg.py`` grown
by CW-RGP) that concern ``--method cwrgp``, with their defaults (spec ``intl.md`` App. A).

Defaults and where they come from:

* CW-RGP ``base/cfg.py`` (read at commit ``0f13221``): ``--num_samples 2``, ``--lr 1e-3``, ``--weight_decay``
  1e-6 (W-MSE's ``--adam_l2`` is accepted as an alias), ``--warmup_iters 500``, ``--lr_step step``,
  ``--drop 50 25``, ``--drop_gamma 0.2``, ``--eta_min 0``, ``--T0`` (= ``--epochs``), ``--Tmult 1``, ``--w_eps 0``,
  ``--head_layers 2``, ``--head_size 1024``, ``--w_size 128``, ``--w_iter 1``, ``--emb 512``, ``--bs 512``,
  ``--epochs 200``, ``--eval_every 10``, ``--eval_every_drop 5``, ``--knn 5``, ``--arch resnet18``,
  ``--num_workers 12``, ``--env_name CWRG``, ``--axis 0``, ``--minus 1``, ``--group 1``, ``--seed 1``, the
  augmentation flags ``--cj0 .. --hf_p`` (0.4, 0.4, 0.4, 0.1, p 0.8; grey 0.1; crop scale 0.2-1, ratio 3/4-4/3;
  flip 0.5);
* the spec (App. A): ``--method cwrgp`` (``cfg.py`` at ``0f13221`` still defaults to ``cwrg``, an identical
  class: both names are accepted and run the same code);
* W-MSE's ``cfg.py``: ``--no_lr_warmup`` (here: ``--warmup_iters 0``);
* selfsup: ``--dataset`` (none given: the embedded ``digits``, or an image folder with ``--data_path``;
  ``tiny_in`` is an image folder at ``--data_path``), ``--ckpt_dir .`` (the original writes into the working
  directory), ``--save_freq 500``, ``--width``, ``--resume auto``, ``--eval_every 0`` = no evaluation, and the
  common flags (``--precision fp32``, ``--device``, ``--max_iters``, ...).

Flags of ``cfg.py`` that select what ``cwrgp-train`` does not implement are refused with a one-line error naming
the flag: ``--no_add_bn``, ``--no_head``, ``--axis 1``, ``--minus`` other than 1, ``--w_eps`` other than 0,
``--dataset in100`` and augmentation values other than the defaults (``--crop_s0`` is supported). Flags of other
methods (``--tau``, ``--byol_tau``, ``--barlow_lambda``, ``--vicreg_*``) and of ``test.py`` (``--clf``,
``--eval_head``, ``--fname``) are not accepted.
"""

from __future__ import annotations

import argparse

from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.config import HelpFormatter, common_parser, resolve_dataset

__all__ = ["AUGMENTATION", "build_parser", "parse_args"]

ORIGINAL_DATASETS = ("tiny_in", "in100")
METHODS = ("cwrgp", "cwrg")
#: W-MSE's augmentation flags and their defaults; only ``--crop_s0`` may differ (``wmse_transform(min_scale=)``).
AUGMENTATION = {
    "cj0": 0.4,
    "cj1": 0.4,
    "cj2": 0.4,
    "cj3": 0.1,
    "cj_p": 0.8,
    "gs_p": 0.1,
    "crop_s1": 1.0,
    "crop_r0": 0.75,
    "crop_r1": 4 / 3,
    "hf_p": 0.5,
}


def build_parser(prog: str = "cwrgp-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="CW-RGP pre-training (winci-ai/CW-RGP base/train.py --method cwrgp): channel whitening "
        "with random group partition over sub-batches, on one process.",
        formatter_class=HelpFormatter,
        parents=[common_parser(dataset_aliases=ORIGINAL_DATASETS, root_flag="--data_path", backbone=False)],
    )
    parser.set_defaults(seed=1)  # cfg.py's --seed
    g = parser.add_argument_group("the original's flags (base/cfg.py)")
    g.add_argument("--method", choices=METHODS, default="cwrgp", help="cwrgp (= cwrg, the same class)")
    g.add_argument("--env_name", default="CWRG", help="run name: checkpoint_<env_name>_<epoch>.pth.tar")
    g.add_argument("--num_samples", type=int, default=2, help="views per image (CW-RGP 2 / CW-RGP 4)")
    g.add_argument("--crop_s0", type=float, default=0.2, help="RandomResizedCrop scale from")
    for name, value in AUGMENTATION.items():
        g.add_argument(f"--{name}", type=float, default=value, help="W-MSE augmentation (default only)")
    g.add_argument("--warmup_iters", "--warmup", type=int, default=500, help="linear warm-up iterations")
    g.add_argument(
        "--no_lr_warmup", action="store_true", help="W-MSE's switch: no warm-up (--warmup_iters 0)"
    )
    g.add_argument("--no_add_bn", dest="add_bn", action="store_false", help="not supported: BN1d in the head")
    g.add_argument("--no_head", dest="add_head", action="store_false", help="not supported: no head")
    g.add_argument("--knn", type=int, default=5, help="k of the k-NN evaluation")
    g.add_argument("--lr_step", choices=("cos", "step", "none"), default="step", help="LR schedule")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--eta_min", type=float, default=0.0, help="min learning rate (--lr_step cos)")
    g.add_argument(
        "--weight_decay", "--adam_l2", dest="weight_decay", type=float, default=1e-6, help="Adam L2 penalty"
    )
    g.add_argument("--optimizer", choices=("adam",), default="adam", help="base/train.py always uses Adam")
    g.add_argument("--T0", type=int, default=None, help="cosine period in epochs (default: --epochs)")
    g.add_argument("--Tmult", type=int, default=1, help="cosine period factor (--lr_step cos)")
    g.add_argument("--w_eps", type=float, default=0.0, help="whitening eps (only 0 is supported)")
    g.add_argument("--head_layers", type=int, default=2, help="layers of the head")
    g.add_argument("--head_size", type=int, default=1024, help="hidden units of the head")
    g.add_argument("--w_size", type=int, default=128, help="sub-batch size of the whitening")
    g.add_argument("--w_iter", type=int, default=1, help="repetitions of the random sub-batch partition")
    g.add_argument(
        "--no_norm", dest="norm", action="store_false", help="plain MSE instead of the normalised MSE"
    )
    g.add_argument("--epochs", type=int, default=200, help="total epochs")
    g.add_argument(
        "--start_epoch", type=int, default=0, help="parsed; a resumed run takes it from the checkpoint"
    )
    g.add_argument(
        "--eval_every", type=int, default=10, help="evaluate (5-NN + linear) every N epochs; 0: never"
    )
    g.add_argument(
        "--eval_every_drop", type=int, default=5, help="evaluation period from the first LR drop on"
    )
    g.add_argument("--emb", type=int, default=512, help="embedding (head output) size")
    g.add_argument("--bs", type=int, default=512, help="images per batch")
    g.add_argument(
        "--drop", type=int, nargs="*", default=[50, 25], help="LR drops at epochs --epochs minus each"
    )
    g.add_argument("--drop_gamma", type=float, default=0.2, help="factor of each LR drop")
    g.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet18", help="encoder architecture")
    g.add_argument("--num_workers", type=int, default=12, help="data-loading workers")
    g.add_argument("--resume", default="", help="checkpoint to resume from, or 'auto' (the run's newest)")
    g.add_argument("--axis", type=int, choices=(0, 1), default=0, help="whitening axis (only 0 is supported)")
    g.add_argument("--minus", type=int, default=1, help="covariance denominator n - minus (only 1)")
    g.add_argument("--group", type=int, default=1, help="whitening groups")
    g.add_argument("--no_rg", dest="rand_group", action="store_false", help="no random feature permutation")
    g.add_argument("--gpu", default=None, help="CUDA device index (default: --device)")
    ours = parser.add_argument_group("selfsup additions")
    ours.add_argument("--data_path", default=None, help="image folder (tiny_in), .npz file or dataset root")
    ours.add_argument("--ckpt_dir", default=".", help="checkpoint folder (the original: the working dir)")
    ours.add_argument(
        "--save_freq", type=int, default=500, help="keep checkpoint_<env>_<epoch>.pth.tar every N epochs"
    )
    ours.add_argument(
        "--width", type=int, default=None, help="base width of the ResNet (default: the arch's)"
    )
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = ("num_samples", "w_size", "w_iter", "group", "bs", "emb", "head_size", "head_layers", "epochs")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_samples < 2:
        parser.error(f"--num_samples {args.num_samples}: CW-RGP needs at least 2 views")
    if args.bs % args.w_size:
        parser.error(f"--bs {args.bs} must be a multiple of --w_size {args.w_size} (torch.randperm(bs).view)")
    if args.emb % args.group:
        parser.error(f"--emb {args.emb} is not divisible by --group {args.group}")
    if args.w_size > args.emb // args.group:
        parser.error(
            f"--w_size {args.w_size} exceeds the {args.emb // args.group} features per group (--emb/--group): "
            "the sub-batch covariance would be singular"
        )
    for flag, ok in (
        ("--no_add_bn", args.add_bn),
        ("--no_head", args.add_head),
        ("--axis 1", args.axis == 0),
        (f"--minus {args.minus}", args.minus == 1),
        (f"--w_eps {args.w_eps}", args.w_eps == 0),
    ):
        if not ok:
            parser.error(f"{flag} is not supported by cwrgp-train (group ZCA with axis 0, minus 1, eps 0)")
    for name, value in AUGMENTATION.items():
        if getattr(args, name) != value:
            parser.error(f"--{name} {getattr(args, name)}: only the default {value:g} is supported")
    if not 0 < args.crop_s0 <= 1:
        parser.error(f"--crop_s0 must be in (0, 1], got {args.crop_s0}")
    if args.eval_every < 0 or args.eval_every_drop < 0:
        parser.error("--eval_every and --eval_every_drop must be >= 0 (0: no evaluation)")
    if args.save_freq < 1:
        parser.error(f"--save_freq must be >= 1, got {args.save_freq}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    if args.no_lr_warmup:
        args.warmup_iters = 0
    if args.warmup_iters < 0:
        parser.error(f"--warmup_iters must be >= 0, got {args.warmup_iters}")
    if args.gpu is not None and args.device is None:
        args.device = f"cuda:{args.gpu}"
    if args.dataset == "in100":
        parser.error("--dataset in100 is not supported by cwrgp-train (W-MSE's blur and 7x7 stem)")
    if args.dataset == "tiny_in" and not args.data_path:
        parser.error("--dataset tiny_in needs --data_path: tiny-imagenet-200 with train/ and val/<class>/")
    args.original_dataset = args.dataset
    args.dataset = resolve_dataset(args, root_flag="data_path", aliases=ORIGINAL_DATASETS)
    return args
