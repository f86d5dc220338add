"""Process-group set-up and the collective operations every project uses; a no-op at world size 1.

Every function here works unchanged in one CPU process: at world size 1 the gathers return their input,
reductions return it unchanged and the shuffle-BN pair permutes and restores locally, so models and losses
run the same code path in tests and in multi-GPU training (the pattern of detectron2's ``utils/comm.py``).

Launchers understood by :func:`init_distributed`, in this order:

* ``torchrun`` (or any launcher that exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``);
* Slurm ``srun`` with ``SLURM_NTASKS > 1`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master
  is the first host of ``SLURM_NODELIST`` unless ``MASTER_ADDR`` is set; the port is ``MASTER_PORT`` or
  derived from ``SLURM_JOB_ID``);
* otherwise a single process, no process group.

Shuffle BN (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
arXiv:1911.05722, §3.3) is implemented with the official MoCo semantics: the key batch is gathered from all
ranks, rank 0 draws one permutation of the global batch and broadcasts it, each rank encodes its slice of the
shuffled batch (so its BN statistics mix samples of other ranks), and the inverse permutation restores the
order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
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
]

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (returned by :func:`init_distributed`)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class LaunchInfo:
    """Rank layout and rendezvous address read from the environment (see :func:`detect_launch`)."""

    source: str  # "torchrun", "slurm" or "single"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None


# ----------------------------------------------------------------------------------------------- launch


def _int_env(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``[...]``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in Slurm node list {text!r}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in Slurm node list {text!r}")
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_ranges(spec: str, whole: str) -> list[str]:
    """Expand the inside of one bracket, e.g. ``01-03,07`` -> ``["01", "02", "03", "07"]`` (zero padding
    kept)."""
    values: list[str] = []
    for item in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if match is None:
            raise ValueError(f"cannot parse range {item!r} in Slurm node list {whole!r}")
        lo, hi = match.group(1), match.group(2) or match.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in Slurm node list {whole!r}")
        width = len(lo)
        values.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return values


def _expand_host(pattern: str, whole: str) -> list[str]:
    match = re.search(r"\[([^\[\]]*)\]", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        h for value in _expand_ranges(match.group(1), whole) for h in _expand_host(head + value + tail, whole)
    ]


def parse_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand a Slurm host list such as ``node[01-04,07],gpu-a[1-2]-x`` into host names, in order.

    Bracket groups may contain comma-separated numbers and ``lo-hi`` ranges; zero padding is preserved and
    several bracket groups in one name expand as a Cartesian product (what ``scontrol show hostnames``
    prints).
    """
    hosts = [h for part in _split_top_level(nodelist.strip()) for h in _expand_host(part, nodelist)]
    if not hosts:
        raise ValueError(f"empty Slurm node list {nodelist!r} (SLURM_NODELIST / SLURM_JOB_NODELIST)")
    return hosts


def _first_slurm_host(nodelist: str) -> str:
    try:
        return parse_slurm_nodelist(nodelist)[0]
    except ValueError:
        if shutil.which("scontrol") is None:
            raise
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        if not out:
            raise ValueError(f"`scontrol show hostnames {nodelist}` printed no host") from None
        return out[0]


def detect_launch(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read the launcher's variables (``os.environ`` by default) without touching any process group.

    Raises ``ValueError`` when a torchrun rank variable (``RANK``, ``WORLD_SIZE`` or ``LOCAL_RANK``) is set
    but not all five torchrun variables are. ``MASTER_ADDR``/``MASTER_PORT`` on their own are not a torchrun
    launch; they override the Slurm defaults.
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        missing = [name for name in TORCHRUN_VARS if name not in env]
        if missing:
            present = [name for name in TORCHRUN_VARS if name in env]
            raise ValueError(
                f"incomplete torchrun environment: {', '.join(present)} set but {', '.join(missing)} "
                f"missing; launch with torchrun or export all of {', '.join(TORCHRUN_VARS)}"
            )
        info = LaunchInfo(
            "torchrun",
            rank=_int_env(env, "RANK"),
            local_rank=_int_env(env, "LOCAL_RANK"),
            world_size=_int_env(env, "WORLD_SIZE"),
            master_addr=env["MASTER_ADDR"],
            master_port=_int_env(env, "MASTER_PORT"),
        )
    elif "SLURM_NTASKS" in env and _int_env(env, "SLURM_NTASKS") > 1:
        for name in ("SLURM_PROCID", "SLURM_LOCALID"):
            if name not in env:
                raise ValueError(f"SLURM_NTASKS > 1 but {name} is not set; launch the job with srun")
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        else:
            nodelist = env.get("SLURM_NODELIST", env.get("SLURM_JOB_NODELIST"))
            if not nodelist:
                raise ValueError("SLURM_NTASKS > 1 but neither MASTER_ADDR nor SLURM_NODELIST is set")
            addr = _first_slurm_host(nodelist)
        if "MASTER_PORT" in env:
            port = _int_env(env, "MASTER_PORT")
        elif env.get("SLURM_JOB_ID", "").isdigit():
            port = 20000 + int(env["SLURM_JOB_ID"]) % 20000  # one port per job, several jobs per node
        else:
            port = DEFAULT_MASTER_PORT
        info = LaunchInfo(
            "slurm",
            rank=_int_env(env, "SLURM_PROCID"),
            local_rank=_int_env(env, "SLURM_LOCALID"),
            world_size=_int_env(env, "SLURM_NTASKS"),
            master_addr=addr,
            master_port=port,
        )
    else:
        return LaunchInfo("single")
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise ValueError(
            f"inconsistent {info.source} environment: rank {info.rank}, local rank {info.local_rank}, "
            f"world size {info.world_size}"
        )
    return info


def init_distributed(backend: str | None = None, device: str | None = None, timeout_s: int = 1800) -> DistEnv:
    """Join the process group described by the environment (see the module docstring) and pick the device.

    ``device`` defaults to ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; a CUDA device becomes
    the current device. ``backend`` defaults to ``nccl`` for a CUDA device and ``gloo`` otherwise. At world
    size 1 no process group is created and ``backend`` is ``None``. If a process group already exists it is
    reused.
    """
    info = detect_launch()
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {info.local_rank} (LOCAL_RANK / SLURM_LOCALID) but only "
                f"{torch.cuda.device_count()} CUDA devices are visible; start at most one process per GPU "
                "or pass device="
            )
        dev = torch.device("cuda", info.local_rank)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), info.local_rank, dist.get_world_size(), dev, dist.get_backend())
    if info.world_size == 1:
        return DistEnv(0, info.local_rank, 1, dev, None)
    if not dist.is_available():
        raise RuntimeError(
            "this torch build has no torch.distributed, but the environment asks for several ranks"
        )
    chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
    host = f"[{info.master_addr}]" if info.master_addr and ":" in info.master_addr else info.master_addr
    dist.init_process_group(
        backend=chosen,
        init_method=f"tcp://{host}:{info.master_port}",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return DistEnv(info.rank, info.local_rank, info.world_size, dev, chosen)


# ------------------------------------------------------------------------------------------ basic queries


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


# ------------------------------------------------------------------------------------------- collectives


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


# ------------------------------------------------------------------------------------------- shuffle BN


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
