import socket
from pathlib import Path

import numpy as np
import pytest

#: swav-unmix-train on the embedded digits, tiny: a width-8 CIFAR-stem ResNet-18, 2 crops of 16 px + 2 of 8 px.
TINY = [
    "--dataset", "digits", "--arch", "resnet18", "--width", "8", "--cifar_stem",
    "--size_crops", "16", "8", "--nmb_crops", "2", "2", "--min_scale_crops", "0.3", "0.1",
    "--max_scale_crops", "1", "0.3", "--batch_size", "64", "--nmb_prototypes", "20", "--hidden_mlp", "32",
    "--feat_dim", "16", "--base_lr", "0.3", "--warmup_epochs", "0", "--freeze_prototypes_niters", "5",
    "--workers", "0", "--seed", "3", "--use_fp16", "false", "--unmix_prob", "0.5",
    "--no_progress", "--no_tensorboard", "--log_every", "5",
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
    """TINY on the small ``.npz`` (fast training tests)."""
    flags = list(TINY)
    flags[flags.index("digits") - 1 : flags.index("digits") + 1] = [
        "--dataset",
        "npz",
        "--data_path",
        str(small_digits),
    ]
    return tuple(flags)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
