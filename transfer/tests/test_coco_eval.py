"""COCO scoring against values worked out by hand, on a 3-image fixture; conversion, errors and the CLI.

``fixtures/coco_tiny/instances_tiny.json`` holds 7 objects of 2 categories with non-contiguous ids (3 "car",
7 "train"), each with a polygon (rectangles, triangles, an L shape). Every category has one object or more of
each COCO size (area < 32², 32²..96², > 96²), so APs / APm / APl are all defined. All box widths are multiples
of 13, so the shift of the IoU test is a whole number of pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from selfsup.transfer.coco_eval import (
    METRIC_NAMES,
    AnnotationsError,
    format_table,
    instances_to_coco_results,
    load_coco,
    main,
    score_coco,
    write_coco_results,
)

ANNOTATIONS = Path(__file__).parent / "fixtures" / "coco_tiny" / "instances_tiny.json"
CATEGORY_IDS = (3, 7)  # contiguous label 0 -> COCO id 3, label 1 -> COCO id 7

# pycocotools' mask.decode (used here to rasterise the fixture polygons) warns under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _ground_truth() -> dict:
    return json.loads(ANNOTATIONS.read_text())


def _predictions(
    data: dict, *, shift: float = 0.0, with_masks: bool = False, score: float = 1.0
) -> list[dict]:
    """The ground truth as predictions, through ``instances_to_coco_results`` (labels contiguous, tensors).

    ``shift``: each box moves right by ``shift`` times its width. Masks are the ground truth polygons
    rasterised the way pycocotools rasterises them for scoring.
    """
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    results = []
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes = torch.tensor(
            [[x + shift * w, y, x + w + shift * w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        )
        labels = torch.tensor([CATEGORY_IDS.index(a["category_id"]) for a in anns])
        masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])).bool() if with_masks else None
        scores = torch.full((len(anns),), score)
        results += instances_to_coco_results(
            image["id"], boxes, scores, labels, category_ids=CATEGORY_IDS, masks=masks
        )
    return results


# ------------------------------------------------------------------------------------------ conversion


def test_instances_to_coco_results_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.5, 1.5, 2.5, 4.0]])
    results = instances_to_coco_results(
        42, boxes, torch.tensor([0.9, 0.25]), torch.tensor([1, 0]), category_ids=[3, 7]
    )
    assert results == [
        {"image_id": 42, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 3, "bbox": [0.5, 1.5, 2.0, 2.5], "score": 0.25},
    ]
    assert all(
        type(v) in (int, float) for r in results for v in (r["image_id"], r["category_id"], r["score"])
    )
    # numpy input, labels used as COCO ids when category_ids is None
    same = instances_to_coco_results(
        np.int64(42), boxes.numpy(), np.array([0.9, 0.25], np.float32), np.array([18, 90])
    )
    assert [r["category_id"] for r in same] == [18, 90]
    assert [r["bbox"] for r in same] == [r["bbox"] for r in results]
    assert json.loads(json.dumps(same)) == same
    assert (
        instances_to_coco_results(1, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
        == []
    )


def test_masks_become_rle_that_round_trips():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 11, 7, generator=generator) > 0.5
    masks[2] = False  # an empty mask still encodes
    results = instances_to_coco_results(
        5,
        torch.tensor([[0.0, 0.0, 6.0, 10.0]] * 3),
        torch.ones(3),
        torch.tensor([0, 1, 0]),
        category_ids=[3, 7],
        masks=masks.to(torch.uint8),
    )
    json.dumps(results)  # counts are str, not bytes
    for result, mask in zip(results, masks):
        rle = result["segmentation"]
        assert rle["size"] == [11, 7] and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(mask_util.decode(rle), mask.numpy().astype(np.uint8))
        assert mask_util.area(rle) == int(mask.sum())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"boxes": torch.zeros(2, 5)}, r"boxes_xyxy must have shape \[N, 4\], got \[2, 5\]"),
        ({"scores": torch.ones(3)}, r"scores must have shape \[2\]"),
        ({"labels": torch.zeros(2, 1, dtype=torch.long)}, r"labels must have shape \[2\]"),
        ({"labels": torch.tensor([0.0, 1.0])}, "labels must be integers"),
        ({"labels": torch.tensor([0, 2])}, "label 2 is outside the 2 category_ids"),
        ({"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 0.0, 4.0, 4.0]])}, "box 1 .* x2 < x1"),
        ({"boxes": torch.tensor([[0.0, 0.0, 4.0, float("nan")]] * 2)}, "must be finite"),
        ({"masks": torch.zeros(3, 4, 4, dtype=torch.bool)}, r"masks must have shape \[2, H, W\]"),
        ({"masks": torch.zeros(2, 4)}, r"masks must have shape \[2, H, W\] \(one per box\), got \[2, 4\]"),
        ({"masks": torch.full((2, 4, 4), 0.7)}, "masks must be binary"),
    ],
)
def test_instances_to_coco_results_rejects(change, message):
    args = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 3.0]]),
        "scores": torch.ones(2),
        "labels": torch.tensor([0, 1]),
        "masks": None,
    } | change
    with pytest.raises(ValueError, match=message):
        instances_to_coco_results(
            1, args["boxes"], args["scores"], args["labels"], category_ids=[3, 7], masks=args["masks"]
        )


def test_write_coco_results_is_atomic_json(tmp_path):
    path = tmp_path / "sub" / "results.json"
    path.parent.mkdir()
    path.write_text("old")
    results = _predictions(_ground_truth(), with_masks=True)
    assert write_coco_results(results, path) == path
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left
    with pytest.raises(TypeError):
        write_coco_results([{"image_id": 1, "bad": object()}], path)
    assert json.loads(path.read_text()) == results  # a failed write leaves the old file
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


# ------------------------------------------------------------------------------------------ scoring


def test_perfect_predictions_score_100():
    results = _predictions(_ground_truth(), with_masks=True)
    metrics = score_coco(ANNOTATIONS, results, ("bbox", "segm"))
    assert metrics == {t: dict.fromkeys(METRIC_NAMES, pytest.approx(100.0)) for t in ("bbox", "segm")}
    assert "bbox" in results[0] and "area" not in results[0]  # the caller's dicts are left alone


def test_shifted_boxes_give_known_ap():
    """Moving a w x h box right by d = 3w/13 leaves an overlap (w - d) h and a union (w + d) h, so
    IoU = (w - d) / (w + d) = (10/13) / (16/13) = 0.625 for every box. COCOeval matches when IoU >= the
    threshold: 0.50, 0.55, 0.60 match (every detection a true positive, AP 1), 0.65 .. 0.95 do not (AP 0).
    AP = 3 / 10 = 30%, AP50 = 100%, AP75 = 0%; the same in each size range (a shifted box keeps its area)."""
    data = _ground_truth()
    assert all(a["bbox"][2] % 13 == 0 for a in data["annotations"])  # whole-pixel shifts
    metrics = score_coco(ANNOTATIONS, _predictions(data, shift=3 / 13))
    assert metrics == {"bbox": {"AP": pytest.approx(30.0), "AP50": pytest.approx(100.0), "AP75": 0.0,
                                "APs": pytest.approx(30.0), "APm": pytest.approx(30.0),
                                "APl": pytest.approx(30.0)}}  # fmt: skip


def test_false_positive_ranked_first_gives_known_ap():
    """One unmatched medium car box (40 x 40 = 1600 px²) scored 1.0 above the perfect boxes scored 0.5.

    All sizes, car: detections in score order FP, TP, TP, TP give precision 0, 1/2, 2/3, 3/4 at recall
    0, 1/3, 2/3, 1; the interpolated precision (best precision at any higher recall) is 3/4 at every recall
    point: car AP 75 at every IoU threshold, train AP 100, AP = AP50 = AP75 = (75 + 100) / 2 = 87.5.
    Medium, car: FP then the one medium car: precision 0, 1/2 -> 50; APm = (50 + 100) / 2 = 75.
    Small and large: the medium false positive is outside the range and ignored, APs = APl = 100."""
    data = _ground_truth()
    results = _predictions(data, score=0.5)
    results += instances_to_coco_results(
        3, torch.tensor([[200.0, 150.0, 240.0, 190.0]]), torch.tensor([1.0]), torch.tensor([3])
    )
    metrics = score_coco(ANNOTATIONS, results)["bbox"]
    assert metrics == {"AP": pytest.approx(87.5), "AP50": pytest.approx(87.5), "AP75": pytest.approx(87.5),
                       "APs": pytest.approx(100.0), "APm": pytest.approx(75.0),
                       "APl": pytest.approx(100.0)}  # fmt: skip


def test_mask_results_are_sized_by_their_masks():
    """One false-positive car in image 3, scored 1.0 above the perfect predictions (0.5): its mask is a
    10 x 10 square (small), its box 200 x 150 (large, IoU 6240 / 30000 with the car there). As in the
    previous test, the range holding it gets car AP 50 and mean (50 + 100) / 2 = 75, the others 100, and
    AP = 87.5. bbox: the box is large; segm: the mask is small (the box is dropped before scoring)."""
    results = _predictions(_ground_truth(), with_masks=True, score=0.5)
    mask = torch.zeros(1, 200, 300, dtype=torch.bool)
    mask[0, 150:160, 250:260] = True
    results += instances_to_coco_results(
        3, torch.tensor([[0.0, 0.0, 200.0, 150.0]]), torch.ones(1), torch.tensor([0]), category_ids=[3, 7],
        masks=mask,
    )  # fmt: skip
    metrics = score_coco(ANNOTATIONS, results, ["bbox", "segm"])
    expected = {"AP": 87.5, "AP50": 87.5, "AP75": 87.5, "APm": 100.0}
    assert metrics["bbox"] == pytest.approx(expected | {"APs": 100.0, "APl": 75.0})
    assert metrics["segm"] == pytest.approx(expected | {"APs": 75.0, "APl": 100.0})


def test_size_without_ground_truth_is_nan(tmp_path):
    data = _ground_truth()
    data["annotations"] = [a for a in data["annotations"] if a["area"] <= 96**2]  # drop both large objects
    path = tmp_path / "no_large.json"
    path.write_text(json.dumps(data))
    metrics = score_coco(load_coco(path), _predictions(data))["bbox"]
    assert math.isnan(metrics.pop("APl"))
    assert metrics == dict.fromkeys(["AP", "AP50", "AP75", "APs", "APm"], pytest.approx(100.0))


def test_format_table():
    table = format_table({"bbox": {"AP": 30.0, "AP50": 100.0, "APl": math.nan}, "segm": {"AP": 12.3456}})
    assert table.splitlines() == [
        "iou type       AP     AP50      APl",
        "bbox       30.000  100.000      nan",
        "segm       12.346      nan      nan",
    ]


# ------------------------------------------------------------------------------------------ errors


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_annotation_errors(tmp_path):
    results = _predictions(_ground_truth())
    with pytest.raises(FileNotFoundError, match=r"annotations file .*absent\.json not found"):
        score_coco(tmp_path / "absent.json", results)
    with pytest.raises(AnnotationsError, match=r"annotations file .*broken\.json is not JSON"):
        score_coco(_write(tmp_path, "broken.json", '{"images": ['), results)
    with pytest.raises(AnnotationsError, match="holds a JSON list, not a COCO dataset"):
        score_coco(_write(tmp_path, "list.json", results), results)
    with pytest.raises(AnnotationsError, match=r"not COCO instances JSON: .* found \['images'\]"):
        score_coco(_write(tmp_path, "partial.json", {"images": []}), results)
    data = _ground_truth()
    del data["annotations"][4]["segmentation"]
    with pytest.raises(AnnotationsError, match=r"annotations \[5\] have no 'segmentation'"):
        score_coco(
            _write(tmp_path, "no_segm.json", data), _predictions(_ground_truth(), with_masks=True), ["segm"]
        )


def test_result_errors(tmp_path):
    results = _predictions(_ground_truth())
    with pytest.raises(ValueError, match="no predictions"):
        score_coco(ANNOTATIONS, [])
    with pytest.raises(ValueError, match="no predictions"):
        score_coco(ANNOTATIONS, _write(tmp_path, "empty.json", []))
    with pytest.raises(FileNotFoundError, match=r"results file .*absent\.json not found"):
        score_coco(ANNOTATIONS, tmp_path / "absent.json")
    with pytest.raises(ValueError, match=r"not a list of result dicts \(is it an annotations file\?\)"):
        score_coco(ANNOTATIONS, ANNOTATIONS)
    with pytest.raises(ValueError, match="image_id 99, which the annotations do not have"):
        score_coco(ANNOTATIONS, [*results, {**results[0], "image_id": 99}])
    with pytest.raises(
        ValueError, match=r"category_id 0, which the annotations do not have \(they have \[3, 7\]\)"
    ):
        score_coco(ANNOTATIONS, [{**r, "category_id": CATEGORY_IDS.index(r["category_id"])} for r in results])
    with pytest.raises(ValueError, match="'segm' needs a 'segmentation' in every result; result 0 has none"):
        score_coco(ANNOTATIONS, results, ["bbox", "segm"])
    without_score = [dict(r) for r in results]
    del without_score[2]["score"]
    with pytest.raises(ValueError, match="result 2 lacks score"):
        score_coco(ANNOTATIONS, without_score)
    with pytest.raises(ValueError, match=r"choose one or more of bbox, segm"):
        score_coco(ANNOTATIONS, results, ["keypoints"])


# ------------------------------------------------------------------------------------------ CLI


def test_cli_end_to_end(tmp_path, capsys):
    results = write_coco_results(
        _predictions(_ground_truth(), shift=3 / 13, with_masks=True), tmp_path / "r.json"
    )
    output = tmp_path / "out" / "metrics.json"
    argv = ["--annotations", str(ANNOTATIONS), "--results", str(results), "--iou-types", "bbox", "segm"]
    assert main([*argv, "--output", str(output)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0].split() == ["iou", "type", *METRIC_NAMES]
    assert stdout.splitlines()[1].split() == [
        "bbox",
        "30.000",
        "100.000",
        "0.000",
        "30.000",
        "30.000",
        "30.000",
    ]
    metrics = json.loads(output.read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert metrics["bbox"] == {"AP": pytest.approx(30.0), "AP50": pytest.approx(100.0), "AP75": 0.0,
                               "APs": pytest.approx(30.0), "APm": pytest.approx(30.0),
                               "APl": pytest.approx(30.0)}  # fmt: skip
    # the masks are the unshifted ground truth: segm scores the masks alone, not the shifted boxes
    assert metrics["segm"] == dict.fromkeys(METRIC_NAMES, pytest.approx(100.0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--annotations", "TMP/absent.json"], "--annotations: annotations file"),
        (["--annotations", "TMP/r.json"], "--annotations: annotations file .* holds a JSON list"),
        (["--results", "TMP/absent.json"], "--results: results file"),
        (["--results", "TMP/empty.json"], "--results: no predictions"),
        (["--iou-types", "segm"], "--results: iou type 'segm' needs a 'segmentation'"),
        (["--iou-types", "keypoints"], "--iou-types/--iou_types: invalid choice"),
        (["--output", "TMP"], "--output .* is a directory"),
    ],
)
def test_cli_errors_name_the_flag(tmp_path, capsys, args, message):
    write_coco_results(_predictions(_ground_truth()), tmp_path / "r.json")
    _write(tmp_path, "empty.json", [])
    argv = {"--annotations": str(ANNOTATIONS), "--results": str(tmp_path / "r.json")}
    argv |= dict(zip(args[::2], (a.replace("TMP", str(tmp_path)) for a in args[1::2])))
    with pytest.raises(SystemExit) as exc:
        main([item for pair in argv.items() for item in pair])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)
