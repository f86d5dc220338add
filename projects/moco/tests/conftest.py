"""MoCo's tiny run flags on the root conftest's 192-image digits fixture (``digits192``: 6 steps of 32 per
epoch, a queue of 64 keys)."""

from pathlib import Path

import pytest

TINY = [
    "--arch", "resnet18", "--width", "4", "--cifar_stem",
    "--crop", "16", "--batch_size", "32", "--num_keys", "64",
    "--momentum", "0.99", "--num_workers", "0", "--seed", "1", "--dataset_name", "DIGITS",
    "--no_progress", "--no_tensorboard", "--log_every", "1", "--plot_iter", "0",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_args(digits192: Path) -> tuple[str, ...]:
    """``moco-train`` flags of a tiny run on ``digits192`` (add ``--output_root``)."""
    return ("--dataset", "npz", "--dataset_root", str(digits192), *TINY)
