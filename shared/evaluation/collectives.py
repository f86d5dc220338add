"""The few collectives the evaluation harness needs on top of :mod:`selfsup.shared.distributed`.

All are no-ops at world size 1. Tensors travel on the backend's device (CUDA for NCCL, CPU for gloo) and come
back on the CPU.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from selfsup.shared.distributed import get_world_size

__all__ = ["all_reduce_sum", "comm_device", "gather_in_order", "on_every_rank"]


def comm_device() -> torch.device:
    """The device collectives must use: the current CUDA device under NCCL, else the CPU."""
    if get_world_size() > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (a new CPU tensor); ``values`` itself at world size 1."""
    if get_world_size() == 1:
        return values
    out = values.detach().to(comm_device()).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def on_every_rank(flag: bool) -> bool:
    """True when ``flag`` holds on every rank."""
    if get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def gather_in_order(local: torch.Tensor, total: int) -> torch.Tensor:
    """Inverse of the ``rank::world`` sharding of ``total`` items: all-gather the shards, interleave."""
    world = get_world_size()
    if world == 1:
        return local
    per_rank = -(-total // world)
    device = comm_device()
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for rank, part in enumerate(parts):
        count = len(range(rank, total, world))
        out[rank::world] = part[:count].cpu()
    return out
