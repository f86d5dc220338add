"""In-memory image datasets: uint8 arrays served as PIL RGB images, and the ``.npz`` file format.

``.npz`` format (as in ``cifar10_prefix_subset.npz``): ``train_images`` and ``test_images`` of shape
``(N, H, W, 3)`` or ``(N, H, W)`` / ``(N, H, W, 1)`` (grayscale, converted to RGB), dtype uint8;
``train_labels`` and ``test_labels`` of shape ``(N,)`` with integer class ids; optionally ``classes``,
an array of class-name strings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from selfsup.shared.data.flags import data_root_flag

__all__ = ["ArrayImageDataset", "as_rgb_uint8", "load_npz_dataset"]


def as_rgb_uint8(images: np.ndarray, source: str) -> np.ndarray:
    """Check uint8 images shaped ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``; return them as RGB."""
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{source}: images must have shape (N,H,W), (N,H,W,1) or (N,H,W,3), got {images.shape}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images)


class ArrayImageDataset(Dataset):
    """``(N, H, W, 3)`` uint8 images with integer targets, served as ``(transform(PIL image), target)``."""

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        source: str = "array dataset",
    ) -> None:
        self.images = as_rgb_uint8(np.asarray(images), source)
        targets_array = np.asarray(targets)
        if targets_array.ndim != 1 or len(targets_array) != len(self.images):
            raise ValueError(
                f"{source}: expected {len(self.images)} labels (one per image), "
                f"got shape {targets_array.shape}"
            )
        if targets_array.size and not np.issubdtype(targets_array.dtype, np.integer):
            raise ValueError(f"{source}: labels must be integers, got dtype {targets_array.dtype}")
        self.targets: list[int] = [int(t) for t in targets_array]
        self.classes = [str(name) for name in classes]
        if self.targets and max(self.targets) >= len(self.classes):
            raise ValueError(
                f"{source}: label {max(self.targets)} has no class name ({len(self.classes)} classes given)"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        target = self.targets[index]
        if self.transform is not None:
            return self.transform(image), target
        return image, target


def load_npz_dataset(
    path: str | os.PathLike[str], split: str, *, transform: Callable[[Image.Image], Any] | None = None
) -> ArrayImageDataset:
    """Load split ``train`` or ``test`` of an ``.npz`` image file (format in the module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"npz dataset file {str(file)!r} does not exist; {data_root_flag()} for --dataset npz must be the "
            f"path of an .npz file holding train_images, train_labels, test_images, test_labels"
        )
    if split not in ("train", "test"):
        raise ValueError(f"npz dataset: split must be 'train' or 'test', got {split!r}")
    with np.load(file, allow_pickle=False) as archive:
        keys = set(archive.files)
        wanted = (f"{split}_images", f"{split}_labels")
        missing = [key for key in wanted if key not in keys]
        if missing:
            raise KeyError(
                f"{str(file)!r} lacks array(s) {missing}; an npz dataset needs train_images, train_labels, "
                f"test_images, test_labels (found {sorted(keys)})"
            )
        images = archive[wanted[0]]
        labels = archive[wanted[1]]
        if "classes" in keys:
            classes = [str(name) for name in archive["classes"].tolist()]
        else:
            # Name classes "0".."C-1" with C from both splits, so train and test agree.
            label_sets = [archive[key] for key in ("train_labels", "test_labels") if key in keys]
            num_classes = max((int(array.max()) + 1 for array in label_sets if array.size), default=0)
            classes = [str(index) for index in range(num_classes)]
    return ArrayImageDataset(images, labels, classes, transform=transform, source=f"{file} [{split}]")
