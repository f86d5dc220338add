"""Rename torchvision-keyed ResNet weights for Detectron2 and DETR, and check that a target can build them.

Pure functions on state dicts: no file I/O (``selfsup.transfer.cli`` reads checkpoints and writes files).

* ``to_detectron2`` gives Detectron2's ResNet names (``stem.conv1``, ``res2``..``res5``, ``shortcut``, ``.norm``),
  short keys that Detectron2's checkpointer matches by suffix against ``backbone.bottom_up.*`` (FPN) or
  ``backbone.*`` / ``roi_heads.res5.*`` (C4). Bottleneck (ResNet-50, any width) and BasicBlock (ResNet-18/34)
  weights both map: Detectron2 names the convolutions of either block ``conv1``..``conv3`` / ``conv1``, ``conv2``
  exactly as torchvision does, so one rule covers both.
* ``to_detr`` gives DETR's ``backbone.0.body.<torchvision key>``; DETR's ``FrozenBatchNorm2d`` has no
  ``num_batches_tracked``, so those buffers are dropped.
* ``to_hf_detr`` gives the same tensors under Hugging Face ``DetrForObjectDetection``'s names,
  ``model.backbone.model.<torchvision key>``: its default backbone is a timm ResNet (``features_only``), whose keys
  are torchvision's, with ``DetrFrozenBatchNorm2d`` (no ``num_batches_tracked``) in place of BN.
* ``detectron2_resnet_options`` / ``check_detr_backbone`` say whether the architecture fits a stock Detectron2
  or DETR ResNet, with the config overrides Detectron2 needs, and raise ``UnsupportedTargetError`` otherwise.

The classifier (``fc`` or a projection head ``fc.<i>``) is always dropped; any other key that is not a
torchvision ResNet key raises ``ValueError`` naming it, so a wrongly prefixed state dict never converts silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from selfsup.shared.models.backbones import ARCHITECTURES, BackboneConfig

__all__ = [
    "DETECTRON2_TARGET",
    "DETR_BACKBONE_PREFIX",
    "DETR_HF_TARGET",
    "DETR_TARGET",
    "HF_DETR_BACKBONE_PREFIX",
    "TARGETS",
    "UnsupportedTargetError",
    "check_detr_backbone",
    "detectron2_key",
    "detectron2_resnet_options",
    "to_detectron2",
    "to_detr",
    "to_hf_detr",
]

DETECTRON2_TARGET = "detectron2"
DETR_TARGET = "detr"
DETR_HF_TARGET = "detr-hf"
#: The targets ``selfsup-convert`` writes files for.
TARGETS = (DETECTRON2_TARGET, DETR_TARGET, DETR_HF_TARGET)
#: Where DETR keeps its ResNet: ``DETR.backbone = Joiner(Backbone, PositionEmbedding)``; ``Backbone.body`` is
#: torchvision's ``IntermediateLayerGetter`` over the ResNet (stem to ``layer4``).
DETR_BACKBONE_PREFIX = "backbone.0.body."
#: Where Hugging Face ``DetrForObjectDetection`` (transformers 5) keeps its timm ResNet:
#: ``model`` (``DetrModel``) . ``backbone`` (``DetrConvEncoder``) . ``model`` (timm ``FeatureListNet``); 265 tensors
#: for ResNet-50. transformers 4 had a ``conv_encoder.`` level between ``backbone.`` and ``model.``.
HF_DETR_BACKBONE_PREFIX = "model.backbone.model."

_NORM_BUFFER = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM = re.compile(rf"conv1\.weight|bn1\.{_NORM_BUFFER}")
_BLOCK = re.compile(
    rf"layer(?P<stage>[1-4])\.(?P<index>\d+)\."
    rf"(?:conv(?P<conv>[1-3])\.weight|bn(?P<bn>[1-3])\.(?P<bn_field>{_NORM_BUFFER})"
    rf"|downsample\.(?P<ds>[01])\.(?P<ds_field>\w+))"
)
_HEAD = re.compile(r"fc(\.\d+)?\.(weight|bias)")


#: Detectron2's ``MODEL.RESNETS.DEPTH`` for each (block, blocks per stage) it builds.
_DETECTRON2_DEPTHS = {
    ("BasicBlock", (2, 2, 2, 2)): 18,
    ("BasicBlock", (3, 4, 6, 3)): 34,
    ("Bottleneck", (3, 4, 6, 3)): 50,
    ("Bottleneck", (3, 4, 23, 3)): 101,
    ("Bottleneck", (3, 8, 36, 3)): 152,
}


class UnsupportedTargetError(ValueError):
    """The backbone is a ResNet the target framework cannot build without code changes."""


def _unknown_key(key: str) -> ValueError:
    return ValueError(
        f"{key!r} is not a torchvision ResNet key (expected conv1/bn1, layer1-4.<block>.conv*/bn*/downsample.*, "
        "or fc); strip the checkpoint's wrapper prefix first (extract_backbone does this)"
    )


def detectron2_key(key: str) -> str | None:
    """Detectron2's name for one torchvision ResNet key; ``None`` for the classifier (``fc``, ``fc.<i>``).

    ``conv1.weight`` -> ``stem.conv1.weight``, ``bn1.*`` -> ``stem.conv1.norm.*``, ``layer<s>.<b>.conv<k>`` ->
    ``res<s+1>.<b>.conv<k>``, ``bn<k>`` -> ``conv<k>.norm``, ``downsample.0`` -> ``shortcut``,
    ``downsample.1`` -> ``shortcut.norm``. Raises ``ValueError`` for any other key.
    """
    if _HEAD.fullmatch(key):
        return None
    if _STEM.fullmatch(key):
        return "stem." + key.replace("bn1.", "conv1.norm.")
    match = _BLOCK.fullmatch(key)
    if match is None:
        raise _unknown_key(key)
    block = f"res{int(match['stage']) + 1}.{match['index']}."
    if match["conv"]:
        return f"{block}conv{match['conv']}.weight"
    if match["bn"]:
        return f"{block}conv{match['bn']}.norm.{match['bn_field']}"
    if match["ds"] == "0" and match["ds_field"] == "weight":
        return f"{block}shortcut.weight"
    if match["ds"] == "1" and re.fullmatch(_NORM_BUFFER, match["ds_field"]):
        return f"{block}shortcut.norm.{match['ds_field']}"
    raise _unknown_key(key)


def to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detectron2-named copy of torchvision ResNet weights (same tensors, no ``fc``, ``num_batches_tracked`` kept).

    The keys are short (``stem.conv1.weight``, ``res5.2.conv3.norm.bias``): Detectron2's checkpointer, with
    ``matching_heuristics``, fills every model key that ends with ``"." + key`` (longest match wins), so one file
    serves C4 (``backbone.res2-4``, ``roi_heads.res5``) and FPN (``backbone.bottom_up.*``) models alike.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = detectron2_key(key)
        if new_key is not None:
            out[new_key] = value
    if not out:
        raise ValueError("the state dict holds no backbone weights (only a classifier, or nothing)")
    return out


def to_detr(
    state_dict: Mapping[str, torch.Tensor], prefix: str = DETR_BACKBONE_PREFIX
) -> dict[str, torch.Tensor]:
    """DETR-named copy of torchvision ResNet weights: ``prefix + key``, without ``fc`` and ``num_batches_tracked``.

    With the default prefix the keys are those of a whole DETR model's ``state_dict`` (load them with
    ``strict=False``); with ``prefix=""`` they load strictly into ``detr.backbone[0].body``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if detectron2_key(key) is None or key.endswith(".num_batches_tracked"):  # validates the key too
            continue
        out[prefix + key] = value
    if not out:
        raise ValueError("the state dict holds no backbone weights (only a classifier, or nothing)")
    return out


def to_hf_detr(
    state_dict: Mapping[str, torch.Tensor], prefix: str = HF_DETR_BACKBONE_PREFIX
) -> dict[str, torch.Tensor]:
    """Hugging Face DETR-named copy of torchvision ResNet weights: ``prefix + key``, without ``fc`` and
    ``num_batches_tracked``.

    timm's ResNet names its layers exactly as torchvision does (``conv1``, ``bn1``, ``layer<s>.<b>.conv<k>``,
    ``downsample.0/1``) and puts the stride on the 3x3 convolution too, so only the prefix changes. With the
    default prefix the keys are those of a whole ``DetrForObjectDetection`` ``state_dict`` (transformers 5); with
    ``prefix=""`` they load strictly into its timm backbone (``model.model.backbone.model``).
    """
    return to_detr(state_dict, prefix=prefix)


def _resnet_geometry(config: BackboneConfig, stem_width: int | None, target: str) -> tuple[str, int, int]:
    """Block type, base width and stem width of a 3-channel ImageNet-stem ResNet; raises for anything else."""
    if config.name not in ARCHITECTURES:
        raise UnsupportedTargetError(f"{target} takes a ResNet; the weights are a {config.name}")
    if config.cifar_stem:
        raise UnsupportedTargetError(
            f"the backbone has a 3x3 CIFAR stem; {target}'s ResNet stem is a 7x7/2 convolution with max-pool"
        )
    if config.in_channels != 3:
        raise UnsupportedTargetError(
            f"the backbone takes {config.in_channels}-channel input (a CMC view?); {target} feeds 3-channel images"
        )
    if config.stem_padding not in (None, 3):
        raise UnsupportedTargetError(
            f"the backbone's 7x7 conv1 pads by {config.stem_padding}; {target}'s pads by 3 (every feature map "
            "would shift)"
        )
    block, _, default_width = ARCHITECTURES[config.name]
    width = config.width or default_width
    return block.__name__, width, stem_width or width


def detectron2_resnet_options(config: BackboneConfig, stem_width: int | None = None) -> dict[str, Any]:
    """The ``MODEL.RESNETS`` settings under which Detectron2 builds exactly this backbone's shapes.

    Always ``STRIDE_IN_1X1: False`` (torchvision puts the stride on the 3x3 convolution). Widths follow
    Detectron2's ``build_resnet_backbone``: ``STEM_OUT_CHANNELS``, ``RES2_OUT_CHANNELS`` (= width x expansion)
    and, for Bottleneck blocks, ``WIDTH_PER_GROUP`` (with ``NUM_GROUPS`` 1). Detectron2 builds BasicBlock
    ResNets (R18/R34) only with ``RES2_OUT_CHANNELS`` 64 and only as an FPN/plain backbone: its C4
    ``Res5ROIHeads`` always builds Bottleneck blocks. Raises ``UnsupportedTargetError`` when no setting fits.
    """
    block, width, stem = _resnet_geometry(config, stem_width, DETECTRON2_TARGET)
    stages = ARCHITECTURES[config.name][1]
    depth = _DETECTRON2_DEPTHS.get((block, stages))
    if depth is None:
        raise UnsupportedTargetError(
            f"Detectron2 builds ResNet depths 18/34/50/101/152; {config.name} has {block} stages {list(stages)}"
        )
    options: dict[str, Any] = {"DEPTH": depth, "STRIDE_IN_1X1": False, "STEM_OUT_CHANNELS": stem}
    if block == "BasicBlock":
        if width != 64:
            raise UnsupportedTargetError(
                f"Detectron2 builds {config.name} only with 64 channels in res2 (RES2_OUT_CHANNELS 64); "
                f"these weights have base width {width}"
            )
        options["RES2_OUT_CHANNELS"] = 64
    else:
        options.update(NUM_GROUPS=1, WIDTH_PER_GROUP=width, RES2_OUT_CHANNELS=width * 4)
    return options


def check_detr_backbone(config: BackboneConfig, stem_width: int | None = None) -> str:
    """The ``--backbone`` name DETR builds these weights with; raises ``UnsupportedTargetError`` otherwise.

    DETR builds ``torchvision.models.<name>`` and hard-codes its output channels (512 for resnet18/34, 2048
    otherwise), so only the standard-width resnet18, resnet34 and resnet50 fit unmodified. SwAV's
    ``resnet50w2`` is not torchvision's ``wide_resnet50_2`` (that one keeps a 64-channel stem and 2048 outputs).
    """
    _, width, stem = _resnet_geometry(config, stem_width, DETR_TARGET)
    default = ARCHITECTURES[config.name][2]
    if config.name not in ("resnet18", "resnet34", "resnet50") or width != 64 or stem != default:
        raise UnsupportedTargetError(
            f"DETR's Backbone builds torchvision's resnet18/34/50 (base width 64); these weights are "
            f"{config.name} with base width {width} and stem width {stem}, which need DETR code changes "
            "(to_detr() still maps their keys if you make them)"
        )
    return config.name
