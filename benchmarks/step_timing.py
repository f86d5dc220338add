"""Timing and table helpers shared by the step-against-bound benchmarks (``bench_swav_step.py``,
``bench_intl_step.py``): laps inside a step, one timed run with its resource usage, per-kind summaries, paired
ratios, and the Markdown cells of the tables. Imported like ``machine`` (this folder is on ``sys.path``)."""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RECORD_FIELDS",
    "Laps",
    "kind_summary",
    "load_averages",
    "load_runs",
    "markdown_header",
    "markdown_row",
    "median",
    "milliseconds",
    "no_laps",
    "paired_ratio",
    "quartiles",
    "resolve_device",
    "threads_suffix",
    "timed",
]

#: The fields of a timed step record; every other field is a named part (a lap).
RECORD_FIELDS = ("round", "seconds", "cpu_seconds", "kernel_seconds", "minor_faults", "preemptions")


def resolve_device(name: str, script: str) -> torch.device:
    """``--device``: ``auto`` picks CUDA when torch sees it; an absent CUDA device stops ``script``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{script}: --device cuda but torch sees no CUDA device")
    return torch.device(name)


def threads_suffix(device: torch.device) -> str:
    return f" {torch.get_num_threads()}thr" if device.type == "cpu" else ""


class Laps:
    """Wall-clock laps between named points (accumulated per name); synchronises CUDA when ``sync``."""

    def __init__(self, device: torch.device, sync: bool) -> None:
        self.sync = sync and device.type == "cuda"
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self._last
        self._last = now


def no_laps(name: str) -> None:
    """A ``Laps`` stand-in that records nothing."""
    del name


def timed(device: torch.device, run: Callable[[], Any]) -> dict[str, float]:
    """Run ``run`` once; wall and process CPU time, kernel time, minor faults and involuntary switches."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start, start = time.process_time(), time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu_elapsed,
        "kernel_seconds": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "preemptions": after.ru_nivcsw - before.ru_nivcsw,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def kind_summary(records: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """Medians, extremes and quartiles of one kind's step records, images/s, and the median of each part."""
    seconds = [r["seconds"] for r in records]
    lo, hi = quartiles(seconds)
    parts = [k for k in records[0] if k not in RECORD_FIELDS]
    return {
        "steps": len(seconds),
        "step_s_median": median(seconds),
        "step_s_min": min(seconds),
        "step_s_q1": lo,
        "step_s_q3": hi,
        "step_cpu_s_median": median([r["cpu_seconds"] for r in records]),
        "step_kernel_s_median": median([r["kernel_seconds"] for r in records]),
        "minor_faults_per_step": median([float(r["minor_faults"]) for r in records]),
        "preemptions_per_step": median([float(r["preemptions"]) for r in records]),
        "images_per_s": batch_size / median(seconds),
        "step_s_all": seconds,
        "parts_s_median": {name: median([r[name] for r in records]) for name in parts},
    }


def paired_ratio(records: dict[str, list[dict[str, Any]]], num: str, den: str) -> float:
    """Median over rounds of ``num`` step time / ``den`` step time (steps of one round ran back to back)."""
    by_round = {r["round"]: r["seconds"] for r in records[num]}
    return median([by_round[r["round"]] / r["seconds"] for r in records[den] if r["round"] in by_round])


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("runs", [])


def load_averages(before_after: list[list[float]]) -> str:
    """The 1-minute load averages before and after, e.g. ``1.2 / 1.9``."""
    before, after = before_after
    return f"{before[0]:.1f} / {after[0]:.1f}"


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_header(columns: tuple[str, ...] | list[str]) -> str:
    return markdown_row(list(columns)) + "\n" + "|---" * len(columns) + "|"


def milliseconds(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{1e3 * value:.{digits}f}"
