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
    moco_eveningglow_transform,
    moco_official_v1_transform,
    moco_v2_transform,
)


def _image(width: int = 50, height: int = 40, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _ops(transform: v2.Compose) -> list[type]:
    return [type(op) for op in transform.transforms]


def test_normalization_constants() -> None:
    assert NORMALIZATION["half"] == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NORMALIZATION["swav"] == ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))


@pytest.mark.parametrize(
    "factory",
    [moco_eveningglow_transform, moco_official_v1_transform, moco_v2_transform],
    ids=lambda f: f.__name__,
)
def test_pretraining_recipes_output(factory) -> None:
    torch.manual_seed(0)
    out = factory(24)(_image())
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 24, 24)
    assert torch.isfinite(out).all()


def test_eveningglow_recipe_parameters() -> None:
    transform = moco_eveningglow_transform()
    expected = [v2.RandomResizedCrop, v2.ColorJitter, v2.RandomHorizontalFlip, v2.RandomGrayscale]
    assert _ops(transform)[:4] == expected
    crop, jitter, flip, gray = transform.transforms[:4]
    assert tuple(crop.size) == (64, 64) and crop.scale == (0.08, 1.0)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert v2.InterpolationMode(crop.interpolation) == v2.InterpolationMode.BILINEAR
    assert jitter.brightness == jitter.contrast == jitter.saturation == pytest.approx((0.9, 1.1))
    assert jitter.hue is None
    assert flip.p == 0.5 and gray.p == 0.1
    normalize = next(op for op in transform.transforms if isinstance(op, v2.Normalize))
    assert normalize.mean == [0.5] * 3 and normalize.std == [0.5] * 3


def test_official_v1_and_v2_parameters() -> None:
    v1 = moco_official_v1_transform()
    assert _ops(v1)[:4] == [v2.RandomResizedCrop, v2.RandomGrayscale, v2.ColorJitter, v2.RandomHorizontalFlip]
    assert v1.transforms[0].scale == (0.2, 1.0) and tuple(v1.transforms[0].size) == (224, 224)
    assert v1.transforms[1].p == 0.2
    assert v1.transforms[2].hue == pytest.approx((-0.4, 0.4))

    plus = moco_v2_transform()
    crop, jitter_apply, gray, blur_apply, flip = plus.transforms[:5]
    assert crop.scale == (0.2, 1.0)
    assert jitter_apply.p == 0.8 and isinstance(jitter_apply.transforms[0], v2.ColorJitter)
    assert jitter_apply.transforms[0].brightness == pytest.approx((0.6, 1.4))
    assert jitter_apply.transforms[0].hue == pytest.approx((-0.1, 0.1))
    assert gray.p == 0.2 and flip.p == 0.5
    blur = blur_apply.transforms[0]
    assert blur_apply.p == 0.5 and isinstance(blur, v2.GaussianBlur)
    assert blur.kernel_size == (23, 23) and list(blur.sigma) == [0.1, 2.0]
    normalize = next(op for op in plus.transforms if isinstance(op, v2.Normalize))
    assert normalize.std == [0.229, 0.224, 0.225]


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
    views = TwoCropsTransform(moco_eveningglow_transform(16))(_image())
    assert isinstance(views, list) and len(views) == 2
    assert views[0].shape == views[1].shape == (3, 16, 16)
    assert not torch.equal(views[0], views[1])

    fixed = linear_eval_transform(False, resize=20, crop=16)
    asymmetric = TwoCropsTransform(moco_eveningglow_transform(16), key_transform=fixed)
    query, key = asymmetric(_image())
    assert query.shape == key.shape == (3, 16, 16)
    assert torch.equal(key, fixed(_image()))
    with pytest.raises(TypeError, match="query_transform"):
        TwoCropsTransform("not callable")  # type: ignore[arg-type]


def test_multi_crop_order_and_count() -> None:
    large, small = moco_v2_transform(32), moco_v2_transform(12)
    multi = MultiCropTransform([(large, 2), (small, 3)])
    crops = multi(_image())
    assert multi.num_crops == 5 and len(crops) == 5
    assert [c.shape[-1] for c in crops] == [32, 32, 12, 12, 12]
    with pytest.raises(ValueError, match="nmb_crops"):
        MultiCropTransform([(large, 0)])
    with pytest.raises(ValueError, match="at least one"):
        MultiCropTransform([])
