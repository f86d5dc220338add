"""The configuration of an evaluation run: one frozen dataclass per protocol, and its validation.

:class:`LinearConfig`, :class:`SemisupConfig` and :class:`KnnConfig` share the input fields of
:class:`InputConfig` (image pipeline, probe layer, data loading). Their values come from the presets in
:mod:`.presets`; :func:`validate` checks a resolved configuration and names the flag of any bad value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COLOR_SPACES",
    "SCHEDULES",
    "TRAIN_AUGS",
    "InputConfig",
    "KnnConfig",
    "LinearConfig",
    "SemisupConfig",
    "config_to_dict",
    "validate",
]

TRAIN_AUGS = ("rrc_flip", "rrc_cj_flip", "crop_flip", "none")
#: Per-epoch learning-rate schedules (see :func:`selfsup.shared.evaluation.probe_training.lr_for_epoch`).
SCHEDULES = ("eveningglow", "step", "cosine", "exponential", "constant")
#: ``lab``/``ycbcr``: CMC's colour views (L|ab, Y|CbCr), fed to two-stream CMC encoders.
COLOR_SPACES = ("rgb", "lab", "ycbcr")
_SELECT = ("max", "last")


@dataclass(frozen=True)
class InputConfig:
    """Fields shared by every protocol: images, probe layer, data loading."""

    preset: str = ""
    source: str = ""
    resize: int | None = None
    crop: int | None = None
    sizes: tuple[tuple[str, int, int], ...] = ()
    resize_ratio: float = 1.0
    train_aug: str = "none"
    crop_low: float = 0.08
    normalization: str = "dataset"
    color_space: str = "rgb"
    layer: str = "pool"
    pool: str = "avg"
    test_batch_size: int = 256
    num_workers: int = 0
    seed: int = 0
    use_cache: bool = False


@dataclass(frozen=True)
class LinearConfig(InputConfig):
    """Frozen trunk + linear classifier. ``batch_size`` is global (summed over ranks)."""

    lr: float = 0.1
    lr_scale_batch: bool = False
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 100
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_lr: float = 0.0
    eval_every: int = 1
    select: str = "max"
    head_init: str = "default"
    bn_train_mode: bool = False
    drop_last: bool = False


@dataclass(frozen=True)
class SemisupConfig(InputConfig):
    """Fine-tuning of the whole network on a labelled subset; two learning rates (trunk, head)."""

    labels_perc: float = 10.0
    lr_backbone: float = 0.01
    lr_head: float = 0.2
    lr_scale_batch: bool = False
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 20
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_lr: float = 0.0
    eval_every: int = 1
    select: str = "max"
    head_init: str = "default"
    sync_bn: bool = False
    subset: str = "auto"
    subset_seed: int = 0
    subset_file: str | None = None
    drop_last: bool = False


@dataclass(frozen=True)
class KnnConfig(InputConfig):
    """k-nearest-neighbour classification of test features against train features."""

    metric: str = "cosine"
    k: int = 200
    temperature: float = 0.07
    vote: str = "weighted"
    chunk_size: int = 1024
    train_chunk_size: int = 16384


def validate(config: Any) -> None:
    """Raise ``ValueError`` naming the flag of the first invalid value of a resolved configuration."""
    checks: list[tuple[bool, str]] = [
        (
            config.train_aug in TRAIN_AUGS,
            f"--train_aug must be one of {TRAIN_AUGS}, got {config.train_aug!r}",
        ),
        (config.color_space in COLOR_SPACES, f"--color_space must be one of {COLOR_SPACES}"),
        (config.pool in ("avg", "max"), f"--pool must be 'avg' or 'max', got {config.pool!r}"),
        (0.0 < config.crop_low <= 1.0, f"--crop_low must be in (0, 1], got {config.crop_low}"),
        (config.test_batch_size >= 1, f"--test_batch_size must be >= 1, got {config.test_batch_size}"),
        (config.num_workers >= 0, f"--workers must be >= 0, got {config.num_workers}"),
    ]
    for size_name in ("resize", "crop"):
        value = getattr(config, size_name)
        checks.append((value is None or value >= 1, f"--{size_name} must be a positive integer, got {value}"))
    if isinstance(config, LinearConfig | SemisupConfig):
        checks += [
            (config.schedule in SCHEDULES, f"--schedule must be one of {SCHEDULES}, got {config.schedule!r}"),
            (config.epochs >= 1, f"--epochs must be >= 1, got {config.epochs}"),
            (config.batch_size >= 1, f"--batch_size must be >= 1, got {config.batch_size}"),
            (config.eval_every >= 1, f"--eval_epoch must be >= 1, got {config.eval_every}"),
            (config.select in _SELECT, f"--select must be one of {_SELECT}, got {config.select!r}"),
            (
                config.head_init in ("default", "normal"),
                f"--head_init must be default|normal: {config.head_init}",
            ),
        ]
    if isinstance(config, LinearConfig):
        checks += [
            (
                config.optimizer in ("sgd", "adam"),
                f"--optimizer must be sgd or adam, got {config.optimizer!r}",
            ),
            (
                not (config.use_cache and config.bn_train_mode),
                "--bn_train_mode needs the standard path (features depend on the batch); drop --use_cache",
            ),
        ]
    if isinstance(config, SemisupConfig):
        checks += [
            (
                0.0 < config.labels_perc <= 100.0,
                f"--labels_perc must be in (0, 100], got {config.labels_perc}",
            ),
            (config.subset in ("auto", "imagenet", "balanced"), "--subset must be auto|imagenet|balanced"),
        ]
    if isinstance(config, KnnConfig):
        checks += [
            (
                config.metric in ("cosine", "euclidean"),
                f"--metric must be cosine|euclidean: {config.metric!r}",
            ),
            (config.vote in ("weighted", "majority"), f"--vote must be weighted|majority: {config.vote!r}"),
            (config.k >= 1, f"--k must be >= 1, got {config.k}"),
            (config.temperature > 0, f"--temperature must be > 0, got {config.temperature}"),
            (config.chunk_size >= 1 and config.train_chunk_size >= 1, "--chunk_size must be >= 1"),
        ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"preset {config.preset!r}: {message}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-ready dict of a config (tuples become lists)."""
    out = dataclasses.asdict(config)
    out["sizes"] = [list(item) for item in config.sizes]
    if "milestones" in out:
        out["milestones"] = list(config.milestones)
    return out
