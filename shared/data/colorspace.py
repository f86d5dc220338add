"""CMC's colour views: RGB -> CIE Lab or YCbCr, normalised with CMC's constants (NumPy and torch).

CMC (Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020, arXiv:1906.05849) feeds L (or Y) to one
encoder and ab (or CbCr) to the other. Its ``dataset.py`` (``RGB2Lab`` / ``RGB2YCbCr``, ``--view Lab|YCbCr``)
converts the uint8 RGB crop with scikit-image (``rgb2lab``, ``rgb2ycbcr``: float64, in the colour space's own
units), ``ToTensor`` keeps those values (no /255) and ``Normalize`` uses half-range constants (spec ``cmc.md`` §1).

The formulas are the published ones scikit-image implements, with ``c`` the RGB value scaled to [0, 1]:

* sRGB companding: ``c_lin = ((c + 0.055) / 1.055) ** 2.4`` if ``c > 0.04045`` else ``c / 12.92``;
* ``[X, Y, Z] = M · c_lin`` with scikit-image's sRGB->XYZ matrix ``M`` (:data:`RGB_TO_XYZ`), divided by the D65
  white point of the 2° observer ``(0.95047, 1, 1.08883)``;
* ``f(t) = t ** (1/3)`` if ``t > 0.008856`` else ``7.787 t + 16/116``;
  ``L = 116 f(Y) - 16``, ``a = 500 (f(X) - f(Y))``, ``b = 200 (f(Y) - f(Z))``;
* ITU-R BT.601 studio swing: ``[Y, Cb, Cr] = N · c + [16, 128, 128]`` (:data:`RGB_TO_YCBCR`), so white is
  (235, 128, 128) and black (16, 128, 128).

Two implementations: :func:`rgb_to_lab` / :func:`rgb_to_ycbcr` on ``... x 3`` NumPy arrays in float64 (the
evaluation harness and the PIL path of :class:`ColorSpaceToTensor`), and :func:`rgb_to_lab_tensor` /
:func:`rgb_to_ycbcr_tensor` on ``[..., 3, H, W]`` tensors, batched and on any device, so the conversion can run
in the loader or on the accelerator. View names: the original flag values ``'Lab'`` and ``'YCbCr'``; the
lowercase ``'lab'`` / ``'ycbcr'`` of the evaluation harness (``--color_space``) are accepted everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "COLOR_NORMALIZATION",
    "RGB_TO_XYZ",
    "RGB_TO_YCBCR",
    "VIEWS",
    "ColorSpaceToTensor",
    "lab_to_rgb",
    "normalize_view",
    "rgb_to_lab",
    "rgb_to_lab_tensor",
    "rgb_to_view_tensor",
    "rgb_to_ycbcr",
    "rgb_to_ycbcr_tensor",
    "view_key",
]

Triple = tuple[float, float, float]

#: ``--view`` values of the original, mapped to the keys of :data:`COLOR_NORMALIZATION`.
VIEWS: dict[str, str] = {"Lab": "lab", "YCbCr": "ycbcr"}

#: CMC's mean/std per colour space (``cmc.md`` §1). Lab: half-ranges, the original computes them as
#: ``[(0+100)/2, (-86.183+98.233)/2, (-107.857+94.478)/2]`` and ``[(100-0)/2, (86.183+98.233)/2,
#: (107.857+94.478)/2]``, which round to these literals in float32 (and differ by < 2e-15 in float64).
#: YCbCr: the original's dataset statistics.
COLOR_NORMALIZATION: dict[str, tuple[Triple, Triple]] = {
    "lab": ((50.0, 6.025, -6.6895), (50.0, 92.208, 101.1675)),
    "ycbcr": ((116.151, 121.080, 132.342), (109.500, 111.855, 111.964)),
}

#: scikit-image's ``xyz_from_rgb`` (sRGB primaries, D65).
RGB_TO_XYZ: tuple[Triple, Triple, Triple] = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
#: scikit-image's ``ycbcr_from_rgb`` (BT.601, studio swing, RGB in [0, 1]); offsets in :data:`_YCBCR_OFFSET`.
RGB_TO_YCBCR: tuple[Triple, Triple, Triple] = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_D65_WHITE: Triple = (0.95047, 1.0, 1.08883)
_YCBCR_OFFSET: Triple = (16.0, 128.0, 128.0)
_LINEAR_KNEE = 0.04045  # sRGB companding threshold
_LAB_EPSILON = 0.008856  # CIE f(t) threshold (scikit-image's rounded value)
_LAB_KAPPA = 7.787  # slope of the linear segment of f(t)


def view_key(view: str) -> str:
    """``'Lab'``/``'lab'`` -> ``'lab'``, ``'YCbCr'``/``'ycbcr'`` -> ``'ycbcr'``; anything else is an error."""
    if view in VIEWS:
        return VIEWS[view]
    if view in COLOR_NORMALIZATION:
        return view
    known = [*VIEWS, *COLOR_NORMALIZATION]
    raise ValueError(f"--view / --color_space {view!r}: expected one of {', '.join(known)}")


# ---------------------------------------------------------------------------------------------- NumPy (float64)


def _as_unit_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an ... x 3 RGB array (e.g. H x W x 3), got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float64) / 255.0
    return rgb.astype(np.float64)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``... x 3`` RGB (uint8 in [0, 255], or floats in [0, 1]) -> CIE Lab (L in [0, 100]) as float64."""
    unit = _as_unit_rgb(rgb)
    linear = np.where(unit > _LINEAR_KNEE, ((unit + 0.055) / 1.055) ** 2.4, unit / 12.92)
    xyz = linear @ np.asarray(RGB_TO_XYZ).T / np.asarray(_D65_WHITE)
    f = np.where(xyz > _LAB_EPSILON, np.cbrt(xyz), _LAB_KAPPA * xyz + 16.0 / 116.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``... x 3`` CIE Lab -> RGB floats (the inverse of :func:`rgb_to_lab`, float64, not clipped).

    Colours outside the sRGB gamut come out with components outside [0, 1]; callers clip or reject them.
    """
    lab = np.asarray(lab, dtype=np.float64)
    if lab.ndim < 1 or lab.shape[-1] != 3:
        raise ValueError(f"expected an ... x 3 Lab array, got shape {lab.shape}")
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    knee = _LAB_KAPPA * _LAB_EPSILON + 16.0 / 116.0  # f at the threshold, where the two pieces meet
    xyz = np.where(f > knee, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA) * np.asarray(_D65_WHITE)
    linear = xyz @ np.linalg.inv(np.asarray(RGB_TO_XYZ)).T
    knee_lin = _LINEAR_KNEE / 12.92
    positive = np.maximum(linear, knee_lin)
    return np.where(linear > knee_lin, 1.055 * positive ** (1.0 / 2.4) - 0.055, linear * 12.92)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``... x 3`` RGB (uint8, or floats in [0, 1]) -> studio-swing YCbCr (Y in [16, 235]) as float64."""
    return _as_unit_rgb(rgb) @ np.asarray(RGB_TO_YCBCR).T + np.asarray(_YCBCR_OFFSET)


# ---------------------------------------------------------------------------------------------- torch


def _unit_rgb_tensor(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor [..., 3, H, W], got {type(x).__name__}")
    x = x.as_subclass(torch.Tensor)  # tv_tensors.Image -> plain tensor
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected an RGB tensor [..., 3, H, W], got shape {tuple(x.shape)}")
    if dtype is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the conversion runs in float32 or float64, got dtype={dtype}")
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if x.is_floating_point():
        return x.to(dtype)
    raise TypeError(f"expected a uint8 or floating-point RGB tensor, got {x.dtype}")


def _channel_matrix(x: torch.Tensor, matrix: tuple[Triple, Triple, Triple]) -> list[torch.Tensor]:
    """Rows of ``matrix · x`` over the channel dim -3, as explicit sums (same order on every device)."""
    r, g, b = x.unbind(-3)
    return [m0 * r + m1 * g + m2 * b for m0, m1, m2 in matrix]


def rgb_to_lab_tensor(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` -> CIE Lab ``[..., 3, H, W]`` (channel 0 = L in [0, 100], 1-2 = a, b).

    ``x`` is either uint8 (values 0-255, divided by 255: the original's PIL/uint8 input) or floating point with
    RGB in [0, 1] (values outside are converted by the same formulas, as scikit-image does). The arithmetic runs
    in ``dtype``: by default float64 for float64 input and float32 otherwise (uint8, float16, bfloat16,
    float32); the result has that dtype. Float32 agrees with scikit-image's float64 ``rgb2lab`` to ~1e-4.
    """
    unit = _unit_rgb_tensor(x, dtype)
    linear = torch.where(
        unit > _LINEAR_KNEE, ((unit.clamp(min=_LINEAR_KNEE) + 0.055) / 1.055) ** 2.4, unit / 12.92
    )
    f = []
    for t, white in zip(_channel_matrix(linear, RGB_TO_XYZ), _D65_WHITE):
        t = t / white
        f.append(
            torch.where(
                t > _LAB_EPSILON, t.clamp(min=_LAB_EPSILON) ** (1.0 / 3.0), _LAB_KAPPA * t + 16.0 / 116.0
            )
        )
    fx, fy, fz = f
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def rgb_to_ycbcr_tensor(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` -> studio-swing YCbCr ``[..., 3, H, W]`` (channel 0 = Y, 1-2 = Cb, Cr).

    Input conventions and ``dtype`` as in :func:`rgb_to_lab_tensor` (uint8 = 0-255, floats = [0, 1]).
    """
    unit = _unit_rgb_tensor(x, dtype)
    rows = _channel_matrix(unit, RGB_TO_YCBCR)
    return torch.stack([row + offset for row, offset in zip(rows, _YCBCR_OFFSET)], dim=-3)


def normalize_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """``(x - mean) / std`` with CMC's constants of ``view`` over the channel dim -3 (``Normalize``)."""
    mean, std = COLOR_NORMALIZATION[view_key(view)]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


def rgb_to_view_tensor(x: torch.Tensor, view: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` (uint8 or [0, 1] floats) -> CMC's normalised view of ``view`` (batched)."""
    key = view_key(view)
    converted = rgb_to_lab_tensor(x, dtype=dtype) if key == "lab" else rgb_to_ycbcr_tensor(x, dtype=dtype)
    return normalize_view(converted, key)


class ColorSpaceToTensor:
    """Last step of CMC's pipelines: image -> normalised ``3 x H x W`` tensor of view ``view``.

    Channel 0 is L (or Y) and channels 1-2 are ab (or CbCr), the split CMC's two encoders expect; ``view`` is
    ``'Lab'`` or ``'YCbCr'`` (``--view``) or their lowercase names. Inputs:

    * PIL image, or ``H x W x 3`` NumPy array (uint8, or floats in [0, 1]): converted in float64 with NumPy, as
      the original's scikit-image call, then cast to ``dtype`` and normalised in ``dtype``;
    * ``3 x H x W`` tensor (uint8 = 0-255, or floats in [0, 1]): converted with :func:`rgb_to_view_tensor`
      in float32 (float64 when ``dtype`` is float64).

    ``dtype=torch.float64`` reproduces the original's float64 items (``ToTensor`` keeps scikit-image's float64,
    the training loop casts the batch with ``.float()``); the default float32 halves the loader's traffic.
    """

    def __init__(self, view: str, *, dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"ColorSpaceToTensor: dtype must be torch.float32 or torch.float64, got {dtype}")
        self.space = view_key(view)
        self.dtype = dtype
        mean, std = COLOR_NORMALIZATION[self.space]
        self.mean = torch.tensor(mean, dtype=dtype).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=dtype).view(3, 1, 1)

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            if image.ndim != 3:
                raise ValueError(f"ColorSpaceToTensor: expected a 3 x H x W tensor, got {tuple(image.shape)}")
            return rgb_to_view_tensor(image, self.space, dtype=self.dtype)
        if isinstance(image, Image.Image):
            rgb = np.asarray(image.convert("RGB"))
        elif isinstance(image, np.ndarray):
            if image.ndim != 3:
                raise ValueError(f"ColorSpaceToTensor: expected an H x W x 3 array, got {image.shape}")
            rgb = image
        else:
            raise TypeError(
                f"ColorSpaceToTensor: expected a PIL image, array or tensor, got {type(image).__name__}"
            )
        converted = rgb_to_lab(rgb) if self.space == "lab" else rgb_to_ycbcr(rgb)
        tensor = torch.from_numpy(np.ascontiguousarray(converted.transpose(2, 0, 1))).to(self.dtype)
        return (tensor - self.mean) / self.std

    def __repr__(self) -> str:
        suffix = "" if self.dtype == torch.float32 else f", dtype={self.dtype}"
        return f"{type(self).__name__}(space={self.space!r}{suffix})"
