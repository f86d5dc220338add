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

``digits_color`` (:func:`build_digits_color`) is the same images, split and targets, colourised so that CMC's
L and ab views both carry the digit's shape and neither carries its class (on the gray ``digits`` the ab
channels are zero). Each of the 1797 images gets a foreground and a background colour, drawn in CIE Lab from a
generator of fixed seed (:data:`DIGITS_COLOR_SEED`) in the order of ``load_digits()``, without looking at the
targets:

1. candidate pairs: L of each colour uniform in [15, 95], a and b each uniform in [-60, 60], all independent;
2. a pair is kept when both colours lie in the sRGB gamut, their lightnesses differ by at least 30 and their
   ab points by at least 30 (so the strokes show in either view); the first 1797 kept pairs are the palette
   (:func:`digits_color_palette`, RGB in [0, 1]);
3. pixel = background + (foreground - background) * gray / 255 per RGB channel, rounded to uint8, with gray
   the upscaled ``digits`` image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from selfsup.shared.data.arrays import ArrayImageDataset

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_COLOR_SEED",
    "DIGITS_SIZE",
    "build_digits",
    "build_digits_color",
    "digits_arrays",
    "digits_color_arrays",
    "digits_color_palette",
    "digits_split_indices",
]

DIGITS_SIZE = 32
DIGITS_CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
_TEST_SIZE = 0.25
_SPLIT_SEED = 0
#: Seed of the generator that draws the colours of ``digits_color``.
DIGITS_COLOR_SEED = 2020
_LIGHTNESS_RANGE = (15.0, 95.0)
_AB_RANGE = (-60.0, 60.0)
_MIN_LIGHTNESS_GAP = 30.0
_MIN_AB_GAP = 30.0
_CANDIDATES = 100_000


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


@functools.lru_cache(maxsize=1)
def digits_color_palette() -> tuple[np.ndarray, np.ndarray]:
    """``(foreground, background)``: ``(1797, 3)`` float64 RGB in [0, 1] per ``load_digits()`` image (read-only).

    Drawn from ``numpy.random.default_rng(DIGITS_COLOR_SEED)`` as the module docstring describes; the targets
    play no part, so the colours are independent of the class.
    """
    from selfsup.shared.data.colorspace import lab_to_rgb

    rng = np.random.default_rng(DIGITS_COLOR_SEED)
    lightness = rng.uniform(*_LIGHTNESS_RANGE, size=(_CANDIDATES, 2, 1))
    ab = rng.uniform(*_AB_RANGE, size=(_CANDIDATES, 2, 2))
    lab = np.concatenate([lightness, ab], axis=-1)  # (candidate, fg/bg, Lab)
    rgb = lab_to_rgb(lab)
    in_gamut = np.all((rgb >= 0.0) & (rgb <= 1.0), axis=(1, 2))
    lightness_gap = np.abs(lab[:, 0, 0] - lab[:, 1, 0]) >= _MIN_LIGHTNESS_GAP
    ab_gap = np.linalg.norm(lab[:, 0, 1:] - lab[:, 1, 1:], axis=-1) >= _MIN_AB_GAP
    kept = np.flatnonzero(in_gamut & lightness_gap & ab_gap)
    count = len(_all_digits()[1])
    if len(kept) < count:  # cannot happen with the fixed seed; a guard for edited constants
        raise RuntimeError(
            f"digits_color: only {len(kept)} of {_CANDIDATES} colour pairs qualify, need {count}"
        )
    chosen = np.clip(rgb[kept[:count]], 0.0, 1.0)
    foreground, background = chosen[:, 0].copy(), chosen[:, 1].copy()
    for array in (foreground, background):
        array.flags.writeable = False
    return foreground, background


@functools.lru_cache(maxsize=1)
def _all_digits_color() -> np.ndarray:
    """All 1797 colourised images, ``(1797, 32, 32, 3)`` uint8 (read-only)."""
    images = _all_digits()[0]
    foreground, background = digits_color_palette()
    weight = images[..., :1].astype(np.float64) / 255.0  # the gray intensity, (N, 32, 32, 1)
    fg, bg = foreground[:, None, None, :], background[:, None, None, :]
    colour = np.rint((bg + (fg - bg) * weight) * 255.0).clip(0, 255).astype(np.uint8)
    colour.flags.writeable = False
    return colour


def digits_color_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 32, 32, 3) uint8, targets (N,) int64)`` of ``digits_color`` (fresh copies)."""
    index = digits_split_indices(split)
    return _all_digits_color()[index], _all_digits()[1][index]


def build_digits_color(
    split: str, *, transform: Callable[[Image.Image], Any] | None = None
) -> ArrayImageDataset:
    """The colourised digits split as a dataset of ``(transform(32x32 PIL RGB image), target)``."""
    images, targets = digits_color_arrays(split)
    return ArrayImageDataset(
        images, targets, DIGITS_CLASSES, transform=transform, source=f"digits_color [{split}]"
    )
