"""CMC's two-stream encoder as the evaluation harness builds it: one backbone per group of input channels.

``load_backbone`` returns a :class:`TwoStreamBackbone` for CMC checkpoints read with ``view="both"``; the
probes and feature extraction of ``shared/evaluation`` recognise it and probe each stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class TwoStreamBackbone(nn.Module):
    """CMC's two-stream encoder: split the input channels, run one backbone per split, concatenate features.

    For a CMC Lab model, ``streams`` is ``{"l_to_ab": <1-channel net>, "ab_to_l": <2-channel net>}`` and the
    input is a normalised 3-channel Lab (or YCbCr) tensor ``[N, 3, H, W]``: channel 0 (L or Y) goes to
    ``l_to_ab``, channels 1-2 (ab or CbCr) to ``ab_to_l``. ``forward`` returns ``[N, sum(feature_dim)]``
    with the L-stream features first, the order CMC's ``LinearProbing.py`` concatenates them in.
    """

    def __init__(self, streams: Mapping[str, nn.Module], channels: Sequence[int]) -> None:
        super().__init__()
        if len(streams) != len(channels):
            raise ValueError(f"{len(streams)} streams but {len(channels)} channel counts")
        for name, module in streams.items():
            self.add_module(name, module)
        self.stream_names = tuple(streams)
        self.channels = tuple(int(c) for c in channels)
        self.in_channels = sum(self.channels)
        self.feature_dim = sum(int(module.feature_dim) for module in streams.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels split as {list(self.channels)} across "
                f"{list(self.stream_names)}, got a tensor of shape {list(x.shape)}"
            )
        parts = torch.split(x, list(self.channels), dim=1)
        return torch.cat([getattr(self, name)(part) for name, part in zip(self.stream_names, parts)], dim=1)
