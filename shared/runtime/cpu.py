"""Start-up CPU tuning every trainer applies by itself: glibc malloc thresholds, and whether bf16 is fast.

**glibc malloc.** glibc serves an allocation at or above its mmap threshold (adaptive, at most 32 MiB on
64-bit Linux) with ``mmap`` and returns it with ``munmap`` when freed, and it trims the top of the heap back
to the kernel once more than the trim threshold is free. A CPU training step frees and re-allocates its
activations every step, so every step maps fresh pages and takes a minor page fault per 4 KiB page, with the
kernel zeroing each page. Measured on a 2-core AMD EPYC (``benchmarks/bench_cpu_speed.py``, one thread,
docs/benchmarks.md): a MoCo step of ResNet-18 (CIFAR stem, width 64) at 32 px and batch 128 took 535 000 to
616 000 page faults and about 0.9 s of kernel time per 3.9 s fp32 step with glibc's defaults (23 %; 16 % on
the Xeon of bench_moco_step's runs), and 4 000 to 14 000 faults and 14-20 ms after :func:`tune_malloc`. It
makes, with ``mallopt`` from inside the process, the settings of ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647``, so a user gets them without knowing the variables. The cost: freed
memory stays in the process (the peak resident set was up to about 6 % higher in bench_moco_step's runs).

**bf16.** On a CPU with native bf16 matrix instructions (AVX512-BF16, AMX-BF16) oneDNN runs convolutions and
matrix products in bf16 far faster than in fp32: on the machine above (AVX512-BF16, no AMX) a 1024² matmul
is 4.5× faster, a ResNet-18 (CIFAR stem, batch 128, 32 px) forward and backward takes 1.25 s under bf16
autocast (1.14 s channels-last) against 2.8 s in fp32, and the whole MoCo step 1.5 s against 3.0 s. Without
those instructions bf16 is emulated and usually slower than fp32, which is why ``--precision auto`` asks
:func:`cpu_has_fast_bf16`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
from pathlib import Path

__all__ = ["M_MMAP_MAX", "M_TRIM_THRESHOLD", "MallocTuning", "cpu_flags", "cpu_has_fast_bf16", "tune_malloc"]

#: ``mallopt`` parameter numbers from glibc's ``<malloc.h>``.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: What :func:`tune_malloc` sets: (glibc parameter, value, the environment variable that sets it at start-up).
_SETTINGS = (
    ("M_MMAP_MAX", M_MMAP_MAX, 0, "MALLOC_MMAP_MAX_"),
    ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, 2**31 - 1, "MALLOC_TRIM_THRESHOLD_"),
)

#: ``/proc/cpuinfo`` flags of native bf16 matrix instructions (x86: AMX tiles, AVX-512 BF16 dot products).
FAST_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclasses.dataclass(frozen=True)
class MallocTuning:
    """The outcome of :func:`tune_malloc`: whether any ``mallopt`` call was made, and one line for the log."""

    applied: bool
    detail: str

    def __bool__(self) -> bool:
        return self.applied


def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (has ``mallopt`` and ``gnu_get_libc_version``)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows wants a name
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return None
    return libc


@functools.cache
def tune_malloc() -> MallocTuning:
    """Keep freed memory in the heap: ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``.

    The module docstring says why. Runs once per process (later calls return the first result); a no-op off
    glibc. A parameter whose environment variable (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``) is set is
    left as the user configured it; with ``MALLOC_MMAP_MAX_`` set nothing is changed at all.
    """
    libc = _glibc()
    if libc is None:
        return MallocTuning(False, "malloc tuning: not glibc, nothing to do")
    if "MALLOC_MMAP_MAX_" in os.environ:
        return MallocTuning(
            False, f"malloc tuning: MALLOC_MMAP_MAX_={os.environ['MALLOC_MMAP_MAX_']} set, left as configured"
        )
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    done, kept = [], []
    for name, param, value, env in _SETTINGS:
        if env in os.environ:
            kept.append(f"{env}={os.environ[env]}")
        elif libc.mallopt(param, value) == 1:
            done.append(f"{name}={value}")
        else:
            kept.append(f"{name} (mallopt refused)")
    detail = f"malloc tuning (glibc {version}): " + (", ".join(done) or "nothing set")
    if kept:
        detail += "; left as is: " + ", ".join(kept)
    return MallocTuning(bool(done), detail + " (--no_malloc_tuning turns this off)")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo``; empty where the file is missing (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True where the CPU has native bf16 matrix instructions (``amx_bf16`` or ``avx512_bf16``); False where
    it has none or where that is unknown (no ``/proc/cpuinfo``, e.g. macOS or Windows; non-x86 CPUs)."""
    return bool(cpu_flags(cpuinfo) & FAST_BF16_FLAGS)
