"""INTL's per-step learning rate (:mod:`selfsup.intl.schedules`; CW-RGP's is checked against torch's schedulers
in ``test_cwrgp.py``)."""

from __future__ import annotations

import math

import pytest

from selfsup.intl.schedules import linear_warmup_cosine_lr


def test_intl_linear_warmup_cosine() -> None:
    base, total, warm = 0.5, 20, 4
    assert linear_warmup_cosine_lr(base, 0, total, warm) == pytest.approx(base / warm)
    assert linear_warmup_cosine_lr(base, warm - 1, total, warm) == pytest.approx(base)
    assert linear_warmup_cosine_lr(base, total - 1, total, warm) == pytest.approx(0.001 * base)
    q = 0.5 * (1 + math.cos(math.pi * 1 / (total - warm)))
    assert linear_warmup_cosine_lr(base, warm, total, warm) == pytest.approx(
        base * q + 0.001 * base * (1 - q)
    )
    assert linear_warmup_cosine_lr(base, total - 1, total, warm, final_lr=0.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="warmup steps < total steps"):
        linear_warmup_cosine_lr(base, 0, total, total)
