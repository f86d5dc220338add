"""ResNet backbones whose ``state_dict`` keys equal torchvision's.

One implementation covers ResNet-18/34/50/101/200 and SwAV's wide ResNet-50s (``resnet50w2``/``w4``/``w5``): the base width
(64 in torchvision) is a parameter, and ``cifar_stem`` swaps the 7x7/2 convolution and max-pool for a 3x3/1
convolution, the usual stem for 32x32 images. ``stem_width`` gives the stem (``conv1``/``bn1``) its own
number of channels: CMC's ResNets (``resnet50v1``/``v3``, InsDis ``resnet50x2``/``x4``) keep a 64-channel
stem whatever the stage width, so ``layer1`` then starts from 64 channels (with a ``downsample`` wherever
``64 != planes * expansion``, as torchvision's rule gives). ``fc`` is ``nn.Identity`` by default, so
``forward`` returns the pooled feature; a project may put its projection head there (the unofficial MoCo
does exactly that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

Block = type[BasicBlock] | type[Bottleneck]

#: name -> (block, blocks per stage, default base width)
ARCHITECTURES: dict[str, tuple[Block, tuple[int, int, int, int], int]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 64),
    "resnet200": (Bottleneck, (3, 24, 36, 3), 64),
    "resnet50w2": (Bottleneck, (3, 4, 6, 3), 128),
    "resnet50w4": (Bottleneck, (3, 4, 6, 3), 256),
    "resnet50w5": (Bottleneck, (3, 4, 6, 3), 320),
    # the Un-Mix SwAV CIFAR code's "resnet18": Bottleneck blocks in a [2, 2, 2, 2] layout (2048-d features)
    "resnet18_bottleneck": (Bottleneck, (2, 2, 2, 2), 64),
}


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone; stored in every selfsup checkpoint."""

    name: str = "resnet50"
    width: int | None = None  # base width; None = the architecture's default (64, or 128 for resnet50w2)
    cifar_stem: bool = False
    in_channels: int = 3
    stem_width: int | None = None  # stem channels; None = the base width (CMC's ResNets: 64 at any width)
    stem_padding: int | None = None  # conv1 padding; None = 3 (7x7 stem) or 1 (CIFAR stem)

    def to_dict(self) -> dict:
        """The fields as a plain dict; ``stem_width`` and ``stem_padding`` only when set, so files written for a torchvision-like
        backbone stay readable by selfsup versions that predate the field."""
        out = asdict(self)
        for optional in ("stem_width", "stem_padding"):
            if out[optional] is None:
                del out[optional]
        return out


class ResNet(nn.Module):
    """torchvision-compatible ResNet trunk with a configurable base width and stem (kind and width).

    ``forward(x)`` returns ``fc(flatten(avgpool(layer4(...))))``; with the default ``fc = Identity`` that is
    the ``feature_dim``-dimensional pooled feature.
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        *,
        width: int = 64,
        cifar_stem: bool = False,
        in_channels: int = 3,
        stem_width: int | None = None,
        stem_padding: int | None = None,
        zero_init_residual: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self._norm_layer = norm_layer
        stem = stem_width or width
        self.inplanes = stem
        if cifar_stem:
            pad = 1 if stem_padding is None else stem_padding
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=pad, bias=False)
        else:
            pad = 3 if stem_padding is None else stem_padding
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=pad, bias=False)
        self.bn1 = norm_layer(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Identity()
        self.feature_dim = width * 8 * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                self._norm_layer(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, norm_layer=self._norm_layer)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate map, for probes on inner layers (CMC's ``LinearProbing``)."""
        out: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out["stem"] = x
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            out[name] = x
        out["pool"] = torch.flatten(self.avgpool(x), 1)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``feature_dim`` vector, ignoring ``fc``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def build_backbone(
    name: str = "resnet50",
    *,
    width: int | None = None,
    cifar_stem: bool = False,
    in_channels: int = 3,
    stem_width: int | None = None,
    stem_padding: int | None = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build a backbone by name (see ``ARCHITECTURES``); ``fc`` is ``Identity``.

    ``stem_width`` (default: the base width) sets the channels of ``conv1``/``bn1`` on their own;
    ``stem_padding`` the zero padding of ``conv1`` (the Un-Mix SwAV CIFAR stem pads by 2: a ``ConstantPad2d(1)``
    before a 3x3 convolution with padding 1).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    block, layers, default_width = ARCHITECTURES[name]
    if width is not None and width < 1:
        raise ValueError(f"backbone width must be a positive integer, got {width}")
    if stem_width is not None and stem_width < 1:
        raise ValueError(f"backbone stem_width must be a positive integer, got {stem_width}")
    return ResNet(
        block,
        layers,
        width=width or default_width,
        cifar_stem=cifar_stem,
        in_channels=in_channels,
        stem_width=stem_width,
        stem_padding=stem_padding,
        zero_init_residual=zero_init_residual,
    )


def build_backbone_from_config(config: BackboneConfig | dict) -> ResNet:
    if isinstance(config, dict):
        config = BackboneConfig(**config)
    return build_backbone(
        config.name,
        width=config.width,
        cifar_stem=config.cifar_stem,
        in_channels=config.in_channels,
        stem_width=config.stem_width,
        stem_padding=config.stem_padding,
    )
