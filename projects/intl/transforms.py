"""Training views of INTL (``src/transform.py``, ``cfg.py``) and CW-RGP (W-MSE's ``base/``); spec ``intl.md`` §2, App. A.

INTL, one crop: ``RandomResizedCrop(size, scale, bicubic)`` → ``RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), 0.8)``
→ ``RandomGrayscale(0.2)`` → ``RandomApply(PIL GaussianBlur, radius ~ U[0.1, 2], p_blur)`` →
``RandomApply(PIL solarize at 128, p_solarize)`` → ``RandomHorizontalFlip`` → tensor → ImageNet normalisation.
Crop sets (:data:`MULTI_CROP`): the default two 224 crops (scale 0.08-1, blur 1.0 / 0.1, solarize 0.0 / 0.2), or
``--multi-crop``: 2×224, 192, 160, 128, 96 with their scale ranges, blur 0.5 and solarize 0.1 each.

CW-RGP (W-MSE's order): ``RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8)`` → ``RandomGrayscale(0.1)`` →
``RandomResizedCrop(size, scale (0.2, 1), bicubic)`` → ``RandomHorizontalFlip`` → tensor → normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from PIL import ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode, v2

from selfsup.shared.data.transforms import NORMALIZATION, to_normalized_tensor

__all__ = ["MULTI_CROP", "crop_plan", "intl_crop_transform", "wmse_transform"]

#: ``--multi-crop`` (the original's ``Multi_Crop`` overrides): sizes, scale ranges, blur and solarize probabilities.
MULTI_CROP = {
    "nmb_crops": [2, 1, 1, 1, 1],
    "crops_size": [224, 192, 160, 128, 96],
    "min_scale_crops": [0.2, 0.171, 0.143, 0.114, 0.086],
    "max_scale_crops": [1.0, 0.857, 0.714, 0.571, 0.429],
    "gaussian_prob": [0.5, 0.5, 0.5, 0.5, 0.5],
    "solarization_prob": [0.1, 0.1, 0.1, 0.1, 0.1],
}


class _PILBlur:
    """PIL's GaussianBlur with ``radius = random.uniform(0.1, 2.0)`` (applied through ``RandomApply``)."""

    def __call__(self, image: Any) -> Any:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


class _PILSolarize:
    """``ImageOps.solarize(image, 128)``."""

    def __call__(self, image: Any) -> Any:
        return ImageOps.solarize(image.convert("RGB"), 128)


MeanStd = tuple[Sequence[float], Sequence[float]]


def intl_crop_transform(
    size: int,
    min_scale: float,
    max_scale: float,
    *,
    blur: float,
    solarize: float,
    mean_std: MeanStd = NORMALIZATION["imagenet"],
) -> v2.Compose:
    """One INTL crop (module docstring)."""
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(
            f"--min_scale_crops/--max_scale_crops: need 0 < min <= max <= 1, got {min_scale}, {max_scale}"
        )
    for flag, p in (("--gaussian_prob", blur), ("--solarization_prob", solarize)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{flag} values must be in [0, 1], got {p}")
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(min_scale, max_scale), interpolation=InterpolationMode.BICUBIC),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([_PILBlur()], p=blur),
            v2.RandomApply([_PILSolarize()], p=solarize),
            v2.RandomHorizontalFlip(p=0.5),
            *to_normalized_tensor(*mean_std),
        ]
    )


def crop_plan(args: Any) -> list[tuple[int, float, float, float, float]]:
    """``[(size, min_scale, max_scale, blur_p, solarize_p), ...]`` with one entry per crop, in order."""
    lists = [args.nmb_crops, args.crops_size, args.min_scale_crops, args.max_scale_crops]
    lists += [args.gaussian_prob, args.solarization_prob]
    if len({len(v) for v in lists}) != 1:
        raise ValueError(
            "--nmb_crops, --crops_size, --min_scale_crops, --max_scale_crops, --gaussian_prob and "
            f"--solarization_prob need the same number of entries, got {[len(v) for v in lists]}"
        )
    plan = []
    for n, size, lo, hi, blur, sol in zip(*lists):
        plan += [(size, lo, hi, blur, sol)] * n
    return plan


def wmse_transform(size: int, mean_std: MeanStd, *, min_scale: float = 0.2) -> v2.Compose:
    """One CW-RGP view in W-MSE's order (module docstring)."""
    return v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.1),
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC),
            v2.RandomHorizontalFlip(p=0.5),
            *to_normalized_tensor(*mean_std),
        ]
    )


def multi_view(transforms: Sequence[Any]):
    """``image -> [t(image) for t in transforms]``."""
    from selfsup.shared.data import MultiCropTransform

    return MultiCropTransform([(t, 1) for t in transforms])
