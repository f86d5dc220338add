"""Which feature a protocol reads from a frozen trunk, and how CMC's probes pool intermediate layers.

Layer names: ``pool`` (default) is the backbone's ``forward_features`` vector (ResNet: global-average-pooled
``layer4``; CMC AlexNet stream: flattened ``conv5``). A stage name of ``forward_stages`` (``stem``,
``layer1``..``layer4`` for ResNets, ``conv1``..``conv5``/``fc6``/``fc7`` for CMC's AlexNet) or CMC's
``LinearProbing --layer`` number selects an intermediate layer:

==========  ===========================  ===========================
``--layer``  ResNet (avg pool, side)      AlexNet (max pool, side)
==========  ===========================  ===========================
1           after max-pool, 8 x 8        conv1, 10 x 10
2           layer1, 6 x 6                conv2, 6 x 6
3           layer2, 4 x 4                conv3, 5 x 5
4           layer3, 3 x 3                conv4, 5 x 5
5           layer4, no pooling           conv5, no pooling
6           pooled vector                fc6
==========  ===========================  ===========================

(specs ``cmc.md`` §8; the pooling is adaptive, so other input sizes keep these output sides). A
:class:`~selfsup.shared.models.two_stream.TwoStreamBackbone` (CMC's L and ab encoders) is probed per stream
(channel 0 to the L stream, channels 1-2 to the ab stream) and the features are concatenated, L first, as
CMC's ``LinearProbing.py`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from selfsup.shared.models.two_stream import TwoStreamBackbone

__all__ = ["CMC_LAYERS", "ChannelSlice", "FeatureProbe", "resolve_stage"]

#: CMC ``--layer`` number -> stage name, per backbone family.
CMC_LAYERS: dict[str, dict[str, str]] = {
    "resnet": {"1": "stem", "2": "layer1", "3": "layer2", "4": "layer3", "5": "layer4", "6": "pool"},
    "alexnet": {"1": "conv1", "2": "conv2", "3": "conv3", "4": "conv4", "5": "conv5", "6": "fc6", "7": "fc7"},
}
#: Output side of CMC's adaptive pooling per stage (None: flatten the map as it is).
_POOL_SIDE: dict[str, int | None] = {
    "stem": 8,
    "layer1": 6,
    "layer2": 4,
    "layer3": 3,
    "layer4": None,
    "conv1": 10,
    "conv2": 6,
    "conv3": 5,
    "conv4": 5,
    "conv5": None,
}


class ChannelSlice(nn.Module):
    """One CMC stream evaluated alone: it reads channels ``start:stop`` of the view (L: 0:1, ab: 1:3)."""

    def __init__(self, net: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        if not 0 <= start < stop:
            raise ValueError(f"ChannelSlice needs 0 <= start < stop, got {start}:{stop}")
        self.net, self.start, self.stop = net, start, stop
        self.feature_dim = int(getattr(net, "feature_dim", 0))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x[:, self.start : self.stop])

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net.forward_stages(x[:, self.start : self.stop])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def _family(backbone: nn.Module) -> str:
    if isinstance(backbone, ChannelSlice):
        return _family(backbone.net)
    if isinstance(backbone, TwoStreamBackbone):
        return _family(getattr(backbone, backbone.stream_names[0]))
    if hasattr(backbone, "layer4"):
        return "resnet"
    if hasattr(backbone, "conv_block_5"):
        return "alexnet"
    return "other"


def resolve_stage(backbone: nn.Module, layer: str) -> str:
    """Map ``--layer`` (a CMC number, a stage name or ``pool``) to a stage name of ``backbone``."""
    layer = str(layer)
    if layer in ("pool", "features"):
        return "pool"
    family = _family(backbone)
    if layer.isdigit():
        if family not in CMC_LAYERS or layer not in CMC_LAYERS[family]:
            known = CMC_LAYERS.get(family, {})
            raise ValueError(
                f"--layer {layer}: not a CMC layer number for a {family} backbone "
                f"(known: {', '.join(known) or 'none; use pool or a stage name'})"
            )
        stage = CMC_LAYERS[family][layer]
        # The AlexNet's pooled vector is its flattened conv5 (forward_features).
        return "pool" if stage == "pool" else stage
    return layer


class FeatureProbe(nn.Module):
    """Frozen-trunk feature reader: ``probe(x)`` is the ``N x D`` feature a linear head or kNN uses."""

    def __init__(self, backbone: nn.Module, layer: str = "pool", pool: str = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"--pool must be 'avg' or 'max', got {pool!r}")
        self.backbone = backbone
        self.layer = str(layer)
        self.stage = resolve_stage(backbone, layer)
        self.pool = pool
        self.pool_side = _POOL_SIDE.get(self.stage)
        if _family(backbone) == "alexnet" and self.stage == "conv5":
            self.stage = "conv5_flat"  # conv5 unpooled == forward_features; works at any input size

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (enters the feature-cache key and the result file)."""
        return {"layer": self.layer, "stage": self.stage, "pool": self.pool, "pool_side": self.pool_side}

    def _single(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.stage in ("pool", "conv5_flat"):
            return net.forward_features(x)
        if not hasattr(net, "forward_stages"):
            raise ValueError(f"--layer {self.layer}: {type(net).__name__} has no forward_stages")
        stages = net.forward_stages(x)
        if self.stage not in stages:
            raise ValueError(f"--layer {self.layer}: stage {self.stage!r} not in {sorted(stages)}")
        out = stages[self.stage]
        if out.dim() == 4 and self.pool_side is not None:
            pool_fn = F.adaptive_avg_pool2d if self.pool == "avg" else F.adaptive_max_pool2d
            out = pool_fn(out, self.pool_side)
        return torch.flatten(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.backbone
        if isinstance(net, TwoStreamBackbone):
            if x.shape[1] != net.in_channels:
                raise ValueError(
                    f"the two-stream (CMC) backbone expects {net.in_channels} input channels split "
                    f"{list(net.channels)}, got {x.shape[1]}; use --color_space lab or ycbcr"
                )
            parts = torch.split(x, list(net.channels), dim=1)
            return torch.cat([self._single(getattr(net, n), p) for n, p in zip(net.stream_names, parts)], 1)
        return self._single(net, x)

    @torch.no_grad()
    def output_dim(self, example: torch.Tensor) -> int:
        """Feature dimension for inputs shaped like ``example`` (one forward pass in eval mode)."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return int(self.forward(example[:1]).shape[1])
        finally:
            self.backbone.train(was_training)
