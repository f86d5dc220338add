"""The CMC trainers' tiny flags on the root conftest's 192-image fixture (``digits192``, 16 px): batches of 32,
so an epoch is 6 steps."""

from pathlib import Path

import pytest

TINY = [
    "--dataset", "npz", "--image_size", "16", "--batch_size", "32", "--nce_k", "64", "--num_workers", "0",
    "--seed", "1", "--no_progress", "--no_tensorboard", "--print_freq", "1",
]  # fmt: skip


@pytest.fixture
def tiny_cmc(digits192: Path) -> tuple[str, ...]:
    """``cmc-train``: two ResNet-18 halves (``resnet18v1``)."""
    return (*TINY, "--data_folder", str(digits192), "--model", "resnet18v1")


@pytest.fixture
def tiny_ins(digits192: Path) -> tuple[str, ...]:
    """``cmc-moco-ins-train``: one ResNet-18."""
    return (*TINY, "--data_folder", str(digits192), "--model", "resnet18")
