import socket

import pytest

TINY = [
    "--dataset", "digits",
    "--arch", "resnet18", "--width", "4", "--cifar_stem",
    "--crop", "16", "--batch_size", "32", "--num_keys", "64",
    "--momentum", "0.99", "--num_workers", "0", "--seed", "1",
    "--no_progress", "--no_tensorboard", "--log_every", "1", "--plot_iter", "0",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_args() -> tuple[str, ...]:
    return tuple(TINY)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
