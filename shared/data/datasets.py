"""The dataset registry: names, per-dataset facts, and :func:`build_dataset`.

Every dataset returns ``(transform(image), int target)`` (a PIL RGB image when ``transform`` is None) and
exposes ``targets``, ``classes`` and ``__len__``. Splits are ``train`` and ``test``; STL-10 also has
``unlabeled`` and ``train+unlabeled`` (target -1 for unlabeled images).

Heavy modules (torchvision.datasets, scikit-learn) are imported only when a dataset is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from selfsup.shared.data.flags import data_root_flag

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "build_dataset",
    "dataset_info",
    "dataset_splits",
    "default_data_root",
]

DATASET_NAMES: tuple[str, ...] = (
    "imagefolder",
    "cifar10",
    "cifar100",
    "stl10",
    "fashion_mnist",
    "digits",
    "digits_color",
    "npz",
)

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset.

    ``num_classes`` is None when it is read from the data (imagefolder, npz). ``image_size`` is the native
    image side (224 for imagefolder: the usual training crop). ``mean``/``std`` are per-channel RGB
    normalisation constants in [0, 1] units (ImageNet's for imagefolder; 0.5 for npz, whose content is
    not known in advance).
    """

    name: str
    num_classes: int | None
    image_size: int
    mean: Triple
    std: Triple
    splits: tuple[str, ...] = ("train", "test")


_IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
_IMAGENET_STD: Triple = (0.229, 0.224, 0.225)

# Per-channel statistics of the training images: the commonly published values for CIFAR/STL/Fashion-MNIST;
# digits' and digits_color's were computed on this package's train splits (see tests/test_data_datasets.py).
_INFOS: dict[str, DatasetInfo] = {
    "imagefolder": DatasetInfo("imagefolder", None, 224, _IMAGENET_MEAN, _IMAGENET_STD),
    "cifar10": DatasetInfo("cifar10", 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": DatasetInfo(
        "stl10",
        10,
        96,
        (0.4467, 0.4398, 0.4066),
        (0.2603, 0.2566, 0.2713),
        ("train", "test", "unlabeled", "train+unlabeled"),
    ),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 28, (0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "digits": DatasetInfo("digits", 10, 32, (0.3092, 0.3092, 0.3092), (0.3487, 0.3487, 0.3487)),
    "digits_color": DatasetInfo("digits_color", 10, 32, (0.5114, 0.5036, 0.4729), (0.2155, 0.2425, 0.2253)),
    "npz": DatasetInfo("npz", None, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _check_name(name: str) -> str:
    if name not in DATASET_NAMES:
        raise ValueError(f"--dataset {name!r} is unknown; expected one of {', '.join(DATASET_NAMES)}")
    return name


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name`` (one of :data:`DATASET_NAMES`)."""
    return _INFOS[_check_name(name)]


def dataset_splits(name: str) -> tuple[str, ...]:
    """The split names dataset ``name`` accepts."""
    return dataset_info(name).splits


def default_data_root() -> Path:
    """Root used for the torchvision datasets when ``--dataset_root`` is not given: ``<cache>/datasets``."""
    from selfsup.shared.data.torchvision_sets import cache_dir

    return cache_dir() / "datasets"


def build_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    transform: Callable[[Image.Image], Any] | None = None,
    download: bool = False,
    skip_corrupt: bool = False,
) -> Dataset:
    """Build split ``split`` of dataset ``name`` (``--dataset``) read from ``root`` (``--dataset_root``).

    * ``imagefolder``: ``root/train`` + ``root/val`` (or ``root/test``), or a flat ``root/<class>/*`` train
      split; ``skip_corrupt`` replaces unreadable images (see :mod:`selfsup.shared.data.imagefolder`).
    * ``cifar10``, ``cifar100``, ``stl10``, ``fashion_mnist``: torchvision layout under ``root`` (default
      :func:`default_data_root`); ``download`` fetches missing files.
    * ``digits``: scikit-learn's bundled digits at 32x32 RGB; ``root`` is ignored.
    * ``digits_color``: the same digits, split and targets in per-image random colours drawn independently of
      the class (CMC's L and ab views both show the digit); ``root`` is ignored.
    * ``npz``: ``root`` is an ``.npz`` file (see :mod:`selfsup.shared.data.arrays`).

    ``skip_corrupt`` only matters for ``imagefolder`` (the other datasets are decoded arrays); ``download``
    only for the torchvision datasets.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"--dataset {name}: split {split!r} is not available; expected one of {info.splits}")
    if name == "digits":
        from selfsup.shared.data.digits import build_digits

        return build_digits(split, transform=transform)
    if name == "digits_color":
        from selfsup.shared.data.digits import build_digits_color

        return build_digits_color(split, transform=transform)
    if name == "imagefolder":
        from selfsup.shared.data.imagefolder import (
            ImageFolderDataset,
            find_classes,
            resolve_imagefolder_split,
        )

        if root is None:
            raise FileNotFoundError(
                f"--dataset imagefolder needs {data_root_flag()}: an ImageNet-style folder"
            )
        directory, train_dir = resolve_imagefolder_split(root, split)
        classes = find_classes(train_dir) if train_dir is not None else None
        return ImageFolderDataset(directory, transform=transform, classes=classes, skip_corrupt=skip_corrupt)
    if name == "npz":
        from selfsup.shared.data.arrays import load_npz_dataset

        if root is None:
            raise FileNotFoundError(f"--dataset npz needs {data_root_flag()}: the path of an .npz file")
        return load_npz_dataset(root, split, transform=transform)
    from selfsup.shared.data.torchvision_sets import build_torchvision_dataset

    return build_torchvision_dataset(
        name, root if root is not None else default_data_root(), split, transform=transform, download=download
    )
