"""Augmentation recipes of the reproduced papers, built from ``torchvision.transforms.v2``.

Every transform here takes a PIL image and returns a plain float32 tensor ``C x H x W`` (values normalised
with the given mean/std). The multi-view wrappers return lists of such tensors.

Recipes:

* :func:`linear_eval_transform` - the linear-classification train/test pipelines.
* :class:`MultiCropTransform` - several views of one image as a crop list (multi-crop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = [
    "NORMALIZATION",
    "MultiCropTransform",
    "TwoCropsTransform",
    "blur_kernel_size",
    "check_crop",
    "check_min_scale",
    "linear_eval_transform",
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


def check_crop(crop: int, name: str = "crop") -> int:
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


def check_min_scale(min_scale: float) -> float:
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"--crop-min must lie in (0, 1], got {min_scale}")
    return min_scale


def blur_kernel_size(crop: int) -> int:
    """Gaussian-blur kernel side of the blur views (MoCo v2, SimCLR): about 10% of ``crop``, odd, at least 3."""
    size = max(3, round(0.1 * check_crop(crop)))
    return size if size % 2 == 1 else size + 1


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
    check_crop(crop)
    check_crop(resize, "resize")
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
