"""Image pipelines of the evaluation protocols, built from a resolved preset.

Train pipelines (``train_aug``):

* ``crop_flip``: Resize(``resize``) -> RandomCrop(``crop``) -> RandomHorizontalFlip (unofficial MoCo
  ``test.py``);
* ``rrc_flip``: RandomResizedCrop(``crop``, scale (``crop_low``, 1)) -> RandomHorizontalFlip (ImageNet
  protocols);
* ``rrc_cj_flip``: RandomResizedCrop(``crop``, scale (``crop_low``, 1)) -> RandomGrayscale(0.2) ->
  ColorJitter(0.4, 0.4, 0.4, 0.4) -> RandomHorizontalFlip (the CMC repository's ``eval_moco_ins.py --aug CJ``);
* ``none``: the test pipeline.

Test pipeline: Resize(``resize``) -> CenterCrop(``crop``). Both end with the tensor conversion: RGB scaled to
[0, 1] and normalised with ``normalization`` (a name of :data:`selfsup.shared.data.NORMALIZATION`, ``dataset``
for the dataset's own statistics, or another dataset's name), or CMC's Lab/YCbCr view
(:mod:`selfsup.shared.data.colorspace`) when ``color_space`` is not ``rgb``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

from selfsup.shared.data.colorspace import COLOR_NORMALIZATION, ColorSpaceToTensor

__all__ = ["build_transforms", "normalization_constants"]


def normalization_constants(name: str, dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` for ``--normalization name`` when evaluating on ``dataset``."""
    from selfsup.shared.data import DATASET_NAMES, NORMALIZATION, dataset_info

    if name in NORMALIZATION:
        mean, std = NORMALIZATION[name]
    elif name in COLOR_NORMALIZATION:
        mean, std = COLOR_NORMALIZATION[name]
    elif name == "dataset":
        info = dataset_info(dataset)
        mean, std = info.mean, info.std
    elif name in DATASET_NAMES:
        info = dataset_info(name)
        mean, std = info.mean, info.std
    else:
        known = [*NORMALIZATION, *COLOR_NORMALIZATION, "dataset", *DATASET_NAMES]
        raise ValueError(f"--normalization {name!r} is unknown; expected one of {', '.join(known)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _to_tensor(color_space: str, mean: tuple[float, ...], std: tuple[float, ...]) -> list[Any]:
    if color_space != "rgb":
        return [ColorSpaceToTensor(color_space)]
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]


def build_transforms(config: Any, dataset: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any], dict]:
    """``(train_transform, test_transform, spec)`` for a resolved config; ``spec`` is a JSON-ready description
    (it enters the feature-cache key and the result file)."""
    if config.resize is None or config.crop is None:
        raise ValueError("build_transforms needs a resolved config (resize and crop set); use resolve_config")
    resize, crop = int(config.resize), int(config.crop)
    if resize < crop:
        raise ValueError(f"--resize ({resize}) must be >= --crop ({crop})")
    if config.color_space != "rgb":
        mean, std = COLOR_NORMALIZATION[config.color_space]
        if config.normalization not in (config.color_space, "dataset"):
            raise ValueError(
                f"--color_space {config.color_space} uses CMC's constants; --normalization must be "
                f"{config.color_space!r}, got {config.normalization!r}"
            )
    else:
        if config.normalization in COLOR_NORMALIZATION:
            raise ValueError(
                f"--normalization {config.normalization} needs --color_space {config.normalization}"
            )
        mean, std = normalization_constants(config.normalization, dataset)
    tail = _to_tensor(config.color_space, mean, std)
    test_ops: list[Any] = [v2.Resize(resize), v2.CenterCrop(crop)]
    if config.train_aug in ("rrc_flip", "rrc_cj_flip"):
        train_ops: list[Any] = [v2.RandomResizedCrop(crop, scale=(float(config.crop_low), 1.0))]
        if config.train_aug == "rrc_cj_flip":
            train_ops += [v2.RandomGrayscale(p=0.2), v2.ColorJitter(0.4, 0.4, 0.4, 0.4)]
        train_ops.append(v2.RandomHorizontalFlip(p=0.5))
    elif config.train_aug == "crop_flip":
        train_ops = [v2.Resize(resize), v2.RandomCrop(crop), v2.RandomHorizontalFlip(p=0.5)]
    else:
        train_ops = list(test_ops)
    spec = {
        "resize": resize,
        "crop": crop,
        "train_aug": config.train_aug,
        "crop_low": float(config.crop_low) if config.train_aug.startswith("rrc") else None,
        "color_space": config.color_space,
        "mean": list(mean),
        "std": list(std),
    }
    return v2.Compose([*train_ops, *tail]), v2.Compose([*test_ops, *tail]), spec
