"""Tests of the augmentation recipes and multi-view wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from selfsup.shared.data.transforms import (
    NORMALIZATION,
    MultiCropTransform,
    TwoCropsTransform,
    blur_kernel_size,
    linear_eval_transform,
)


def _image(width: int = 50, height: int = 40, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _ops(transform: v2.Compose) -> list[type]:
    return [type(op) for op in transform.transforms]


def _random_view(crop: int) -> v2.Compose:
    """A small random view of no method (the wrappers only need some random pipeline)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(crop),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.ToPureTensor(),
        ]
    )


def test_normalization_constants() -> None:
    assert NORMALIZATION["half"] == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NORMALIZATION["swav"] == ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))


def test_blur_kernel_size() -> None:
    assert [blur_kernel_size(c) for c in (224, 96, 64, 32, 8)] == [23, 11, 7, 3, 3]
    with pytest.raises(ValueError, match="crop"):
        blur_kernel_size(0)


def test_linear_eval_transform_shapes_and_values() -> None:
    gray = Image.new("RGB", (96, 96), (128, 128, 128))
    test = linear_eval_transform(False, resize=84, crop=64)
    out = test(gray)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (128 / 255 - 0.5) / 0.5), atol=1e-6)
    assert _ops(test)[:2] == [v2.Resize, v2.CenterCrop]

    train = linear_eval_transform(True, resize=84, crop=64)
    assert _ops(train)[:3] == [v2.Resize, v2.RandomCrop, v2.RandomHorizontalFlip]
    assert train(_image(96, 96)).shape == (3, 64, 64)

    imagenet = linear_eval_transform(
        True, resize=256, crop=32, random_resized=True, mean=(0.4,) * 3, std=(0.2,) * 3
    )
    assert _ops(imagenet)[:2] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    assert imagenet(_image()).shape == (3, 32, 32)

    image = _image(70, 90)
    assert torch.equal(test(image), test(image))
    with pytest.raises(ValueError, match="--resize"):
        linear_eval_transform(True, resize=32, crop=64)


def test_two_crops_gives_two_different_views() -> None:
    torch.manual_seed(1)
    views = TwoCropsTransform(_random_view(16))(_image())
    assert isinstance(views, list) and len(views) == 2
    assert views[0].shape == views[1].shape == (3, 16, 16)
    assert not torch.equal(views[0], views[1])

    fixed = linear_eval_transform(False, resize=20, crop=16)
    asymmetric = TwoCropsTransform(_random_view(16), key_transform=fixed)
    query, key = asymmetric(_image())
    assert query.shape == key.shape == (3, 16, 16)
    assert torch.equal(key, fixed(_image()))
    with pytest.raises(TypeError, match="query_transform"):
        TwoCropsTransform("not callable")  # type: ignore[arg-type]


def test_multi_crop_order_and_count() -> None:
    large, small = _random_view(32), _random_view(12)
    multi = MultiCropTransform([(large, 2), (small, 3)])
    crops = multi(_image())
    assert multi.num_crops == 5 and len(crops) == 5
    assert [c.shape[-1] for c in crops] == [32, 32, 12, 12, 12]
    with pytest.raises(ValueError, match="nmb_crops"):
        MultiCropTransform([(large, 0)])
    with pytest.raises(ValueError, match="at least one"):
        MultiCropTransform([])
