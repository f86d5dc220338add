"""Shared fixtures of the transfer tests: the framework policy (skip on a user's machine, fail under CI) and tiny
synthetic detection datasets in Pascal VOC and COCO format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: (class name, box x0, y0, x1, y1 in pixels) per image; two classes, every image 96 x 80.
BOXES = [
    [("cat", 8, 10, 50, 60)],
    [("dog", 30, 20, 90, 70), ("cat", 4, 4, 24, 30)],
    [("dog", 10, 30, 60, 76)],
    [("cat", 40, 8, 92, 48)],
]
CLASSES = ("cat", "dog")
WIDTH, HEIGHT = 96, 80


def require(module: str, hint: str):
    """Import ``module``; skip with ``hint`` when it is missing, except under CI (``CI=true``), where the
    transfer sessions install it and a missing framework must fail the run instead of skipping it."""
    try:
        return __import__(module)
    except ImportError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} must be installed in CI ({err}); {hint}")
        pytest.skip(f"{module} is not installed; {hint}")


def _draw(index: int) -> Image.Image:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 60, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    for name, x0, y0, x1, y1 in BOXES[index]:
        pixels[y0:y1, x0:x1] = (220, 40, 40) if name == "cat" else (40, 40, 220)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """A VOC2007-layout folder: 4 JPEGs, XML boxes (1-based pixel corners), splits trainval (all) and test (all)."""
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(len(BOXES))]
    for index, image_id in enumerate(ids):
        _draw(index).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        objects = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, x0, y0, x1, y1 in BOXES[index]
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{WIDTH}</width>"
            f"<height>{HEIGHT}</height><depth>3</depth></size>{objects}</annotation>"
        )
    for split in ("trainval", "test"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory) -> tuple[Path, Path]:
    """A COCO instances JSON (boxes and polygon masks, category ids 3 and 7) and its image folder."""
    root = tmp_path_factory.mktemp("coco")
    images, annotations = [], []
    category_id = {"cat": 3, "dog": 7}
    for index, boxes in enumerate(BOXES):
        name = f"{index:012d}.jpg"
        _draw(index).save(root / name, quality=95)
        images.append({"id": index + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for cls, x0, y0, x1, y1 in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_id[cls],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                }
            )
    categories = [{"id": i, "name": n, "supercategory": "animal"} for n, i in category_id.items()]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, root


@pytest.fixture(scope="session")
def detectron2():
    """The installed Detectron2 (skipped without it on a user's machine; a failure under CI)."""
    return require(
        "detectron2",
        "build it from source: see docs/transfer.md (nox -s transfer_d2 installs the vendored one)",
    )
