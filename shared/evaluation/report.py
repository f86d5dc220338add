"""``selfsup-eval report``: a Markdown table and PNG plots from result files and training logs.

Outputs in ``--output_dir``:

* ``report.md``: one row per result (protocol, preset, dataset, checkpoint and its pre-training epoch, path,
  top-1, top-5, epoch of the reported value, weights hash);
* ``accuracy_vs_epoch.png``: test top-1 against linear/fine-tuning epoch, one line per result, the legend
  giving each line's maximum (the unofficial MoCo's ``visualize.py`` plot);
* ``accuracy_vs_checkpoint.png``: reported top-1 against the checkpoints' pre-training epoch, one line per
  (protocol, preset, dataset), when the results carry checkpoint epochs (a series of checkpoints of one run);
* ``loss.png``: training loss against global step for each CSV log (columns ``epoch, global_step, loss, lr,
  images_per_s`` as written by the selfsup trainers).

The plots need matplotlib (the ``plot`` extra); without it the table is still written and each PNG is skipped
with one warning.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.shared.evaluation.results import load_results
from selfsup.shared.runtime.plotting import plot_curves_if_available

__all__ = ["checkpoint_label", "read_loss_log", "render_markdown", "write_report"]

logger = logging.getLogger(__name__)

_COLUMNS = (
    "protocol",
    "preset",
    "dataset",
    "checkpoint",
    "ckpt epoch",
    "path",
    "top-1",
    "top-5",
    "at epoch",
    "weights",
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def checkpoint_label(result: dict[str, Any]) -> str:
    """Short name of the evaluated checkpoint: its file name, else ``module``."""
    ckpt = result.get("checkpoint") or {}
    path = ckpt.get("path")
    return os.path.basename(str(path)) if path else "module"


def render_markdown(results: Sequence[dict[str, Any]], title: str = "Evaluation results") -> str:
    """The results as a Markdown table (accuracies in percent)."""
    lines = [f"# {title}", "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for result in results:
        ckpt = result.get("checkpoint") or {}
        dataset = result.get("dataset") or {}
        cells = [
            result.get("protocol"),
            result.get("preset"),
            dataset.get("name") if isinstance(dataset, dict) else dataset,
            checkpoint_label(result),
            ckpt.get("epoch"),
            result.get("path"),
            result.get("top1"),
            result.get("top5"),
            result.get("best_epoch"),
            (ckpt.get("weights_sha256") or "")[:12] or None,
        ]
        lines.append("| " + " | ".join(_fmt(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def read_loss_log(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """``(global_step, loss)`` columns of a trainer CSV log."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--logs: {file} does not exist")
    steps: list[float] = []
    losses: list[float] = []
    with open(file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"global_step", "loss"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"--logs: {file} lacks column(s) {sorted(missing)}; expected a trainer log with "
                f"epoch, global_step, loss, lr, images_per_s (found {reader.fieldnames})"
            )
        for row in reader:
            if row["loss"] not in ("", None) and row["global_step"] not in ("", None):
                steps.append(float(row["global_step"]))
                losses.append(float(row["loss"]))
    return steps, losses


def _unique(label: str, taken: dict[str, Any]) -> str:
    name, n = label, 2
    while name in taken:
        name, n = f"{label} #{n}", n + 1
    return name


def _accuracy_curves(results: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for result in results:
        points = [(e["epoch"], e["top1"]) for e in result.get("curve") or [] if e.get("top1") is not None]
        if not points:
            continue
        best = max(acc for _, acc in points)
        label = _unique(f"{checkpoint_label(result)} {result.get('preset')} (max {best:.2f})", curves)
        curves[label] = ([float(x) for x, _ in points], [float(y) for _, y in points])
    return curves


def _checkpoint_series(results: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for result in results:
        epoch = (result.get("checkpoint") or {}).get("epoch")
        if epoch is None or result.get("top1") is None:
            continue
        dataset = result.get("dataset") or {}
        key = f"{result.get('protocol')} {result.get('preset')} {dataset.get('name', '')}".strip()
        series.setdefault(key, []).append((float(epoch), float(result["top1"])))
    return {
        key: ([x for x, _ in sorted(points)], [y for _, y in sorted(points)])
        for key, points in series.items()
    }


def write_report(
    result_paths: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    logs: Sequence[str | os.PathLike[str]] = (),
    title: str = "Evaluation results",
) -> dict[str, Path]:
    """Write the report files (module docstring); returns the paths written by name (a plot skipped for want
    of matplotlib is absent)."""
    results = load_results(result_paths) if result_paths else []
    if not results and not logs:
        raise ValueError("selfsup-eval report needs --results files and/or --logs CSV files")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    plots: dict[str, Path | None] = {}  # None: skipped (no matplotlib)
    if results:
        table = out / "report.md"
        table.write_text(render_markdown(results, title), encoding="utf-8")
        written["markdown"] = table
        curves = _accuracy_curves(results)
        if curves:
            plots["accuracy_vs_epoch"] = plot_curves_if_available(
                curves,
                out / "accuracy_vs_epoch.png",
                logger=logger,
                xlabel="epoch",
                ylabel="test top-1 (%)",
                title=title,
            )
        series = _checkpoint_series(results)
        if series:
            plots["accuracy_vs_checkpoint"] = plot_curves_if_available(
                series,
                out / "accuracy_vs_checkpoint.png",
                logger=logger,
                xlabel="pre-training epoch of the checkpoint",
                ylabel="top-1 (%)",
                title=title,
            )
    if logs:
        losses: dict[str, tuple[list[float], list[float]]] = {}
        for log in logs:
            path = Path(log)
            label = _unique(f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem, losses)
            losses[label] = read_loss_log(path)
        plots["loss"] = plot_curves_if_available(
            losses, out / "loss.png", logger=logger, xlabel="iteration", ylabel="loss", title="loss"
        )
    written.update({name: path for name, path in plots.items() if path is not None})
    return written
