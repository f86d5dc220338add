"""Image mixtures: batch-level pieces against hand computations, and the per-item seeded IM dataset wrappers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from selfsup.shared.data.mixtures import (
    IM_DEFAULTS,
    IMAGE_MIXTURES,
    Box,
    Cutout,
    GlobalMixture,
    RandomErasing,
    RegionMixture,
    build_image_mixture,
    flip_batch,
    global_mix,
    kept_area,
    rand_bbox,
    region_mix,
)
from selfsup.shared.data.sampling import ResumableSampler, SeededTransformDataset, build_loader, mix_seed

# ---------------------------------------------------------------------------------------------- batch level


class _Stub:
    """An RNG whose ``randint`` returns fixed values and records its arguments."""

    def __init__(self, *values: int) -> None:
        self.values, self.calls = list(values), []

    def randint(self, high: int) -> int:
        self.calls.append(high)
        return self.values.pop(0)


def test_rand_bbox_by_hand_with_clipping():
    # 20 x 10, lam 0.75: cut ratio 0.5, cut_x = int(20 * 0.5) = 10, cut_y = int(10 * 0.5) = 5
    rng = _Stub(3, 9)
    box = rand_bbox(20, 10, 0.75, rng)
    assert rng.calls == [20, 10]  # cx over dim -2 first, then cy over dim -1
    assert box == Box(0, 7, 8, 10)  # x: 3 -/+ 5 -> clip(-2) = 0, 8; y: 9 -/+ 2 -> 7, clip(11) = 10
    # 32 x 32, lam 0.5: cut = int(32 * sqrt(0.5)) = int(22.6) = 22 -> half 11
    assert rand_bbox(32, 32, 0.5, _Stub(16, 10)) == Box(5, 0, 27, 21)
    assert rand_bbox(32, 32, 0.5, _Stub(31, 30)) == Box(20, 19, 32, 32)
    # lam 1: nothing cut; lam 0: an odd cut 7 loses a pixel (7 // 2 = 3 on each side)
    one = rand_bbox(7, 7, 1.0, _Stub(4, 2))
    assert one.x1 == one.x2 == 4 and one.y1 == one.y2 == 2
    assert rand_bbox(7, 7, 0.0, _Stub(3, 3)) == Box(0, 0, 6, 6)
    with pytest.raises(ValueError, match="lam"):
        rand_bbox(8, 8, 1.5, _Stub(0, 0))


def test_rand_bbox_draws_from_numpy_rngs():
    generator, expected = np.random.default_rng(5), np.random.default_rng(5)
    cx, cy = int(expected.integers(24)), int(expected.integers(16))
    cut_x, cut_y = int(24 * math.sqrt(0.64)), int(16 * math.sqrt(0.64))
    box = rand_bbox(24, 16, 0.36, generator)
    assert box == Box(
        max(cx - cut_x // 2, 0), max(cy - cut_y // 2, 0), min(cx + cut_x // 2, 24), min(cy + cut_y // 2, 16)
    )
    assert rand_bbox(24, 16, 0.36, np.random.RandomState(3)) == rand_bbox(
        24, 16, 0.36, np.random.RandomState(3)
    )
    np.random.seed(4)
    first = rand_bbox(24, 16, 0.36, np.random)
    np.random.seed(4)
    assert first == rand_bbox(24, 16, 0.36, np.random)


def test_kept_area_and_batch_mixtures():
    assert kept_area(Box(0, 7, 8, 10), 20, 10) == pytest.approx(1 - 8 * 3 / 200)
    assert kept_area(Box(4, 2, 4, 2), 7, 7) == 1.0
    x = torch.arange(4 * 2 * 5 * 6, dtype=torch.float32).view(4, 2, 5, 6)
    partner = flip_batch(x)
    assert torch.equal(partner[0], x[3]) and torch.equal(partner[3], x[0])
    before = x.clone()
    mixed = global_mix(x, partner, 0.25)
    assert torch.equal(mixed, x * 0.25 + partner * 0.75)
    box = Box(1, 2, 4, 5)
    cut = region_mix(x, partner, box)
    assert torch.equal(x, before)  # pure
    assert torch.equal(cut[:, :, 1:4, 2:5], partner[:, :, 1:4, 2:5])
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[:, :, 1:4, 2:5] = False
    assert torch.equal(cut[outside], x[outside])
    assert torch.equal(region_mix(x[0], x[1], box)[:, 1:4, 2:5], x[1][:, 1:4, 2:5])  # one C x H x W item
    with pytest.raises(ValueError, match="same shape"):
        global_mix(x, x[:2], 0.5)


# ---------------------------------------------------------------------------------------------- dataset level

N, C, H, W = 6, 3, 8, 8


class _Planes(Dataset):
    """Item ``i``: a distinct, spatially varying C x H x W tensor; targets i % 3."""

    def __init__(self, n: int = N, value: float | None = None, step: float = 1.0) -> None:
        ramp = torch.arange(C * H * W, dtype=torch.float32).view(C, H, W) / (C * H * W)
        self.images = [
            torch.full((C, H, W), value + step * i) if value is not None else ramp + i for i in range(n)
        ]
        self.targets = [i % 3 for i in range(n)]
        self.classes = ["a", "b", "c"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def _noisy(x: torch.Tensor) -> torch.Tensor:
    return x + torch.rand(x.shape)


class _Recording(SeededTransformDataset):
    """Records every ``(index, item_seed)`` fetched (anchors and partners)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: list[tuple[int, int]] = []

    def item_with_seed(self, index, item_seed):
        self.fetched.append((index, item_seed))
        return super().item_with_seed(index, item_seed)


class _WithIndex(SeededTransformDataset):
    def item_with_seed(self, index, item_seed):
        return (*super().item_with_seed(index, item_seed), index)


def _base(transform=_identity, n=N, seed=3, value=None, step=1.0, cls=SeededTransformDataset):
    return cls(_Planes(n, value, step), transform, seed=seed)


def _streams(item_seed: int, tag: int) -> tuple[random.Random, np.random.RandomState]:
    """The draws of a wrapper for the item seeded ``item_seed``: ``random`` and NumPy seeded as it does."""
    stream = mix_seed(item_seed, tag)
    return random.Random(stream), np.random.RandomState(stream % 2**32)


def _replay_global(images, i, item_seed, alpha, num_mix, prob):
    py, npr = _streams(item_seed, GlobalMixture.TAG)
    x = images[i].clone()
    for _ in range(num_mix):
        if npr.rand() > prob:
            continue
        j = py.choice(range(len(images)))
        lam = npr.beta(alpha, alpha)
        x = x * lam + images[j] * (1 - lam)
    return x


def _replay_region(anchor, partner_of, item_seed, beta, num_mix, prob, decay, n):
    py, npr = _streams(item_seed, RegionMixture.TAG)
    x, fired = anchor.clone(), []
    for k in range(num_mix):
        if npr.rand() > prob:
            continue
        lam = npr.beta(beta, beta)
        j = py.choice(range(n))
        partner = partner_of(j, mix_seed(item_seed, RegionMixture.TAG, k))
        cx, cy = npr.randint(H), npr.randint(W)
        cut_x, cut_y = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
        x1, x2 = np.clip(cx - cut_x // 2, 0, H), np.clip(cx + cut_x // 2, 0, H)
        y1, y2 = np.clip(cy - cut_y // 2, 0, W), np.clip(cy + cut_y // 2, 0, W)
        if k == 0:
            x = decay * x
        x = x.clone()
        x[:, x1:x2, y1:y2] = partner[:, x1:x2, y1:y2]
        fired.append(k)
    return x, fired


def test_global_mixture_replays_the_draws_by_hand():
    base = _base()
    images = base.dataset.images
    mixed = GlobalMixture(base, alpha=0.7, num_mix=3, prob=0.5)
    mixed.set_epoch(2)
    changed = 0
    for i in range(N):
        item_seed = mix_seed(3, 2, i)
        expected = _replay_global(images, i, item_seed, 0.7, 3, 0.5)
        x, target = mixed[i]
        assert torch.equal(x, expected) and target == i % 3
        assert torch.equal(mixed[(2, i)][0], x)
        changed += not torch.equal(x, images[i])
    assert changed > 0


def test_region_mixture_replays_the_draws_by_hand_and_decays_only_on_the_first_mix():
    base = _base()
    images = base.dataset.images
    mixed = RegionMixture(base, beta=2.0, num_mix=2, prob=0.5, decay=0.5)
    cases = set()
    for epoch in range(6):
        mixed.set_epoch(epoch)
        for i in range(N):
            expected, fired = _replay_region(
                images[i], lambda j, _: images[j], mix_seed(3, epoch, i), 2.0, 2, 0.5, 0.5, N
            )
            assert torch.equal(mixed[i][0], expected), (epoch, i)
            cases.add(tuple(fired))
    assert {(0,), (1,), (0, 1)} <= cases  # every branch of the decay rule was exercised


def test_im_is_region_over_global_with_the_partner_drawn_through_global():
    base = _base()
    images = base.dataset.images
    im = build_image_mixture(base, "IM", g_alpha=0.5, g_num=2, g_prob=0.6, r_beta=1.0, r_prob=0.6, r_num=2)
    assert (
        isinstance(im, RegionMixture) and isinstance(im.dataset, GlobalMixture) and im.dataset.dataset is base
    )

    def global_view(j, seed):
        return _replay_global(images, j, seed, 0.5, 2, 0.6)

    for i in range(N):
        s = mix_seed(3, 0, i)
        expected, _ = _replay_region(global_view(i, s), global_view, s, 1.0, 2, 0.6, 1.0, N)
        assert torch.equal(im[(0, i)][0], expected), i


def test_decay_happens_exactly_when_mix_zero_fires():
    """Constant images 1 + i / 100 (all in [1, 1.4)): a pixel below 1 can only be a decayed (0.5) anchor pixel."""
    base = _base(value=1.0, step=0.01, n=40, cls=_Recording)
    mixed = RegionMixture(base, beta=50.0, num_mix=2, prob=0.5, decay=0.5)  # lam ~ 0.5: boxes cover < 60 %
    seen = {True: 0, False: 0}
    for i in range(40):
        base.fetched.clear()
        x = mixed[i][0]
        s = mix_seed(3, 0, i)
        first_fired = any(seed == mix_seed(s, RegionMixture.TAG, 0) for _, seed in base.fetched)
        assert bool((x < 1).any()) == first_fired, i
        if not first_fired:
            assert bool((x == base.dataset.images[i]).any())  # undecayed anchor pixels remain
        seen[first_fired] += 1
    assert seen[True] > 5 and seen[False] > 5


def test_firing_probability_and_self_partners():
    for cls, kwargs in ((GlobalMixture, {"alpha": 1.0}), (RegionMixture, {"beta": 1.0})):
        base = _base(n=5, cls=_Recording)
        mixed = cls(base, num_mix=2, prob=0.25, **kwargs)
        partners = anchors = self_partners = 0
        for epoch in range(60):  # 300 items, 600 chances, expect 150 +- 10.6 partners
            for i in range(5):
                base.fetched.clear()
                mixed[(epoch, i)]
                anchors += 1
                partners += len(base.fetched) - 1
                self_partners += sum(j == i for j, _ in base.fetched[1:])
        assert anchors == 300 and 110 <= partners <= 190, (cls.__name__, partners)
        assert self_partners > 10  # random.choice over all indices includes the item itself (~1/5)
    never = RegionMixture(_base(cls=_Recording), beta=0.0, num_mix=2, prob=1.0)  # r_beta <= 0: off
    assert all(torch.equal(never[i][0], never.dataset.dataset.images[i]) for i in range(N))
    assert len(never.dataset.fetched) == N


def test_partners_are_freshly_augmented_under_their_own_seed():
    base = _base(_noisy, n=1)  # the only partner is the item itself
    mixed = GlobalMixture(base, alpha=1.0, num_mix=1, prob=1.0)
    mixed.set_epoch(4)
    s = mix_seed(3, 4, 0)
    anchor = base.item_with_seed(0, s)[0]
    partner = base.item_with_seed(0, mix_seed(s, GlobalMixture.TAG, 0))[0]
    assert torch.equal(anchor, base[(4, 0)][0]) and not torch.equal(anchor, partner)
    _, npr = _streams(s, GlobalMixture.TAG)
    npr.rand()  # fires (prob 1)
    lam = npr.beta(1.0, 1.0)  # random.choice draws from Python's stream, not NumPy's
    assert torch.equal(mixed[0][0], anchor * lam + partner * (1 - lam))


def test_items_keep_what_the_base_returns():
    base = _base(_noisy, cls=_WithIndex)
    for name in IMAGE_MIXTURES:
        wrapped = build_image_mixture(base, name, g_prob=1.0, r_prob=1.0, cutout_p=1.0, mask_size=4)
        wrapped.set_epoch(1)
        assert len(wrapped) == N and wrapped.targets == base.targets and wrapped.classes == ["a", "b", "c"]
        assert wrapped.num_skipped() == 0 and base.epoch == 1
        for i in (0, 4):
            x, target, index = wrapped[i]
            assert x.shape == (C, H, W) and x.dtype == torch.float32
            assert (target, index) == (i % 3, i)
    quiet = GlobalMixture(base, num_mix=2, prob=0.0)  # nothing fires: exactly the base item
    assert torch.equal(quiet[(2, 3)][0], base[(2, 3)][0])


def test_cutout_fills_the_square_drawn_by_hand():
    for inside, size in ((False, 4), (True, 4), (False, 3), (True, 5)):
        base = _base(value=5.0)
        cut = Cutout(base, mask_size=size, prob=1.0, inside=inside, mask_color=-2.0)
        for i in range(N):
            _, npr = _streams(mix_seed(3, 0, i), Cutout.TAG)
            assert npr.random() <= 1.0
            half, offset = size // 2, 1 - size % 2
            lo, hi = (half, half) if inside else (0, 0)
            cx, cy = npr.randint(lo, W + offset - hi), npr.randint(lo, H + offset - hi)
            xmin, ymin = max(0, cx - half), max(0, cy - half)
            xmax, ymax = min(W, cx - half + size), min(H, cy - half + size)
            expected = torch.full((C, H, W), 5.0 + i)
            expected[:, xmin:xmax, ymin:ymax] = -2.0
            assert torch.equal(cut[i][0], expected), (inside, size, i)
            if inside:
                assert (cut[i][0] == -2.0).sum() == C * size * size  # never clipped
    with pytest.raises(ValueError, match="--mask_size"):
        Cutout(_base(), mask_size=20, prob=1.0, inside=True)[0]


def test_random_erasing_fills_the_rectangle_drawn_by_hand():
    base = _base(value=5.0)
    erase = RandomErasing(base, prob=1.0, area_ratio_range=(0.1, 0.3), min_aspect_ratio=0.5, max_attempt=5)
    for i in range(N):
        _, npr = _streams(mix_seed(3, 0, i), RandomErasing.TAG)
        npr.random()
        expected = torch.full((C, H, W), 5.0 + i)
        for _ in range(5):
            area = npr.uniform(0.1, 0.3) * H * W
            aspect = npr.uniform(0.5, 2.0)
            mh, mw = int(np.sqrt(area * aspect)), int(np.sqrt(area / aspect))
            if mw < W and mh < H:
                x0, y0 = npr.randint(0, W - mw), npr.randint(0, H - mh)
                expected[:, x0 : x0 + mw, y0 : y0 + mh] = npr.uniform(0, 1)
                break
        x = erase[i][0]
        assert torch.equal(x, expected)
        assert bool((x < 1).any())  # one value in [0, 1) fills the rectangle


def test_cutout_and_erasing_firing_probability():
    base = _base(value=5.0, n=300)
    cut = Cutout(base, mask_size=3, prob=0.3, mask_color=-1.0)
    erase = RandomErasing(base, prob=0.3)
    fired_cut = sum(bool((cut[i][0] == -1.0).any()) for i in range(300))
    fired_erase = sum(bool((erase[i][0] < 5.0).any()) for i in range(300))
    assert 60 <= fired_cut <= 120 and 60 <= fired_erase <= 120  # 90 +- 7.9


def _im(seed: int = 3, cls=SeededTransformDataset):
    return build_image_mixture(_base(_noisy, seed=seed, cls=cls), "IM", g_prob=0.5, r_prob=0.5)


def test_determinism_per_seed_epoch_index_and_global_rng_untouched():
    a, b = _im(), _im()
    for epoch in (0, 3):
        a.set_epoch(epoch)
        assert all(torch.equal(a[i][0], b[(epoch, i)][0]) for i in range(N))
    a.set_epoch(0)
    assert not torch.equal(a[1][0], b[(3, 1)][0])
    assert not torch.equal(a[1][0], _im(seed=4)[1][0])
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    a[2]
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_same_items_with_zero_or_two_workers_and_tagged_keys():
    def run(workers: int, tag: bool) -> list[torch.Tensor]:
        dataset = _im(cls=_WithIndex)
        sampler = ResumableSampler(len(dataset), seed=1, tag_epoch=tag)
        sampler.set_epoch(2)
        dataset.set_epoch(0 if tag else 2)
        loader = build_loader(dataset, batch_size=4, sampler=sampler, num_workers=workers)
        return [torch.cat([x.flatten(), index.float()]) for x, _, index in loader]

    serial = run(0, tag=False)
    for other in (run(2, tag=False), run(2, tag=True)):
        assert all(torch.equal(a, b) for a, b in zip(serial, other, strict=True))


def test_factory_defaults_and_flag_errors():
    base = _base()
    assert build_image_mixture(base, None) is base
    im = build_image_mixture(base, "IM")
    assert (im.beta, im.num_mix, im.prob, im.decay) == (1.0, 2, 0.1, 1.0)
    assert (im.dataset.alpha, im.dataset.num_mix, im.dataset.prob) == (1.0, 2, 0.1)
    region = build_image_mixture(base, "region", r_pixel_decay=0.9, r_num=1, g_prob=None)
    assert isinstance(region, RegionMixture) and region.dataset is base and region.decay == 0.9
    cut = build_image_mixture(base, "Cutout", mask_size=50.0, cutout_inside=True, mask_color=1)
    assert (cut.mask_size, cut.prob, cut.inside, cut.mask_color) == (50, 0.1, True, 1.0)
    erase = build_image_mixture(base, "RandomErasing", area_ratio_range=[0.05, 0.2])
    assert (erase.prob, erase.area_ratio_range, erase.min_aspect_ratio, erase.max_attempt) == (
        0.1,
        (0.05, 0.2),
        0.3,
        20,
    )
    assert IM_DEFAULTS["g_num"] == 2 and set(IMAGE_MIXTURES) == {
        "IM",
        "global",
        "region",
        "Cutout",
        "RandomErasing",
    }
    bad = [
        ({"im_type": "mixup"}, "--IM_type"),
        ({"g_prob": 1.5}, "--g_prob"),
        ({"g_alpha": 0.0}, "--g_alpha"),
        ({"g_num": -1}, "--g_num"),
        ({"r_num": 1.5}, "--r_num"),
        ({"r_prob": float("nan")}, "--r_prob"),
        ({"r_pixel_decay": "1"}, "--r_pixel_decay"),
        ({"im_type": "Cutout", "mask_size": 12.5}, "--mask_size"),
        ({"im_type": "Cutout", "cutout_p": -0.1}, "--cutout_p"),
        ({"im_type": "Cutout", "cutout_inside": "yes"}, "--cutout_inside"),
        ({"im_type": "RandomErasing", "area_ratio_range": "0.02,0.4"}, "--area_ratio_range"),
        ({"im_type": "RandomErasing", "area_ratio_range": (0.4, 0.02)}, "--area_ratio_range"),
        ({"im_type": "RandomErasing", "min_aspect_ratio": 2.0}, "--min_aspect_ratio"),
        ({"im_type": "RandomErasing", "max_attempt": 0}, "--max_attempt"),
        ({"im_type": "RandomErasing", "random_erasing_prob": 2}, "--random_erasing_prob"),
    ]
    for flags, flag in bad:
        flags = dict(flags)
        im_type = flags.pop("im_type", "IM")
        with pytest.raises(ValueError, match=flag):
            build_image_mixture(base, im_type, **flags)
    with pytest.raises(TypeError, match="unknown flags"):
        build_image_mixture(base, "IM", g_beta=1.0)
    with pytest.raises(TypeError, match="item_with_seed"):
        GlobalMixture(_Planes())
