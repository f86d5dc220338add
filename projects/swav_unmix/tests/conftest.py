"""The tiny ``swav-unmix-train`` flags on the root conftest's ``digits192`` (192 images at 16 px)."""

import pytest

#: swav-unmix-train, tiny: a width-8 CIFAR-stem ResNet-18, 2 crops of 16 px + 2 of 8 px, Un-Mix.
TINY = [
    "--dataset", "npz", "--arch", "resnet18", "--width", "8", "--cifar_stem",
    "--size_crops", "16", "8", "--nmb_crops", "2", "2", "--min_scale_crops", "0.3", "0.1",
    "--max_scale_crops", "1", "0.3", "--batch_size", "64", "--nmb_prototypes", "20", "--hidden_mlp", "32",
    "--feat_dim", "16", "--base_lr", "0.3", "--warmup_epochs", "0", "--freeze_prototypes_niters", "5",
    "--workers", "0", "--seed", "3", "--use_fp16", "false", "--unmix_prob", "0.5",
    "--no_progress", "--no_tensorboard", "--log_every", "5",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny(digits192) -> tuple[str, ...]:
    """TINY on the 192-image ``.npz``: 3 iterations of 64 per epoch."""
    return (*TINY, "--data_path", str(digits192))
