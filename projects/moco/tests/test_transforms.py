"""MoCo's pre-training views (:mod:`selfsup.moco.transforms`): the original's, official v1 and v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from selfsup.moco.transforms import moco_eveningglow_transform, moco_official_v1_transform, moco_v2_transform


def _image(width: int = 50, height: int = 40, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _ops(transform: v2.Compose) -> list[type]:
    return [type(op) for op in transform.transforms]


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


def test_crop_and_min_scale_are_checked() -> None:
    assert moco_v2_transform(32, min_scale=0.5).transforms[0].scale == (0.5, 1.0)
    assert moco_eveningglow_transform(16, min_scale=0.3).transforms[0].scale == (0.3, 1.0)
    with pytest.raises(ValueError):
        moco_eveningglow_transform(0)
    with pytest.raises(ValueError):
        moco_v2_transform(32, min_scale=0.0)
