"""SwAV's multi-crop views (moved from shared/data/transforms.py): the recipe's steps and parameters, the PIL
blur's draws, and the crop list of the flags."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2

from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.transforms import (
    PILRandomGaussianBlur,
    input_normalization,
    multicrop_transform,
    swav_crop_transform,
)


def _image(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_imagenet_view_steps_and_parameters() -> None:
    view = swav_crop_transform(24, 0.14, 1.0)
    crop, flip, jitter, gray, blur, *tensor = view.transforms
    assert isinstance(crop, v2.RandomResizedCrop) and crop.size == (24, 24) and crop.scale == (0.14, 1.0)
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert jitter.p == 0.8 and isinstance(jitter.transforms[0], v2.ColorJitter)
    assert jitter.transforms[0].brightness == pytest.approx((0.2, 1.8))
    assert jitter.transforms[0].hue == pytest.approx((-0.2, 0.2))
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == 0.2
    assert isinstance(blur, PILRandomGaussianBlur) and (blur.prob, blur.radius_min, blur.radius_max) == (
        0.5,
        0.1,
        2.0,
    )
    normalize = next(t for t in tensor if isinstance(t, v2.Normalize))
    assert normalize.std == [0.228, 0.224, 0.225]
    out = view(_image())
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_cifar_view_has_half_strength_no_blur_and_cifar_constants() -> None:
    view = swav_crop_transform(16, 0.2, 1.0, normalization="cifar_swav", color_strength=0.5, blur=False)
    assert not any(isinstance(t, PILRandomGaussianBlur) for t in view.transforms)
    assert view.transforms[2].transforms[0].brightness == pytest.approx((0.6, 1.4))
    with pytest.raises(ValueError, match="--min_scale_crops"):
        swav_crop_transform(16, 0.5, 0.2)
    with pytest.raises(ValueError, match="unknown normalization"):
        swav_crop_transform(16, 0.2, 1.0, normalization="nope")


def test_pil_blur_draws_numpy_then_random_as_the_original() -> None:
    image = _image()
    np.random.seed(0)
    random.seed(1)
    got = PILRandomGaussianBlur(p=1.0)(image)
    random.seed(1)
    expected = image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    assert PILRandomGaussianBlur(p=0.0)(image) is image
    with pytest.raises(ValueError, match="p must be"):
        PILRandomGaussianBlur(p=2.0)


def test_multicrop_transform_follows_the_flags() -> None:
    args = parse_args(["--nmb_crops", "2", "3", "--size_crops", "16", "8", "--min_scale_crops", "0.3", "0.1",
                       "--max_scale_crops", "1", "0.3", "--run_swav", "true"])  # fmt: skip
    crops = multicrop_transform(args)(_image())
    assert [c.shape[-1] for c in crops] == [16, 16, 8, 8, 8]
    assert (
        input_normalization(args) == "swav"
        and input_normalization(parse_args(["--data_path", "cifar10"])) == "cifar_swav"
    )
