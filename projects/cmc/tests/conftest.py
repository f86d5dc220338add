import socket

import pytest

#: cmc-train on the embedded digits, tiny: two ResNet-18 halves with the CIFAR stem at 16 px.
TINY_CMC = [
    "--dataset", "digits", "--model", "resnet18v1", "--cifar_stem", "--image_size", "16",
    "--batch_size", "32", "--nce_k", "64", "--num_workers", "0", "--seed", "1",
    "--no_progress", "--no_tensorboard", "--print_freq", "1",
]  # fmt: skip
#: cmc-moco-ins-train, tiny: one ResNet-18 with the CIFAR stem at 16 px.
TINY_INS = [
    "--dataset", "digits", "--model", "resnet18", "--cifar_stem", "--image_size", "16",
    "--batch_size", "32", "--nce_k", "64", "--num_workers", "0", "--seed", "1",
    "--no_progress", "--no_tensorboard", "--print_freq", "1",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_cmc() -> tuple[str, ...]:
    return tuple(TINY_CMC)


@pytest.fixture(scope="session")
def tiny_ins() -> tuple[str, ...]:
    return tuple(TINY_INS)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
