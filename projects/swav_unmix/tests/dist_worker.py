"""One rank of the 2-process Sinkhorn check (``test_sinkhorn.py``): ``python dist_worker.py OUT_DIR`` under torchrun.

Each rank takes its half of a fixed score matrix and saves its codes to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def global_scores() -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    z = torch.nn.functional.normalize(torch.randn(8, 6, generator=gen), dim=1)
    c = torch.nn.functional.normalize(torch.randn(5, 6, generator=gen), dim=1)
    return z @ c.t()


def main(out: Path) -> None:
    import torch.distributed as dist

    from selfsup.swav_unmix.sinkhorn import distributed_sinkhorn

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    scores = global_scores()[4 * rank : 4 * (rank + 1)]
    torch.save(distributed_sinkhorn(scores, epsilon=0.05, iterations=3), out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
