"""SwAV's per-iteration warm-up + cosine schedule (moved from shared/tests/test_schedules.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfsup.swav_unmix.schedules import swav_lr_at, warmup_cosine_schedule


def test_swav_warmup_cosine_schedule() -> None:
    base, final, start, epochs, ipe, warm = 4.8, 0.0048, 0.3, 5, 4, 2
    sched = warmup_cosine_schedule(base, final, epochs, ipe, warmup_epochs=warm, start_warmup=start)
    assert sched.shape == (epochs * ipe,)
    w, t_total = warm * ipe, (epochs - warm) * ipe
    np.testing.assert_allclose(sched[:w], np.linspace(start, base, w))
    assert sched[0] == pytest.approx(start) and sched[w - 1] == pytest.approx(base)
    assert sched[w] == pytest.approx(base)  # the cosine part starts at t = 0
    assert np.all(np.diff(sched[:w]) > 0) and np.all(np.diff(sched[w:]) < 0)
    last = final + 0.5 * (base - final) * (1 + math.cos(math.pi * (t_total - 1) / t_total))
    assert sched[-1] == pytest.approx(last)
    no_warmup = warmup_cosine_schedule(0.6, 0.0006, 3, 2)
    assert no_warmup[0] == pytest.approx(0.6) and len(no_warmup) == 6
    with pytest.raises(ValueError, match="--warmup_epochs"):
        warmup_cosine_schedule(1.0, 0.0, 3, 2, warmup_epochs=3)
    with pytest.raises(ValueError, match="data loader empty"):
        warmup_cosine_schedule(1.0, 0.0, 3, 0)


def test_swav_lr_at_equals_the_array_everywhere() -> None:
    array = warmup_cosine_schedule(4.8, 0.0048, 4, 3, warmup_epochs=1, start_warmup=0.3)
    values = [swav_lr_at(4.8, 0.0048, step, 12, 3, 0.3) for step in range(12)]
    np.testing.assert_allclose(values, array)
    assert swav_lr_at(1.0, 0.0, 0, 3, 1, 0.0) == 0.0  # np.linspace(0, 1, 1) == [0]
    assert warmup_cosine_schedule(1.0, 0.0, 3, 1, warmup_epochs=1)[0] == 0.0
