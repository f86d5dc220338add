"""Read a backbone's architecture off a state dict's shapes, and build a module that fits it.

``infer_backbone_config`` turns torchvision-keyed ResNet weights (or CMC's half AlexNet) into the
``BackboneConfig`` that rebuilds them: block type and per-stage block counts pick the architecture
(resnet18/34/50/50w2), ``layer1.0.conv1`` gives the base width, ``conv1`` gives the input channels and the
stem (3x3 = CIFAR stem, 7x7 = ImageNet stem).

CMC's ``resnet50v1``/``v3`` and its InsDis ``resnet50x2``/``x4`` keep a 64-channel stem whatever the stage
width (``specs/cmc.md`` §2.2), so their ``conv1``/``bn1`` and the first block of ``layer1`` differ from a
torchvision ResNet of that width. ``infer_backbone_layout`` reports such a stem as
``BackboneLayout.stem_width`` (the inferred ``config`` keeps ``stem_width=None``) and
``build_backbone_for_layout`` builds it with ``build_backbone(..., stem_width=...)``, the builder the CMC
trainers use too. ``BackboneLayout.to_config()`` folds the stem width into one ``BackboneConfig``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from selfsup.shared.models.alexnet import CMC_ALEXNET_HALF, build_cmc_alexnet_half
from selfsup.shared.models.backbones import ARCHITECTURES, BackboneConfig, build_backbone

_RESNET_KEY = re.compile(
    r"(conv1\.weight"
    r"|bn1\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.\w+|downsample\.[01]\.\w+)"
    r"|fc(\.\d+)?\.(weight|bias))"
)
_STAGE_INDEX = re.compile(r"layer([1-4])\.(\d+)\.")


class UnsupportedArchitectureError(ValueError):
    """The weights describe a network that no builder here can rebuild."""


def is_resnet_key(key: str) -> bool:
    """True for a torchvision ResNet ``state_dict`` key (stem, stages, downsample, ``fc`` or ``fc.<i>``)."""
    return _RESNET_KEY.fullmatch(key) is not None


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keep the entries whose key starts with ``prefix`` and remove the prefix from their keys.

    Entries without the prefix are left out (they belong to other parts of the checkpoint: a momentum encoder,
    a queue, a projection head). Raises ``KeyError`` naming the first keys when none carries the prefix.
    """
    out = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not out:
        first = ", ".join(list(state_dict)[:10])
        raise KeyError(f"no key starts with {prefix!r}; the first keys are: {first}")
    return out


@dataclass(frozen=True)
class BackboneLayout:
    """A ``BackboneConfig`` plus the stem width when it differs from the base width (CMC's ResNets).

    Shape inference leaves ``config.stem_width`` unset and reports the stem here; a config that sets
    ``stem_width`` itself (a selfsup checkpoint's ``backbone`` entry) fills ``stem_width`` in.
    """

    config: BackboneConfig
    stem_width: int | None = None

    def __post_init__(self) -> None:
        own = self.config.stem_width
        if own is not None and self.stem_width is not None and own != self.stem_width:
            raise ValueError(f"stem_width {self.stem_width} contradicts the config's stem_width {own}")
        if self.stem_width is None and own is not None:
            object.__setattr__(self, "stem_width", own)

    def to_config(self) -> BackboneConfig:
        """One ``BackboneConfig`` that rebuilds this layout, ``stem_width`` included."""
        return replace(self.config, stem_width=self.stem_width)

    def describe(self) -> str:
        cfg = self.config
        if cfg.name not in ARCHITECTURES:
            return f"{cfg.name} (in_channels {cfg.in_channels})"
        block, layers, default_width = ARCHITECTURES[cfg.name]
        width = cfg.width or default_width
        stem = "3x3 CIFAR stem" if cfg.cifar_stem else "7x7 stem"
        extra = f", {self.stem_width}-channel stem" if self.stem_width else ""
        return (
            f"{cfg.name} ({block.__name__} x {list(layers)}, base width {width}{extra}, {stem}, "
            f"in_channels {cfg.in_channels})"
        )


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise UnsupportedArchitectureError(
            f"cannot infer the backbone: no {key!r} among the weights "
            f"(first keys: {', '.join(list(state_dict)[:10])})"
        )
    return tuple(state_dict[key].shape)


def _infer_alexnet(state_dict: Mapping[str, torch.Tensor]) -> BackboneLayout:
    in_channels = _shape(state_dict, "conv_block_1.0.weight")[1]
    return BackboneLayout(BackboneConfig(name=CMC_ALEXNET_HALF, in_channels=in_channels))


def infer_backbone_layout(state_dict: Mapping[str, torch.Tensor]) -> BackboneLayout:
    """Architecture, width, stem and input channels of torchvision-keyed ResNet (or CMC AlexNet) weights."""
    if "conv_block_1.0.weight" in state_dict:
        return _infer_alexnet(state_dict)
    stem = _shape(state_dict, "conv1.weight")
    if len(stem) != 4 or stem[2] != stem[3] or stem[2] not in (3, 7):
        raise UnsupportedArchitectureError(
            f"conv1.weight has shape {list(stem)}; expected [out, in, 7, 7] (ImageNet stem) or "
            "[out, in, 3, 3] (CIFAR stem)"
        )
    stem_width, in_channels, kernel = stem[0], stem[1], stem[2]
    width = _shape(state_dict, "layer1.0.conv1.weight")[0]
    bottleneck = "layer1.0.conv3.weight" in state_dict
    indices: dict[int, set[int]] = {stage: set() for stage in range(1, 5)}
    for key in state_dict:
        match = _STAGE_INDEX.match(key)
        if match:
            indices[int(match.group(1))].add(int(match.group(2)))
    counts = tuple(len(indices[stage]) for stage in range(1, 5))
    for stage, found in indices.items():
        if found != set(range(len(found))):
            raise UnsupportedArchitectureError(f"layer{stage} has blocks {sorted(found)}; expected 0..n-1")
    block_name = "Bottleneck" if bottleneck else "BasicBlock"
    names = [
        name
        for name, (block, layers, _) in ARCHITECTURES.items()
        if block.__name__ == block_name and tuple(layers) == counts
    ]
    if not names:
        known = ", ".join(
            f"{n} ({b.__name__} x {list(stages)})" for n, (b, stages, _) in ARCHITECTURES.items()
        )
        raise UnsupportedArchitectureError(
            f"the weights hold a ResNet with {block_name} blocks x {list(counts)}, which matches no known "
            f"architecture (known: {known})"
        )
    name = next((n for n in names if ARCHITECTURES[n][2] == width), names[0])
    config = BackboneConfig(
        name=name,
        width=None if ARCHITECTURES[name][2] == width else width,
        cifar_stem=kernel == 3,
        in_channels=in_channels,
    )
    return BackboneLayout(config, stem_width=None if stem_width == width else stem_width)


def infer_backbone_config(state_dict: Mapping[str, torch.Tensor]) -> BackboneConfig:
    """The ``BackboneConfig`` that rebuilds these torchvision-keyed weights (see ``infer_backbone_layout``).

    Raises ``UnsupportedArchitectureError`` for weights with a stem narrower or wider than their stages (CMC's
    ResNets), so a caller that only compares names and widths cannot mistake them for a torchvision ResNet;
    ``infer_backbone_layout(...).to_config()`` describes them, and ``load_backbone`` builds them.
    """
    layout = infer_backbone_layout(state_dict)
    if layout.stem_width is not None:
        raise UnsupportedArchitectureError(
            f"the stem has {layout.stem_width} channels but the stages have base width "
            f"{layout.config.width or ARCHITECTURES[layout.config.name][2]} (CMC resnet50v1/v3 or InsDis "
            "resnet50x2 layout, whose stem stays 64 channels): use infer_backbone_layout(...).to_config() "
            "for a BackboneConfig with stem_width, or load_backbone()"
        )
    return layout.config


def build_backbone_for_layout(layout: BackboneLayout) -> nn.Module:
    """Build the (randomly initialised) module whose ``state_dict`` keys and shapes match ``layout``."""
    cfg = layout.config
    if cfg.name == CMC_ALEXNET_HALF:
        return build_cmc_alexnet_half(cfg.in_channels)
    return build_backbone(
        cfg.name,
        width=cfg.width,
        cifar_stem=cfg.cifar_stem,
        in_channels=cfg.in_channels,
        stem_width=layout.stem_width,
    )
