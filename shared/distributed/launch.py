"""Process-group set-up from the launcher's environment: torchrun, Slurm ``srun`` or a single process.

Launchers understood by :func:`init_distributed`, in this order:

* ``torchrun`` (or any launcher that exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``);
* Slurm ``srun`` with ``SLURM_NTASKS > 1`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master
  is the first host of ``SLURM_NODELIST`` unless ``MASTER_ADDR`` is set; the port is ``MASTER_PORT`` or
  derived from ``SLURM_JOB_ID``);
* otherwise a single process, no process group.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

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
