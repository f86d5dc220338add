"""Distributed training: process-group set-up, collectives, and batch normalisation across ranks.

Everything here is a no-op at world size 1 (gathers return their input, reductions return it unchanged, the
shuffle-BN pair permutes and restores locally), so models and losses run the same code path in one CPU process
and in multi-GPU training (the pattern of detectron2's ``utils/comm.py``). Import from this package:

* :mod:`.launch`: reading torchrun / Slurm environments and joining the process group;
* :mod:`.collectives`: rank queries, all-gather with and without gradient, all-reduce, broadcast,
  gathering sharded results back in order;
* :mod:`.batchnorm`: shuffle BN (MoCo) and SyncBatchNorm conversion.

Single-device emulation of per-device BN lives with the layers, in ``selfsup.shared.models.split_batchnorm``.
"""

from selfsup.shared.distributed.batchnorm import (
    batch_shuffle_ddp,
    batch_unshuffle_ddp,
    convert_sync_batchnorm,
    sync_batchnorm_on,
)
from selfsup.shared.distributed.collectives import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup,
    get_rank,
    get_world_size,
    is_main_process,
)
from selfsup.shared.distributed.launch import (
    DEFAULT_MASTER_PORT,
    TORCHRUN_VARS,
    DistEnv,
    LaunchInfo,
    detect_launch,
    init_distributed,
    parse_slurm_nodelist,
)

__all__ = [
    "DEFAULT_MASTER_PORT",
    "TORCHRUN_VARS",
    "DistEnv",
    "LaunchInfo",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_reduce_mean",
    "barrier",
    "batch_shuffle_ddp",
    "batch_unshuffle_ddp",
    "broadcast_object",
    "cleanup",
    "convert_sync_batchnorm",
    "detect_launch",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "parse_slurm_nodelist",
    "sync_batchnorm_on",
]
