"""Side-by-side results of several encoders on the same probes (the demos: pretrained against random init).

``results`` maps an encoder's name to ``{"knn": result, "linear": result}``, the result dicts of
:func:`~selfsup.shared.evaluation.run_knn` / :func:`~selfsup.shared.evaluation.run_linear`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["comparison_demo_parser", "format_comparison", "summarize", "write_comparison"]

PROBES = ("knn", "linear")


def comparison_demo_parser(
    prog: str,
    description: str,
    *,
    epochs: int,
    output_help: str = "folder for results.json and run/",
    threads: tuple[int, str] | None = None,
) -> argparse.ArgumentParser:
    """The flags every pretrained-against-random-init demo takes: ``--output``, ``--epochs``, ``--seed``,
    ``--device`` and, with ``threads=(default, help)``, ``--threads``. Demos add their own flags after these."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--output", default="demo_output", help=output_help)
    parser.add_argument(
        "--epochs",
        type=int,
        default=epochs,
        help=f"pre-training epochs on the 1347 digits (default {epochs})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of pre-training, evaluation and the random init"
    )
    parser.add_argument("--device", default="cpu", help="device for training and evaluation")
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads[0], help=threads[1])
    return parser


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
    """The console table: one row per encoder with kNN and linear top-1, then the times."""
    lines = [f"\n{title}", f"{'encoder':<14}{'kNN top-1':>11}{'linear top-1':>14}"]
    lines += [
        f"{name:<14}{row['knn_top1']:>10.2f}%{row['linear_top1']:>13.2f}%" for name, row in summary.items()
    ]
    lines.append(f"pre-training {seconds['train']:.0f} s, evaluation {seconds['evaluate']:.0f} s")
    return "\n".join(lines)
