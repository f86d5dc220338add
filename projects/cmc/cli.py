"""Command lines of the CMC trainers, with the original flag names and defaults.

``cmc-train`` is ``train_CMC.py`` and ``cmc-moco-ins-train`` is ``train_moco_ins.py`` of HobbitLong/CMC as
extended by szq0214/CMC_with_Image_Mixture (the ``--IM*`` flags; its defaults: 600 epochs, decay at 360, 480,
540, ``--crop_low``/``--crop`` 0.1). selfsup's common flags (data, precision, run) come through argparse
``parents=``; the original's ``--dataset imagenet|imagenet100`` name an image folder (``--data_folder``).
"""

from __future__ import annotations

import argparse

from selfsup.cmc.model import CMC_MODELS, INSDIS_MODELS
from selfsup.shared.data.mixtures import IMAGE_MIXTURES
from selfsup.shared.runtime.config import HelpFormatter, common_parser, resolve_dataset

#: The original's ``--dataset`` values: both are image folders (``imagenet`` also lowers the crop scale).
ORIGINAL_DATASETS = ("imagenet", "imagenet100")


def _decay_epochs(text: str) -> list[int]:
    try:
        epochs = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs like 360,480,540, got {text!r}"
        ) from None
    return epochs


def _optimisation_flags(parser: argparse.ArgumentParser, *, crop_flag: str) -> None:
    opt = parser.add_argument_group("optimisation (the original's flags)")
    opt.add_argument("--print_freq", type=int, default=10, help="console print frequency in iterations")
    opt.add_argument("--tb_freq", type=int, default=500, help="parsed, unused (as in the original)")
    opt.add_argument("--save_freq", type=int, default=10, help="write ckpt_epoch_<E>.pth every N epochs")
    opt.add_argument("--batch_size", type=int, default=128, help="global batch size (split over ranks)")
    opt.add_argument("--num_workers", type=int, default=18, help="data-loading workers per rank")
    opt.add_argument("--epochs", type=int, default=600, help="number of training epochs")
    opt.add_argument("--learning_rate", type=float, default=0.03, help="initial learning rate")
    opt.add_argument(
        "--lr_decay_epochs",
        type=_decay_epochs,
        default=[360, 480, 540],
        help="epochs (1-based) after which the lr is multiplied by --lr_decay_rate (default: 360,480,540)",
    )
    opt.add_argument("--lr_decay_rate", type=float, default=0.1, help="lr decay factor")
    opt.add_argument("--beta1", type=float, default=0.5, help="parsed, unused (no Adam in pre-training)")
    opt.add_argument("--beta2", type=float, default=0.999, help="parsed, unused (no Adam in pre-training)")
    opt.add_argument("--weight_decay", type=float, default=1e-4, help="weight decay")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    opt.add_argument(
        "--resume",
        default="",
        help="checkpoint to resume from, or 'auto' for the newest one in the run's folder",
    )
    opt.add_argument(
        "--amp", action="store_true", help="mixed precision (apex in the original; autocast here)"
    )
    opt.add_argument("--opt_level", default="O2", help="apex opt level; recorded (autocast has one level)")
    default_crop = 0.1
    opt.add_argument(
        crop_flag,
        type=float,
        default=default_crop,
        help="smallest RandomResizedCrop area fraction (0.08 is forced for ResNets on --dataset imagenet)",
    )
    paths = parser.add_argument_group("paths")
    paths.add_argument(
        "--data_folder", default=None, help="ImageNet-style folder with train/ (and val/) class folders"
    )
    paths.add_argument("--model_path", default="./save_models", help="checkpoint root")
    paths.add_argument("--tb_path", default="./save_tb", help="TensorBoard root")
    paths.add_argument(
        "--image_size", type=int, default=224, help="training crop size (the original's 224; ours)"
    )
    emu = parser.add_argument_group("BN emulation (ours)")
    emu.add_argument(
        "--bn_splits",
        type=int,
        default=1,
        help="per-device BN of nn.DataParallel emulated on one device: BN normalises this many sub-batches "
        "separately (the README trains on 4 GPUs); under DDP each rank already has its own BN",
    )


def _nce_flags(parser: argparse.ArgumentParser) -> None:
    nce = parser.add_argument_group("contrast (NCE memory bank)")
    nce.add_argument("--softmax", action="store_true", help="softmax cross-entropy instead of NCE")
    nce.add_argument("--nce_k", type=int, default=16384, help="negatives per positive (README: 4096)")
    nce.add_argument("--nce_t", type=float, default=0.07, help="temperature")
    nce.add_argument("--nce_m", type=float, default=0.5, help="memory-bank momentum")
    nce.add_argument("--feat_dim", type=int, default=128, help="feature dimension (AlexNet; ResNets: 128)")


def _mixture_flags(parser: argparse.ArgumentParser) -> None:
    im = parser.add_argument_group("Image Mixture (szq0214/CMC_with_Image_Mixture)")
    im.add_argument("--IM", action="store_true", help="mix training images (dataset level)")
    im.add_argument("--IM_type", choices=tuple(IMAGE_MIXTURES), default="IM", help="mixture type")
    im.add_argument("--g_alpha", type=float, default=1.0, help="global mixture: Beta(α, α)")
    im.add_argument("--g_num", type=int, default=2, help="global mixture: mixes per image")
    im.add_argument("--g_prob", type=float, default=0.1, help="global mixture: probability of each mix")
    im.add_argument("--r_beta", type=float, default=1.0, help="region mixture: Beta(β, β)")
    im.add_argument("--r_prob", type=float, default=0.1, help="region mixture: probability of each mix")
    im.add_argument("--r_num", type=int, default=2, help="region mixture: mixes per image")
    im.add_argument(
        "--r_pixel_decay",
        type=float,
        default=1.0,
        help="region mixture: factor on the image when mix 0 fires",
    )
    im.add_argument("--mask_size", type=int, default=50, help="Cutout: side of the square mask")
    im.add_argument("--cutout_p", type=float, default=0.1, help="Cutout: probability")
    im.add_argument("--cutout_inside", action="store_true", help="Cutout: keep the mask centre inside")
    im.add_argument("--mask_color", type=float, default=0, help="Cutout: fill value (normalised tensor)")
    im.add_argument("--random_erasing_prob", type=float, default=0.1, help="RandomErasing: probability")
    im.add_argument(
        "--area_ratio_range",
        type=float,
        nargs=2,
        default=[0.02, 0.4],
        help="RandomErasing: area fraction range (default: 0.02 0.4)",
    )
    im.add_argument("--min_aspect_ratio", type=float, default=0.3, help="RandomErasing: smallest aspect")
    im.add_argument("--max_attempt", type=int, default=20, help="RandomErasing: attempts per image")


def build_cmc_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmc-train",
        description="CMC pre-training (HobbitLong/CMC train_CMC.py, with the Image-Mixture flags)",
        parents=[common_parser(dataset_aliases=ORIGINAL_DATASETS, root_flag="--data_folder", backbone=False)],
        formatter_class=HelpFormatter,
    )
    _optimisation_flags(parser, crop_flag="--crop_low")
    model = parser.add_argument_group("model and views")
    model.add_argument("--model", choices=CMC_MODELS, default="alexnet", help="two-stream encoder")
    model.add_argument(
        "--view", choices=("Lab", "YCbCr"), default="Lab", help="colour space of the two views"
    )
    _nce_flags(parser)
    _mixture_flags(parser)
    return parser


def build_moco_ins_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmc-moco-ins-train",
        description="InsDis and MoCo pre-training (HobbitLong/CMC train_moco_ins.py, with the Image-Mixture flags)",
        parents=[common_parser(dataset_aliases=ORIGINAL_DATASETS, root_flag="--data_folder", backbone=False)],
        formatter_class=HelpFormatter,
    )
    _optimisation_flags(parser, crop_flag="--crop")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=INSDIS_MODELS, default="resnet50", help="encoder (x2/x4: width)")
    model.add_argument(
        "--aug",
        choices=("CJ", "NULL"),
        default="CJ",
        help="CJ: grayscale 0.2 + colour jitter 0.4; NULL: none",
    )
    model.add_argument("--warm", action="store_true", help="parsed, unused (as in the original)")
    model.add_argument(
        "--moco", action="store_true", help="MoCo (momentum encoder + queue) instead of InsDis"
    )
    model.add_argument("--alpha", type=float, default=0.999, help="MoCo key-encoder momentum")
    model.add_argument("--gpu", type=int, default=None, help="parsed; use --device (e.g. cuda:1)")
    _nce_flags(parser)
    _mixture_flags(parser)
    return parser


def _finish(parser: argparse.ArgumentParser, args: argparse.Namespace, crop_flag: str) -> argparse.Namespace:
    args.dataset_flag = args.dataset  # the value as typed (imagenet / imagenet100 / ours / None)
    args.dataset = resolve_dataset(args, root_flag="data_folder", aliases=ORIGINAL_DATASETS)
    if args.dataset in ("imagefolder", "npz") and not args.data_folder:
        parser.error(f"--dataset {args.dataset_flag} needs --data_folder")
    checks = {
        "--batch_size": args.batch_size >= 1,
        "--epochs": args.epochs >= 1,
        "--save_freq": args.save_freq >= 1,
        "--num_workers": args.num_workers >= 0,
        "--learning_rate": args.learning_rate > 0,
        "--nce_k": args.nce_k >= 1,
        "--nce_t": args.nce_t > 0,
        "--nce_m": 0.0 <= args.nce_m <= 1.0,
        "--feat_dim": args.feat_dim >= 1,
        "--image_size": args.image_size >= 8,
        "--bn_splits": args.bn_splits >= 1,
        crop_flag: 0.0 < getattr(args, crop_flag.lstrip("-")) <= 1.0,
        "--g_prob": 0.0 <= args.g_prob <= 1.0,
        "--r_prob": 0.0 <= args.r_prob <= 1.0,
    }
    for flag, ok in checks.items():
        if not ok:
            parser.error(f"{flag}: invalid value {getattr(args, flag.lstrip('-'))}")
    return args


def parse_cmc_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_cmc_parser()
    args = _finish(parser, parser.parse_args(argv), "--crop_low")
    if args.dataset_flag == "imagenet" and args.model != "alexnet":
        args.crop_low = 0.08  # the original forces it for ResNets on full ImageNet
    return args


def parse_moco_ins_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_moco_ins_parser()
    args = _finish(parser, parser.parse_args(argv), "--crop")
    if args.dataset_flag == "imagenet":
        args.crop = 0.08  # the original forces it on full ImageNet
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must lie in [0, 1], got {args.alpha}")
    return args
