"""COCO box / mask AP for detection transfer: turn predictions into COCO results and score them with pycocotools.

    python -m selfsup.transfer.coco_eval --annotations instances_val2017.json --results results.json \\
        [--iou-types bbox segm] [--output metrics.json]

The numbers are the ones Detectron2's ``COCOEvaluator`` reports: pycocotools' ``COCOeval`` (``evaluate``,
``accumulate``, ``summarize``) per IoU type, the first six summary values (AP over IoU 0.50:0.95, AP50, AP75,
AP for small / medium / large objects, all at 100 detections per image) times 100. A ``-1`` from pycocotools
(no ground truth of that size) becomes ``nan``. As in Detectron2, mask results are scored without their ``bbox``,
so a result's area (which decides its size range) is its mask's area.

Predictions from either framework go through :func:`instances_to_coco_results` one image at a time:

* Detectron2: ``instances.pred_boxes.tensor``, ``instances.scores``, ``instances.pred_classes`` (and
  ``instances.pred_masks``), with ``category_ids`` the dataset's ``thing_dataset_id_to_contiguous_id`` inverted;
* DETR: the ``boxes``/``scores``/``labels`` of ``PostProcess`` (absolute XYXY; DETR's raw ``pred_boxes`` are
  normalised cxcywh and must go through it first), whose labels are already COCO ids (``category_ids=None``).

Everything is checked before pycocotools sees it: it answers an empty result list with an ``IndexError``, a
foreign image id with a bare ``AssertionError``, drops results of unknown categories silently, and scores
box-only results as masks by turning each box into a rectangle.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from selfsup.shared.runtime.config import HelpFormatter

__all__ = [
    "IOU_TYPES",
    "METRIC_NAMES",
    "AnnotationsError",
    "build_parser",
    "format_table",
    "instances_to_coco_results",
    "load_coco",
    "load_results",
    "main",
    "score_coco",
    "write_coco_results",
]

#: IoU types this module scores (pycocotools also knows ``keypoints``; no transfer task here uses it).
IOU_TYPES = ("bbox", "segm")
#: Names of ``COCOeval.stats[:6]``, in order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_COCO_KEYS = ("images", "annotations", "categories")


class AnnotationsError(ValueError):
    """The annotations (not the results) are unusable: not COCO JSON, or lacking what an IoU type needs."""


# ------------------------------------------------------------------------------------------ conversion


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch tensor or a numpy array, got {type(value).__name__}")


def instances_to_coco_results(
    image_id: int,
    boxes_xyxy: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    category_ids: Sequence[int] | None = None,
    masks: torch.Tensor | np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Turn one image's predictions into COCO result dicts, ready for ``json.dump`` and :func:`score_coco`.

    Args:
        image_id: the image's ``id`` in the annotations file.
        boxes_xyxy: ``[N, 4]`` boxes in absolute pixels, ``(x1, y1, x2, y2)``.
        scores: ``[N]`` confidences.
        labels: ``[N]`` integer classes: contiguous 0-based indices into ``category_ids``, or COCO category
            ids themselves when ``category_ids`` is None.
        category_ids: COCO category id of each contiguous class (e.g. the 80 ids 1..90 of COCO).
        masks: optional ``[N, H, W]`` binary masks (bool, or 0/1 values) at the image's size; each becomes a
            compressed RLE ``{"size": [H, W], "counts": str}``.

    Returns:
        ``N`` dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (plus ``"segmentation"``
        with ``masks``) holding plain Python numbers.
    """
    boxes = _as_numpy(boxes_xyxy, "boxes_xyxy")
    score_array = _as_numpy(scores, "scores")
    label_array = _as_numpy(labels, "labels")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes_xyxy must have shape [N, 4], got {list(boxes.shape)}")
    count = boxes.shape[0]
    if score_array.shape != (count,):
        raise ValueError(f"scores must have shape [{count}] (one per box), got {list(score_array.shape)}")
    if label_array.shape != (count,):
        raise ValueError(f"labels must have shape [{count}] (one per box), got {list(label_array.shape)}")
    if count and not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {label_array.dtype}")
    if not np.isfinite(boxes).all() or not np.isfinite(score_array).all():
        raise ValueError("boxes_xyxy and scores must be finite")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if (widths < 0).any() or (heights < 0).any():
        bad = int(np.flatnonzero((widths < 0) | (heights < 0))[0])
        raise ValueError(
            f"box {bad} {boxes[bad].tolist()} has x2 < x1 or y2 < y1; boxes must be absolute XYXY "
            "(DETR's raw pred_boxes are normalised cxcywh: convert them with its PostProcess)"
        )
    if category_ids is not None and count:
        outside = (label_array < 0) | (label_array >= len(category_ids))
        if outside.any():
            raise ValueError(
                f"label {int(label_array[outside][0])} is outside the {len(category_ids)} category_ids"
            )
    rles = _encode_masks(masks, count) if masks is not None else None
    results = []
    for index in range(count):
        label = int(label_array[index])
        result: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[label]) if category_ids is not None else label,
            "bbox": [
                float(boxes[index, 0]),
                float(boxes[index, 1]),
                float(widths[index]),
                float(heights[index]),
            ],
            "score": float(score_array[index]),
        }
        if rles is not None:
            result["segmentation"] = rles[index]
        results.append(result)
    return results


def _encode_masks(masks: torch.Tensor | np.ndarray, count: int) -> list[dict[str, Any]]:
    array = _as_numpy(masks, "masks")
    if array.ndim != 3 or array.shape[0] != count:
        raise ValueError(f"masks must have shape [{count}, H, W] (one per box), got {list(array.shape)}")
    if array.dtype != np.bool_ and ((array != 0) & (array != 1)).any():
        raise ValueError("masks must be binary (bool or 0/1); threshold soft masks first")
    if count == 0:
        return []
    # pycocotools wants [H, W, N] uint8 in Fortran order; bytes counts are not JSON, so decode them.
    rles = mask_util.encode(np.asfortranarray(array.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def write_coco_results(results: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``results`` as a COCO results JSON file, atomically (temp file + ``os.replace``); return the path."""
    path = Path(path)
    text = json.dumps(list(results))  # fails on a non-serialisable value before anything is written
    _atomic_write_text(path, text)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so an interrupted run leaves no truncated output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ loading


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found")
    try:
        with path.open(encoding="utf-8") as stream:
            return json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        error = AnnotationsError if what == "annotations" else ValueError
        raise error(f"{what} file {path} is not JSON ({err})") from None


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Silence pycocotools' progress prints unless ``verbose``."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(annotations: str | os.PathLike | COCO, *, verbose: bool = False) -> COCO:
    """Return ``annotations`` as a pycocotools ``COCO``, reading a file after checking it is COCO JSON."""
    if isinstance(annotations, COCO):
        return annotations
    path = Path(annotations)
    data = _read_json(path, "annotations")
    if isinstance(data, list):
        raise AnnotationsError(
            f"annotations file {path} holds a JSON list, not a COCO dataset (is it a results file?)"
        )
    if not isinstance(data, dict) or any(not isinstance(data.get(key), list) for key in _COCO_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise AnnotationsError(
            f"annotations file {path} is not COCO instances JSON: needs lists {', '.join(_COCO_KEYS)}, "
            f"found {found}"
        )
    coco = COCO()
    coco.dataset = data
    with _quiet(verbose):
        coco.createIndex()
    return coco


def load_results(results: str | os.PathLike | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return ``results`` as a list of COCO result dicts, reading a results JSON file when given a path."""
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        data = _read_json(path, "results")
        if not isinstance(data, list):
            raise ValueError(
                f"results file {path} holds a JSON {type(data).__name__}, not a list of result dicts"
                + (" (is it an annotations file?)" if isinstance(data, dict) and "images" in data else "")
            )
        results = data
    results = list(results)
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise ValueError(f"result {index} is a {type(result).__name__}, not a dict")
        missing = [key for key in ("image_id", "category_id", "score") if key not in result]
        if missing:
            raise ValueError(f"result {index} lacks {', '.join(missing)}")
    return results


# ------------------------------------------------------------------------------------------ scoring


def _check(coco: COCO, results: list[dict[str, Any]], iou_types: Sequence[str]) -> None:
    unknown_types = [t for t in iou_types if t not in IOU_TYPES]
    if unknown_types or not iou_types:
        raise ValueError(f"iou_types {list(iou_types)}: choose one or more of {', '.join(IOU_TYPES)}")
    if not results:
        raise ValueError("no predictions: the results are empty, so there is nothing to score")
    image_ids, category_ids = set(coco.getImgIds()), set(coco.getCatIds())
    for result in results:
        if result["image_id"] not in image_ids:
            raise ValueError(
                f"results hold image_id {result['image_id']!r}, which the annotations do not have"
            )
        if result["category_id"] not in category_ids:
            raise ValueError(
                f"results hold category_id {result['category_id']!r}, which the annotations do not have "
                f"(they have {sorted(category_ids)}); map contiguous labels through category_ids"
            )
    if "bbox" in iou_types:
        bad = next((i for i, r in enumerate(results) if not _is_box(r.get("bbox"))), None)
        if bad is not None:
            raise ValueError(
                f"iou type 'bbox' needs a 4-number 'bbox' [x, y, w, h] in every result; result {bad} has "
                f"{results[bad].get('bbox')!r}"
            )
    if "segm" in iou_types:
        bad = next((i for i, r in enumerate(results) if "segmentation" not in r), None)
        if bad is not None:
            raise ValueError(
                f"iou type 'segm' needs a 'segmentation' in every result; result {bad} has none "
                "(pass masks to instances_to_coco_results, or score bbox only)"
            )
        bad = next((i for i, r in enumerate(results) if not _is_rle(r["segmentation"])), None)
        if bad is not None:
            raise ValueError(f"result {bad}: a 'segmentation' must be RLE {{'size', 'counts'}}, not polygons")
        missing = [a["id"] for a in coco.dataset["annotations"] if "segmentation" not in a]
        if missing:
            raise AnnotationsError(f"iou type 'segm': annotations {missing[:5]} have no 'segmentation'")


def _is_box(bbox: Any) -> bool:
    return isinstance(bbox, (list, tuple)) and len(bbox) == 4


def _is_rle(segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and "size" in segmentation and "counts" in segmentation


def _results_for(results: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """Copies pycocotools may annotate in place; mask results lose ``bbox`` so their area is the mask's."""
    copies = [dict(result) for result in results]
    if iou_type == "segm":
        for result in copies:
            result.pop("bbox", None)
    return copies


def score_coco(
    annotations: str | os.PathLike | COCO,
    results: str | os.PathLike | Sequence[dict[str, Any]],
    iou_types: Sequence[str] = ("bbox",),
    *,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """Score COCO results against COCO annotations with pycocotools' ``COCOeval``.

    Args:
        annotations: an instances JSON file (``instances_val2017.json``) or a loaded ``COCO``. pycocotools
            converts a ``COCO``'s ground-truth polygons to RLE in place when scoring ``segm``.
        results: a results JSON file or a list of result dicts (:func:`instances_to_coco_results`); not
            modified.
        iou_types: any of ``"bbox"``, ``"segm"``.
        verbose: let pycocotools print its progress and its 12-line summary.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in percent; ``nan`` where the annotations
        hold no object of that size.

    Raises:
        FileNotFoundError: a file is missing.
        AnnotationsError: (a ``ValueError``) the annotations file is not COCO JSON, or its annotations lack
            the ``segmentation`` that ``segm`` needs.
        ValueError: the results are not a list of result dicts, are empty, name an image or category the
            annotations lack, or lack what an IoU type needs.
    """
    iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
    coco = load_coco(annotations, verbose=verbose)
    result_list = load_results(results)
    _check(coco, result_list, iou_types)
    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        with _quiet(verbose):
            detections = coco.loadRes(_results_for(result_list, iou_type))
            evaluator = COCOeval(coco, detections, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics[iou_type] = {
            name: float(value) * 100 if value >= 0 else math.nan
            for name, value in zip(METRIC_NAMES, evaluator.stats[: len(METRIC_NAMES)])
        }
    return metrics


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table: one row per IoU type, one column per metric, 3 decimals."""
    names = list(dict.fromkeys(name for row in metrics.values() for name in row)) or list(METRIC_NAMES)
    lines = [f"{'iou type':<8}" + "".join(f"{name:>9}" for name in names)]
    for iou_type, row in metrics.items():
        cells = (row.get(name, math.nan) for name in names)
        lines.append(f"{iou_type:<8}" + "".join(f"{value:>9.3f}" for value in cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.transfer.coco_eval",
        description="Score COCO detection / instance segmentation results with pycocotools (AP in percent).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--annotations", required=True, help="COCO instances JSON, e.g. instances_val2017.json"
    )
    parser.add_argument(
        "--results", required=True, help="COCO results JSON: a list of {image_id, category_id, bbox, score}"
    )
    parser.add_argument(
        "--iou-types",
        "--iou_types",
        dest="iou_types",
        nargs="+",
        choices=IOU_TYPES,
        default=["bbox"],
        help="what to score; segm needs 'segmentation' (RLE) in the results",
    )
    parser.add_argument("--output", default=None, help="also write the metrics here as JSON (nan as null)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output is not None else None
    if output is not None and output.is_dir():
        parser.error(f"--output {output} is a directory; name the file to write")
    iou_types = list(dict.fromkeys(args.iou_types))
    try:
        coco = load_coco(args.annotations)
    except (OSError, ValueError) as err:
        parser.error(f"--annotations: {err}")
    try:
        metrics = score_coco(coco, load_results(args.results), iou_types)
    except AnnotationsError as err:
        parser.error(f"--annotations: {err}")
    except (OSError, ValueError) as err:
        parser.error(f"--results: {err}")
    print(format_table(metrics))
    if output is not None:
        plain = {t: {k: None if math.isnan(v) else v for k, v in row.items()} for t, row in metrics.items()}
        try:
            _atomic_write_text(output, json.dumps(plain, indent=2) + "\n")
        except OSError as err:
            parser.error(f"--output: {err}")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
