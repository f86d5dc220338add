"""Fixtures every test folder shares (the repository root's conftest applies to ``shared/tests``,
``projects/*/tests``, ``transfer/tests`` and ``tests``): a free TCP port, the 192-image digits fixture, and a
2-process ``torchrun`` launcher with gloo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``--master_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_digits_npz(path: Path, *, train: int = 192, test: int = 64, stride: int = 2) -> Path:
    """The first ``train`` / ``test`` embedded digits (scikit-learn's 8×8 upscaled to 32 px, then every
    ``stride``-th pixel: 16 px) as an ``.npz`` for ``--dataset npz``."""
    from selfsup.shared.data.digits import digits_arrays

    arrays = {}
    for split, n in (("train", train), ("test", test)):
        images, labels = digits_arrays(split)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[:n, ::stride, ::stride])
        arrays[f"{split}_labels"] = labels[:n]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def digits192(tmp_path_factory) -> Path:
    """192 train / 64 test digits at 16 px as an ``.npz``: 3 batches of 64 per epoch."""
    return write_digits_npz(tmp_path_factory.mktemp("data") / "digits192.npz")


@pytest.fixture
def torchrun(free_port) -> Callable[..., subprocess.CompletedProcess]:
    """``torchrun(module_or_script, *args, nproc=2, timeout=300)``: ``python -m torch.distributed.run`` on
    127.0.0.1 with one thread per process; a ``.py`` path runs as a script, anything else as ``-m MODULE``."""

    def launch(
        target: str, *args: str, nproc: int = 2, timeout: int = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        where: Sequence[str] = [target] if target.endswith(".py") else ["-m", target]
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port), *where, *args,
        ]  # fmt: skip
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)

    return launch
