"""What every benchmark records about the machine it ran on, and how results are stored.

Imported by the ``bench_*.py`` scripts of this folder (run as ``python benchmarks/bench_*.py``, so this
folder is on ``sys.path``). Results live in JSON files of the form ``{"benchmark": NAME, "runs": [...]}``;
writing a run replaces the stored run with the same key and keeps the others, so several configurations (and
the CPU and GPU machines) accumulate in ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MALLOC_TUNED_ENV",
    "device_description",
    "host_slug",
    "machine_info",
    "malloc_setting",
    "store_runs",
]

#: glibc malloc settings that keep freed large blocks in the heap instead of returning them with munmap
#: (see docs/benchmarks.md, "glibc malloc on CPU").
MALLOC_TUNED_ENV: dict[str, str] = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}

#: CPU flags worth naming because they decide which kernels oneDNN / the ATen CPU backend use.
_NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> dict[str, str]:
    """The first processor block of ``/proc/cpuinfo`` (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _hypervisor(flags: Sequence[str]) -> str | None:
    if "hypervisor" not in flags:
        return None
    try:
        return Path("/sys/hypervisor/type").read_text().strip() or "yes"
    except OSError:
        return "yes"


def malloc_setting(environ: dict[str, str] | None = None) -> str:
    """``"glibc default"`` or the ``MALLOC_*`` variables that are set, e.g. ``"MALLOC_MMAP_MAX_=0 ..."``."""
    env = os.environ if environ is None else environ
    set_vars = [f"{name}={env[name]}" for name in sorted(env) if name.startswith("MALLOC_")]
    return " ".join(set_vars) if set_vars else "glibc default"


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """CPU model, core counts, library versions, torch threads, malloc settings and (on CUDA) the GPU."""
    cpu = _cpuinfo()
    flags = cpu.get("flags", "").split()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu.get("model name") or platform.processor() or "unknown",
        "cpu_family_model_stepping": "/".join(cpu.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "cpu_flags": [flag for flag in _NOTABLE_FLAGS if flag in flags],
        "hypervisor": _hypervisor(flags),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "glibc": " ".join(platform.libc_ver()).strip() or None,
        "malloc": malloc_setting(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def device_description(info: dict[str, Any], device_type: str) -> str:
    """One line naming the machine, e.g. ``"CPU: Intel(R) Xeon(R) Processor, 2 cores"``."""
    cpu = f"{info['cpu_model']}, {info['cpus_usable']} cores"
    if device_type == "cuda" and info.get("gpu"):
        return f"GPU: {info['gpu']} ({info['gpu_memory_gib']} GiB); host CPU: {cpu}"
    return f"CPU: {cpu}"


def host_slug() -> str:
    """The host name reduced to ``[A-Za-z0-9_.-]`` for use in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node()).strip("-") or "host"


def store_runs(path: Path, benchmark: str, runs: Sequence[dict[str, Any]], key: Sequence[str]) -> None:
    """Write ``runs`` into the JSON file ``path``, replacing stored runs whose ``key`` fields are equal."""
    stored: list[dict[str, Any]] = []
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("benchmark") != benchmark:
            raise ValueError(
                f"{path} holds results of benchmark {data.get('benchmark')!r}, not {benchmark!r}"
            )
        stored = data.get("runs", [])
    new_keys = {tuple(run[k] for k in key) for run in runs}
    kept = [run for run in stored if tuple(run.get(k) for k in key) not in new_keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    payload = {
        "benchmark": benchmark,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [*kept, *runs],
    }
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
