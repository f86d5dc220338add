"""SwAV's ``eval_linear.py`` command line (also Un-Mix's CIFAR version), run by the shared evaluation harness.

``python -m selfsup.swav_unmix.eval_linear --data_path DIR --pretrained CKPT --dump_path OUT`` trains a linear
classifier on the frozen, globally average-pooled trunk (preset ``swav``; spec ``swav_unmix.md`` §7): SGD
momentum 0.9, ``--lr 0.3``, ``--wd 1e-6``, ``--nesterov false``, ``--scheduler_type cosine`` to ``--final_lr``
over ``--epochs 100`` (or ``step`` at ``--decay_epochs 60 80`` by ``--gamma 0.1``), ``--batch_size 32`` per
process, weight ~ N(0, 0.01), RandomResizedCrop 224 + flip / Resize 256 + CenterCrop 224 with SwAV's 0.228
std, best top-1 over the epochs. Un-Mix's CIFAR flags: ``--data_path cifar10|cifar100`` (torchvision CIFAR,
CIFAR-10 mean/std for both), ``--crop_size 32`` (RandomResizedCrop(crop) + flip, test images unresized),
``--num_labels``. Without ``--data_path`` the embedded ``digits`` are used. ``--pretrained`` is any checkpoint
the harness reads (ours, SwAV / Un-Mix ``main_swav*.py`` checkpoints, the released weights). The result goes
to ``<--dump_path>/eval_linear.json`` (and ``results.jsonl`` beside it), the classifier state after every epoch
to ``eval_linear.state.pth``; a run restarts from that file when it exists, as the original restarts from
``checkpoint.pth.tar`` (a state written with other flags or weights is refused: delete it to start over).

What is not honoured exactly (each flag's help says so too):

* ``--global_pooling false`` (``AvgPool2d(6, stride=1)`` on layer4: 8192 features, ResNet-50 only) is refused:
  the harness has no such probe. ``--use_bn`` only acts in that mode in the original, so it is inert here.
* ``--pretrained`` must name a readable checkpoint (the original trains on random weights when the file is
  missing) and its keys must fit the network it describes unless ``--allow_partial`` (the original loads with
  ``strict=False`` and skips what does not fit).
* ``--arch`` asserts the architecture when given (default: the one the weights describe); ``resnet18`` is not
  asserted, because Un-Mix's CIFAR ``resnet18`` has Bottleneck blocks (``resnet18_bottleneck`` here).
* ``--dist_url``, ``--world_size``, ``--rank``, ``--local_rank``: accepted; the layout comes from the
  torchrun/Slurm environment (the original's ``env://``). Each rank tests a shard of the test set and the counts
  are summed (the original tests the full set on every rank: the same numbers).
* ``--data_path cifar10|cifar100`` reads CIFAR from selfsup's data folder and downloads only with ``--download``
  (the original always downloads into ``data/CIFAR-*``); ``--crop_size`` tests with Resize + CenterCrop to the
  crop side, the identity on images of that side (the original feeds test images unchanged).
* ``--num_labels``: the classifier has one output per class of the data; the flag is checked against the
  dataset's class count when it is known in advance.
* No ``checkpoint.pth.tar``, ``params.pkl``, ``stats0.pkl`` or ``train.log`` are written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfsup.shared.data import DATASET_NAMES, CorruptImageError, dataset_info
from selfsup.shared.distributed import cleanup, init_distributed
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.runtime.config import HelpFormatter
from selfsup.swav_unmix.cli import NAMED_DATA_PATHS, bool_flag

__all__ = ["build_parser", "common_parser", "data_overrides", "main", "protocol", "resolve_data", "run"]

#: The Un-Mix CIFAR code's crop side (``--crop_size`` default) and test normalisation (CIFAR-10's mean/std,
#: used for CIFAR-100 too).
CIFAR_CROP = 32
CIFAR_NORMALIZATION = "cifar10"


def common_parser() -> argparse.ArgumentParser:
    """Flags ``eval_linear.py`` and ``eval_semisup.py`` share (a parent parser, no ``-h``)."""
    parser = argparse.ArgumentParser(add_help=False)
    main = parser.add_argument_group("main parameters (the original's)")
    main.add_argument("--dump_path", default=".", help="folder of the result JSON and the classifier state")
    main.add_argument("--seed", type=int, default=31, help="seed of the head init, sampling and augmentation")
    main.add_argument(
        "--data_path",
        default=None,
        help="folder with train/ and val/ class folders, or cifar10/cifar100 (Un-Mix CIFAR); "
        "default: the embedded digits",
    )
    main.add_argument("--workers", type=int, default=10, help="data-loading workers per process")
    model = parser.add_argument_group("model parameters (the original's)")
    model.add_argument(
        "--arch",
        default=None,
        help="asserted against the weights when given (default: the architecture they describe; the "
        "original builds resnet50); resnet18 is not asserted (Un-Mix CIFAR's has Bottleneck blocks)",
    )
    model.add_argument(
        "--pretrained",
        required=True,
        help="pre-trained checkpoint (ours, SwAV/Un-Mix main_swav*.py, released weights); required "
        "(the original falls back to random weights)",
    )
    cifar = parser.add_argument_group("Un-Mix CIFAR eval flags")
    cifar.add_argument(
        "--num_labels",
        type=int,
        default=None,
        help="number of classes: checked against the data when its class count is known in advance "
        "(the classifier always has one output per class of the data)",
    )
    cifar.add_argument(
        "--crop_size",
        type=int,
        default=None,
        help="train RandomResizedCrop side; test Resize + CenterCrop to it (the original feeds test images "
        f"unchanged: the same on images of that side); default: {CIFAR_CROP} for cifar10/cifar100",
    )
    dist = parser.add_argument_group("distributed (read from the torchrun/Slurm environment)")
    dist.add_argument("--dist_url", default="env://", help="accepted; the address comes from the environment")
    dist.add_argument("--world_size", type=int, default=-1, help="accepted; set from the environment")
    dist.add_argument("--rank", type=int, default=0, help="accepted; set from the environment")
    dist.add_argument("--local_rank", type=int, default=0, help="accepted; set from the environment")
    ours = parser.add_argument_group("selfsup additions")
    ours.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
        default=None,
        help="default: cifar10/cifar100 when --data_path names one, imagefolder when it is a folder, "
        "else digits",
    )
    ours.add_argument("--download", action="store_true", help="download cifar10/cifar100 when missing")
    ours.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N (default: cuda:<local rank> when available, else cpu)",
    )
    ours.add_argument(
        "--allow_partial",
        action="store_true",
        help="load the weights that fit and record the rest (the original's strict=False)",
    )
    return parser


def resolve_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.dataset`` and ``args.root`` from ``--data_path`` / ``--dataset``; check ``--num_labels``."""
    if args.data_path in NAMED_DATA_PATHS:
        args.dataset = args.dataset or args.data_path
        args.root = None
    else:
        args.dataset = args.dataset or ("imagefolder" if args.data_path else "digits")
        args.root = args.data_path
    if args.dataset == "imagefolder" and not args.root:
        parser.error("--dataset imagefolder needs --data_path (a folder with train/ and val/)")
    classes = dataset_info(args.dataset).num_classes
    if args.num_labels is not None and classes is not None and args.num_labels != classes:
        parser.error(f"--num_labels {args.num_labels}: the {args.dataset} data has {classes} classes")
    if args.crop_size is not None and args.crop_size < 1:
        parser.error(f"--crop_size must be a positive integer, got {args.crop_size}")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Harness keywords for the data, input pipeline and loading (after :func:`resolve_data`)."""
    out: dict[str, Any] = {
        "dataset": args.dataset,
        "root": args.root,
        "num_workers": args.workers,
        "seed": args.seed,
    }
    cifar = args.dataset in NAMED_DATA_PATHS
    if cifar or args.crop_size is not None:  # Un-Mix CIFAR: RRC(crop) for training, test images as they are
        crop = args.crop_size or CIFAR_CROP
        out.update(crop=crop, resize=crop)
    if cifar:
        out["normalization"] = CIFAR_NORMALIZATION
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.swav_unmix.eval_linear",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
        parents=[common_parser()],
    )
    model = parser.add_argument_group("classifier (the original's)")
    model.add_argument(
        "--global_pooling",
        type=bool_flag,
        default=True,
        help="true: global average pooling of layer4; false (AvgPool2d(6, 1), 8192 features) is refused: "
        "the harness has no such probe",
    )
    model.add_argument(
        "--use_bn",
        type=bool_flag,
        default=False,
        help="inert: the original adds its BatchNorm only with --global_pooling false",
    )
    optim = parser.add_argument_group("optimisation (the original's)")
    optim.add_argument("--epochs", type=int, default=100, help="training epochs")
    optim.add_argument("--batch_size", type=int, default=32, help="batch size per process (global: × world)")
    optim.add_argument("--lr", type=float, default=0.3, help="initial learning rate")
    optim.add_argument("--wd", type=float, default=1e-6, help="weight decay")
    optim.add_argument("--nesterov", type=bool_flag, default=False, help="Nesterov momentum")
    optim.add_argument("--scheduler_type", choices=("step", "cosine"), default="cosine", help="lr schedule")
    optim.add_argument("--decay_epochs", type=int, nargs="+", default=[60, 80], help="step: decay epochs")
    optim.add_argument("--gamma", type=float, default=0.1, help="step: decay factor")
    optim.add_argument("--final_lr", type=float, default=0.0, help="cosine: final learning rate")
    return parser


def protocol(args: argparse.Namespace, world_size: int = 1) -> dict[str, Any]:
    """The harness preset and overrides equivalent to the original command line."""
    return {
        "preset": "swav",
        "lr": args.lr,
        "weight_decay": args.wd,
        "nesterov": args.nesterov,
        "batch_size": args.batch_size * world_size,
        "test_batch_size": args.batch_size,
        "epochs": args.epochs,
        "schedule": args.scheduler_type,
        "milestones": tuple(args.decay_epochs),
        "gamma": args.gamma,
        "final_lr": args.final_lr,
        **data_overrides(args),
    }


def run(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    kind: str,
    make_protocol: Callable[[argparse.Namespace, int], dict[str, Any]],
) -> tuple[int, dict[str, Any] | None]:
    """Run protocol ``kind`` (``linear``/``semisup``) with ``make_protocol(args, world_size)``'s keywords;
    the result goes to ``<--dump_path>/eval_<kind>.json``. Returns ``(exit status, result)``."""
    out = Path(args.dump_path)
    stem = f"eval_{kind}"
    state = out / f"{stem}.state.pth"
    try:
        env = init_distributed(device=args.device)
        result = evaluate_checkpoint(
            kind,
            args.pretrained,
            arch=None if args.arch in (None, "resnet18") else args.arch,
            allow_partial=args.allow_partial,
            device=str(env.device),
            download=args.download,
            state_path=state,
            resume=state.is_file(),
            output=out / f"{stem}.json",
            **make_protocol(args, env.world_size),
        )
    except CorruptImageError as err:
        print(f"{parser.prog}: error: {err.one_line(skip_flag=None)}", file=sys.stderr)
        return 2, None
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2, None
    finally:
        cleanup()
    if env.is_main:
        print(
            f"{stem}: best top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} % (epoch "
            f"{result['best_epoch']}) -> {out / f'{stem}.json'}"
        )
    return 0, result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_data(parser, args)
    if not args.global_pooling:
        parser.error(
            "--global_pooling false (AvgPool2d(6, stride=1) on layer4, 8192 features) is not supported by "
            "the shared harness; use the default global average pooling"
        )
    return run(parser, args, "linear", protocol)[0]


if __name__ == "__main__":
    sys.exit(main())
