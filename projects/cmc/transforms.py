"""The training views of the CMC repository (spec ``cmc.md`` §1 and §4), from ``torchvision.transforms.v2``.

* :func:`cmc_transform` (``train_CMC.py``): ``RandomResizedCrop(size, scale=(crop_low, 1))`` → horizontal flip →
  colour space (``--view Lab``: L | ab, ``YCbCr``: Y | CbCr) → normalisation with CMC's half-range constants.
  No colour jitter or grayscale: the two views are the colour channels.
* :func:`insdis_transform` (``train_moco_ins.py``): ``RandomResizedCrop(size, scale=(crop, 1))`` →
  ``RandomGrayscale(0.2)`` → ``ColorJitter(0.4, 0.4, 0.4, 0.4)`` → flip → ImageNet normalisation
  (``--aug CJ``); ``--aug NULL`` drops the grayscale and jitter.
* :class:`ChannelConcatViews` (``--moco``): two independent views concatenated along the channels (the
  original's 6-channel ``two_crop`` tensor), so that an Image-Mixture wrapper mixes both crops jointly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from selfsup.shared.data.colorspace import ColorSpaceToTensor
from selfsup.shared.data.transforms import NORMALIZATION

__all__ = ["ChannelConcatViews", "cmc_transform", "insdis_transform"]


def cmc_transform(*, size: int, crop_low: float, view: str) -> v2.Compose:
    """``train_CMC.py``'s training view: one ``3 × size × size`` tensor, channel 0 = L (Y), 1–2 = ab (CbCr)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(crop_low, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            ColorSpaceToTensor(view),
        ]
    )


def insdis_transform(*, size: int, crop: float, aug: str) -> v2.Compose:
    """``train_moco_ins.py``'s training view (``--aug CJ`` or ``NULL``), ImageNet-normalised RGB."""
    if aug not in ("CJ", "NULL"):
        raise ValueError(f"--aug must be CJ or NULL, got {aug!r}")
    steps: list[Any] = [v2.RandomResizedCrop(size, scale=(crop, 1.0), antialias=True)]
    if aug == "CJ":
        steps += [v2.RandomGrayscale(p=0.2), v2.ColorJitter(0.4, 0.4, 0.4, 0.4)]
    mean, std = NORMALIZATION["imagenet"]
    steps += [
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


class ChannelConcatViews:
    """Apply ``transform`` twice and concatenate the two views along the channel axis (``2C × H × W``)."""

    def __init__(self, transform: Callable[[Any], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        return torch.cat([self.transform(image), self.transform(image)], dim=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"
