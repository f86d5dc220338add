"""The config preset a converted file needs, recorded in the file and checked by the launchers.

A torchvision-style ResNet fine-tuned under the wrong preset (BGR input, Caffe pixel statistics, the stride on the
1x1 convolution) raises no error in Detectron2: it only gives a worse AP. So ``selfsup-convert`` writes the preset
the weights need under ``selfsup_preset`` in every output file, and ``selfsup-transfer`` (Detectron2) and
``selfsup.transfer.detr_train`` (DETR) refuse a config that disagrees with it.

* Detectron2 preset: dotted config keys -> values (``INPUT.FORMAT``, ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` on the
  0-255 scale, ``MODEL.RESNETS.STRIDE_IN_1X1`` and the widths of ``detectron2_resnet_options``).
* DETR preset: ``--backbone`` name plus the 0-1 scale RGB mean/std DETR's transforms use.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from selfsup.shared.models.backbones import BackboneConfig
from selfsup.transfer.convert import check_detr_backbone, detectron2_resnet_options

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "PRESET_KEY",
    "PresetMismatchError",
    "config_value",
    "detectron2_preset",
    "detectron2_preset_mismatches",
    "detr_preset",
    "read_preset",
]

#: Where converted files keep their preset.
PRESET_KEY = "selfsup_preset"
#: ImageNet RGB statistics on the 0-1 scale (torchvision, DETR) and on Detectron2's 0-255 scale.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


class PresetMismatchError(ValueError):
    """A detection config disagrees with the preset the converted weights were written for."""


def detectron2_preset(config: BackboneConfig, stem_width: int | None = None) -> dict[str, Any]:
    """The Detectron2 settings (dotted keys) under which these torchvision-style weights are used correctly."""
    preset: dict[str, Any] = {
        "INPUT.FORMAT": "RGB",
        "MODEL.PIXEL_MEAN": list(PIXEL_MEAN),
        "MODEL.PIXEL_STD": list(PIXEL_STD),
    }
    preset.update({f"MODEL.RESNETS.{k}": v for k, v in detectron2_resnet_options(config, stem_width).items()})
    return preset


def detr_preset(config: BackboneConfig, stem_width: int | None = None) -> dict[str, Any]:
    """DETR's ``--backbone`` for these weights and the input normalisation they were trained with."""
    return {
        "backbone": check_detr_backbone(config, stem_width),
        "input_format": "RGB",
        "pixel_mean": list(IMAGENET_MEAN),
        "pixel_std": list(IMAGENET_STD),
    }


def read_preset(path: str | os.PathLike) -> dict[str, Any] | None:
    """The preset stored in a converted file (``.pkl`` pickle or ``torch.save`` file); ``None`` when it has none,
    as in files written by the original repositories' converters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    if path.suffix == ".pkl":
        with path.open("rb") as handle:
            payload = pickle.load(handle, encoding="latin1")
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping):
        return None
    preset = payload.get(PRESET_KEY)
    return dict(preset) if isinstance(preset, Mapping) else None


def config_value(cfg: Any, dotted: str) -> Any:
    """``cfg.A.B.C`` for ``"A.B.C"`` (a yacs/Detectron2 ``CfgNode``); ``KeyError`` naming the key if absent."""
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(f"config has no {dotted}")
        node = node[part]
    return node


def _same(found: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return (
            isinstance(found, (list, tuple))
            and len(found) == len(wanted)
            and all(_same(f, w) for f, w in zip(found, wanted))
        )
    if isinstance(wanted, float) or isinstance(found, float):
        return isinstance(found, (int, float)) and math.isclose(found, wanted, rel_tol=1e-4, abs_tol=1e-3)
    return found == wanted


def detectron2_preset_mismatches(cfg: Any, preset: Mapping[str, Any]) -> list[str]:
    """``"KEY is X, the weights need Y"`` for every preset entry the Detectron2 config disagrees with."""
    out = []
    for key, wanted in preset.items():
        try:
            found = config_value(cfg, key)
        except KeyError:
            out.append(f"{key} is absent, the weights need {wanted}")
            continue
        if not _same(found, wanted):
            out.append(f"{key} is {found}, the weights need {wanted}")
    return out
