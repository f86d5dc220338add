"""CMC's colour views for evaluation: RGB -> CIE Lab or YCbCr, with CMC's normalisation constants.

CMC (Tian et al., "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849) feeds L (or Y) to one encoder
and ab (or CbCr) to the other. Its ``dataset.py`` converts uint8 RGB with scikit-image (``rgb2lab`` /
``rgb2ycbcr``, floats in the colour space's own units, no /255) and normalises with half-range constants
(specs ``cmc.md`` §1). The conversions below follow the same published formulas (sRGB companding, the
sRGB->XYZ matrix, D65 white point (0.95047, 1, 1.08883), CIE f(t) with the 0.008856 / 7.787 linear segment;
ITU-R BT.601 studio-swing YCbCr).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["COLOR_NORMALIZATION", "ColorSpaceToTensor", "rgb_to_lab", "rgb_to_ycbcr"]

Triple = tuple[float, float, float]

#: CMC's mean/std per colour space (``cmc.md`` §1): Lab half-ranges, YCbCr statistics.
COLOR_NORMALIZATION: dict[str, tuple[Triple, Triple]] = {
    "lab": ((50.0, 6.025, -6.6895), (50.0, 92.208, 101.1675)),
    "ycbcr": ((116.151, 121.080, 132.342), (109.500, 111.855, 111.964)),
}

_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def _as_unit_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float64) / 255.0
    return rgb.astype(np.float64)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB (uint8, or floats in [0, 1]) -> CIE Lab (L in [0, 100]) as float64."""
    unit = _as_unit_rgb(rgb)
    linear = np.where(unit > 0.04045, ((unit + 0.055) / 1.055) ** 2.4, unit / 12.92)
    xyz = linear @ _RGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB (uint8, or floats in [0, 1]) -> studio-swing YCbCr (Y in [16, 235]) as float64."""
    return _as_unit_rgb(rgb) @ _RGB_TO_YCBCR.T + _YCBCR_OFFSET


class ColorSpaceToTensor:
    """PIL RGB image -> ``3 x H x W`` float32 tensor in colour space ``space``, normalised with CMC's
    constants.

    Channel 0 is L (or Y) and channels 1-2 are ab (or CbCr), the split CMC's two encoders expect.
    """

    def __init__(self, space: str) -> None:
        if space not in COLOR_NORMALIZATION:
            raise ValueError(f"--color_space {space!r}: expected one of {', '.join(COLOR_NORMALIZATION)}")
        self.space = space
        mean, std = COLOR_NORMALIZATION[space]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = np.asarray(image.convert("RGB"))
        converted = rgb_to_lab(rgb) if self.space == "lab" else rgb_to_ycbcr(rgb)
        tensor = torch.from_numpy(np.ascontiguousarray(converted.transpose(2, 0, 1))).float()
        return (tensor - self.mean) / self.std

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space!r})"
