"""Un-Mix: the boxes, the chained λ, the forward order, the re-slicing and the three-term loss, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.swav_unmix.unmix import mix_crops, split_unmix_rows


class ScriptedRNG:
    """Replays fixed draws: ``rand`` -> r, ``beta`` -> λ, ``randint`` -> the listed centres in order."""

    def __init__(self, r: float, lam: float, centres: list[int]) -> None:
        self.r, self.lam, self.centres = r, lam, list(centres)
        self.calls: list[tuple] = []

    def rand(self, n: int) -> np.ndarray:
        self.calls.append(("rand", n))
        return np.array([self.r])

    def beta(self, a: float, b: float) -> float:
        self.calls.append(("beta", a, b))
        return self.lam

    def randint(self, high: int) -> int:
        self.calls.append(("randint", high))
        return self.centres.pop(0)


def crops(bs: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(bs, 3, s, s, generator=gen) for s in (8, 8, 4, 4)]


def test_region_mixture_boxes_and_the_chained_lambda_by_hand() -> None:
    x = crops()
    rng = ScriptedRNG(r=0.7, lam=0.75, centres=[1, 5, 2, 2])
    out = mix_crops(x, unmix_prob=0.5, beta=1.0, rng=rng)
    assert rng.calls[:2] == [("rand", 1), ("beta", 1.0, 1.0)]  # r first, then λ (the original's order)
    assert [c for c in rng.calls if c[0] == "randint"] == [
        ("randint", 8),
        ("randint", 8),
        ("randint", 4),
        ("randint", 4),
    ]
    assert out.mode == "region"
    # pair (0, 1), 8 px: cut = int(8·√0.25) = 4, centre (1, 5): x 1−2..1+2 clipped to [0, 3], y [3, 7]
    assert tuple(out.boxes[0]) == (0, 3, 3, 7)
    lam1 = 1 - (3 * 4) / 64  # kept area, replaces λ
    # pair (2, 3), 4 px with λ1: cut = int(4·√(1−λ1)) = int(4·0.433) = 1, so 1 // 2 = 0: an empty box at (2, 2)
    assert tuple(out.boxes[1]) == (2, 2, 2, 2)
    assert out.lam == pytest.approx(1.0)  # empty box: the last pair's kept area is 1
    m0 = x[0].clone()
    m0[:, :, 0:3, 3:7] = x[0].flip(0)[:, :, 0:3, 3:7]
    assert [t.data_ptr() for t in (out.crops[0], out.crops[1], out.crops[3], out.crops[4])] == [
        t.data_ptr() for t in x
    ]
    torch.testing.assert_close(out.crops[2], m0)
    torch.testing.assert_close(out.crops[5], x[2])  # empty box: the mixture equals the crop
    assert lam1 == pytest.approx(0.8125)


def test_boxes_have_even_sides_unless_clipped() -> None:
    for lam, centre in [(0.5, 8), (0.1, 8), (0.9, 7)]:
        rng = ScriptedRNG(r=0.9, lam=lam, centres=[centre, centre])
        out = mix_crops([torch.zeros(2, 1, 16, 16)] * 2, unmix_prob=0.0, beta=1.0, rng=rng)
        x1, y1, x2, y2 = out.boxes[0]
        cut = int(16 * np.sqrt(1 - lam))
        assert (x2 - x1, y2 - y1) == (2 * (cut // 2), 2 * (cut // 2))
        assert out.lam == pytest.approx(1 - (x2 - x1) * (y2 - y1) / 256)
    clipped = mix_crops(
        [torch.zeros(2, 1, 16, 16)] * 2, unmix_prob=0.0, beta=1.0, rng=ScriptedRNG(0.9, 0.1, [6, 15])
    )
    assert tuple(clipped.boxes[0]) == (0, 8, 13, 16)  # x: 6 ∓ 7 -> [0, 13]; y: 15 ∓ 7 -> [8, 16]


def test_global_mixture_keeps_lambda_across_pairs() -> None:
    x = crops()
    rng = ScriptedRNG(r=0.2, lam=0.3, centres=[])
    out = mix_crops(x, unmix_prob=0.5, beta=2.0, rng=rng)
    assert out.mode == "global" and out.lam == pytest.approx(0.3) and out.boxes == (None, None)
    torch.testing.assert_close(out.crops[2], 0.3 * x[0] + 0.7 * x[0].flip(0))
    torch.testing.assert_close(out.crops[5], 0.3 * x[2] + 0.7 * x[2].flip(0))


def test_draws_come_from_numpy_global_rng_when_seeded() -> None:
    x = crops()
    np.random.seed(31)
    a = mix_crops(x, unmix_prob=0.5, beta=1.0)
    np.random.seed(31)
    r, lam = np.random.rand(1)[0], np.random.beta(1.0, 1.0)
    b = mix_crops(x, unmix_prob=0.5, beta=1.0, rng=np.random.RandomState(31))
    assert a.lam == b.lam and a.mode == ("global" if r < 0.5 else "region")
    if a.mode == "global":
        assert a.lam == pytest.approx(lam)


def test_forward_order_and_the_split_into_original_and_mixed_sets() -> None:
    bs = 2
    rows = torch.arange(12 * bs).float().view(12 * bs, 1)  # 12 crops: [c0, c1, m0, c2, c3, m2, ...] of 2 rows
    original, mixed = split_unmix_rows(rows, bs)

    def rows_of(crops: tuple[int, ...]) -> list[int]:
        return [r for i in crops for r in range(i * bs, (i + 1) * bs)]

    assert original.view(-1).long().tolist() == rows_of((0, 1, 3, 4, 6, 7, 9, 10))
    assert mixed.view(-1).long().tolist() == rows_of((2, 1, 5, 4, 8, 7, 11, 10))
    with pytest.raises(ValueError, match="triples"):
        split_unmix_rows(rows[:10], bs)


def test_odd_crop_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="pairs"):
        mix_crops(crops()[:3], unmix_prob=0.5, beta=1.0)
