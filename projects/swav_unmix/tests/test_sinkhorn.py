"""Sinkhorn-Knopp: against an element-by-element transcription, column sums, fp32 under autocast, 2 gloo ranks."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from selfsup.swav_unmix.sinkhorn import distributed_sinkhorn


def naive_sinkhorn(scores: list[list[float]], eps: float, iters: int) -> list[list[float]]:
    """The original's algorithm with Python floats: Q is K x B, rows are prototypes."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(scores[n][j] / eps) for n in range(b)] for j in range(k)]
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][n] for j in range(k)) for n in range(b)]
        q = [[q[j][n] / cols[n] / b for n in range(b)] for j in range(k)]
    return [[q[j][n] * b for j in range(k)] for n in range(b)]


def test_matches_the_element_by_element_algorithm_and_columns_sum_to_one() -> None:
    scores = torch.tensor([[0.9, -0.2, 0.1], [0.3, 0.4, -0.8], [-0.5, 0.7, 0.2], [0.1, 0.1, 0.6]])
    codes = distributed_sinkhorn(scores.double(), epsilon=0.05, iterations=3)
    expected = torch.tensor(naive_sinkhorn(scores.double().tolist(), 0.05, 3), dtype=torch.float32)
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(4))
    assert codes.dtype == torch.float32  # always fp32


def test_runs_in_fp32_under_bf16_autocast_with_unit_cosines() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(64, 16, generator=gen), dim=1)
    c = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=1)
    scores = z @ c.t()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = distributed_sinkhorn(scores.bfloat16(), epsilon=0.05, iterations=3)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(64), rtol=1e-5, atol=1e-5)


def test_zero_iterations_and_bad_arguments() -> None:
    scores = torch.zeros(2, 3)
    torch.testing.assert_close(distributed_sinkhorn(scores, iterations=0), torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="--epsilon"):
        distributed_sinkhorn(scores, epsilon=0.0)


WORKER = Path(__file__).with_name("dist_worker.py")


def _load_worker():
    """This folder's ``dist_worker.py`` under a name of its own (other projects have a ``dist_worker`` too)."""
    spec = importlib.util.spec_from_file_location(f"{__name__}_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
def test_two_gloo_ranks_equal_one_process_on_the_concatenated_scores(tmp_path, torchrun) -> None:
    proc = torchrun(str(WORKER), str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worker = _load_worker()
    global_scores = worker.global_scores
    whole = distributed_sinkhorn(global_scores(), epsilon=0.05, iterations=3)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-7)
