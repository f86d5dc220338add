"""Loss and accuracy plots (matplotlib, the ``plot`` extra), drawn off-screen to PNG files.

matplotlib is optional: :func:`plot_curves` raises ``ImportError`` without it, and trainers call
:func:`plot_curves_if_available`, which skips the PNG with one warning so that a finished run never fails
for want of a plot. The warning is given once per PNG file (a run redraws its plot many times), so whether a
run warns never depends on what ran before it in the same process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

#: PNG files whose missing-matplotlib warning was given
_warned_missing: set[Path] = set()


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'selfsup[plot]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """One line per named ``(x, y)`` curve, saved to ``out_path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), label=name, linewidth=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def plot_curves_if_available(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_path: str | Path,
    *,
    logger: logging.Logger,
    **labels: str,
) -> Path | None:
    """:func:`plot_curves`, or ``None`` with one warning per ``out_path`` when matplotlib is not installed."""
    try:
        return plot_curves(curves, out_path, **labels)
    except ImportError as err:
        path = Path(out_path).resolve()
        if path not in _warned_missing:
            logger.warning("%s; %s is not drawn (the run is not affected)", err, out_path)
            _warned_missing.add(path)
        return None


def plot_log_column(
    csv_path: str | Path,
    png_path: str | Path,
    *,
    column: str = "loss",
    title: str = "",
    ylabel: str | None = None,
    logger: logging.Logger,
) -> Path | None:
    """Redraw ``png_path`` from one column of a run's CSV log against ``global_step`` (skipped with one
    warning when matplotlib is missing, nothing when the log is empty)."""
    from selfsup.shared.runtime.logger import read_csv_log

    rows = [row for row in read_csv_log(csv_path) if column in row]
    if not rows:
        return None
    curve = ([row["global_step"] for row in rows], [row[column] for row in rows])
    return plot_curves_if_available(
        {column: curve}, png_path, logger=logger, xlabel="iteration", ylabel=ylabel or column, title=title
    )
