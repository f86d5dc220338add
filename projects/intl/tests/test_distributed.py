"""INTL on 2 gloo ranks: the trainer's objective (``intl`` and ``intl_m``), whitening over the all-gathered batch,
gives the single-process loss on the concatenated batch, and each rank's gradient is the world size times the
single-process gradient of its rows (DDP's average divides that factor back out, as the original's
``FullGatherLayer``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")


def _load_worker():
    """This folder's ``dist_worker.py`` under a name of its own (other projects have a ``dist_worker`` too)."""
    spec = importlib.util.spec_from_file_location(f"{__name__}_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
def test_two_rank_whitening_and_loss_equal_one_process(tmp_path, torchrun) -> None:
    proc = torchrun(str(WORKER), str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worker = _load_worker()
    N = worker.N
    global_outputs = worker.global_outputs
    losses = worker.losses
    a, b = (t.clone().requires_grad_(True) for t in global_outputs())
    for name, loss in losses(a, b).items():
        a.grad = b.grad = None
        loss.backward()
        for rank in range(2):
            got = torch.load(tmp_path / f"rank{rank}.pt")[name]
            torch.testing.assert_close(got["loss"], loss.detach())
            rows = slice(rank * N // 2, (rank + 1) * N // 2)
            torch.testing.assert_close(got["grad_a"], 2 * a.grad[rows])
            if name == "intl":
                torch.testing.assert_close(got["grad_b"], 2 * b.grad[rows])
            else:  # the EMA target has no gradient
                assert got["grad_b"] is None and b.grad is None
