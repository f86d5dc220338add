from pathlib import Path

import pytest

#: intl-train on 192 embedded digits at 16 px: a width-8 CIFAR-stem ResNet-18, 64-d projector, 2 crops of 16 px.
TINY = [
    "--arch", "resnet18", "--width", "8", "--cifar_stem", "--crops_size", "16", "16",
    "--bs", "64", "--projection_size", "64", "--emb", "64", "--epochs", "2", "--warmup_eps", "1",
    "-j", "0", "--seed", "3", "--no_progress", "--no_tensorboard", "-p", "1",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny(digits192: Path) -> tuple[str, ...]:
    """The tiny ``intl-train`` flags on the root conftest's 192 digits (3 iterations of 64 per epoch)."""
    return (*TINY, "--dataset", "npz", "--data_path", str(digits192))
