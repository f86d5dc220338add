"""Loss and accuracy plots (matplotlib, the ``plot`` extra), drawn off-screen to PNG files.

matplotlib is optional: :func:`plot_curves` raises ``ImportError`` without it, and trainers call
:func:`plot_curves_if_available`, which skips the PNG with one warning so that a finished run never fails
for want of a plot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

_warned_missing = False


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
    """:func:`plot_curves`, or ``None`` with a one-time warning when matplotlib is not installed."""
    global _warned_missing
    try:
        return plot_curves(curves, out_path, **labels)
    except ImportError as err:
        if not _warned_missing:
            logger.warning("%s; %s is not drawn (the run is not affected)", err, out_path)
            _warned_missing = True
        return None
