"""One rank of the 2-process INTL check (``test_distributed.py``): ``python dist_worker.py OUT_DIR`` under torchrun.

Each rank takes its half of two fixed projector outputs and computes the trainer's objective
(:func:`selfsup.intl.loss.intl_objective`: gathered with gradient, whitened over the global batch, the ``intl``
loss; and the ``intl_m`` loss with the second output as the EMA target), then saves the losses and the gradients
of its halves to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

N, D = 8, 6


def global_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return torch.randn(N, D, generator=gen), torch.randn(N, D, generator=gen)


def losses(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """``intl`` on the crops ``(a, b)`` and ``intl_m`` of ``a`` against the target ``b`` (global batch ``N``)."""
    from selfsup.intl.loss import intl_objective

    return {
        "intl": intl_objective([a, b], batch_size=N, emb=D, axis=0, iters=4),
        "intl_m": intl_objective([a], b, batch_size=N, emb=D, axis=0, iters=4),
    }


def main(out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    a, b = (t[rank * N // 2 : (rank + 1) * N // 2].clone().requires_grad_(True) for t in global_outputs())
    saved = {}
    for name, loss in losses(a, b).items():
        a.grad = b.grad = None
        loss.backward()
        saved[name] = {"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}
    torch.save(saved, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
