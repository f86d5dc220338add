"""Image mixtures: the batch-level mixup/CutMix pieces of Un-Mix and the dataset-level Image Mixture of CMC.

Papers: Shen et al., "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual Representation Learning"
(AAAI 2022, arXiv:2003.05438); mixup (Zhang et al., arXiv:1710.09412); CutMix (Yun et al., arXiv:1905.04899);
Cutout (DeVries & Taylor, arXiv:1708.04552); Random Erasing (Zhong et al., arXiv:1708.04896).

**Batch level** (Un-Mix, spec ``swav_unmix.md`` §4): pure functions, randomness passed in.

* global (mixup): ``m = λ·x + (1−λ)·x̄`` with ``x̄ = flip_batch(x)`` (sample n paired with sample B−1−n);
* region (CutMix): ``m = x`` with the box ``B = rand_bbox(H, W, λ)`` copied from ``x̄``, then the loss weight is
  the kept area ``λ' = 1 − |B| / (H·W)`` (:func:`kept_area`).

Boxes follow the original ``rand_bbox(size, lam)`` exactly: ``x`` is dim −2 (of extent ``size[2]``, which the
original calls ``W``) and ``y`` dim −1, so ``[..., x1:x2, y1:y2]`` is Un-Mix's ``[:, :, x1:x2, y1:y2]``; the cut
ratio is ``√(1−λ)``, ``cut_x = int(H·√(1−λ))``, ``cut_y = int(W·√(1−λ))``, the centre ``cx = randint(H)`` then
``cy = randint(W)``, corners ``cx ∓ cut_x // 2`` clipped to ``[0, H]`` (likewise for y).

**Dataset level** (Image Mixture ``--IM``, ``szq0214/CMC_with_Image_Mixture`` ``IM/mixture.py``, spec ``cmc.md``
§5): wrappers of an augmented dataset, applied to each item's normalised tensor (for CMC the 3-channel L+ab
tensor jointly). The item keeps its own target and everything else the base returns; no λ is returned and no
loss is reweighted. A memory-bank trainer appends the instance index outside the mixture
(``InstanceIndexed(build_image_mixture(seeded, ...))`` of :mod:`.instances`), so it stays the anchor's. ``--IM_type`` (:func:`build_image_mixture`):

* ``global`` (:class:`GlobalMixture`): ``g_num`` times, with probability ``g_prob``: partner ``j =
  random.choice(range(N))`` (may be the item itself), freshly augmented ``x_j``, ``λ ~ Beta(g_alpha, g_alpha)``,
  ``x ← λ·x + (1−λ)·x_j``;
* ``region`` (:class:`RegionMixture`): ``r_num`` times, with probability ``r_prob`` (never when ``r_beta ≤ 0``):
  ``λ ~ Beta(r_beta, r_beta)``, partner ``j``, box ``rand_bbox(H, W, λ)``; if this is mix 0, ``x ← r_pixel_decay·x``
  first; then ``x[box] ← x_j[box]``;
* ``IM``: region over global, the region partner drawn through the global wrapper;
* ``Cutout`` (:class:`Cutout`), ``RandomErasing`` (:class:`RandomErasing`): fills on the normalised tensor.

Draws come from NumPy's global RNG and Python's ``random`` in the original's order, but each item seeds both
from its own seed and restores them afterwards: item ``i`` of epoch ``e`` has the seed
``s = mix_seed(seed, e, i)`` of :class:`~selfsup.shared.data.sampling.SeededTransformDataset` (so an item where
nothing fires equals the base item), the wrapper draws from ``mix_seed(s, TAG)`` and fetches its ``k``-th partner
under ``mix_seed(s, TAG, k)``, a fresh augmentation that does not depend on where ``j`` is its own anchor. Items
are hence the same for every worker count and after a resume (spec ``cmc.md`` §11.12). Unlike the original, the
partner's augmentation does not consume the anchor's random stream.
"""

from __future__ import annotations

import math
import numbers
import operator
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.shared.data.sampling import mix_seed

__all__ = [
    "IMAGE_MIXTURES",
    "IM_DEFAULTS",
    "Box",
    "Cutout",
    "GlobalMixture",
    "RandomErasing",
    "RegionMixture",
    "build_image_mixture",
    "flip_batch",
    "global_mix",
    "kept_area",
    "rand_bbox",
    "region_mix",
]

# ---------------------------------------------------------------------------------------------- batch level


class Box(NamedTuple):
    """A box ``[..., x1:x2, y1:y2]``: ``x`` indexes dim −2 and ``y`` dim −1 (the original's order)."""

    x1: int
    y1: int
    x2: int
    y2: int


def _randint(rng: Any, high: int) -> int:
    """``randint(high)`` of ``np.random`` / ``RandomState``, or ``integers(high)`` of a ``Generator``."""
    integers = getattr(rng, "integers", None)
    return int(integers(high)) if callable(integers) else int(rng.randint(high))


def rand_bbox(height: int, width: int, lam: float, rng: Any) -> Box:
    """CutMix's box for a tensor ``[..., height, width]``: kept fraction ≈ ``lam``, centre uniform, clipped.

    ``height`` is ``x.shape[-2]`` (the original's ``W = size[2]``), ``width`` is ``x.shape[-1]``; ``rng`` is
    ``np.random``, a ``RandomState`` or a ``Generator``; it draws ``cx`` over ``height`` and then ``cy`` over
    ``width``. ``cut = int(extent·√(1−lam))`` and the corners ``c ∓ cut // 2`` are clipped to ``[0, extent]``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rand_bbox: lam must be in [0, 1], got {lam!r}")
    if height < 1 or width < 1:
        raise ValueError(f"rand_bbox: height and width must be >= 1, got {height} x {width}")
    cut_rat = math.sqrt(1.0 - lam)
    cut_x, cut_y = int(height * cut_rat), int(width * cut_rat)
    cx = _randint(rng, height)
    cy = _randint(rng, width)
    x1, x2 = (min(max(v, 0), height) for v in (cx - cut_x // 2, cx + cut_x // 2))
    y1, y2 = (min(max(v, 0), width) for v in (cy - cut_y // 2, cy + cut_y // 2))
    return Box(x1, y1, x2, y2)


def kept_area(box: Sequence[int], height: int, width: int) -> float:
    """Area-corrected λ of a region mixture: ``1 − (x2−x1)(y2−y1) / (height·width)``."""
    x1, y1, x2, y2 = box
    return 1.0 - (x2 - x1) * (y2 - y1) / (height * width)


def flip_batch(x: torch.Tensor) -> torch.Tensor:
    """Reverse the batch order (dim 0): Un-Mix pairs sample ``n`` with sample ``B−1−n``."""
    return x.flip(0)


def _same_shape(x: torch.Tensor, partner: torch.Tensor, name: str) -> None:
    if x.shape != partner.shape:
        raise ValueError(
            f"{name}: x and partner must have the same shape, got {tuple(x.shape)} and {tuple(partner.shape)}"
        )


def global_mix(x: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """Mixup: ``lam·x + (1−lam)·partner`` (a new tensor)."""
    _same_shape(x, partner, "global_mix")
    lam = float(lam)
    return x * lam + partner * (1.0 - lam)


def region_mix(x: torch.Tensor, partner: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """CutMix: a copy of ``x`` with ``[..., x1:x2, y1:y2]`` taken from ``partner``."""
    _same_shape(x, partner, "region_mix")
    x1, y1, x2, y2 = box
    out = x.clone()
    out[..., x1:x2, y1:y2] = partner[..., x1:x2, y1:y2]
    return out


# ---------------------------------------------------------------------------------------------- dataset level


def _key(key: Any, epoch: int) -> tuple[int, int]:
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise ValueError(f"expected an index or an (epoch, index) pair, got {key!r}")
        return operator.index(key[0]), operator.index(key[1])
    return epoch, operator.index(key)


class _ItemAugmentation(Dataset):
    """Per-item seeded augmentation of ``dataset``'s first item field; see the module docstring.

    ``dataset`` must provide ``seed`` and ``item_with_seed(index, item_seed)`` (a
    :class:`~selfsup.shared.data.sampling.SeededTransformDataset` or another wrapper of this module) and return
    tuples whose first field is a ``[..., H, W]`` tensor. ``self[i]`` and ``self[(epoch, i)]`` (the keys of
    ``ResumableSampler(tag_epoch=True)``) return the base's tuple with that tensor augmented.
    """

    TAG: ClassVar[int]

    def __init__(self, dataset: Dataset) -> None:
        if not callable(getattr(dataset, "item_with_seed", None)) or not hasattr(dataset, "seed"):
            raise TypeError(
                f"{type(self).__name__}: the dataset must have `seed` and `item_with_seed(index, item_seed)` "
                f"(wrap it in SeededTransformDataset), got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.epoch = 0

    @property
    def seed(self) -> int:
        """The base's seed (``--seed``), which enters every item seed."""
        return int(self.dataset.seed)  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of plain integer keys (passed on to the base)."""
        self.epoch = int(epoch)
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        epoch, index = _key(key, self.epoch)
        return self.item_with_seed(index, mix_seed(self.seed, epoch, index))

    def item_with_seed(self, index: int, item_seed: int) -> tuple[Any, ...]:
        """Item ``index`` with every draw (base augmentation, mixing, partners) derived from ``item_seed``."""
        item = self.dataset.item_with_seed(index, item_seed)  # type: ignore[attr-defined]
        if not isinstance(item, (tuple, list)) or not item or not isinstance(item[0], torch.Tensor):
            raise TypeError(f"{type(self).__name__}: expected items (tensor, target, ...), got {type(item)}")

        def partner(j: int, k: int) -> torch.Tensor:
            return self.dataset.item_with_seed(j, mix_seed(item_seed, self.TAG, k))[0]  # type: ignore[attr-defined]

        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            stream = mix_seed(item_seed, self.TAG)
            random.seed(stream)
            np.random.seed(stream % 2**32)
            image = self._augment(item[0], partner)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return (image, *item[1:])

    def _augment(self, x: torch.Tensor, partner: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def targets(self) -> Sequence[int]:
        """Targets of the wrapped dataset."""
        return self.dataset.targets  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        """Class names of the wrapped dataset."""
        return self.dataset.classes  # type: ignore[attr-defined]

    def num_skipped(self) -> int:
        """Corrupt items replaced so far by the wrapped dataset (0 when it cannot skip)."""
        counter = getattr(self.dataset, "num_skipped", None)
        return int(counter()) if callable(counter) else 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("dataset", "epoch"))
        return f"{type(self).__name__}({fields})"


def _real(value: Any, flag: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value!r}")
    return float(value)


def _probability(value: Any, flag: str) -> float:
    value = _real(value, flag)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be a probability in [0, 1], got {value!r}")
    return value


def _integer(value: Any, flag: str, minimum: int) -> int:
    integral = isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()
    if integral and int(value) >= minimum:
        return int(value)
    raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")


class GlobalMixture(_ItemAugmentation):
    """``GM`` (``--IM_type global``): up to ``num_mix`` mixups with fresh partners, each with probability
    ``prob``: ``x ← λ·x + (1−λ)·x_j``, ``λ ~ Beta(alpha, alpha)`` (``--g_alpha``, ``--g_num``, ``--g_prob``).

    Draws per mix: ``np.random.rand(1)`` (fires when ``<= prob``), ``random.choice`` of the partner, the partner,
    ``np.random.beta``.
    """

    TAG = 0x494D_676C  # "IMgl"

    def __init__(self, dataset: Dataset, *, alpha: float = 1.0, num_mix: int = 2, prob: float = 0.1) -> None:
        super().__init__(dataset)
        self.alpha = _real(alpha, "alpha (--g_alpha)")
        if self.alpha <= 0:
            raise ValueError(f"alpha (--g_alpha) must be > 0 (Beta(alpha, alpha)), got {alpha!r}")
        self.num_mix = _integer(num_mix, "num_mix (--g_num)", 0)
        self.prob = _probability(prob, "prob (--g_prob)")

    def _augment(self, x: torch.Tensor, partner: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        for k in range(self.num_mix):
            if np.random.rand(1)[0] > self.prob:
                continue
            j = random.choice(range(len(self)))
            other = partner(j, k)
            lam = np.random.beta(self.alpha, self.alpha)
            x = global_mix(x, other, lam)
        return x


class RegionMixture(_ItemAugmentation):
    """``RM`` (``--IM_type region``): up to ``num_mix`` CutMix pastes from fresh partners, each with probability
    ``prob`` (``--r_beta``, ``--r_num``, ``--r_prob``, ``--r_pixel_decay``).

    Draws per mix: ``np.random.rand(1)`` (fires when ``<= prob`` and ``beta > 0``), ``λ = np.random.beta``,
    ``random.choice`` of the partner, the partner, the box (:func:`rand_bbox` with ``np.random``). When mix 0
    fires the whole tensor is first multiplied by ``decay``; later mixes never decay. λ is not used afterwards.
    """

    TAG = 0x494D_7267  # "IMrg"

    def __init__(
        self, dataset: Dataset, *, beta: float = 1.0, num_mix: int = 2, prob: float = 0.1, decay: float = 1.0
    ) -> None:
        super().__init__(dataset)
        self.beta = _real(beta, "beta (--r_beta)")  # <= 0 switches region mixing off, as in the original
        self.num_mix = _integer(num_mix, "num_mix (--r_num)", 0)
        self.prob = _probability(prob, "prob (--r_prob)")
        self.decay = _real(decay, "decay (--r_pixel_decay)")

    def _augment(self, x: torch.Tensor, partner: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        height, width = x.shape[-2:]
        for k in range(self.num_mix):
            r = np.random.rand(1)[0]
            if self.beta <= 0 or r > self.prob:
                continue
            lam = np.random.beta(self.beta, self.beta)
            j = random.choice(range(len(self)))
            other = partner(j, k)
            box = rand_bbox(height, width, lam, np.random)
            if k == 0:  # pixel decay, only when the first mix fires
                x = self.decay * x
            x = region_mix(x, other, box)
        return x


class Cutout(_ItemAugmentation):
    """Cutout (``--IM_type Cutout``): with probability ``prob`` (``--cutout_p``) fill a ``mask_size`` square
    (``--mask_size``) with ``mask_color`` (``--mask_color``, a value of the normalised tensor).

    Centre ``cx = randint(lo, w + offset − hi)``, ``cy`` likewise over ``h`` (``offset = 1`` for even sizes;
    ``lo = hi = mask_size // 2`` with ``inside`` (``--cutout_inside``), else 0), corners clipped. As in the
    original, ``x`` is bounded by the width but indexes dim −2 (the same thing for square crops).
    """

    TAG = 0x494D_636F  # "IMco"

    def __init__(
        self,
        dataset: Dataset,
        *,
        mask_size: int = 50,
        prob: float = 0.1,
        inside: bool = False,
        mask_color: float = 0.0,
    ) -> None:
        super().__init__(dataset)
        self.mask_size = _integer(mask_size, "mask_size (--mask_size)", 1)
        self.prob = _probability(prob, "prob (--cutout_p)")
        if not isinstance(inside, bool):
            raise ValueError(f"inside (--cutout_inside) must be a bool, got {inside!r}")
        self.inside = inside
        self.mask_color = _real(mask_color, "mask_color (--mask_color)")

    def _augment(self, x: torch.Tensor, partner: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        if np.random.random() > self.prob:
            return x
        h, w = x.shape[-2:]
        half, offset = self.mask_size // 2, 1 if self.mask_size % 2 == 0 else 0
        lo = half if self.inside else 0
        hi = half if self.inside else 0
        if self.inside and (w + offset - hi <= lo or h + offset - hi <= lo):
            raise ValueError(
                f"--mask_size {self.mask_size} does not fit inside a {h} x {w} image (--cutout_inside)"
            )
        cx = np.random.randint(lo, w + offset - hi)
        cy = np.random.randint(lo, h + offset - hi)
        xmin, ymin = cx - half, cy - half
        xmax, ymax = min(w, xmin + self.mask_size), min(h, ymin + self.mask_size)
        xmin, ymin = max(0, xmin), max(0, ymin)
        x = x.clone()
        x[..., xmin:xmax, ymin:ymax] = self.mask_color
        return x


class RandomErasing(_ItemAugmentation):
    """Random Erasing (``--IM_type RandomErasing``): with probability ``prob`` (``--random_erasing_prob``), up to
    ``max_attempt`` (``--max_attempt``) tries of a rectangle of area ``U(area_ratio_range)·h·w``
    (``--area_ratio_range``) and aspect ``U(min_aspect_ratio, 1/min_aspect_ratio)`` (``--min_aspect_ratio``);
    the first that fits is filled with one value ``U(0, 1)`` on the normalised tensor.

    Per try: ``area``, ``aspect`` (uniform), ``mh = int(√(area·aspect))``, ``mw = int(√(area/aspect))``; if
    ``mw < w`` and ``mh < h``: ``x0 = randint(0, w − mw)``, ``y0 = randint(0, h − mh)``, fill
    ``[..., x0:x0+mw, y0:y0+mh]`` with ``uniform(0, 1)``. As in the original, ``x`` is bounded by the width but
    indexes dim −2 (the same thing for square crops).
    """

    TAG = 0x494D_7265  # "IMre"

    def __init__(
        self,
        dataset: Dataset,
        *,
        prob: float = 0.1,
        area_ratio_range: Sequence[float] = (0.02, 0.4),
        min_aspect_ratio: float = 0.3,
        max_attempt: int = 20,
    ) -> None:
        super().__init__(dataset)
        self.prob = _probability(prob, "prob (--random_erasing_prob)")
        if (
            isinstance(area_ratio_range, (str, bytes))
            or not isinstance(area_ratio_range, Sequence)
            or len(area_ratio_range) != 2
        ):
            raise ValueError(f"--area_ratio_range must be two numbers (low, high), got {area_ratio_range!r}")
        low, high = (_real(v, "--area_ratio_range") for v in area_ratio_range)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"--area_ratio_range must satisfy 0 < low <= high <= 1, got {area_ratio_range!r}"
            )
        self.area_ratio_range = (low, high)
        self.min_aspect_ratio = _real(min_aspect_ratio, "min_aspect_ratio (--min_aspect_ratio)")
        if not 0.0 < self.min_aspect_ratio <= 1.0:
            raise ValueError(
                f"min_aspect_ratio (--min_aspect_ratio) must be in (0, 1], got {min_aspect_ratio!r}"
            )
        self.max_attempt = _integer(max_attempt, "max_attempt (--max_attempt)", 1)

    def _augment(self, x: torch.Tensor, partner: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        if np.random.random() > self.prob:
            return x
        h, w = x.shape[-2:]
        low, high = self.area_ratio_range
        for _ in range(self.max_attempt):
            mask_area = np.random.uniform(low, high) * (h * w)
            aspect_ratio = np.random.uniform(self.min_aspect_ratio, 1.0 / self.min_aspect_ratio)
            mask_h = int(np.sqrt(mask_area * aspect_ratio))
            mask_w = int(np.sqrt(mask_area / aspect_ratio))
            if mask_w < w and mask_h < h:
                x0 = np.random.randint(0, w - mask_w)
                y0 = np.random.randint(0, h - mask_h)
                x = x.clone()
                x[..., x0 : x0 + mask_w, y0 : y0 + mask_h] = np.random.uniform(0, 1)
                break
        return x


#: Defaults of the original's flags (CI ``train_CMC.py`` / ``train_moco_ins.py``).
IM_DEFAULTS: dict[str, Any] = {
    "g_alpha": 1.0,
    "g_num": 2,
    "g_prob": 0.1,
    "r_beta": 1.0,
    "r_prob": 0.1,
    "r_num": 2,
    "r_pixel_decay": 1.0,
    "mask_size": 50,
    "cutout_p": 0.1,
    "cutout_inside": False,
    "mask_color": 0,
    "random_erasing_prob": 0.1,
    "area_ratio_range": (0.02, 0.4),
    "min_aspect_ratio": 0.3,
    "max_attempt": 20,
}


def _global(dataset: Dataset, f: Mapping[str, Any]) -> Dataset:
    return GlobalMixture(dataset, alpha=f["g_alpha"], num_mix=f["g_num"], prob=f["g_prob"])


def _region(dataset: Dataset, f: Mapping[str, Any]) -> Dataset:
    return RegionMixture(
        dataset, beta=f["r_beta"], num_mix=f["r_num"], prob=f["r_prob"], decay=f["r_pixel_decay"]
    )


def _im(dataset: Dataset, f: Mapping[str, Any]) -> Dataset:
    return _region(_global(dataset, f), f)


def _cutout(dataset: Dataset, f: Mapping[str, Any]) -> Dataset:
    return Cutout(
        dataset,
        mask_size=f["mask_size"],
        prob=f["cutout_p"],
        inside=f["cutout_inside"],
        mask_color=f["mask_color"],
    )


def _erasing(dataset: Dataset, f: Mapping[str, Any]) -> Dataset:
    return RandomErasing(
        dataset,
        prob=f["random_erasing_prob"],
        area_ratio_range=f["area_ratio_range"],
        min_aspect_ratio=f["min_aspect_ratio"],
        max_attempt=f["max_attempt"],
    )


#: ``--IM_type`` -> builder ``(dataset, resolved flags) -> wrapped dataset``.
IMAGE_MIXTURES: dict[str, Callable[[Dataset, Mapping[str, Any]], Dataset]] = {
    "IM": _im,
    "global": _global,
    "region": _region,
    "Cutout": _cutout,
    "RandomErasing": _erasing,
}


def build_image_mixture(dataset: Dataset, im_type: str | None, **flags: Any) -> Dataset:
    """Wrap ``dataset`` as ``--IM --IM_type im_type`` does; ``im_type=None`` (no ``--IM``) returns it unchanged.

    ``flags`` use the original's names (:data:`IM_DEFAULTS`); missing or ``None`` ones take the defaults and
    flags that ``im_type`` does not use are ignored, so a trainer may pass all of them. Values are validated
    (errors name the flag).
    """
    unknown = sorted(set(flags) - set(IM_DEFAULTS))
    if unknown:
        raise TypeError(f"build_image_mixture: unknown flags {unknown}; known: {', '.join(IM_DEFAULTS)}")
    if im_type is None:
        return dataset
    if im_type not in IMAGE_MIXTURES:
        raise ValueError(f"--IM_type {im_type!r}: expected one of {', '.join(IMAGE_MIXTURES)}")
    resolved = {**IM_DEFAULTS, **{k: v for k, v in flags.items() if v is not None}}
    return IMAGE_MIXTURES[im_type](dataset, resolved)
