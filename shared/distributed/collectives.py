"""Rank queries and collectives: all-gather with and without gradient, mean and sum all-reduce, object
broadcast, and the gather that undoes ``rank::world`` sharding (sharded feature extraction).

Every function returns its input (or the trivial answer) at world size 1, so the same code runs in one CPU
process and under torchrun. :func:`comm_device` picks where tensors travel (the current CUDA device under NCCL,
else the CPU); :func:`all_reduce_sum`, :func:`on_every_rank` and :func:`gather_in_order` return CPU tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank(group: Any = None) -> int:
    return dist.get_rank(group) if _initialized() else 0


def get_world_size(group: Any = None) -> int:
    return dist.get_world_size(group) if _initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Synchronise all ranks; returns at once at world size 1."""
    if get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if _initialized():
        dist.destroy_process_group()


def all_gather_no_grad(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (rank order); the result carries no gradient.

    Every rank must pass the same shape. At world size 1 this is ``t.detach()`` (no copy).
    """
    world = get_world_size(group)
    if world == 1:
        return t.detach()
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t, group=group)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and keeps this rank's slice.

    If every rank computes a loss ``L_r`` on the gathered batch ``X = [x_0; …; x_{W-1}]``, the gradient that
    reaches ``x_r`` is ``∂(Σ_s L_s)/∂x_r`` — the gradient of the summed loss, as INTL's ``FullGatherLayer``
    computes it.
    """

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.size = t.shape[0]
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, t, group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size], None


def all_gather_with_grad(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0, differentiably (see :class:`_GatherWithGrad`).

    Every rank must pass the same shape. At world size 1 returns ``t`` itself.
    """
    if get_world_size(group) == 1:
        return t
    return _GatherWithGrad.apply(t, group)


def all_reduce_mean(t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Mean of ``t`` over ranks, returned as a new tensor (``t`` is left unchanged); ``t`` at world size 1."""
    world = get_world_size(group)
    if world == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out / world


def _group_src(group: Any) -> int:
    """Global rank of rank 0 of ``group`` (``broadcast`` takes global ranks)."""
    return 0 if group is None else dist.get_global_rank(group, 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (pickled); ``obj`` itself at world size 1."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


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
