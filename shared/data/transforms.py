"""Augmentation recipes of the reproduced papers, built from ``torchvision.transforms.v2``.

Every transform here takes a PIL image and returns a plain float32 tensor ``C x H x W`` (values normalised
with the given mean/std). The multi-view wrappers return lists of such tensors.

Recipes:

* :func:`moco_eveningglow_transform` - the unofficial MoCo v1 pre-training views (eveningglow/MoCo
  ``dataloader.py``, spec ``moco.md`` §2).
* :func:`moco_official_v1_transform` - official MoCo v1 (He et al., arXiv:1911.05722) ImageNet views.
* :func:`moco_v2_transform` - official MoCo v2 "aug-plus" (Chen et al., arXiv:2003.04297).
* :func:`linear_eval_transform` - the linear-classification train/test pipelines.
* :func:`swav_crop_transform` - one multi-crop view of SwAV (facebookresearch/swav ``src/multicropdataset.py``),
  with :class:`PILRandomGaussianBlur`; :class:`MultiCropTransform` turns several into the crop list.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import ImageFilter
from torchvision.transforms import v2

__all__ = [
    "NORMALIZATION",
    "MultiCropTransform",
    "PILRandomGaussianBlur",
    "TwoCropsTransform",
    "blur_kernel_size",
    "linear_eval_transform",
    "moco_eveningglow_transform",
    "moco_official_v1_transform",
    "moco_v2_transform",
    "swav_crop_transform",
    "to_normalized_tensor",
]

Triple = tuple[float, float, float]

#: Named (mean, std) pairs. "swav" keeps the 0.228 red std used by the SwAV code base.
NORMALIZATION: dict[str, tuple[Triple, Triple]] = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "swav": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
    # the Un-Mix SwAV CIFAR code's constants (src/multicropdataset.py of UnMix_SwAV/for_CIFAR)
    "cifar_swav": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}

_HALF = NORMALIZATION["half"]
_IMAGENET = NORMALIZATION["imagenet"]


def _check_crop(crop: int, name: str = "crop") -> int:
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise ValueError(f"{name} (--{name}) must be a positive integer image side, got {crop!r}")
    return crop


def to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    """PIL/uint8 image -> float32 in [0, 1] (as ``ToTensor``) -> normalised plain tensor."""
    if len(mean) != len(std):
        raise ValueError(f"mean and std must have the same length, got mean={mean!r} std={std!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"every std must be > 0, got {std!r}")
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]


def _check_min_scale(min_scale: float) -> float:
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"--crop-min must lie in (0, 1], got {min_scale}")
    return min_scale


def blur_kernel_size(crop: int) -> int:
    """Gaussian-blur kernel side used by :func:`moco_v2_transform`: about 10% of ``crop``, odd, at least 3."""
    size = max(3, round(0.1 * _check_crop(crop)))
    return size if size % 2 == 1 else size + 1


def moco_eveningglow_transform(
    crop: int = 64, mean: Sequence[float] = _HALF[0], std: Sequence[float] = _HALF[1], min_scale: float = 0.08
) -> v2.Compose:
    """Unofficial MoCo pre-training view (eveningglow/MoCo, ``moco.md`` §2).

    RandomResizedCrop(``crop``, scale (0.08, 1), ratio (3/4, 4/3), bilinear) -> ColorJitter(0.1, 0.1, 0.1,
    hue 0), always applied -> RandomHorizontalFlip(0.5) -> RandomGrayscale(0.1) -> tensor -> Normalize.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(_check_crop(crop), scale=(_check_min_scale(min_scale), 1.0)),
            v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomGrayscale(p=0.1),
            *to_normalized_tensor(mean, std),
        ]
    )


def moco_official_v1_transform(
    crop: int = 224,
    mean: Sequence[float] = _IMAGENET[0],
    std: Sequence[float] = _IMAGENET[1],
    min_scale: float = 0.2,
) -> v2.Compose:
    """Official MoCo v1 pre-training view (facebookresearch/moco ``main_moco.py`` without ``--aug-plus``).

    RandomResizedCrop(``crop``, scale (0.2, 1)) -> RandomGrayscale(0.2) -> ColorJitter(0.4, 0.4, 0.4, 0.4)
    -> RandomHorizontalFlip(0.5) -> tensor -> Normalize.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(_check_crop(crop), scale=(_check_min_scale(min_scale), 1.0)),
            v2.RandomGrayscale(p=0.2),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4),
            v2.RandomHorizontalFlip(p=0.5),
            *to_normalized_tensor(mean, std),
        ]
    )


def moco_v2_transform(
    crop: int = 224,
    mean: Sequence[float] = _IMAGENET[0],
    std: Sequence[float] = _IMAGENET[1],
    min_scale: float = 0.2,
) -> v2.Compose:
    """Official MoCo v2 "aug-plus" view (Chen et al., *Improved Baselines with Momentum Contrastive
    Learning*, arXiv:2003.04297).

    RandomResizedCrop(``crop``, scale (0.2, 1)) -> RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8)
    -> RandomGrayscale(0.2) -> RandomApply(GaussianBlur(sigma ~ U[0.1, 2.0]), p=0.5) -> RandomHorizontalFlip
    -> tensor -> Normalize.

    Difference from the original: the official code blurs with PIL's ``GaussianBlur(radius=sigma)``; here a
    torchvision kernel of side :func:`blur_kernel_size` (about 10% of the crop, odd) is used, as in SimCLR.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(_check_crop(crop), scale=(_check_min_scale(min_scale), 1.0)),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=blur_kernel_size(crop), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
            *to_normalized_tensor(mean, std),
        ]
    )


def linear_eval_transform(
    train: bool,
    *,
    resize: int = 84,
    crop: int = 64,
    mean: Sequence[float] = _HALF[0],
    std: Sequence[float] = _HALF[1],
    random_resized: bool = False,
) -> v2.Compose:
    """Linear-evaluation pipeline.

    * ``train`` and not ``random_resized``: Resize(``resize``) -> RandomCrop(``crop``) -> flip
      (eveningglow/MoCo ``test.py``; the defaults 84/64/0.5 are its values).
    * ``train`` and ``random_resized``: RandomResizedCrop(``crop``) -> flip (the ImageNet linear protocol;
      ``resize`` is unused).
    * not ``train``: Resize(``resize``) -> CenterCrop(``crop``).

    Each ends with tensor -> Normalize(``mean``, ``std``). ``Resize`` with an int scales the shorter side.
    """
    _check_crop(crop)
    _check_crop(resize, "resize")
    ops: list[Any]
    if train and random_resized:
        ops = [v2.RandomResizedCrop(crop), v2.RandomHorizontalFlip(p=0.5)]
    elif train:
        if resize < crop:
            raise ValueError(f"--resize ({resize}) must be >= --crop ({crop}) for RandomCrop")
        ops = [v2.Resize(resize), v2.RandomCrop(crop), v2.RandomHorizontalFlip(p=0.5)]
    else:
        ops = [v2.Resize(resize), v2.CenterCrop(crop)]
    return v2.Compose([*ops, *to_normalized_tensor(mean, std)])


class TwoCropsTransform:
    """Two independent views ``[query, key]`` of one image (MoCo's ``TwoCropsTransform``).

    With ``key_transform=None`` both views use ``query_transform`` (each call draws fresh randomness).
    """

    def __init__(
        self, query_transform: Callable[[Any], Any], key_transform: Callable[[Any], Any] | None = None
    ) -> None:
        if not callable(query_transform):
            raise TypeError(f"TwoCropsTransform: query_transform must be callable, got {query_transform!r}")
        if key_transform is not None and not callable(key_transform):
            raise TypeError(f"TwoCropsTransform: key_transform must be callable, got {key_transform!r}")
        self.query_transform = query_transform
        self.key_transform = key_transform if key_transform is not None else query_transform

    def __call__(self, image: Any) -> list[Any]:
        return [self.query_transform(image), self.key_transform(image)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(query={self.query_transform!r}, key={self.key_transform!r})"


class MultiCropTransform:
    """Multi-crop views (SwAV): ``[(transform, n_crops), ...]`` -> flat list of crops in that order."""

    def __init__(self, crops: Sequence[tuple[Callable[[Any], Any], int]]) -> None:
        if len(crops) == 0:
            raise ValueError("MultiCropTransform: crops must list at least one (transform, n_crops) pair")
        checked: list[tuple[Callable[[Any], Any], int]] = []
        for position, pair in enumerate(crops):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(
                    f"MultiCropTransform: crops[{position}] must be a (transform, n_crops) pair, got {pair!r}"
                )
            transform, n_crops = pair
            if not callable(transform):
                raise TypeError(
                    f"MultiCropTransform: crops[{position}][0] must be callable, got {transform!r}"
                )
            if isinstance(n_crops, bool) or not isinstance(n_crops, int) or n_crops < 1:
                raise ValueError(
                    f"MultiCropTransform: crops[{position}][1] (--nmb_crops) must be an int >= 1, "
                    f"got {n_crops!r}"
                )
            checked.append((transform, n_crops))
        self.crops = checked

    @property
    def num_crops(self) -> int:
        """Total number of views returned per image."""
        return sum(n for _, n in self.crops)

    def __call__(self, image: Any) -> list[Any]:
        return [transform(image) for transform, n_crops in self.crops for _ in range(n_crops)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.crops!r})"


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
    """One SwAV multi-crop view (Caron et al., arXiv:2006.09882; ``src/multicropdataset.py``).

    RandomResizedCrop(``size``, scale (``min_scale``, ``max_scale``), bilinear) -> RandomHorizontalFlip ->
    RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p=0.8) -> RandomGrayscale(0.2) ->
    :class:`PILRandomGaussianBlur` (p 0.5, radius 0.1-2; ``blur``) -> tensor -> Normalize (``normalization``: the
    0.228 red std of ``swav``). ImageNet: s = 1 with blur; the Un-Mix CIFAR code: s = 0.5, no blur,
    ``cifar_swav`` constants.
    """
    _check_crop(size, "size_crops")
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
