"""SwAV's multi-crop views (Caron et al., arXiv:2006.09882; facebookresearch/swav ``src/multicropdataset.py``).

:func:`swav_crop_transform` is one view, with SwAV's PIL blur (:class:`PILRandomGaussianBlur`);
:func:`multicrop_transform` turns ``--nmb_crops``/``--size_crops``/``--min_scale_crops``/``--max_scale_crops``
into ``MultiCropDataset``'s crop list (the shared :class:`~selfsup.shared.data.MultiCropTransform`).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import numpy as np
from PIL import ImageFilter
from torchvision.transforms import v2

from selfsup.shared.data.transforms import NORMALIZATION, MultiCropTransform, check_crop, to_normalized_tensor

__all__ = ["PILRandomGaussianBlur", "input_normalization", "multicrop_transform", "swav_crop_transform"]


class PILRandomGaussianBlur:
    """SwAV's blur: with probability ``p`` (``numpy.random.rand() <= p``), PIL's ``GaussianBlur`` with a radius
    drawn by ``random.uniform(radius_min, radius_max)``: the original's draws, from NumPy and Python's
    ``random`` in its order, and PIL's own filter (PIL's radius is the Gaussian's standard deviation in pixels,
    approximated by box blurs), so the pixels equal the original's."""

    def __init__(self, p: float = 0.5, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"PILRandomGaussianBlur: p must be in [0, 1], got {p}")
        if not 0.0 <= radius_min <= radius_max:
            raise ValueError(
                f"PILRandomGaussianBlur: need 0 <= radius_min <= radius_max, got {radius_min}, {radius_max}"
            )
        self.prob, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, image: Any) -> Any:
        if not np.random.rand() <= self.prob:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.prob}, radius=({self.radius_min}, {self.radius_max}))"


def swav_crop_transform(
    size: int,
    min_scale: float,
    max_scale: float,
    *,
    normalization: str = "swav",
    color_strength: float = 1.0,
    blur: bool = True,
) -> v2.Compose:
    """One SwAV multi-crop view.

    RandomResizedCrop(``size``, scale (``min_scale``, ``max_scale``), bilinear) -> RandomHorizontalFlip ->
    RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p=0.8) -> RandomGrayscale(0.2) ->
    :class:`PILRandomGaussianBlur` (p 0.5, radius 0.1-2; ``blur``) -> tensor -> Normalize (``normalization``: the
    0.228 red std of ``swav``). ImageNet: s = 1 with blur; the Un-Mix CIFAR code: s = 0.5, no blur,
    ``cifar_swav`` constants.
    """
    check_crop(size, "size_crops")
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(
            f"--min_scale_crops/--max_scale_crops: need 0 < min <= max <= 1, got {min_scale} and {max_scale}"
        )
    if normalization not in NORMALIZATION:
        raise ValueError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATION)}")
    s = color_strength
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(min_scale, max_scale)),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        steps.append(PILRandomGaussianBlur())
    mean, std = NORMALIZATION[normalization]
    return v2.Compose([*steps, *to_normalized_tensor(mean, std)])


def input_normalization(args: argparse.Namespace) -> str:
    """The ``NORMALIZATION`` name of the views: the Un-Mix CIFAR code's constants with ``--cifar_aug``."""
    return "cifar_swav" if args.cifar_aug else "swav"


def multicrop_transform(args: argparse.Namespace) -> MultiCropTransform:
    """``MultiCropDataset``'s views: per resolution ``i``, ``nmb_crops[i]`` crops of ``size_crops[i]``."""
    strength, blur = (0.5, False) if args.cifar_aug else (1.0, True)
    return MultiCropTransform(
        [
            (
                swav_crop_transform(
                    size, lo, hi, normalization=input_normalization(args), color_strength=strength, blur=blur
                ),
                n,
            )
            for n, size, lo, hi in zip(
                args.nmb_crops, args.size_crops, args.min_scale_crops, args.max_scale_crops
            )
        ]
    )
