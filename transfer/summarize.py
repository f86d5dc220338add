"""Mean and standard deviation of detection metrics over repeated trials (``metrics.json`` of selfsup-transfer).

    python -m selfsup.transfer.summarize output/voc/trial*/metrics.json [--output summary.json]

MoCo reports VOC results as the mean of 5 trials (the std of AP50, AP and AP75 is about 0.2, 0.2 and 0.4), and the
INTL / CW-RGP COCO rows as mean ± std; this prints the same for our runs. The std is the sample std (n - 1).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["format_summary", "main", "summarize"]


def summarize(runs: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {metric: {"mean", "std", "n"}}}`` over the runs; a metric must be in every run, NaN ones excluded."""
    if not runs:
        raise ValueError("no runs to summarize")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task in runs[0]:
        for metric in runs[0][task]:
            values = [run.get(task, {}).get(metric) for run in runs]
            if any(v is None for v in values):
                raise ValueError(f"{task}/{metric} is missing from some runs")
            finite = [float(v) for v in values if not math.isnan(float(v))]
            std = statistics.stdev(finite) if len(finite) > 1 else float("nan")
            mean = statistics.fmean(finite) if finite else float("nan")
            out.setdefault(task, {})[metric] = {"mean": mean, "std": std, "n": len(finite)}
    return out


def format_summary(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for task, metrics in summary.items():
        cells = [f"{name} {s['mean']:.2f} ± {s['std']:.2f}" for name, s in metrics.items()]
        lines.append(f"{task} (n={next(iter(metrics.values()))['n']}): " + ", ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.transfer.summarize", description=__doc__.split("\n")[0]
    )
    parser.add_argument("metrics", nargs="+", help="metrics.json files written by selfsup-transfer")
    parser.add_argument("--output", default=None, help="also write the summary as JSON")
    args = parser.parse_args(argv)
    runs = []
    for path in map(Path, args.metrics):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            parser.error(f"metrics {path}: {err}")
    try:
        summary = summarize(runs)
    except ValueError as err:
        parser.error(str(err))
    print(format_summary(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
