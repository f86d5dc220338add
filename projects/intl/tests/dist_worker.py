"""One rank of the 2-process INTL check (``test_distributed.py``): ``python dist_worker.py OUT_DIR`` under torchrun.

Each rank takes its half of two fixed projector outputs, gathers them with gradient, whitens each over the global
batch, computes the ``intl`` loss and saves the loss and the gradient of its half to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

N, D = 8, 6


def global_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return torch.randn(N, D, generator=gen, dtype=torch.float64), torch.randn(
        N, D, generator=gen, dtype=torch.float64
    )


def loss_of(a: torch.Tensor, b: torch.Tensor, gather) -> torch.Tensor:
    from selfsup.intl.loss import intl_loss, trade_off
    from selfsup.intl.whitening import iter_norm

    whitened = [iter_norm(gather(t), iters=4, axis=0) for t in (a, b)]
    return intl_loss(whitened, beta=trade_off(N, D, 0), axis=0)


def main(out: Path) -> None:
    import torch.distributed as dist

    from selfsup.shared.distributed import all_gather_with_grad

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    a, b = (t[rank * N // 2 : (rank + 1) * N // 2].clone().requires_grad_(True) for t in global_outputs())
    loss = loss_of(a, b, all_gather_with_grad)
    loss.backward()
    torch.save({"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
