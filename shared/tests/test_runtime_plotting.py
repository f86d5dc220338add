"""Plots are optional (the ``plot`` extra): without matplotlib a run skips each PNG with one warning, whatever
ran before it in the same process; with it, the PNG is drawn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from selfsup.shared.runtime.plotting import plot_curves, plot_curves_if_available, plot_log_column

CURVES = {"loss": ([1.0, 2.0, 3.0], [2.0, 1.5, 1.2])}
LABELS = {"xlabel": "iteration", "ylabel": "loss"}


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


def test_without_matplotlib_plot_curves_says_how_to_install_it(no_matplotlib, tmp_path: Path):
    with pytest.raises(ImportError, match=r"selfsup\[plot\]"):
        plot_curves(CURVES, tmp_path / "loss.png", **LABELS)
    assert not (tmp_path / "loss.png").exists()


def test_without_matplotlib_each_png_warns_once_per_file(no_matplotlib, tmp_path: Path, caplog):
    log = logging.getLogger("selfsup.tests.plotting")
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):  # a run redraws its plot many times
            assert plot_curves_if_available(CURVES, tmp_path / "a.png", logger=log, **LABELS) is None
        assert plot_curves_if_available(CURVES, tmp_path / "b.png", logger=log, **LABELS) is None
    warned = [record.getMessage() for record in caplog.records if record.name == log.name]
    assert len(warned) == 2 and "a.png" in warned[0] and "b.png" in warned[1], warned
    assert all("selfsup[plot]" in message and "not affected" in message for message in warned)


def test_a_log_column_is_plotted_with_the_plot_extra(tmp_path: Path):
    pytest.importorskip(
        "matplotlib", reason="drawing a PNG needs the plot extra: pip install 'selfsup[plot]'"
    )
    log_csv = tmp_path / "log.csv"
    log_csv.write_text("global_step,epoch,loss\n1,0,2.0\n2,0,1.5\n")
    png = plot_log_column(log_csv, tmp_path / "loss.png", logger=logging.getLogger("selfsup.tests.plotting"))
    assert png == tmp_path / "loss.png" and png.stat().st_size > 0
