"""Console entry points: run a trainer and turn bad input into one line on stderr and exit status 2.

``CorruptImageError`` becomes its own one-line form (the file and ``--skip_corrupt``); ``FileNotFoundError`` and
``ValueError`` (the errors trainers raise for bad flags, files and checkpoints) become ``PROG: error: MESSAGE``,
as argparse reports a bad flag.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from selfsup.shared.data.imagefolder import CorruptImageError

__all__ = ["run_reporting_errors", "run_trainer"]


def run_reporting_errors(prog: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """``fn(*args, **kwargs)``; 0 when it returns, 2 (after one line on stderr) on bad input."""
    try:
        fn(*args, **kwargs)
    except CorruptImageError as err:
        print(f"{prog}: error: {err.one_line()}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def run_trainer(entry: Any, argv: list[str] | None = None) -> int:
    """A registered trainer's console entry point (``entry``: a
    :class:`~selfsup.shared.runtime.registry.TrainerEntry`): parse its flags, train on the runtime, and report
    bad input in one line."""
    from selfsup.shared.runtime.trainer import train

    args = entry.parse_args(argv)
    return run_reporting_errors(
        entry.prog, train, entry.method(args), args, sys.argv if argv is None else argv
    )
