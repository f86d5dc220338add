"""The embedded default dataset: scikit-learn's bundled handwritten digits, upscaled to 32x32 RGB.

Source: ``sklearn.datasets.load_digits()`` (the UCI "Optical Recognition of Handwritten Digits" test set,
1797 images of 8x8 pixels with values 0..16, 10 classes). It ships with scikit-learn, so it needs no
download and no ``--dataset_root``.

Preparation (fixed, so every run sees the same pixels):

1. values ``v`` in 0..16 become uint8 ``round(v * 255 / 16)``;
2. each 8x8 image is upscaled to 32x32 with PIL **bicubic** resampling (PIL clips to 0..255);
3. the gray channel is repeated to RGB.

Split: ``sklearn.model_selection.train_test_split`` with ``test_size=0.25``, ``random_state=0`` and
stratification by class, giving 1347 train / 450 test images, disjoint and stable across versions of
this package. scikit-learn is imported only when the data is first loaded; the arrays are cached per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from selfsup.shared.data.arrays import ArrayImageDataset

__all__ = ["DIGITS_CLASSES", "DIGITS_SIZE", "build_digits", "digits_arrays", "digits_split_indices"]

DIGITS_SIZE = 32
DIGITS_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
_TEST_SIZE = 0.25
_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Upscaled images (1797, 32, 32, 3) uint8, targets, and the train / test index arrays (all read-only)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    gray = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    upscaled = np.stack(
        [
            np.asarray(Image.fromarray(image).resize((DIGITS_SIZE, DIGITS_SIZE), Image.Resampling.BICUBIC))
            for image in gray
        ]
    )
    images = np.repeat(upscaled[..., None], 3, axis=-1)
    targets = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=_TEST_SIZE, random_state=_SPLIT_SEED, stratify=targets
    )
    train_idx = np.sort(train_idx)
    test_idx = np.sort(test_idx)
    for array in (images, targets, train_idx, test_idx):
        array.flags.writeable = False
    return images, targets, train_idx, test_idx


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted positions in ``sklearn.datasets.load_digits()`` of the images in split ``train`` or ``test``."""
    _, _, train_idx, test_idx = _all_digits()
    if split == "train":
        return train_idx
    if split == "test":
        return test_idx
    raise ValueError(f"digits dataset: split must be 'train' or 'test', got {split!r}")


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 32, 32, 3) uint8, targets (N,) int64)`` of split ``train`` or ``test`` (fresh copies)."""
    index = digits_split_indices(split)
    images, targets, _, _ = _all_digits()
    return images[index], targets[index]


def build_digits(split: str, *, transform: Callable[[Image.Image], Any] | None = None) -> ArrayImageDataset:
    """The digits split as a dataset of ``(transform(32x32 PIL RGB image), target)``."""
    images, targets = digits_arrays(split)
    return ArrayImageDataset(images, targets, DIGITS_CLASSES, transform=transform, source=f"digits [{split}]")
