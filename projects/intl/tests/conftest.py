import socket
from pathlib import Path

import numpy as np
import pytest

#: intl-train on 192 embedded digits at 16 px: a width-8 CIFAR-stem ResNet-18, 64-d projector, 2 crops of 16 px.
TINY = [
    "--arch", "resnet18", "--width", "8", "--cifar_stem", "--crops_size", "16", "16",
    "--bs", "64", "--projection_size", "64", "--emb", "64", "--epochs", "2", "--warmup_eps", "1",
    "-j", "0", "--seed", "3", "--no_progress", "--no_tensorboard", "-p", "1",
]  # fmt: skip


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory) -> Path:
    """The first 192 / 64 embedded digits at 16 px as an ``.npz`` (``--dataset npz``): 3 iterations of 64."""
    from selfsup.shared.data.digits import digits_arrays

    path = tmp_path_factory.mktemp("data") / "digits192.npz"
    arrays = {}
    for split, n in (("train", 192), ("test", 64)):
        images, labels = digits_arrays(split)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[:n, ::2, ::2])
        arrays[f"{split}_labels"] = labels[:n]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def tiny(small_digits) -> tuple[str, ...]:
    return (*TINY, "--dataset", "npz", "--data_path", str(small_digits))


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
