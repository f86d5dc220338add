"""MoCo's pre-training views, built from ``torchvision.transforms.v2`` and the shared pieces of
:mod:`selfsup.shared.data.transforms`.

* :func:`moco_eveningglow_transform` - the unofficial MoCo v1 pre-training views (eveningglow/MoCo
  ``dataloader.py``, spec ``moco.md`` §2).
* :func:`moco_official_v1_transform` - official MoCo v1 (He et al., arXiv:1911.05722) ImageNet views.
* :func:`moco_v2_transform` - official MoCo v2 "aug-plus" (Chen et al., arXiv:2003.04297).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2

from selfsup.shared.data.transforms import (
    NORMALIZATION,
    blur_kernel_size,
    check_crop,
    check_min_scale,
    to_normalized_tensor,
)

__all__ = ["moco_eveningglow_transform", "moco_official_v1_transform", "moco_v2_transform"]

_HALF = NORMALIZATION["half"]
_IMAGENET = NORMALIZATION["imagenet"]


def moco_eveningglow_transform(
    crop: int = 64, mean: Sequence[float] = _HALF[0], std: Sequence[float] = _HALF[1], min_scale: float = 0.08
) -> v2.Compose:
    """Unofficial MoCo pre-training view (eveningglow/MoCo, ``moco.md`` §2).

    RandomResizedCrop(``crop``, scale (0.08, 1), ratio (3/4, 4/3), bilinear) -> ColorJitter(0.1, 0.1, 0.1,
    hue 0), always applied -> RandomHorizontalFlip(0.5) -> RandomGrayscale(0.1) -> tensor -> Normalize.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(check_crop(crop), scale=(check_min_scale(min_scale), 1.0)),
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
            v2.RandomResizedCrop(check_crop(crop), scale=(check_min_scale(min_scale), 1.0)),
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
            v2.RandomResizedCrop(check_crop(crop), scale=(check_min_scale(min_scale), 1.0)),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel_size=blur_kernel_size(crop), sigma=(0.1, 2.0))], p=0.5),
            v2.RandomHorizontalFlip(p=0.5),
            *to_normalized_tensor(mean, std),
        ]
    )
