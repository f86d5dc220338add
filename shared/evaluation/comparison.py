"""Side-by-side results of several encoders on the same probes (the demos of :mod:`.demo`: pretrained against
random init).

``results`` maps an encoder's name to ``{"knn": result, "linear": result}``, the result dicts of
:func:`~selfsup.shared.evaluation.run_knn` / :func:`~selfsup.shared.evaluation.run_linear`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["format_comparison", "summarize", "write_comparison"]

PROBES = ("knn", "linear")


def summarize(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """``{encoder: {knn_top1, knn_top5, linear_top1, linear_top5}}``."""
    return {
        name: {f"{probe}_top{k}": r[probe][f"top{k}"] for probe in PROBES for k in (1, 5)}
        for name, r in results.items()
    }


def write_comparison(
    path: str | Path, results: Mapping[str, Any], *, seconds: Mapping[str, float], **extra: Any
) -> dict[str, Any]:
    """Write ``{summary, details, seconds, torch, threads, **extra}`` as JSON to ``path``; returns it."""
    payload = {
        "summary": summarize(results),
        "details": results,
        **extra,
        "seconds": dict(seconds),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return payload


def format_comparison(
    title: str, summary: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float]
) -> str:
    """The console table: one row per encoder with kNN and linear top-1, then the time of each stage."""
    lines = [f"\n{title}", f"{'encoder':<14}{'kNN top-1':>11}{'linear top-1':>14}"]
    lines += [
        f"{name:<14}{row['knn_top1']:>10.2f}%{row['linear_top1']:>13.2f}%" for name, row in summary.items()
    ]
    stages = [("calibrate", "calibration"), ("train", "pre-training"), ("evaluate", "evaluation")]
    times = ", ".join(f"{label} {seconds[key]:.0f} s" for key, label in stages if key in seconds)
    if "total" in seconds:
        times += f"; {seconds['total']:.0f} s in all"
    lines.append(times)
    return "\n".join(lines)
