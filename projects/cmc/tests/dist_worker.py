"""One rank of the 2-process gloo check of ``selfsup.cmc.contrast`` (run by ``test_contrast.py`` through the root
conftest's ``torchrun`` fixture).

Usage: ``torchrun --nproc_per_node 2 dist_worker.py OUT_DIR``. Each rank builds the same contrast modules (same
seed), takes its half of a fixed global batch through one step and saves what it holds to ``OUT_DIR/rank<r>.pt``;
the test compares those with one process on the concatenated batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

N_DATA, DIM, K, ROWS_PER_RANK, QUEUE = 10, 4, 3, 3, 5
GLOBAL_INDEX = [1, 3, 5, 3, 7, 1]  # duplicates across ranks: rank 1's rows come later in rank order


def global_batch() -> dict[str, torch.Tensor]:
    """Features, instance ids and negatives of the global batch (identical on every rank and in the test)."""
    gen = torch.Generator().manual_seed(21)
    n = 2 * ROWS_PER_RANK
    idx = torch.randint(0, N_DATA, (n, K + 1), generator=gen)
    idx[:, 0] = torch.tensor(GLOBAL_INDEX)
    return {
        "l": F.normalize(torch.randn(n, DIM, generator=gen), dim=1),
        "ab": F.normalize(torch.randn(n, DIM, generator=gen), dim=1),
        "index": torch.tensor(GLOBAL_INDEX),
        "idx": idx,
        "q": F.normalize(torch.randn(n, DIM, generator=gen), dim=1),
        "k": F.normalize(torch.randn(n, DIM, generator=gen), dim=1),
    }


def build() -> dict[str, torch.nn.Module]:
    from selfsup.cmc.contrast import CMCContrast, InsDisContrast, MoCoContrast

    return {
        "cmc": CMCContrast(
            num_data=N_DATA, dim=DIM, num_negatives=K, generator=torch.Generator().manual_seed(0)
        ),
        "insdis": InsDisContrast(
            num_data=N_DATA, dim=DIM, num_negatives=K, generator=torch.Generator().manual_seed(1)
        ),
        "moco": MoCoContrast(
            num_data=N_DATA, dim=DIM, queue_size=QUEUE, generator=torch.Generator().manual_seed(2)
        ),
    }


def step(
    modules: dict[str, torch.nn.Module], batch: dict[str, torch.Tensor], rows: slice
) -> dict[str, object]:
    """One NCE-mode step of every module on ``batch[rows]``; returns the outputs and the modules' states."""
    b = {name: t[rows] for name, t in batch.items()}
    out_l, out_ab = modules["cmc"](b["l"], b["ab"], b["index"], idx=b["idx"])
    out_ins = modules["insdis"](b["l"], b["index"], idx=b["idx"])
    out_moco = modules["moco"](b["q"], b["k"])
    return {
        "out_l": out_l.detach(),
        "out_ab": out_ab.detach(),
        "out_ins": out_ins.detach(),
        "out_moco": out_moco.detach(),
        **{f"{name}.{key}": v.clone() for name, m in modules.items() for key, v in m.state_dict().items()},
    }


def run(out_dir: Path) -> None:
    from selfsup.shared import distributed as D

    env = D.init_distributed(backend="gloo", device="cpu", timeout_s=60)
    rows = slice(env.rank * ROWS_PER_RANK, (env.rank + 1) * ROWS_PER_RANK)
    result = step(build(), global_batch(), rows)
    result["world"] = torch.tensor(env.world_size)
    D.barrier()
    torch.save(result, out_dir / f"rank{env.rank}.pt")
    D.cleanup()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
