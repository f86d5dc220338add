"""The name of the data-location flag in messages about data: ``--dataset_root`` for selfsup's own commands,
the original's spelling for a trainer that keeps it (CMC's ``--data_folder``, SwAV's and INTL's
``--data_path``). A trainer sets it for the duration of its run (:func:`data_root_flag_as`), so every error
about a missing or malformed data folder names the flag the user actually typed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["data_root_flag", "data_root_flag_as"]

_ROOT_FLAG: ContextVar[str] = ContextVar("data_root_flag", default="--dataset_root")


def data_root_flag() -> str:
    """The data-location flag of the command that is running (default ``--dataset_root``)."""
    return _ROOT_FLAG.get()


@contextlib.contextmanager
def data_root_flag_as(flag: str) -> Iterator[None]:
    """Within the block, messages about data name ``flag``."""
    token = _ROOT_FLAG.set(flag)
    try:
        yield
    finally:
        _ROOT_FLAG.reset(token)
