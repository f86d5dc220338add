"""``selfsup-transfer``: fine-tune a converted self-supervised ResNet in Detectron2 (VOC or COCO) and evaluate it.

    selfsup-convert detectron2 --checkpoint ckpt.pth --output r50.pkl
    selfsup-transfer --config-file voc_R_50_C4_24k --num-gpus 8 MODEL.WEIGHTS r50.pkl
    selfsup-transfer --config-file coco_R_50_FPN_1x --num-gpus 4 MODEL.WEIGHTS r50.pkl  # lr and iterations x2
    selfsup-transfer --config-file voc_R_50_C4_24k --eval-only MODEL.WEIGHTS output/model_final.pth

(also ``python -m selfsup.transfer.train_net``). The flags are Detectron2's ``default_argument_parser`` (as in
MoCo's ``detection/train_net.py``) plus:

* ``--config-file`` takes a shipped config by name (``voc_R_50_C4_24k``, ``coco_R_50_C4_1x``/``2x``,
  ``coco_R_50_FPN_1x``/``2x``; ``transfer/configs/detectron2/``) or a path;
* ``--reference-world-size N``: the GPU count the recipe was written for (8 in the shipped configs); on fewer or
  more GPUs Detectron2 scales the batch, learning rate, iterations and steps linearly; 0 turns scaling off;
* ``--register-coco NAME JSON IMAGE_ROOT`` / ``--register-voc NAME DIR SPLIT YEAR`` (+ ``--voc-classes``):
  datasets beyond Detectron2's built-in splits (``selfsup.transfer.detectron2_data``);
* ``--from-scratch``: allow an empty ``MODEL.WEIGHTS`` (otherwise an error: a forgotten flag would cost a run).

Before any process starts, ``MODEL.WEIGHTS`` is checked against the preset ``selfsup-convert`` recorded in it
(``selfsup.transfer.presets``): a torchvision-style backbone under the wrong input format, pixel statistics or
stride placement raises no error in Detectron2, only a worse AP, so a mismatch is refused here. On a machine
without CUDA, ``MODEL.DEVICE`` becomes ``cpu``. The final metrics are written to ``OUTPUT_DIR/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.transfer.detectron2_data import VOC_CLASSES, check_coco, check_voc
from selfsup.transfer.presets import PresetMismatchError, detectron2_preset_mismatches, read_preset

__all__ = ["CONFIG_DIR", "build_parser", "main", "resolve_config", "setup", "shipped_configs"]

#: The shipped Detectron2 configs.
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "detectron2"
INSTALL_HINT = (
    "Detectron2 is not installed; build it from source (docs/transfer.md): pip install 'setuptools<80' wheel ninja "
    "&& pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git@02b5c4e295e990042a714712c21dc79b731e8833'"
)
logger = logging.getLogger("selfsup.transfer")


def shipped_configs() -> list[str]:
    """Names of the shipped configs that ``--config-file`` accepts (the base files excluded)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("Base-"))


def resolve_config(name_or_path: str) -> Path:
    """A path as given if it exists, else the shipped config of that name (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".yaml" else path.name + ".yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ValueError(
        f"--config-file {name_or_path}: no such file and no shipped config of that name "
        f"(shipped: {', '.join(shipped_configs())})"
    )


def build_parser() -> argparse.ArgumentParser:
    from detectron2.engine import default_argument_parser

    parser = default_argument_parser(
        epilog="Shipped configs: "
        + ", ".join(shipped_configs())
        + ". Trailing KEY VALUE pairs override the config."
    )
    parser.prog = "selfsup-transfer"
    parser.add_argument(
        "--reference-world-size",
        type=int,
        default=None,
        help="GPU count the config's schedule is for (SOLVER.REFERENCE_WORLD_SIZE; 8 in the shipped configs); "
        "other counts scale batch, lr and iterations linearly; 0: no scaling",
    )
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format dataset (then use it in DATASETS.TRAIN / DATASETS.TEST)",
    )
    parser.add_argument(
        "--register-voc",
        nargs=4,
        action="append",
        default=[],
        metavar=("NAME", "DIR", "SPLIT", "YEAR"),
        help="register a Pascal-VOC-format folder (YEAR 2007 uses the VOC07 11-point metric)",
    )
    parser.add_argument(
        "--voc-classes",
        nargs="+",
        default=list(VOC_CLASSES),
        help="class names of the --register-voc datasets (default: the 20 VOC classes)",
    )
    parser.add_argument(
        "--from-scratch", action="store_true", help="train without MODEL.WEIGHTS (random initialisation)"
    )
    return parser


def _voc_year(args: argparse.Namespace, index: int) -> int:
    name, _, _, year = args.register_voc[index]
    try:
        return int(year)
    except ValueError:
        raise ValueError(f"--register-voc {name}: YEAR must be 2007 or 2012, got {year!r}") from None


def register_datasets(args: argparse.Namespace, check_only: bool = False) -> None:
    """Check (``check_only``) or register the ``--register-coco`` / ``--register-voc`` datasets."""
    from selfsup.transfer.detectron2_data import register_coco, register_voc

    for name, json_file, image_root in args.register_coco:
        (check_coco if check_only else register_coco)(name, json_file, image_root)
    for index, (name, dirname, split, _) in enumerate(args.register_voc):
        year = _voc_year(args, index)
        if check_only:
            check_voc(name, dirname, split, year)
        else:
            register_voc(name, dirname, split, year, args.voc_classes)


def _last_checkpoint_exists(cfg: Any) -> bool:
    return (Path(cfg.OUTPUT_DIR) / "last_checkpoint").is_file()


def check_weights(cfg: Any, args: argparse.Namespace) -> list[str]:
    """Refuse missing weights and a config that disagrees with their recorded preset; return warnings."""
    weights = str(cfg.MODEL.WEIGHTS)
    resuming = args.resume and _last_checkpoint_exists(cfg)
    if not weights:
        if args.from_scratch or resuming:
            return []
        raise ValueError(
            "MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS r50.pkl` (a selfsup-convert detectron2 file), "
            "or --from-scratch for a randomly initialised network"
        )
    if "://" in weights:
        return [f"MODEL.WEIGHTS {weights} is not a local file, so its preset was not checked"]
    if not Path(weights).is_file():
        raise ValueError(f"MODEL.WEIGHTS {weights}: file not found")
    preset = read_preset(weights)
    if preset is None:
        return [
            f"MODEL.WEIGHTS {weights} records no selfsup preset (not written by selfsup-convert): check "
            "INPUT.FORMAT, MODEL.PIXEL_MEAN/PIXEL_STD and MODEL.RESNETS.STRIDE_IN_1X1 against how it was trained"
        ]
    if "backbone" in preset:  # a DETR file
        raise PresetMismatchError(
            f"MODEL.WEIGHTS {weights} was converted for DETR; convert with `selfsup-convert detectron2`"
        )
    mismatches = detectron2_preset_mismatches(cfg, preset)
    if mismatches:
        raise PresetMismatchError(f"MODEL.WEIGHTS {weights} needs another config: {'; '.join(mismatches)}")
    return []


def load_config(args: argparse.Namespace) -> Any:
    """The merged, checked and frozen config (no logging set-up, no files written)."""
    import torch
    from detectron2.config import get_cfg

    from selfsup.transfer.detectron2_heads import register_extra_norm_head

    register_extra_norm_head()
    args.config_file = str(resolve_config(args.config_file))  # default_setup copies it into OUTPUT_DIR
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.reference_world_size is not None:
        if args.reference_world_size < 0:
            raise ValueError(f"--reference-world-size must be >= 0, got {args.reference_world_size}")
        cfg.SOLVER.REFERENCE_WORLD_SIZE = args.reference_world_size
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def setup(args: argparse.Namespace) -> Any:
    """``load_config`` plus Detectron2's ``default_setup`` (logging, config and environment in OUTPUT_DIR)."""
    from detectron2.engine import default_setup

    cfg = load_config(args)
    default_setup(cfg, args)
    return cfg


def _trainer_class() -> Any:
    from detectron2.engine import DefaultTrainer

    from selfsup.transfer.detectron2_data import build_evaluator

    class Trainer(DefaultTrainer):
        """``DefaultTrainer`` whose evaluator follows the dataset (COCO or Pascal VOC)."""

        @classmethod
        def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: str | None = None) -> Any:
            return build_evaluator(cfg, dataset_name, output_folder)

    return Trainer


def _write_metrics(cfg: Any, results: Any) -> None:
    from detectron2.utils import comm

    if not results or not comm.is_main_process():
        return
    path = Path(cfg.OUTPUT_DIR) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    os.replace(tmp, path)


def worker(args: argparse.Namespace) -> Any:
    """One training (or ``--eval-only``) process: what Detectron2's ``launch`` runs on every GPU."""
    from detectron2.checkpoint import DetectionCheckpointer

    register_datasets(args)
    cfg = setup(args)
    for warning in check_weights(cfg, args):
        logger.warning(warning)
    trainer_class = _trainer_class()
    if args.eval_only:
        model = trainer_class.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = trainer_class.test(cfg, model)
    else:
        trainer = trainer_class(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train() or getattr(trainer, "_last_eval_results", None)
    _write_metrics(cfg, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from detectron2.engine import launch
    except ImportError:
        print(f"selfsup-transfer: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        register_datasets(args, check_only=True)
        cfg = load_config(args)
        check_weights(cfg, args)
    except (ValueError, OSError, KeyError, AssertionError) as err:  # yacs asserts on malformed overrides
        parser.error(str(err).strip("'\""))
    launch(
        worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
