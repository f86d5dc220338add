"""``selfsup-eval``: evaluate any checkpoint with the linear, semi-supervised or kNN protocol, or build a
report.

Usage::

    selfsup-eval linear  --checkpoint CKPT --dataset NAME [--dataset_root DIR] [--preset NAME] --output R.json
    selfsup-eval semisup --checkpoint CKPT --dataset NAME [--preset swav_1pct|...] --output R.json
    selfsup-eval knn     --checkpoint CKPT --dataset NAME [--preset instdisc|lightly|nn5] --output R.json
    selfsup-eval report  --results results.jsonl [--logs train_log.csv ...] --output_dir report/

Every preset value can be overridden by a flag; the original scripts' spellings are accepted as aliases
(``--lr-classifier``, ``--learning_rate``, ``--SGD_momentum``, ``--max_epoch``, ``--trn_batch_size``,
``--bs``, ``--wd``, ``--decay_epochs``, ``--lr_decay_epochs 30,40,50``, ``--schedule 60 80`` / ``--schedule
cos``, ``--scheduler_type``, ``--labels_perc``/``--train-percent``, ``--lr_last_layer``, ``--lr-backbone``,
...). Run ``selfsup-eval <protocol> -h`` for the list. Under torchrun every rank runs the same command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.shared.evaluation.presets import COLOR_SPACES, PRESETS, SCHEDULES, TRAIN_AUGS

__all__ = ["build_parser", "main", "overrides_from_args"]

_SCHEDULE_ALIASES = {"cos": "cosine", "cosine": "cosine", **{name: name for name in SCHEDULES}}


def _int_list(values: Sequence[str] | None) -> list[int] | None:
    """``["60", "80"]`` or ``["30,40,50"]`` -> ``[60, 80]`` / ``[30, 40, 50]``."""
    if values is None:
        return None
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise ValueError(
                        f"expected epoch numbers (e.g. 60 80 or 30,40,50), got {value!r}"
                    ) from None
    return out


def _common(parser: argparse.ArgumentParser, protocol: str) -> None:
    from selfsup.shared.data import DATASET_NAMES

    run = parser.add_argument_group("checkpoint and data")
    run.add_argument("--checkpoint", "--pretrained", "--weights_path", required=True, help="checkpoint file")
    run.add_argument("--dataset", choices=DATASET_NAMES, default="digits", help="dataset (default: digits)")
    run.add_argument("--dataset_root", "--data_path", "--data_folder", default=None, help="dataset location")
    run.add_argument("--download", action="store_true", help="download torchvision datasets when missing")
    run.add_argument(
        "--preset", choices=sorted(PRESETS[protocol]), default=None, help=f"{protocol} protocol preset"
    )
    run.add_argument("--output", required=True, help="result JSON file")
    run.add_argument("--results_table", default=None, help="JSON-lines table to append to (default: beside)")
    run.add_argument("--no_results_table", action="store_true", help="do not append to a results table")
    load = parser.add_argument_group("checkpoint loading")
    load.add_argument("-a", "--arch", default=None, help="assert the architecture (default: auto-detected)")
    load.add_argument("--checkpoint_key", default=None, help="top-level key holding the state dict")
    load.add_argument("--format", default=None, help="checkpoint format (default: auto-detected)")
    load.add_argument("--allow_partial", action="store_true", help="load despite missing/unexpected keys")
    load.add_argument("--use_ema", action="store_true", help="evaluate the EMA/momentum branch")
    load.add_argument(
        "--view", choices=("l", "ab", "both"), default=None, help="CMC stream(s) (default: both)"
    )
    load.add_argument(
        "--trust", action="store_true", help="allow arbitrary pickled objects (trusted files only)"
    )
    inp = parser.add_argument_group("input pipeline and probe")
    inp.add_argument("--resize", type=int, default=None, help="test Resize (shorter side)")
    inp.add_argument("--crop", "--crop_size", type=int, default=None, help="crop side")
    inp.add_argument("--crop_low", type=float, default=None, help="RandomResizedCrop minimum scale")
    inp.add_argument("--train_aug", choices=TRAIN_AUGS, default=None, help="train-time augmentation")
    inp.add_argument("--normalization", default=None, help="half|imagenet|swav|dataset|<dataset>|lab|ycbcr")
    inp.add_argument("--color_space", choices=COLOR_SPACES, default=None, help="input colour space (CMC)")
    inp.add_argument("--layer", default=None, help="probe layer: pool, a stage name or CMC's number")
    inp.add_argument("--pool", choices=("avg", "max"), default=None, help="pooling of intermediate maps")
    inp.add_argument("--test_batch_size", "--tst_batch_size", type=int, default=None, help="eval batch")
    sysg = parser.add_argument_group("system")
    sysg.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    sysg.add_argument("-j", "--workers", "--num_workers", dest="num_workers", type=int, default=None)
    sysg.add_argument(
        "--seed", type=int, default=None, help="seed of the head init, sampling and augmentation"
    )
    sysg.add_argument("--cache_dir", default=None, help="feature cache folder (default: selfsup cache)")
    sysg.add_argument(
        "--no_malloc_tuning", action="store_true", help="keep glibc's malloc thresholds (fewer page faults)"
    )
    sysg.add_argument(
        "--use_cache", action=argparse.BooleanOptionalAction, default=None, help="cached-feature path"
    )


def _optim(parser: argparse.ArgumentParser) -> None:
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--momentum", "--SGD_momentum", type=float, default=None)
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--weight_decay", "--wd", "--weight-decay", type=float, default=None)
    opt.add_argument(
        "--batch_size", "--trn_batch_size", "--batch-size", "--bs", type=int, default=None, help="global"
    )
    opt.add_argument("--epochs", "--max_epoch", type=int, default=None)
    opt.add_argument(
        "--schedule", nargs="+", default=None, help="kind (step|cos|cosine|eveningglow|...) or milestones"
    )
    opt.add_argument("--scheduler_type", choices=("step", "cosine"), default=None)
    opt.add_argument("--cosine", action="store_true", help="cosine schedule (CMC)")
    opt.add_argument("--milestones", "--decay_epochs", "--lr_decay_epochs", nargs="+", default=None)
    opt.add_argument("--gamma", "--lr_decay_rate", type=float, default=None)
    opt.add_argument("--final_lr", type=float, default=None)
    opt.add_argument("--eval_epoch", "--eval_every", dest="eval_every", type=int, default=None)
    opt.add_argument("--select", choices=("max", "last"), default=None, help="reported epoch")
    opt.add_argument("--head_init", choices=("default", "normal"), default=None)
    opt.add_argument("--lr_scale_batch", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--resume", action="store_true", help="continue from the state file")
    opt.add_argument("--state_path", default=None, help="state file (default: RESULT.state.pt)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="selfsup-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="protocol", required=True)

    linear = sub.add_parser("linear", help="frozen trunk + linear classifier")
    _common(linear, "linear")
    _optim(linear)
    lin = linear.add_argument_group("linear")
    lin.add_argument("--lr", "--learning_rate", "--lr-classifier", type=float, default=None)
    lin.add_argument("--optimizer", choices=("sgd", "adam"), default=None)
    lin.add_argument(
        "--bn_train_mode", action="store_true", default=None, help="BN in train mode (EG test.py)"
    )

    semisup = sub.add_parser("semisup", help="fine-tune on 1 %% / 10 %% of the labels")
    _common(semisup, "semisup")
    _optim(semisup)
    semi = semisup.add_argument_group("semi-supervised")
    semi.add_argument("--labels_perc", "--train-percent", "--train_percent", type=float, default=None)
    semi.add_argument("--lr", "--lr-backbone", dest="lr_backbone", type=float, default=None, help="trunk lr")
    semi.add_argument("--lr_last_layer", "--lr-classifier", dest="lr_head", type=float, default=None)
    semi.add_argument("--subset", choices=("auto", "imagenet", "balanced"), default=None)
    semi.add_argument("--subset_seed", type=int, default=None)
    semi.add_argument("--subset_file", default=None, help="repeat a subset (indices or file names)")
    semi.add_argument("--sync_bn", action=argparse.BooleanOptionalAction, default=None)

    knn = sub.add_parser("knn", help="k-nearest-neighbour classifier on frozen features")
    _common(knn, "knn")
    nn_group = knn.add_argument_group("kNN")
    nn_group.add_argument("--k", "--knn_k", "--nn_k", dest="k", type=int, default=None)
    nn_group.add_argument("--temperature", "--knn_t", "--nce_t", type=float, default=None)
    nn_group.add_argument("--metric", choices=("cosine", "euclidean"), default=None)
    nn_group.add_argument("--vote", choices=("weighted", "majority"), default=None)
    nn_group.add_argument("--chunk_size", type=int, default=None, help="queries per chunk")
    nn_group.add_argument("--train_chunk_size", type=int, default=None, help="train features per chunk")

    report = sub.add_parser("report", help="Markdown table and PNG plots from results and logs")
    report.add_argument("--results", nargs="*", default=[], help="result .json files / .jsonl tables")
    report.add_argument("--logs", nargs="*", default=[], help="trainer CSV logs for loss curves")
    report.add_argument("--output_dir", required=True, help="folder for report.md and the PNG plots")
    report.add_argument("--title", default="Evaluation results")
    return parser


#: parsed flags that are run options, not preset fields.
_NOT_OVERRIDES = frozenset(
    {
        "protocol",
        "checkpoint",
        "dataset",
        "dataset_root",
        "download",
        "preset",
        "output",
        "results_table",
        "no_results_table",
        "arch",
        "checkpoint_key",
        "format",
        "allow_partial",
        "use_ema",
        "view",
        "trust",
        "no_malloc_tuning",
        "device",
        "cache_dir",
        "resume",
        "state_path",
        "schedule",
        "scheduler_type",
        "cosine",
        "milestones",
    }
)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Preset overrides from the parsed flags (only those given), with schedule spellings normalised."""
    out = {k: v for k, v in vars(args).items() if k not in _NOT_OVERRIDES and v is not None}
    schedule = getattr(args, "schedule", None)
    milestones = _int_list(getattr(args, "milestones", None))
    if schedule:
        if all(str(item).replace(",", "").isdigit() for item in schedule):
            milestones = _int_list(schedule)
            out["schedule"] = "step"
        elif len(schedule) == 1 and schedule[0] in _SCHEDULE_ALIASES:
            out["schedule"] = _SCHEDULE_ALIASES[schedule[0]]
        else:
            raise ValueError(
                f"--schedule {' '.join(schedule)}: give a kind ({', '.join(SCHEDULES)}) or epochs"
            )
    if getattr(args, "scheduler_type", None):
        out["schedule"] = args.scheduler_type
    if getattr(args, "cosine", False):
        out["schedule"] = "cosine"
    if milestones is not None:
        out["milestones"] = milestones
    return out


def _run_protocol(args: argparse.Namespace) -> dict[str, Any]:
    from selfsup.shared.evaluation.api import evaluate_checkpoint

    output = Path(args.output)
    kwargs: dict[str, Any] = dict(
        dataset=args.dataset,
        root=args.dataset_root,
        preset=args.preset,
        device=args.device,
        download=args.download,
        output=output,
        results_table=False if args.no_results_table else args.results_table,
        **overrides_from_args(args),
    )
    if args.protocol in ("linear", "semisup"):
        kwargs["state_path"] = Path(args.state_path) if args.state_path else output.with_suffix(".state.pt")
        kwargs["resume"] = args.resume
    if args.protocol in ("linear", "knn"):
        kwargs["cache_dir"] = args.cache_dir
    result = evaluate_checkpoint(
        args.protocol,
        args.checkpoint,
        arch=args.arch,
        checkpoint_key=args.checkpoint_key,
        allow_partial=args.allow_partial,
        branch="ema" if args.use_ema else "online",
        view=args.view,
        format=args.format,
        trust=args.trust,
        **kwargs,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.protocol == "report":
        from selfsup.shared.evaluation.report import write_report
        from selfsup.shared.runtime.logger import get_logger

        get_logger("selfsup")  # a skipped plot (no matplotlib) is one warning line with the log's prefix
        try:
            written = write_report(args.results, args.output_dir, logs=args.logs, title=args.title)
        except (FileNotFoundError, ValueError) as err:
            print(f"selfsup-eval report: error: {err}", file=sys.stderr)
            return 2
        if "markdown" in written:
            print(written["markdown"].read_text(encoding="utf-8"))
        for name, path in written.items():
            print(f"{name}: {path}")
        return 0

    from selfsup.shared.data import CorruptImageError
    from selfsup.shared.distributed import cleanup, init_distributed
    from selfsup.shared.runtime.cpu import tune_malloc
    from selfsup.shared.runtime.logger import get_logger

    malloc = None if args.no_malloc_tuning else tune_malloc()  # before the first large allocation
    env = init_distributed(device=args.device)
    get_logger("selfsup", is_main=env.is_main)
    logging.getLogger("selfsup").setLevel(logging.INFO if env.is_main else logging.WARNING)
    logging.getLogger("selfsup").info(
        "%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)"
    )
    if args.device is None:
        args.device = str(env.device)
    try:
        result = _run_protocol(args)
    except CorruptImageError as err:  # evaluation reads every image: there is nothing to skip
        print(f"selfsup-eval {args.protocol}: error: {err.one_line(skip_flag=None)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        print(f"selfsup-eval {args.protocol}: error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    if env.is_main:
        summary = {
            key: result.get(key) for key in ("protocol", "preset", "path", "top1", "top5", "best_epoch")
        }
        print(json.dumps({**summary, "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
