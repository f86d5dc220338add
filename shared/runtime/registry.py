"""The registry of trainers: every method that runs on :mod:`.trainer` registers one :class:`TrainerEntry`.

Projects register through the ``selfsup.trainers`` entry-point group of ``pyproject.toml`` (``NAME =
"selfsup.<project>.<module>:<ENTRY>"``), so ``shared/`` never names a method and a new method needs one line
there. The contract test (``tests/test_trainer_contract.py``) runs every registered entry through build, steps,
bitwise resume, a 2-process run, export and ``selfsup-eval``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "TrainerEntry", "registered_trainers", "trainer_entry"]

ENTRY_POINT_GROUP = "selfsup.trainers"


@dataclass(frozen=True)
class TrainerEntry:
    """One registered trainer (or variant of one).

    * ``name``: the registry key (``moco``, ``unmix``, ...); ``prog``: the console command; ``module``: the
      ``python -m`` / ``torchrun -m`` target; ``parse_args(argv)``: its parser; ``method(args)``: the
      :class:`~selfsup.shared.runtime.trainer.Method` for parsed flags;
    * ``smoke_flags(data, out)``: the flags of a tiny run on an ``.npz`` of 192 images at 16 px (``--dataset
      npz``) writing under ``out``: one epoch of at least 2 steps, one torch-friendly process;
    * ``resume_flags``: what asks a run to continue from its own newest checkpoint (``()`` where the trainer
      always does, as SwAV); ``distributed``: whether it runs under ``torchrun`` with several processes;
    * ``eval_flags``: extra ``selfsup-eval`` flags its checkpoints need (a CMC view, say);
      ``run_record_keys``: top-level checkpoint entries that hold the run's flags (they differ between an
      interrupted and an uninterrupted run, so the resume check skips them).
    """

    name: str
    prog: str
    module: str
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace]
    method: Callable[[argparse.Namespace], Any]
    smoke_flags: Callable[[Path, Path], list[str]]
    resume_flags: tuple[str, ...] = ("--resume", "auto")
    distributed: bool = True
    eval_flags: tuple[str, ...] = field(default_factory=tuple)
    run_record_keys: tuple[str, ...] = ("args",)


def registered_trainers() -> dict[str, TrainerEntry]:
    """Every entry of the ``selfsup.trainers`` group, by name (sorted)."""
    found: dict[str, TrainerEntry] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        entry = point.load()
        if not isinstance(entry, TrainerEntry):
            raise TypeError(f"entry point {point.name} = {point.value} is not a TrainerEntry")
        if entry.name != point.name:
            raise ValueError(f"entry point {point.name} = {point.value} registers the name {entry.name!r}")
        found[entry.name] = entry
    return dict(sorted(found.items()))


def trainer_entry(name: str) -> TrainerEntry:
    """The registered trainer ``name``; a one-line error lists the names when it is unknown."""
    trainers = registered_trainers()
    if name not in trainers:
        raise ValueError(f"unknown trainer {name!r}; registered: {', '.join(trainers) or 'none'}")
    return trainers[name]
