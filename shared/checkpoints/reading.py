"""Read checkpoint files without running arbitrary pickled code, and fingerprint them.

``torch.load(weights_only=True)`` refuses pickled classes; the original CMC and DETR trainers pickle an
``argparse.Namespace`` (``opt`` / ``args``), which is harmless and allowed by a second, allow-listed attempt.
Anything else pickled needs an explicit ``trust=True``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_BLOCKED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
_ALLOWED_GLOBALS = MappingProxyType({"argparse.Namespace": argparse.Namespace})  # harmless pickled classes


def _blocked_globals(path: Path, err: Exception) -> list[str]:
    """The pickled classes ``weights_only`` refused, from the archive or else from the error message."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        found = []
    return found or _BLOCKED_GLOBAL.findall(str(err))


def _unpickler_reason(err: Exception) -> str:
    """The specific part of torch's long ``weights_only`` error message."""
    text = str(err)
    tail = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[0] if lines else text


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint (expected a file written by torch.save: a zip "
            f"archive or a legacy pickle); torch.load said: {type(err).__name__}: {err}"
        ) from err


def load_checkpoint_file(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without running arbitrary pickled code.

    ``torch.load(weights_only=True)`` first; if it only refused ``argparse.Namespace`` (CMC ``opt``, DETR
    ``args``), retry with that class allow-listed. Any other pickled class raises ``ValueError`` naming it,
    unless ``trust=True``, which allows ``weights_only=False`` for files from a source you trust.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; pass the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected a PyTorch checkpoint written by torch.save")
    try:
        obj = _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _blocked_globals(path, err)
        if not blocked:
            raise ValueError(
                f"{path} is not a readable PyTorch checkpoint (expected a file written by torch.save; "
                f"unpickling failed: {_unpickler_reason(err)})"
            ) from err
        unknown = [name for name in blocked if name not in _ALLOWED_GLOBALS]
        if unknown and not trust:
            raise ValueError(
                f"{path} pickles objects that weights_only loading refuses: {', '.join(blocked)}. If you "
                "trust the file's source, pass --trust (selfsup-eval) to run its pickle without restrictions"
            ) from err
        if unknown:
            logger.warning(
                "loading %s without weights_only restrictions (--trust); it pickles %s", path, blocked
            )
            obj = _torch_load(path, weights_only=False)
        else:
            with torch.serialization.safe_globals(list(_ALLOWED_GLOBALS.values())):
                try:
                    obj = _torch_load(path, weights_only=True)
                except pickle.UnpicklingError as retry_err:
                    raise ValueError(
                        f"{path} pickles objects that weights_only loading refuses even with "
                        f"argparse.Namespace allowed ({retry_err}); if you trust the file, pass --trust "
                        "(selfsup-eval)"
                    ) from retry_err
    if isinstance(obj, nn.Module) and trust:
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}; expected a dict (a state dict or a checkpoint)"
        )
    return dict(obj)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
