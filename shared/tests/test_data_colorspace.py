"""CMC's colour views: values worked out by hand from the CIE / BT.601 formulas, NumPy vs torch, constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.shared.data.colorspace import (
    COLOR_NORMALIZATION,
    VIEWS,
    ColorSpaceToTensor,
    lab_to_rgb,
    normalize_view,
    rgb_to_lab,
    rgb_to_lab_tensor,
    rgb_to_view_tensor,
    rgb_to_ycbcr,
    rgb_to_ycbcr_tensor,
    view_key,
)


def _lab_by_hand(r: int, g: int, b: int) -> tuple[float, float, float]:
    """scikit-image's ``rgb2lab`` of one uint8 pixel, scalar by scalar (sRGB, D65, 2° observer)."""

    def linear(c: int) -> float:
        u = c / 255.0
        return ((u + 0.055) / 1.055) ** 2.4 if u > 0.04045 else u / 12.92

    lr, lg, lb = linear(r), linear(g), linear(b)
    x = (0.412453 * lr + 0.357580 * lg + 0.180423 * lb) / 0.95047
    y = (0.212671 * lr + 0.715160 * lg + 0.072169 * lb) / 1.0
    z = (0.019334 * lr + 0.119193 * lg + 0.950227 * lb) / 1.08883

    def f(t: float) -> float:
        return t ** (1.0 / 3.0) if t > 0.008856 else 7.787 * t + 16.0 / 116.0

    return 116.0 * f(y) - 16.0, 500.0 * (f(x) - f(y)), 200.0 * (f(y) - f(z))


def _ycbcr_by_hand(r: int, g: int, b: int) -> tuple[float, float, float]:
    """BT.601 studio swing (scikit-image's ``rgb2ycbcr``) of one uint8 pixel."""
    u = (r / 255.0, g / 255.0, b / 255.0)
    rows = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
    return tuple(sum(m * c for m, c in zip(row, u)) + off for row, off in zip(rows, (16.0, 128.0, 128.0)))


def _pixel(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.array([[rgb]], dtype=np.uint8)


def _tensor_pixel(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1)


PIXELS = [
    (255, 255, 255),
    (0, 0, 0),
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (10, 10, 10),
    (128, 64, 200),
    (3, 250, 9),
]


@pytest.mark.parametrize("rgb", PIXELS)
def test_lab_and_ycbcr_match_the_formulas_worked_by_hand(rgb):
    lab, ycbcr = _lab_by_hand(*rgb), _ycbcr_by_hand(*rgb)
    assert rgb_to_lab(_pixel(rgb))[0, 0].tolist() == pytest.approx(lab, abs=1e-9)
    assert rgb_to_ycbcr(_pixel(rgb))[0, 0].tolist() == pytest.approx(ycbcr, abs=1e-9)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        out = rgb_to_lab_tensor(_tensor_pixel(rgb), dtype=dtype)
        assert out.dtype == dtype
        assert out[:, 0, 0].tolist() == pytest.approx(lab, abs=tol)
        assert rgb_to_ycbcr_tensor(_tensor_pixel(rgb), dtype=dtype)[:, 0, 0].tolist() == pytest.approx(
            ycbcr, abs=tol
        )


def test_reference_colours():
    # white: L 100, a and b ~0 (the D65 white point is rounded in the matrix, |a|, |b| < 0.005)
    for lab in (
        rgb_to_lab(_pixel((255, 255, 255)))[0, 0],
        rgb_to_lab_tensor(_tensor_pixel((255, 255, 255)))[:, 0, 0],
    ):
        assert [float(v) for v in lab] == pytest.approx([100.0, 0.0, 0.0], abs=5e-3)
    for lab in (rgb_to_lab(_pixel((0, 0, 0)))[0, 0], rgb_to_lab_tensor(_tensor_pixel((0, 0, 0)))[:, 0, 0]):
        assert [float(v) for v in lab] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    # sRGB red (published CIE values; scikit-image's 6-digit matrix moves them by < 2e-3)
    red = rgb_to_lab_tensor(_tensor_pixel((255, 0, 0)))[:, 0, 0].tolist()
    assert red == pytest.approx([53.2408, 80.0925, 67.2032], abs=2e-3)
    assert rgb_to_lab(_pixel((255, 0, 0)))[0, 0].tolist() == pytest.approx(
        [53.2408, 80.0925, 67.2032], abs=2e-3
    )
    white = rgb_to_ycbcr_tensor(_tensor_pixel((255, 255, 255)), dtype=torch.float64)[:, 0, 0].tolist()
    black = rgb_to_ycbcr_tensor(_tensor_pixel((0, 0, 0)), dtype=torch.float64)[:, 0, 0].tolist()
    assert white == pytest.approx([235.0, 128.0, 128.0], abs=1e-9)
    assert black == pytest.approx([16.0, 128.0, 128.0], abs=1e-12)
    assert rgb_to_ycbcr(_pixel((255, 255, 255)))[0, 0].tolist() == pytest.approx(
        [235.0, 128.0, 128.0], abs=1e-9
    )


def test_lab_to_rgb_inverts_rgb_to_lab():
    rgb = np.random.default_rng(3).random((500, 3))
    rgb[:4] = [[0, 0, 0], [1, 1, 1], [0.001, 0.002, 0.0], [1, 0, 0]]  # black, white, the linear segments, red
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)) - rgb).max() < 1e-12
    assert lab_to_rgb(np.array([53.2408, 80.0925, 67.2032])) == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)
    outside = lab_to_rgb(np.array([50.0, 0.0, -120.0]))  # a blue no sRGB colour reaches
    assert outside.min() < 0 or outside.max() > 1
    with pytest.raises(ValueError, match="Lab"):
        lab_to_rgb(np.zeros((2, 4)))


def test_numpy_and_torch_agree_on_random_images():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (2, 17, 19, 3), dtype=np.uint8)
    nchw = torch.from_numpy(hwc).permute(0, 3, 1, 2)
    for numpy_fn, torch_fn in ((rgb_to_lab, rgb_to_lab_tensor), (rgb_to_ycbcr, rgb_to_ycbcr_tensor)):
        reference = torch.from_numpy(numpy_fn(hwc)).permute(0, 3, 1, 2)
        out32 = torch_fn(nchw)
        assert out32.dtype == torch.float32 and out32.shape == (2, 3, 17, 19)
        assert (out32.double() - reference).abs().max() < 1e-4
        assert (torch_fn(nchw, dtype=torch.float64) - reference).abs().max() < 1e-10
        # [0, 1] floats mean the same colours as uint8 / 255; float64 input keeps float64
        unit = nchw.double() / 255.0
        assert torch_fn(unit).dtype == torch.float64
        assert (torch_fn(unit) - reference).abs().max() < 1e-10
        assert torch_fn(unit.half()).dtype == torch.float32
        assert (torch_fn(nchw[0]) - out32[0]).abs().max() < 1e-4  # unbatched (vector kernels may round apart)


def test_normalisation_constants_are_cmcs():
    mean, std = COLOR_NORMALIZATION["lab"]
    # the original computes half-ranges; they round to the literals in float32
    original_mean = [(0 + 100) / 2, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2]
    original_std = [(100 - 0) / 2, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2]
    assert list(mean) == pytest.approx(original_mean, abs=1e-12)
    assert list(std) == pytest.approx(original_std, abs=1e-12)
    assert np.array_equal(np.float32(mean), np.float32(original_mean))
    assert np.array_equal(np.float32(std), np.float32(original_std))
    assert COLOR_NORMALIZATION["ycbcr"] == ((116.151, 121.080, 132.342), (109.500, 111.855, 111.964))
    assert VIEWS == {"Lab": "lab", "YCbCr": "ycbcr"}
    assert view_key("Lab") == view_key("lab") == "lab" and view_key("YCbCr") == view_key("ycbcr") == "ycbcr"
    with pytest.raises(ValueError, match="Lab, YCbCr"):
        view_key("LAB")
    x = torch.full((3, 2, 2), 100.0)
    assert normalize_view(x, "Lab")[:, 0, 0].tolist() == pytest.approx(
        [(100 - 50) / 50, (100 - 6.025) / 92.208, (100 + 6.6895) / 101.1675]
    )


@pytest.mark.parametrize("view", ["Lab", "YCbCr"])
def test_transform_from_pil_and_tensors(view):
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    image = Image.fromarray(hwc)
    transform = ColorSpaceToTensor(view)
    out = transform(image)
    assert out.shape == (3, 6, 5) and out.dtype == torch.float32
    assert torch.equal(out, ColorSpaceToTensor(view.lower())(image))
    key = view_key(view)
    converted = rgb_to_lab(hwc) if key == "lab" else rgb_to_ycbcr(hwc)
    mean, std = COLOR_NORMALIZATION[key]
    expected64 = (converted - np.array(mean)) / np.array(std)  # ToTensor keeps float64, Normalize in float64
    out64 = ColorSpaceToTensor(view, dtype=torch.float64)(image)
    assert out64.dtype == torch.float64
    assert torch.equal(out64, torch.from_numpy(expected64.transpose(2, 0, 1).copy()))
    assert (out.double() - out64).abs().max() < 1e-6
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    from_uint8 = transform(chw)
    assert from_uint8.shape == (3, 6, 5) and from_uint8.dtype == torch.float32
    assert (from_uint8.double() - out64).abs().max() < 1e-5
    assert (transform(chw.float() / 255) - from_uint8).abs().max() < 1e-6
    assert torch.equal(transform(hwc), out)  # an H x W x 3 array takes the NumPy path
    assert torch.equal(rgb_to_view_tensor(chw.unsqueeze(0), view)[0], from_uint8)
    assert repr(transform) == f"ColorSpaceToTensor(space={key!r})"


def test_grey_pil_image_and_errors():
    grey = Image.fromarray(np.full((4, 4), 255, dtype=np.uint8), mode="L")
    out = ColorSpaceToTensor("Lab")(grey)
    assert out[:, 0, 0].tolist() == pytest.approx([1.0, -6.025 / 92.208, 6.6895 / 101.1675], abs=1e-4)
    with pytest.raises(ValueError, match="--view"):
        ColorSpaceToTensor("hsv")
    with pytest.raises(ValueError, match="dtype"):
        ColorSpaceToTensor("Lab", dtype=torch.float16)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        rgb_to_lab_tensor(torch.zeros(4, 2, 2))
    with pytest.raises(TypeError, match="uint8 or floating"):
        rgb_to_ycbcr_tensor(torch.zeros(3, 2, 2, dtype=torch.int32))
    with pytest.raises(TypeError):
        ColorSpaceToTensor("Lab")([1, 2, 3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_conversion_on_the_device_matches_the_cpu():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    for fn in (rgb_to_lab_tensor, rgb_to_ycbcr_tensor):
        assert (fn(x.cuda()).cpu() - fn(x)).abs().max() < 1e-4
    assert math.isclose(
        float(rgb_to_view_tensor(x.cuda(), "Lab").mean()),
        float(rgb_to_view_tensor(x, "Lab").mean()),
        abs_tol=1e-5,
    )
