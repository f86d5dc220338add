"""Batch normalisation across ranks: MoCo's shuffle BN and SyncBatchNorm conversion.

Shuffle BN (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
arXiv:1911.05722, §3.3) is implemented with the official MoCo semantics: the key batch is gathered from all
ranks, rank 0 draws one permutation of the global batch and broadcasts it, each rank encodes its slice of the
shuffled batch (so its BN statistics mix samples of other ranks), and the inverse permutation restores the
order.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from selfsup.shared.distributed.collectives import _group_src, all_gather_no_grad, get_rank, get_world_size


def batch_shuffle_ddp(x: torch.Tensor, group: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the global batch across ranks; return this rank's shuffled slice and ``idx_unshuffle``.

    With ``X`` the gathered batch (``W·n`` samples) and π a permutation drawn on rank 0 and broadcast, rank
    ``r`` gets ``X[π[r·n:(r+1)·n]]``; ``idx_unshuffle = argsort(π)`` is the same on every rank. At world size
    1 this is a local ``x[randperm(n)]``. The result carries no gradient (as in official MoCo, it is the key
    input).
    """
    world = get_world_size(group)
    n = x.shape[0]
    x_all = all_gather_no_grad(x, group)
    idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
    if world > 1:
        dist.broadcast(idx_shuffle, src=_group_src(group), group=group)
    idx_unshuffle = torch.argsort(idx_shuffle)
    rank = get_rank(group)
    idx_this = idx_shuffle.view(world, n)[rank]
    return x_all[idx_this], idx_unshuffle


def batch_unshuffle_ddp(x: torch.Tensor, idx_unshuffle: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Undo :func:`batch_shuffle_ddp`: gather the shuffled outputs and return this rank's slice in original
    order."""
    world = get_world_size(group)
    n = x.shape[0]
    if idx_unshuffle.numel() != world * n:
        raise ValueError(
            f"idx_unshuffle has {idx_unshuffle.numel()} entries but the gathered batch has {world} x {n}; "
            "pass the index returned by batch_shuffle_ddp for this batch"
        )
    x_all = all_gather_no_grad(x, group)
    idx_this = idx_unshuffle.view(world, n)[get_rank(group)]
    return x_all[idx_this]


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` when running distributed, else ``module`` unchanged."""
    if get_world_size() > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return module


def sync_batchnorm_on(
    module: nn.Module, device: torch.device, log: logging.Logger, process_group: Any = None
) -> nn.Module:
    """SyncBN for a distributed run on ``device``: :func:`convert_sync_batchnorm` on GPUs; unchanged on CPU,
    where torch has no SyncBN kernel (each rank then normalises its own batch; ``log`` warns once)."""
    if get_world_size() > 1 and device.type == "cpu":
        log.warning("SyncBN needs a GPU; on CPU every rank's BatchNorm uses its own batch statistics")
        return module
    return convert_sync_batchnorm(module, process_group)
