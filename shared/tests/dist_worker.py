"""One rank of the 2-process gloo check of ``selfsup.shared.distributed`` (run by ``test_distributed.py``).

Usage: ``python dist_worker.py OUT_DIR`` with a torchrun- or Slurm-style environment. The rank joins the group
through ``init_distributed``, runs every collective on small tensors and saves what it saw to
``OUT_DIR/rank<r>.pt``; the test compares those results with single-process computations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from selfsup.shared import distributed as D

ROWS_PER_RANK = 3
SHUFFLE_ROWS_PER_RANK = 32


def shared_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch ``X`` (6x4) and loss weights ``W``; identical on every rank and in the test."""
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(2 * ROWS_PER_RANK, 4, generator=gen), torch.randn(2 * ROWS_PER_RANK, 4, generator=gen)


def rank_loss(gathered: torch.Tensor, weights: torch.Tensor, rank: int) -> torch.Tensor:
    """A loss that differs per rank, so the summed-gradient semantics of the gather are visible."""
    return (rank + 1) * (gathered.pow(3) * weights).sum()


def run(out_dir: Path) -> None:
    env = D.init_distributed(backend="gloo", device="cpu", timeout_s=60)
    rank, world = env.rank, env.world_size
    res: dict[str, object] = {
        "env": (env.rank, env.local_rank, env.world_size, str(env.device), env.backend),
        "is_distributed": env.is_distributed,
        "is_main": env.is_main,
        "get_rank": D.get_rank(),
        "get_world_size": D.get_world_size(),
        "is_main_process": D.is_main_process(),
    }

    big_x, weights = shared_inputs()
    x = big_x[rank * ROWS_PER_RANK : (rank + 1) * ROWS_PER_RANK].clone().requires_grad_(True)
    gathered = D.all_gather_with_grad(x)
    rank_loss(gathered, weights, rank).backward()
    res["with_grad"] = gathered.detach()
    res["with_grad_requires_grad"] = gathered.requires_grad
    res["grad"] = x.grad.clone()
    no_grad = D.all_gather_no_grad(x)
    res["no_grad"] = no_grad
    res["no_grad_requires_grad"] = no_grad.requires_grad

    res["mean"] = D.all_reduce_mean(torch.tensor([float(rank + 1), 10.0 * rank]))
    res["broadcast"] = D.broadcast_object({"sender": rank, "payload": [1, 2, 3]} if rank == 0 else None)
    res["sync_bn_type"] = type(D.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(2)))[0]).__name__

    # Shuffle BN on an ordered global batch: rank 0 holds 0, rank 1 holds 10; column 0 is the sample id.
    torch.manual_seed(100 + rank)  # different seeds: only the broadcast makes the permutations agree
    n = SHUFFLE_ROWS_PER_RANK
    ids = torch.arange(rank * n, (rank + 1) * n, dtype=torch.float32)
    batch = torch.stack([ids, torch.full((n,), 10.0 * rank)], dim=1)
    shuffled, idx_unshuffle = D.batch_shuffle_ddp(batch)
    res["batch"] = batch
    res["shuffled"] = shuffled
    res["idx_unshuffle"] = idx_unshuffle
    res["restored"] = D.batch_unshuffle_ddp(shuffled * 2.0, idx_unshuffle)  # an "encoder" that doubles
    bn_plain, bn_shuffled = nn.BatchNorm1d(1, momentum=1.0), nn.BatchNorm1d(1, momentum=1.0)
    bn_plain(batch[:, 1:])
    bn_shuffled(shuffled[:, 1:])
    res["bn_mean_plain"] = bn_plain.running_mean.clone()
    res["bn_mean_shuffled"] = bn_shuffled.running_mean.clone()

    # The same collectives through an explicit process group.
    group = dist.new_group(ranks=list(range(world)))
    res["group_no_grad"] = D.all_gather_no_grad(x, group=group)
    g_shuffled, g_idx = D.batch_shuffle_ddp(batch, group=group)
    res["group_restored"] = D.batch_unshuffle_ddp(g_shuffled, g_idx, group=group)
    res["group_mean"] = D.all_reduce_mean(torch.tensor([float(rank)]), group=group)

    D.barrier()
    torch.save(res, out_dir / f"rank{rank}.pt")
    D.cleanup()


if __name__ == "__main__":
    run(Path(sys.argv[1]))
