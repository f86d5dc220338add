"""Checkpoint files that survive crashes: atomic writes and ``--resume PATH|auto``.

The RNG states stored in checkpoints come from :mod:`selfsup.shared.runtime.seeding`.

Everything stored is readable with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists,
tuples and dicts only (no pickled ``argparse.Namespace`` or numpy objects).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_GLOB = "ckpt_*.pkl"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A process killed at any moment leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by a selfsup trainer (``weights_only=True``), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint file {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]  # torch's message runs over lines
        raise ValueError(f"--resume: {path} is not a readable torch checkpoint ({reason})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != "selfsup":
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"--resume: {path} is not a selfsup training checkpoint (expected a dict with format='selfsup', "
            f"found {keys}); to evaluate or convert other checkpoints use selfsup-eval"
        )
    return ckpt


def checkpoint_progress(path: Path) -> tuple[int, float]:
    """(global_step, mtime) of a checkpoint, read lazily (mmap) so large files stay cheap."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = int(ckpt.get("global_step", -1))
    except Exception:
        step = -1
    return step, path.stat().st_mtime


def find_latest_checkpoint(directory: str | os.PathLike, pattern: str = CHECKPOINT_GLOB) -> Path | None:
    """The checkpoint in ``directory`` with the most training progress (ties: the newest file)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [p for p in directory.glob(pattern) if p.is_file()]
    scored = [(checkpoint_progress(p), p) for p in candidates]
    scored = [(score, p) for score, p in scored if score[0] >= 0]
    if not scored:
        return None
    return max(scored, key=lambda item: item[0])[1]


def resolve_resume(resume: str | None, weight_dir: str | os.PathLike) -> Path | None:
    """``--resume``: ``None``/``""`` = start fresh; ``auto`` = newest in ``weight_dir`` (or fresh); else a file."""
    if not resume:
        return None
    if resume == "auto":
        return find_latest_checkpoint(weight_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} does not exist (give a checkpoint file or 'auto')")
    return path


def epoch_of_checkpoint_name(path: str | os.PathLike) -> int | None:
    """``ckpt_12.pkl`` -> 12; other names -> None."""
    match = re.fullmatch(r"ckpt_(\d+)\.pkl", Path(path).name)
    return int(match.group(1)) if match else None
