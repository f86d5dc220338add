"""Datasets and evaluators for ``selfsup-transfer``: the launcher's ``--register-*`` flags and the evaluator that
each dataset's metadata asks for.

Detectron2 registers the standard splits itself (``coco_2017_train``/``val``, ``voc_2007_trainval``/``test``,
``voc_2012_trainval``) under ``$DETECTRON2_DATASETS`` (default ``./datasets``; layout in ``docs/transfer.md``).
Other data in the same formats is registered by name from the command line:

* ``--register-coco NAME JSON IMAGE_ROOT``: COCO instances JSON (boxes, and polygons or RLE for masks);
* ``--register-voc NAME DIR SPLIT YEAR``: a VOC folder (``Annotations/``, ``JPEGImages/``,
  ``ImageSets/Main/<SPLIT>.txt``); ``--voc-classes`` names its classes (default: the 20 VOC classes).

The evaluator follows ``MetadataCatalog.get(name).evaluator_type``: ``coco`` -> ``COCOEvaluator`` (pycocotools,
bbox and, with masks, segm), ``pascal_voc`` -> ``PascalVOCDetectionEvaluator`` (AP, AP50, AP75; VOC07 11-point
metric for 2007 data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["VOC_CLASSES", "build_evaluator", "check_coco", "check_voc", "register_coco", "register_voc"]

#: Detectron2's Pascal VOC classes, in its order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _check_new(name: str, flag: str) -> None:
    from detectron2.data import DatasetCatalog

    if name in DatasetCatalog.list():
        raise ValueError(f"{flag} {name}: a dataset of that name is registered already; choose another name")


def check_coco(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike) -> None:
    """``ValueError`` naming ``--register-coco`` unless ``name`` is free and both paths exist."""
    _check_new(name, "--register-coco")
    if not Path(json_file).is_file():
        raise ValueError(f"--register-coco {name}: annotation file {json_file} not found")
    if not Path(image_root).is_dir():
        raise ValueError(f"--register-coco {name}: image folder {image_root} not found")


def register_coco(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike) -> None:
    """Register a COCO-format instances dataset under ``name`` (``--register-coco NAME JSON IMAGE_ROOT``)."""
    from detectron2.data.datasets import register_coco_instances

    check_coco(name, json_file, image_root)
    register_coco_instances(name, {}, str(json_file), str(image_root))


def check_voc(name: str, dirname: str | os.PathLike, split: str, year: int) -> None:
    """``ValueError`` naming ``--register-voc`` unless ``name`` is free, ``dirname`` is a VOC folder holding
    ``split`` and ``year`` is 2007 or 2012."""
    _check_new(name, "--register-voc")
    for needed in ("Annotations", "JPEGImages", f"ImageSets/Main/{split}.txt"):
        if not (Path(dirname) / needed).exists():
            raise ValueError(
                f"--register-voc {name}: {Path(dirname) / needed} not found (expected a VOC folder)"
            )
    if year not in (2007, 2012):
        raise ValueError(
            f"--register-voc {name}: YEAR must be 2007 or 2012 (sets the VOC07 metric), got {year}"
        )


def register_voc(
    name: str, dirname: str | os.PathLike, split: str, year: int, classes: Sequence[str] = VOC_CLASSES
) -> None:
    """Register a Pascal-VOC-format folder under ``name`` (``--register-voc NAME DIR SPLIT YEAR``)."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import register_pascal_voc

    check_voc(name, dirname, split, year)
    register_pascal_voc(name, str(dirname), split, year, class_names=tuple(classes))
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"


def build_evaluator(cfg: Any, dataset_name: str, output_folder: str | None = None) -> Any:
    """The evaluator ``dataset_name``'s metadata asks for (COCO or Pascal VOC); ``ValueError`` for any other."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    kind = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if kind == "coco":
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    if kind == "pascal_voc":
        return PascalVOCDetectionEvaluator(dataset_name)
    raise ValueError(
        f"DATASETS.TEST {dataset_name}: evaluator type {kind!r}; selfsup-transfer evaluates COCO and Pascal VOC "
        "datasets (register yours with --register-coco or --register-voc)"
    )
