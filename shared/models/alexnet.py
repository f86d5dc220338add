"""CMC's half-width AlexNet (one colour stream of ``train_CMC.py --model alexnet``).

CMC (Tian et al., "Contrastive Multiview Coding", arXiv:1906.05849) splits a Lab image into its L channel and
its ab channels and feeds each to a half-width AlexNet (``alexnet_half(in_channel)`` in HobbitLong/CMC
``models/alexnet.py``). The layers below follow the table in ``specs/cmc.md`` §2.1; the parameter names
equal the original's once the ``encoder.module.l_to_ab.`` / ``encoder.module.ab_to_l.`` prefix is stripped:

- ``conv_block_1``: Conv(in, 48, 11, stride 4, pad 2, no bias), BN, ReLU, MaxPool(3, 2) -> 48 x 27 x 27
- ``conv_block_2``: Conv(48, 128, 5, pad 2), BN, ReLU, MaxPool(3, 2) -> 128 x 13 x 13
- ``conv_block_3``: Conv(128, 192, 3, pad 1), BN, ReLU -> 192 x 13 x 13
- ``conv_block_4``: Conv(192, 192, 3, pad 1), BN, ReLU -> 192 x 13 x 13
- ``conv_block_5``: Conv(192, 128, 3, pad 1), BN, ReLU, MaxPool(3, 2) -> 128 x 6 x 6
- ``fc6``: Linear(4608, 2048), BN1d, ReLU; ``fc7``: Linear(2048, 2048), BN1d, ReLU

(sizes for a 224 x 224 input).

The original's ``fc8`` (Linear(2048, 128) + L2 normalisation) is the contrastive projection and is not part
of this backbone (the CMC trainer's model subclasses this one and adds it). ``forward`` returns the flattened
``conv_block_5`` output (``feature_dim`` = 4608 per stream), the feature CMC's linear protocol reads for
AlexNet (``LinearProbing.py --layer 5``; both streams concatenated give the 9216 inputs of its classifier).
``fc6``/``fc7`` need a 224 x 224 input; ``forward_stages`` returns them for that size only.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``BackboneConfig.name`` of one CMC AlexNet stream.
CMC_ALEXNET_HALF = "cmc_alexnet_half"

# (out channels, kernel, stride, padding, max-pool after) of conv_block_1..5; the input channels are chained.
_CONV_BLOCKS: tuple[tuple[int, int, int, int, bool], ...] = (
    (48, 11, 4, 2, True),
    (128, 5, 1, 2, True),
    (192, 3, 1, 1, False),
    (192, 3, 1, 1, False),
    (128, 3, 1, 1, True),
)
_FC_WIDTH = 2048
_POOLED_SIDE = 6  # conv_block_5 output side for a 224 x 224 input


def _conv_block(
    in_channels: int, out_channels: int, kernel: int, stride: int, padding: int, pool: bool
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return nn.Sequential(*layers)


def _fc_block(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU(inplace=True)
    )


class CMCAlexNetHalf(nn.Module):
    """One CMC AlexNet stream without its ``fc8`` projection (``in_channels`` 1 for L or Y, 2 for ab/CbCr)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels}")
        channels = in_channels
        for index, (out_channels, kernel, stride, padding, pool) in enumerate(_CONV_BLOCKS, start=1):
            self.add_module(
                f"conv_block_{index}", _conv_block(channels, out_channels, kernel, stride, padding, pool)
            )
            channels = out_channels
        self.feature_dim = channels * _POOLED_SIDE * _POOLED_SIDE
        self.fc6 = _fc_block(self.feature_dim, _FC_WIDTH)
        self.fc7 = _fc_block(_FC_WIDTH, _FC_WIDTH)
        self.in_channels = in_channels

    def conv_blocks(self) -> list[nn.Module]:
        """``conv_block_1`` .. ``conv_block_5``, in order."""
        return [getattr(self, f"conv_block_{index}") for index in range(1, len(_CONV_BLOCKS) + 1)]

    def fc_input(self, conv5: torch.Tensor) -> torch.Tensor:
        """``conv_block_5``'s map flattened for ``fc6``; a clear error when the input was not 224 x 224."""
        if conv5.shape[1:] != (conv5.shape[1], _POOLED_SIDE, _POOLED_SIDE):
            raise ValueError(
                f"fc6 takes a {_POOLED_SIDE}x{_POOLED_SIDE} conv_block_5 map (a 224x224 input), got "
                f"{list(conv5.shape[1:])}; probe conv1-conv5 for other input sizes"
            )
        return torch.flatten(conv5, 1)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every block's output: ``conv1``..``conv5`` maps, then ``fc6``/``fc7`` vectors; the ``fc`` entries
        only when the input is 224 x 224 (``conv5`` is 6 x 6), so the conv maps work at any input size."""
        out: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.conv_blocks(), start=1):
            x = block(x)
            out[f"conv{index}"] = x
        if x.shape[-2:] != (_POOLED_SIDE, _POOLED_SIDE):
            return out
        x = self.fc6(self.fc_input(x))
        out["fc6"] = x
        out["fc7"] = self.fc7(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened ``conv_block_5`` output, ``feature_dim`` = 4608 for a 224 x 224 input."""
        for block in self.conv_blocks():
            x = block(x)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def build_cmc_alexnet_half(in_channels: int = 1) -> CMCAlexNetHalf:
    """Build one CMC AlexNet stream; its ``state_dict`` keys are CMC's without ``fc8``."""
    return CMCAlexNetHalf(in_channels)
