"""``python -m selfsup.transfer.detr_train``: DETR's own ``main.py``, starting from a selfsup backbone.

    python -m selfsup.transfer.detr_train --detr_root ~/detr --selfsup_weights r50_detr.pth \\
        --coco_path /data/coco --output_dir runs/detr_swav --lr_backbone 5e-5

Every flag but ``--detr_root`` and ``--selfsup_weights`` is DETR ``main.py``'s own, parsed by its
``get_args_parser()`` (argparse ``parents=``) with its defaults and meaning: ``--backbone``, ``--lr_backbone``,
``--resume``, ``--eval``, ``--dist_url``... The launcher then runs DETR's ``main(args)`` unchanged, except that

* building the backbone downloads nothing (``selfsup.transfer.detr.import_detr``);
* right after ``build_model(args)``, before the model moves to the device, is wrapped in DDP and before the
  optimizer is made, the converted file fills ``backbone[0].body`` strictly (``load_into_detr``). A ``--resume``
  or ``--frozen_weights`` checkpoint still loads over it afterwards, as in DETR;
* ``argparse.Namespace`` is allowed in ``torch.load``: DETR stores its ``args`` in every checkpoint, and
  torch >= 2.6 loads with ``weights_only=True`` by default, which otherwise refuses DETR's own ``--resume`` files.

The file's preset is checked against ``--backbone`` before anything starts, and the run records which weights it
started from in ``<output_dir>/selfsup_init.json``. Distributed runs start as DETR's do (``torchrun``, which sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); see ``transfer/scripts/detr_coco_torchrun.sh`` and ``detr_coco.sbatch``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from selfsup.shared.checkpoints.formats import file_sha256
from selfsup.transfer.convert import DETR_TARGET
from selfsup.transfer.detr import (
    ConvertedWeights,
    LoadReport,
    backbone_weights,
    import_detr_main,
    load_into_detr,
    read_converted,
)

__all__ = ["PROG", "build_parser", "install_backbone_loader", "main"]

PROG = "python -m selfsup.transfer.detr_train"
#: Written beside DETR's ``log.txt``: where the backbone came from.
RECORD = "selfsup_init.json"
_DESCRIPTION = "Fine-tune DETR (facebookresearch/detr main.py) from a selfsup-converted ResNet backbone."


def _own_flags(add_help: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, add_help=add_help)
    group = parser.add_argument_group("selfsup")
    group.add_argument(
        "--detr_root", default=None, help="facebookresearch/detr checkout (the folder with main.py, models/)"
    )
    group.add_argument(
        "--selfsup_weights", default=None, help="backbone file written by `selfsup-convert detr`"
    )
    return parser


def build_parser(detr_main: ModuleType) -> argparse.ArgumentParser:
    """DETR's ``get_args_parser()`` plus ``--detr_root`` and ``--selfsup_weights``."""
    return argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, parents=[detr_main.get_args_parser(), _own_flags(add_help=False)]
    )


def _record(
    args: argparse.Namespace, converted: ConvertedWeights, report: LoadReport, argv: Sequence[str]
) -> None:
    payload: dict[str, Any] = {
        "selfsup_weights": str(Path(args.selfsup_weights).resolve()),
        "selfsup_weights_sha256": file_sha256(args.selfsup_weights),
        "detr_root": str(Path(args.detr_root).resolve()),
        "loaded_into": report.module,
        "num_tensors": len(report.loaded),
        "selfsup_preset": converted.preset,
        "argv": list(argv),
    }
    path = Path(args.output_dir) / RECORD
    path.write_text(json.dumps(payload, indent=2) + "\n")


def install_backbone_loader(
    detr_main: ModuleType, converted: ConvertedWeights, argv: Sequence[str] = ()
) -> None:
    """Wrap ``detr_main.build_model`` so that every model it builds starts from ``converted``.

    With ``args.output_dir`` set, the main process writes ``selfsup_init.json`` there (file, SHA-256, preset,
    ``argv``). ``main.py`` calls the ``build_model`` name it imported, so the wrapper replaces that name in
    ``detr_main`` (``models.build_model`` itself is left alone).
    """
    original: Callable[..., Any] = getattr(detr_main, "_selfsup_original_build_model", detr_main.build_model)

    @functools.wraps(original)
    def build_model(args: argparse.Namespace) -> Any:
        model, criterion, postprocessors = original(args)
        report = load_into_detr(model, converted, backbone_name=args.backbone)
        print(f"selfsup: {report} (--backbone {args.backbone})", flush=True)
        if getattr(args, "output_dir", "") and detr_main.utils.is_main_process():
            _record(args, converted, report, argv)
        return model, criterion, postprocessors

    detr_main._selfsup_original_build_model = original
    detr_main.build_model = build_model


def _wants_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = _own_flags(add_help=True)
    known, _ = _own_flags(add_help=False).parse_known_args(argv)
    if known.detr_root is None:
        if _wants_help(argv):
            own.print_help()
            print("\nPass --detr_root to list DETR main.py's own flags too.")
            return 0
        own.error("--detr_root is required: a facebookresearch/detr checkout (git clone the repository)")
    try:
        detr_main = import_detr_main(known.detr_root)
    except (ValueError, ImportError) as err:
        own.error(f"--detr_root {known.detr_root}: {err}")
    parser = build_parser(detr_main)
    args = parser.parse_args(argv)
    if args.selfsup_weights is None:
        parser.error("--selfsup_weights is required: a backbone file written by `selfsup-convert detr`")
    try:
        converted = read_converted(args.selfsup_weights)
        backbone_weights(converted, DETR_TARGET, args.backbone)  # preset and keys, before DETR starts
    except FileNotFoundError:
        parser.error(f"--selfsup_weights {args.selfsup_weights} not found")
    except (ValueError, OSError) as err:  # PresetMismatchError is a ValueError
        parser.error(f"--selfsup_weights: {err}")
    if args.output_dir:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)  # as DETR's own __main__ block does
    install_backbone_loader(detr_main, converted, argv)
    torch.serialization.add_safe_globals([argparse.Namespace])
    detr_main.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
