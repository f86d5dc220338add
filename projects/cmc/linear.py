"""The CMC repository's linear probes with their original command lines, run by the shared evaluation harness.

* ``python -m selfsup.cmc.linear`` is ``LinearProbing.py``: a linear classifier on a frozen CMC encoder's
  ``--layer`` (both views concatenated, or one with ``--view_stream l|ab``), presets ``cmc_alexnet`` (layer 5,
  max pooling) and ``cmc_resnet`` / ``cmc_resnet50v3`` (layer 6), in the ``--view`` colour space;
* ``python -m selfsup.cmc.linear --moco_ins`` (also ``python -m selfsup.cmc.eval_moco_ins``) is
  ``eval_moco_ins.py``: the InsDis/MoCo query encoder, preset ``cmc_insdis`` (``--aug CJ`` while training the
  classifier, ImageNet normalisation), with ``--cosine`` and ``--adam``.

Same defaults as the originals (60 epochs, lr 0.1, ×0.2 after 30, 40, 50, momentum 0.9, weight decay 0, batch
256, crop 0.2, or 0.08 for ResNets on ``--dataset imagenet``). ``--model_path`` is the pre-trained checkpoint
(ours or the original's). The result JSON goes to ``<--save_path>/<model>_layer<L>.json`` and the classifier
state, after every epoch, beside it. The originals' crashes (``spawn`` import, hostname-only paths,
``view(-1)`` in ``accuracy``) do not apply.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from selfsup.cmc.cli import ORIGINAL_DATASETS
from selfsup.shared.data import DATASET_NAMES, CorruptImageError
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.runtime.config import HelpFormatter


def _epochs(text: str) -> tuple[int, ...]:
    return tuple(int(e) for e in text.split(",") if e.strip())


def build_parser(moco_ins: bool = False) -> argparse.ArgumentParser:
    prog = "python -m selfsup.cmc.eval_moco_ins" if moco_ins else "python -m selfsup.cmc.linear"
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--moco_ins", action="store_true", default=moco_ins, help="eval_moco_ins.py's protocol"
    )
    parser.add_argument("--print_freq", type=int, default=10, help="parsed (the harness logs per epoch)")
    parser.add_argument("--tb_freq", type=int, default=500, help="parsed, unused")
    parser.add_argument(
        "--save_freq", type=int, default=5, help="parsed: the classifier is saved every epoch"
    )
    parser.add_argument("--batch_size", type=int, default=256, help="batch size")
    parser.add_argument("--num_workers", type=int, default=32, help="data-loading workers")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--learning_rate", type=float, default=0.1, help="learning rate")
    parser.add_argument("--lr_decay_epochs", type=_epochs, default=(30, 40, 50), help="default: 30,40,50")
    parser.add_argument("--lr_decay_rate", type=float, default=0.2, help="lr decay factor")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--weight_decay", type=float, default=0.0, help="weight decay")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (with --adam)")
    parser.add_argument("--beta2", type=float, default=0.999, help="Adam beta2 (with --adam)")
    parser.add_argument("--resume", action="store_true", help="continue from the classifier state file")
    parser.add_argument("--model", default="resnet50v1" if not moco_ins else "resnet50", help="encoder name")
    parser.add_argument("--model_path", required=True, help="pre-trained checkpoint (ours or the original's)")
    parser.add_argument("--layer", type=int, default=6, help="layer to probe (AlexNet 1-5, ResNet 1-6)")
    parser.add_argument("--amp", action="store_true", help="parsed, unused (the probe runs in fp32)")
    parser.add_argument("--opt_level", default="O2", help="parsed, unused")
    parser.add_argument(
        "--dataset", choices=(*DATASET_NAMES, *ORIGINAL_DATASETS), default="imagenet", help="evaluation data"
    )
    parser.add_argument("--data_folder", default=None, help="folder with train/ and val/ class folders")
    parser.add_argument("--save_path", default="./save_linear", help="results folder")
    parser.add_argument("--tb_path", default=None, help="parsed, unused")
    parser.add_argument("--crop_low", "--crop", dest="crop_low", type=float, default=0.2, help="RRC scale")
    parser.add_argument("--view", choices=("Lab", "YCbCr"), default="Lab", help="colour space (CMC)")
    parser.add_argument(
        "--view_stream",
        choices=("both", "l", "ab"),
        default="both",
        help="CMC: probe one stream or both (ours)",
    )
    parser.add_argument("--aug", choices=("CJ", "NULL"), default="CJ", help="eval_moco_ins: classifier aug")
    parser.add_argument("--cosine", action="store_true", help="eval_moco_ins: cosine lr schedule")
    parser.add_argument("--adam", action="store_true", help="eval_moco_ins: Adam instead of SGD")
    parser.add_argument("--bn", action="store_true", help="parsed, inert (as in the original)")
    parser.add_argument("--syncBN", action="store_true", help="parsed, inert (as in the original)")
    parser.add_argument("--gpu", type=int, default=None, help="parsed; use --device")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (ours)")
    parser.add_argument("--image_size", type=int, default=224, help="crop size (224 as the original; ours)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifier's training (ours)")
    return parser


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    """The harness preset and overrides equivalent to the original command line."""
    dataset = "imagefolder" if args.dataset in ORIGINAL_DATASETS else args.dataset
    crop_low = 0.08 if args.dataset == "imagenet" and args.model != "alexnet" else args.crop_low
    size = args.image_size
    common: dict[str, Any] = {
        "dataset": dataset,
        "root": args.data_folder,
        "lr": args.learning_rate,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "milestones": tuple(args.lr_decay_epochs),
        "gamma": args.lr_decay_rate,
        "crop_low": crop_low,
        "layer": str(args.layer),
        "num_workers": args.num_workers,
        "device": args.device,
        "seed": args.seed,
        "resize": round(size * 256 / 224),
        "crop": size,
    }
    if args.moco_ins:
        common.update(preset="cmc_insdis", train_aug="rrc_cj_flip" if args.aug == "CJ" else "rrc_flip")
        if args.cosine:
            common.update(schedule="cosine", final_lr=args.learning_rate * 0.2**3 * 0.1)
        if args.adam:
            common.update(optimizer="adam")
        return common
    if args.model == "alexnet":
        preset = "cmc_alexnet"
    else:
        preset = "cmc_resnet50v3" if args.model.endswith("v3") else "cmc_resnet"
    space = "ycbcr" if args.view == "YCbCr" else "lab"
    common.update(preset=preset, view=args.view_stream, color_space=space, normalization=space)
    return common


def main(argv: list[str] | None = None, moco_ins: bool = False) -> int:
    parser = build_parser(moco_ins)
    args = parser.parse_args(argv)
    if args.dataset in ORIGINAL_DATASETS and not args.data_folder:
        parser.error(f"--dataset {args.dataset} needs --data_folder")
    out = Path(args.save_path)
    name = f"{args.model}_layer{args.layer}"
    try:
        result = evaluate_checkpoint(
            "linear",
            args.model_path,
            state_path=out / f"{name}.state.pth",
            resume=args.resume,
            output=out / f"{name}.json",
            **protocol(args),
        )
    except CorruptImageError as err:
        print(f"{parser.prog}: error: {err.one_line(skip_flag=None)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{name}: best top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} % -> {out / f'{name}.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
