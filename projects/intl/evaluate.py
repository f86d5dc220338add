"""INTL's ``evaluate.py`` command line (and ``cifar/main.py``'s evaluation), run by the shared evaluation harness.

``python -m selfsup.intl.evaluate --pretrained CKPT --data_path DIR --epochs 100 --lr-classifier 0.4`` takes
every flag of ``winci-ai/INTL`` ``cfg.py`` (the original shares one parser between ``main.py`` and
``evaluate.py``; this parser is ``intl-train``'s plus the evaluation flags) and runs (spec ``intl.md`` §7):

* ``--weights freeze`` (default): a linear classifier on the frozen, pooled trunk in eval mode (preset
  ``intl``): SGD momentum 0.9, weight decay 0, ``--lr-classifier`` (0.2) × ``--bs``/256 with ``--bs`` the
  global batch (256), ``--schedule step`` (×0.1 at epochs 60 and 80) or ``cos`` (per-epoch cosine to 0),
  ``--epochs`` (100), fc ~ N(0, 0.01), RandomResizedCrop 224 + flip / Resize 256 + CenterCrop 224, ImageNet
  mean/std; best top-1 over the epochs;
* ``--weights finetune --train-percent 1|10``: the whole network and the classifier in train mode (presets
  ``intl_1pct`` / ``intl_10pct``, the SimCLR subset lists for ImageNet, a class-balanced subset elsewhere;
  ``--train-percent 100``: every label), classifier ``--lr-classifier``, trunk ``--lr-backbone`` (0.004),
  both × ``--bs``/256;
* ``--dataset cifar10|cifar100`` (also ``stl10``, or ``--eval_protocol cifar`` on any data): the evaluation
  ``cifar/main.py`` runs every 5 epochs, once: the Euclidean 5-NN majority vote (preset ``nn5``) and a linear
  classifier trained with Adam (lr 1e-2 → 1e-6 over 500 epochs, wd 5e-6, batches of 1000) on the cached
  features of un-augmented images (preset ``intl_cifar``); ``--epochs`` / ``--lr-classifier`` replace 500 /
  1e-2 when given. As the original, both CIFAR datasets are normalised with CIFAR-10's mean/std (§10.11).

``--pretrained`` is any checkpoint the harness reads: ``intl-train``'s, the original ``ckpt_*.pth.tar``
(``module.backbone.*``), the released backbones. The online network is evaluated, as ``evaluate.py`` does;
``--use_ema`` takes the EMA target of ``--method intl_m`` runs (``module.momentum_backbone.*``) instead.

Results go to ``--ckpt_dir`` (default: the working directory, where the original writes its files):
``<env_name>_lincls.json``, ``<env_name>_finetune<P>.json`` (and ``.subset.txt``), or ``<env_name>_nn5.json``
and ``<env_name>_cifar_linear.json``, each appended to ``results.jsonl`` beside it. The classifier (or
fine-tuned model) state is saved after every epoch to ``<same stem>.state.pth``; a run continues from it when
it exists (``--resume FILE`` names another state file); a state written with other flags or weights is
refused (delete it to start over). Under Slurm, SIGUSR1 (``--signal=USR1@120``) requeues the job, and the
requeued run continues from the last finished epoch. Errors are one line on stderr with exit status 2.

The original's problems (spec §10) and what happens here:

1. The scripts' semi-supervised command loses its last lines (``\\  #--train-percent 1 \\``): irrelevant to
   this module; ``projects/intl/scripts`` pass every flag.
2. ``--dataset in100`` without ``--arch resnet18`` builds a 1000-way ResNet-50 and fails: the architecture is
   read from the checkpoint (``--arch`` only asserts it) and the classifier has one output per class of the
   data, so ``scripts/in100.sh``'s command works as written.
3. ``--schedule step`` with 20 fine-tuning epochs never reaches the milestones 60/80: the learning rate is
   constant. Kept (faithful to the published protocol); ``--schedule cos`` decays it.
4. Fine-tuning has no SyncBN (each GPU normalises its ``--bs``/world share): kept by default (faithful);
   ``--sync_bn`` converts the network to SyncBatchNorm on GPUs.

Not honoured exactly: ``-e/--evaluate`` (test a classifier checkpoint without training) is refused: the harness
tests after every epoch; ``--weights freeze --train-percent 1|10`` (a probe on a labelled subset) is refused;
``--wd`` is inert (``evaluate.py`` hard-codes weight decay 0 at the pinned commit); ``--world-size``,
``--rank``, ``--dist-url`` come from the torchrun/Slurm environment; ``-j/--workers`` is divided by the ranks
as in the original; the test set is sharded over the ranks and the counts summed (the original tests the full
set on every rank: the same numbers); the pre-training flags (``--method``, crops, projector, ...) are parsed
and unused, as in the original; no ``<env_name>_lincls_{ckpt,best}.pth.tar`` and no wandb run are written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfsup.intl.cli import ORIGINAL_DATASETS
from selfsup.intl.cli import build_parser as build_train_parser
from selfsup.shared.data import CorruptImageError
from selfsup.shared.distributed import cleanup, init_distributed
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.runtime.config import resolve_dataset

__all__ = ["build_parser", "main", "parse_args", "protocols", "requeue_on_time_limit", "resolve"]

#: datasets evaluated as ``cifar/main.py`` does (5-NN + Adam linear probe) under ``--eval_protocol auto``
SMALL_SCALE = ("cifar10", "cifar100", "stl10")
#: ``--train-percent`` -> semi-supervised preset (100: the 10 % preset on every label)
PERCENT_PRESETS = {1: "intl_1pct", 10: "intl_10pct", 100: "intl_10pct"}
#: ``--schedule`` -> harness schedule
SCHEDULES = {"step": "step", "cos": "cosine"}
#: cfg.py defaults of the flags whose default depends on the protocol here
EPOCHS, LR_CLASSIFIER, SCHEDULE = 100, 0.2, "step"
#: ``cifar/eval`` normalises CIFAR-10 and CIFAR-100 with CIFAR-10's mean/std
CIFAR_NORMALIZATION = "cifar10"

_HELP = {
    "arch": "asserted against the weights when given (default: the architecture the checkpoint describes; "
    "resnet50x2 = resnet50w2, ...)",
    "epochs": f"classifier epochs (default: {EPOCHS}; CIFAR protocol: the preset's 500)",
    "ckpt_dir": "folder of the result JSON and state files (default: the working directory, as the original)",
    "wd": "inert: evaluate.py trains with weight decay 0",
    "bs": "global batch size (divided by ranks); the learning rates are scaled by --bs/256",
    "resume": "state file to continue from (default: <ckpt_dir>/<stem>.state.pth when it exists)",
    "workers": "data-loading workers in all (divided by ranks)",
}


def build_parser() -> argparse.ArgumentParser:
    """``intl-train``'s parser (cfg.py) with ``evaluate.py``'s flags and selfsup's evaluation additions."""
    parser = build_train_parser(prog="python -m selfsup.intl.evaluate")
    parser.description = __doc__.splitlines()[0]
    ev = parser.add_argument_group("evaluate.py (the original's cfg.py flags)")
    ev.add_argument(
        "--pretrained",
        default=None,
        help="pre-trained checkpoint (intl-train's, INTL ckpt_*.pth.tar, released weights); required "
        "(the original falls back to random weights)",
    )
    ev.add_argument(
        "-e", "--evaluate", action="store_true", help="refused: the harness tests after every epoch"
    )
    ev.add_argument(
        "--train-percent",
        dest="train_percent",
        type=int,
        choices=(100, 10, 1),
        default=100,
        help="labels used by --weights finetune (1/10: the SimCLR ImageNet lists)",
    )
    ev.add_argument(
        "--weights",
        choices=("freeze", "finetune"),
        default="freeze",
        help="freeze: linear probe; finetune: the whole network",
    )
    ev.add_argument(
        "--schedule",
        choices=tuple(SCHEDULES),
        default=None,
        help=f"step: x0.1 at epochs 60, 80; cos: per-epoch cosine (default: {SCHEDULE})",
    )
    ev.add_argument(
        "--lr-backbone", dest="lr_backbone", type=float, default=0.004, help="trunk lr (finetune), x bs/256"
    )
    ev.add_argument(
        "--lr-classifier",
        dest="lr_classifier",
        type=float,
        default=None,
        help=f"classifier lr, x bs/256 (default: {LR_CLASSIFIER}; CIFAR protocol: Adam 1e-2)",
    )
    ours = parser.add_argument_group("selfsup evaluation additions")
    ours.add_argument(
        "--use_ema",
        action="store_true",
        help="evaluate the EMA target (intl_m) instead of the online network",
    )
    ours.add_argument(
        "--eval_protocol",
        choices=("auto", "imagenet", "cifar"),
        default="auto",
        help="imagenet: evaluate.py; cifar: cifar/main.py's 5-NN + linear; auto: cifar for "
        f"{'/'.join(SMALL_SCALE)}, imagenet otherwise",
    )
    ours.add_argument(
        "--crop_size",
        type=int,
        default=None,
        help="evaluation crop side (default: 224 on image folders, the dataset's side otherwise); the "
        "resize keeps the 256/224 ratio (ImageNet protocol)",
    )
    ours.add_argument(
        "--sync_bn", action="store_true", help="finetune with SyncBatchNorm on GPUs (the original has none)"
    )
    ours.add_argument(
        "--allow_partial", action="store_true", help="load the weights that fit and record the rest"
    )
    parser.set_defaults(arch=None, epochs=None, ckpt_dir=".")
    for action in parser._actions:
        if action.dest in _HELP:
            action.help = _HELP[action.dest]
    return parser


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the flags; set ``args.dataset`` (harness name), ``args.original_dataset`` and ``args.protocol``."""
    if args.evaluate:
        parser.error(
            "-e/--evaluate (test a classifier checkpoint without training) is not supported: the harness "
            "tests after every epoch and the result JSON holds the curve"
        )
    if not args.pretrained:
        parser.error("--pretrained is required (the original silently evaluates random weights without it)")
    args.original_dataset = args.dataset
    args.dataset = resolve_dataset(args, root_flag="data_path", aliases=ORIGINAL_DATASETS)
    if args.dataset == "imagefolder" and not args.data_path:
        parser.error(f"--dataset {args.original_dataset} needs --data_path (a folder with train/ and val/)")
    small = args.eval_protocol == "cifar" or (args.eval_protocol == "auto" and args.dataset in SMALL_SCALE)
    args.protocol = "cifar" if small else "imagenet"
    if small and (args.weights == "finetune" or args.train_percent != 100 or args.schedule):
        parser.error(
            "the CIFAR protocol (5-NN + Adam linear probe) has no --weights finetune, --train-percent or "
            "--schedule; use --eval_protocol imagenet for evaluate.py's protocols"
        )
    if not small and args.weights == "freeze" and args.train_percent != 100:
        parser.error(
            f"--train-percent {args.train_percent} with --weights freeze (a linear probe on a labelled "
            "subset) is not supported; add --weights finetune"
        )
    if args.sync_bn and args.weights != "finetune":
        parser.error("--sync_bn applies to --weights finetune (the linear probe keeps BN frozen)")
    for flag, value in (("--bs", args.bs), ("--crop_size", args.crop_size), ("--epochs", args.epochs)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve(parser, args)
    return args


def protocols(args: argparse.Namespace, world_size: int = 1) -> list[tuple[str, str, dict[str, Any]]]:
    """``[(harness protocol, file stem, evaluate_checkpoint keywords)]`` equivalent to the command line."""
    env = args.env_name + ("_ema" if args.use_ema else "")
    common: dict[str, Any] = {
        "dataset": args.dataset,
        "root": args.data_path,
        "num_workers": -(-args.workers // world_size),  # the original: ceil(workers / GPUs) per process
        "seed": args.seed,
    }
    if args.crop_size is not None:
        common["crop"] = args.crop_size
    if args.protocol == "cifar":
        common.update(normalization=CIFAR_NORMALIZATION, use_cache=True)
        linear = {"preset": "intl_cifar", **common, "epochs": args.epochs, "lr": args.lr_classifier}
        return [
            ("knn", f"{env}_nn5", {"preset": "nn5", **common}),
            ("linear", f"{env}_cifar_linear", {k: v for k, v in linear.items() if v is not None}),
        ]
    shared = {
        **common,
        "batch_size": args.bs,
        "epochs": args.epochs or EPOCHS,
        "schedule": SCHEDULES[args.schedule or SCHEDULE],
        "test_batch_size": 256,  # evaluate.py's val loader
    }
    lr_classifier = LR_CLASSIFIER if args.lr_classifier is None else args.lr_classifier
    if args.weights == "freeze":
        return [("linear", f"{env}_lincls", {"preset": "intl", "lr": lr_classifier, **shared})]
    percent = args.train_percent
    semisup = {
        "preset": PERCENT_PRESETS[percent],
        "labels_perc": float(percent),
        "lr_head": lr_classifier,
        "lr_backbone": args.lr_backbone,
        "sync_bn": args.sync_bn,
        **shared,
    }
    return [("semisup", f"{env}_finetune{percent}", semisup)]


@contextlib.contextmanager
def requeue_on_time_limit(is_main: bool) -> Iterator[None]:
    """Inside a Slurm job, SIGUSR1 (the time-limit warning of ``--signal=USR1@120``) makes rank 0 requeue the
    job; the requeued run continues from the state file of the last finished epoch."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if is_main and shutil.which("scontrol"):
            print(f"SIGUSR1: requeueing Slurm job {job} (continues from the state file)", file=sys.stderr)
            subprocess.run(["scontrol", "requeue", job], check=False)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def run(args: argparse.Namespace, prog: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the protocols of :func:`protocols`; returns ``(exit status, results)``."""
    out = Path(args.ckpt_dir)
    results: list[dict[str, Any]] = []
    printed: list[str] = []
    try:
        env = init_distributed(args.dist_backend, args.device)
        with requeue_on_time_limit(env.is_main):
            for kind, stem, kwargs in protocols(args, env.world_size):
                state: dict[str, Any] = {}
                if kind != "knn":  # the kNN vote has no training state
                    path = Path(args.resume) if args.resume not in ("", "auto") else out / f"{stem}.state.pth"
                    if args.resume not in ("", "auto") and not path.is_file():
                        raise FileNotFoundError(f"--resume {path} does not exist")
                    state = {"state_path": path, "resume": path.is_file()}
                result = evaluate_checkpoint(
                    kind,
                    args.pretrained,
                    arch=args.arch,
                    allow_partial=args.allow_partial,
                    branch="ema" if args.use_ema else "online",
                    device=str(env.device),
                    download=args.download,
                    output=out / f"{stem}.json",
                    **state,
                    **kwargs,
                )
                results.append(result)
                printed.append(
                    f"{stem}: top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} % -> {out / stem}.json"
                )
    except CorruptImageError as err:
        print(f"{prog}: error: {err.one_line(skip_flag=None)}", file=sys.stderr)
        return 2, results
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2, results
    finally:
        cleanup()
    if env.is_main:
        print("\n".join(printed))
    return 0, results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve(parser, args)
    return run(args, parser.prog)[0]


if __name__ == "__main__":
    sys.exit(main())
