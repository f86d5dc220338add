"""Tests of selfsup.shared.optim.schedules: values at milestones and endpoints of every original's schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.shared.evaluation.probe_training import eveningglow_linear_lr
from selfsup.shared.optim.schedules import (
    LRSchedule,
    apply_lr,
    cosine_lr,
    step_lr,
)


@pytest.mark.parametrize(
    ("epoch", "lr"), [(0, 0.03), (119, 0.03), (120, 0.003), (159, 0.003), (160, 0.0003), (199, 0.0003)]
)
def test_step_lr_official_moco_milestones(epoch: int, lr: float) -> None:
    assert step_lr(0.03, epoch, (120, 160)) == pytest.approx(lr)


def test_step_lr_cmc_one_based_epochs_and_gamma() -> None:
    # CMC decays when milestone < epoch (1-based): epoch 121 is the first at 0.1x.
    assert step_lr(0.03, 120 - 1, (120, 160)) == pytest.approx(0.03)
    assert step_lr(0.03, 121 - 1, (120, 160)) == pytest.approx(0.003)
    assert step_lr(0.01, 16, (12, 16), gamma=0.2) == pytest.approx(0.01 * 0.04)


def test_cosine_lr_endpoints() -> None:
    assert cosine_lr(0.06, 0, 200) == pytest.approx(0.06)
    assert cosine_lr(0.06, 100, 200) == pytest.approx(0.03)
    assert cosine_lr(0.06, 200, 200) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(0.3, 50, 100, final_lr=0.1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="--epochs"):
        cosine_lr(0.1, 0, 0)


def test_eveningglow_linear_eval_schedule() -> None:
    lrs = {e: eveningglow_linear_lr(10.0, e) for e in (1, 20, 21, 40, 41, 61, 81, 100)}
    assert lrs[1] == lrs[20] == pytest.approx(10.0)
    assert lrs[21] == lrs[40] == pytest.approx(2.0)
    assert [lrs[41], lrs[61], lrs[81], lrs[100]] == pytest.approx([0.4, 0.08, 0.016, 0.016])
    with pytest.raises(ValueError, match="from 1"):
        eveningglow_linear_lr(10.0, 0)


def test_lrschedule_per_epoch_kinds() -> None:
    step = LRSchedule("step", 0.03, epochs=200, iters_per_epoch=10, milestones=[120, 160])
    assert step.milestones == (120, 160) and not step.per_iteration
    assert [step.lr_at(e, 9) for e in (119, 120, 160)] == pytest.approx([0.03, 0.003, 0.0003])
    assert step.lr_at(500) == pytest.approx(0.0003)  # step schedules run "until stopped"
    assert LRSchedule("constant", 0.5, epochs=1).lr_at(0) == 0.5

    cos_epoch = LRSchedule("cosine", 0.06, epochs=10, iters_per_epoch=4)
    assert cos_epoch.lr_at(5, 3) == pytest.approx(0.03)  # per epoch: the iteration is ignored
    cos_iter = LRSchedule("cosine", 0.06, epochs=10, iters_per_epoch=4, per_iteration=True)
    assert cos_iter.lr_at(5, 2) == pytest.approx(cosine_lr(0.06, 5.5, 10))
    with pytest.raises(ValueError, match="past the end"):
        cos_epoch.lr_at(10)
    with pytest.raises(ValueError, match="iteration"):
        cos_iter.lr_at(0, 4)


def test_lrschedule_validation() -> None:
    with pytest.raises(ValueError, match="unknown lr schedule"):
        LRSchedule("poly", 0.1, epochs=10)
    with pytest.raises(ValueError, match="--epochs"):
        LRSchedule("cosine", 0.1, epochs=0)
    with pytest.raises(AttributeError):
        LRSchedule("constant", 0.1, epochs=1).base_lr = 1.0  # frozen


def test_apply_lr_respects_lr_scale() -> None:
    a, b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], lr=1.0)
    apply_lr(opt, 0.4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.4, 0.04])
