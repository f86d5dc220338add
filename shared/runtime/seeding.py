"""``--seed``: one seed for every random generator a run draws from, and their states in checkpoints.

The originals draw augmentation and mixing parameters from Python's ``random`` and NumPy's global RNG as well as
from torch, so a run is only reproducible, and a resumed run only bitwise identical, when all three are seeded
from ``--seed`` (:func:`seed_everything`), each DataLoader worker is seeded from the loader's own generator
(:func:`seed_worker`), and all three states (plus CUDA's) travel in every checkpoint
(:func:`capture_rng_state`, :func:`restore_rng_state`). The states are stored as tensors, numbers and tuples
only, so ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything", "seed_worker"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device) from ``seed``.

    NumPy takes seeds below 2**32, so it is seeded with ``seed % 2**32``.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every selfsup DataLoader: seed ``random`` and NumPy inside the worker.

    torch already seeds each worker with ``base_seed + worker_id``, where the base seed is drawn from the
    loader's generator (seeded from ``--seed`` by ``build_loader``); Python's and NumPy's generators would
    otherwise be copies of the parent's (fork) or unseeded (spawn). This is the recipe of PyTorch's notes on
    reproducibility.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator a training step may draw from (torch CPU/CUDA, numpy, random)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
