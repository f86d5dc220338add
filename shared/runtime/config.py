"""Flags shared by every trainer, and the run config saved beside each run and inside each checkpoint.

Each project's ``cli.py`` keeps the original flag spellings and takes these through argparse ``parents=``.
The resolved values become a frozen dataclass; ``config.json`` records argv as typed, the resolved values,
the package version and the git revision, and the same plain dict is stored in every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.shared import __version__
from selfsup.shared.data import DATASET_NAMES
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.precision import PRECISIONS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each flag's default once: appended as ``(default: X)`` unless the help text
    already says what the default is, and never for ``None`` or an unset switch (``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def common_parser(
    *, dataset_aliases: Sequence[str] = (), root_flag: str = "--dataset_root", backbone: bool = True
) -> argparse.ArgumentParser:
    """Data, backbone, precision, distributed and checkpoint flags (a parent parser, no ``-h``).

    ``dataset_aliases`` are extra ``--dataset`` values of an original trainer that name an image folder (CMC's
    ``imagenet`` and ``imagenet100``); :func:`resolve_dataset` maps them to ``imagefolder``. ``root_flag`` is the
    trainer's own name of the data folder flag (for the help text). Trainers whose original picks the network by
    its own flag (CMC's ``--model``) pass ``backbone=False`` and keep only ``--cifar_stem``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    data = parser.add_argument_group("data (shared by every selfsup trainer)")
    data.add_argument(
        "--dataset",
        choices=(*DATASET_NAMES, *dataset_aliases),
        default=None,
        help=f"dataset to train on; default: imagefolder when {root_flag} is given, else the embedded digits",
    )
    data.add_argument("--download", action="store_true", help="download torchvision datasets when missing")
    data.add_argument(
        "--skip_corrupt", action="store_true", help="skip (and count) unreadable images instead of failing"
    )
    model = parser.add_argument_group("backbone")
    if backbone:
        model.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet50", help="backbone")
        model.add_argument("--width", type=int, default=None, help="base width of the ResNet (default: 64)")
    model.add_argument("--cifar_stem", action="store_true", help="3x3 stride-1 stem without max-pool")
    speed = parser.add_argument_group("precision and speed")
    speed.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="autocast precision; auto: bf16 on a GPU or CPU with native bf16, else fp32",
    )
    speed.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    speed.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    speed.add_argument(
        "--no_malloc_tuning",
        action="store_true",
        help="keep glibc's malloc thresholds (by default freed memory stays in the process: fewer page faults)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="seed of every random generator")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    run.add_argument("--dist_backend", default=None, help="torch.distributed backend (default: nccl/gloo)")
    run.add_argument(
        "--ckpt_interval",
        type=int,
        default=0,
        help="also write the run's last checkpoint every N iterations (0: only at epoch ends and on signals)",
    )
    run.add_argument("--log_every", type=int, default=10, help="console/CSV log period in iterations")
    run.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard scalars")
    run.add_argument("--no_progress", action="store_true", help="no tqdm progress bar")
    run.add_argument(
        "--max_iters", type=int, default=0, help="stop after N iterations in total (0: no limit)"
    )
    return parser


def resolve_dataset(
    args: argparse.Namespace, *, root_flag: str = "dataset_root", aliases: Sequence[str] = ()
) -> str:
    """``--dataset`` default: imagefolder with a ``--dataset_root``, otherwise the embedded ``digits``; an
    alias of an original trainer (``aliases``) is an image folder."""
    if args.dataset is not None:
        return "imagefolder" if args.dataset in aliases else args.dataset
    return "imagefolder" if getattr(args, root_flag, None) else "digits"


def freeze(args: argparse.Namespace, name: str = "RunConfig") -> Any:
    """The resolved arguments as an instance of a frozen dataclass (attribute access, immutable)."""
    values = vars(args)
    cls = dataclasses.make_dataclass(
        name, [(k, type(v) if v is not None else Any) for k, v in values.items()], frozen=True
    )
    return cls(**values)


def git_revision(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_record(config: Any, argv: list[str] | None = None) -> dict[str, Any]:
    """A JSON-able dict: argv as typed, resolved values, package version and git revision."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(vars(config))
    return {
        "argv": list(sys.argv if argv is None else argv),
        "args": json.loads(json.dumps(values, default=str)),
        "selfsup_version": __version__,
        "git_revision": git_revision(),
    }


def save_run_config(record: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
