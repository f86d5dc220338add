"""Training logs: console lines, a CSV file and TensorBoard scalars, written by rank 0 only.

On resume, ``MetricLogger(..., resume_step=k)`` drops CSV rows after step ``k`` that a killed run wrote
past its last checkpoint, so the log matches the weights it continues from.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the record (a redirected or captured stdout too),
    not to the stream that was current when the logger was first made."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def get_logger(name: str = "selfsup", is_main: bool = True) -> logging.Logger:
    """A console logger; non-main ranks only print warnings and errors. The ``selfsup`` package logger (the
    library's own warnings, such as a skipped corrupt image, in the main process and in forked loader workers)
    gets the same format, at warning level unless ``name`` is ``selfsup`` itself."""
    for configured in dict.fromkeys((name, "selfsup")):
        logger = logging.getLogger(configured)
        if not logger.handlers:
            handler = _StdoutHandler()
            handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
            logger.propagate = False
        verbose = is_main and (configured == name or logger.level == logging.INFO)
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    return logging.getLogger(name)


class MetricLogger:
    """Append scalars per step to ``csv_path`` and (optionally) TensorBoard in ``tensorboard_dir``."""

    def __init__(
        self,
        csv_path: str | Path,
        *,
        fieldnames: Iterable[str],
        tensorboard_dir: str | Path | None = None,
        enabled: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.fieldnames = list(fieldnames)
        self.csv_path = Path(csv_path)
        self._writer = None
        if not enabled:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate(resume_step)
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._file = self.csv_path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.fieldnames)
        if new_file:
            self._csv.writeheader()
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(tensorboard_dir), purge_step=resume_step)

    def _truncate(self, resume_step: int | None) -> None:
        if not self.csv_path.exists():
            return
        if resume_step is None:
            self.csv_path.unlink()
            return
        with self.csv_path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["global_step"]) <= resume_step]
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, global_step: int, **scalars: float) -> None:
        if not self.enabled:
            return
        self._csv.writerow({"global_step": global_step, **scalars})
        self._file.flush()
        if self._writer is not None:
            for key, value in scalars.items():
                if key != "epoch":
                    self._writer.add_scalar(key, value, global_step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._writer is not None:
                self._writer.close()


def progress(iterable: Iterable[T], *, total: int | None, desc: str, enabled: bool) -> Iterator[T]:
    """A tqdm bar on rank 0 (and only when stdout is a terminal or ``enabled`` is forced)."""
    return iter(tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False))


def read_csv_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a MetricLogger CSV as floats (for plots and reports)."""
    with Path(path).open(newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)
        ]
