"""Feature extraction from a frozen trunk (sharded over ranks) and the on-disk feature cache.

Extraction: rank ``r`` of ``W`` encodes items ``r, r + W, r + 2W, ...`` (no padding, no duplicates); the
shards are all-gathered and put back in dataset order, so every rank ends with the same ``N x D`` features.

Cache: one ``.pt`` file per key under the cache folder (``--cache_dir``, default ``<selfsup
cache>/features``). The key is the SHA-256 of a canonical JSON description: the SHA-256 of the trunk's weights
(:func:`module_sha256`, so a changed checkpoint always misses), dataset name, root, split and size, the
transform description, the probe (layer and pooling), and the BN mode. Files are written atomically by rank 0
and checked against their stored description when read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.data import build_loader
from selfsup.shared.distributed import barrier, get_rank, get_world_size
from selfsup.shared.distributed.collectives import gather_in_order, on_every_rank

__all__ = [
    "FeatureCache",
    "default_cache_dir",
    "extract_features",
    "features_with_cache",
    "module_sha256",
    "split_features",
]

logger = logging.getLogger(__name__)
CACHE_FORMAT = "selfsup-eval-features"
CACHE_VERSION = 1


def module_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's ``state_dict`` (names, dtypes, shapes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``<cache>/features``, ``<cache>`` being ``$SELFSUP_CACHE_DIR``, ``$XDG_CACHE_HOME/selfsup`` or
    ``~/.cache/selfsup``."""
    from selfsup.shared.data.torchvision_sets import cache_dir

    return cache_dir() / "features"


@torch.no_grad()
def extract_features(
    probe: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    bn_train_mode: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features N x D float32, labels N int64)`` of every item of ``dataset``, on the CPU, in order.

    The probe runs in eval mode unless ``bn_train_mode`` (then BN uses batch statistics, as the unofficial
    MoCo's ``test.py`` did). Under torchrun the items are sharded over the ranks and gathered back.
    """
    total = len(dataset)  # type: ignore[arg-type]
    world, rank = get_world_size(), get_rank()
    shard = Subset(dataset, list(range(rank, total, world))) if world > 1 else dataset
    loader = build_loader(shard, batch_size=batch_size, num_workers=num_workers)
    was_training = probe.training
    probe.train(bn_train_mode)
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for images, targets in loader:
            out = probe(images.to(device, non_blocking=True))
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(targets, dtype=torch.int64))
    finally:
        probe.train(was_training)
    if feats:
        local_f, local_y = torch.cat(feats), torch.cat(labels)
    else:
        # This rank's shard is empty (fewer items than ranks): learn the width from one item.
        example = dataset[0][0].unsqueeze(0).to(device) if total else None  # type: ignore[index]
        dim = int(probe(example).shape[1]) if example is not None else 0
        local_f, local_y = torch.zeros((0, dim)), torch.zeros((0,), dtype=torch.int64)
    bad = int((~torch.isfinite(local_f)).any(1).sum()) if local_f.numel() else 0
    if bad:
        raise ValueError(
            f"the trunk produced NaN/inf features for {bad} of {local_f.shape[0]} items; the checkpoint's "
            "weights or BN statistics (running_var < 0?) are broken"
        )
    return gather_in_order(local_f, total), gather_in_order(local_y, total)


class FeatureCache:
    """Feature files keyed by a description dict (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    @staticmethod
    def key(meta: dict[str, Any]) -> str:
        """SHA-256 of the canonical JSON of ``meta``."""
        return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, meta: dict[str, Any]) -> Path:
        return self.directory / f"{self.key(meta)[:40]}.pt"

    def load(self, meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached ``(features, labels)`` for ``meta``, or None when absent or stale."""
        path = self.path(meta)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            logger.warning("feature cache %s is unreadable (%s); recomputing", path, err)
            return None
        stored = json.loads(blob.get("meta", "{}")) if isinstance(blob, dict) else {}
        if blob.get("format") != CACHE_FORMAT or stored != json.loads(json.dumps(meta, default=str)):
            logger.warning("feature cache %s does not match this run's description; recomputing", path)
            return None
        return blob["features"], blob["labels"]

    def save(self, meta: dict[str, Any], features: torch.Tensor, labels: torch.Tensor) -> Path:
        blob = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "meta": json.dumps(meta, sort_keys=True, default=str),
            "features": features.contiguous(),
            "labels": labels.contiguous(),
        }
        return atomic_save(blob, self.path(meta))


def features_with_cache(
    probe: nn.Module,
    dataset: Dataset,
    *,
    meta: dict[str, Any],
    cache: FeatureCache | None,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(features, labels, cache_hit)``: read from ``cache`` when present, else extract (sharded) and store.

    The entry is used only when every rank can read it (the cache folder must be shared between ranks);
    otherwise all ranks take part in the extraction and rank 0 stores the result.
    """
    loaded = cache.load(meta) if cache is not None else None
    if on_every_rank(loaded is not None):
        assert loaded is not None and cache is not None
        logger.info("feature cache hit: %s", cache.path(meta))
        return loaded[0], loaded[1], True
    feats, labels = extract_features(
        probe, dataset, batch_size=batch_size, device=device, num_workers=num_workers
    )
    if cache is not None:
        if get_rank() == 0:
            cache.save(meta, feats, labels)
            logger.info("feature cache written: %s", cache.path(meta))
        barrier()
    return feats, labels, False


def split_features(
    probe: nn.Module,
    splits: dict[str, Dataset],
    *,
    weights_sha256: str,
    dataset: str,
    root: str | os.PathLike[str] | None,
    transform_spec: dict[str, Any],
    cache: FeatureCache | None,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, bool]]:
    """Features of each named split (eval-mode probe), through ``cache`` when given.

    Returns ``({split: (features, labels)}, {split: cache_hit})``; the cache description is the weights hash,
    dataset, resolved root, split and size, ``transform_spec`` (train-only entries removed), probe and BN
    mode.
    """
    spec = {k: v for k, v in transform_spec.items() if k not in ("train_aug", "crop_low")}
    common = {
        "weights_sha256": weights_sha256,
        "dataset": dataset,
        "root": str(Path(root).resolve()) if root is not None else None,
        "transform": spec,
        "probe": probe.describe() if hasattr(probe, "describe") else type(probe).__name__,
        "bn": "eval",
    }
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hits: dict[str, bool] = {}
    for split, data in splits.items():
        if cache is None:
            out[split] = extract_features(
                probe, data, batch_size=batch_size, device=device, num_workers=num_workers
            )
            continue
        meta = {**common, "split": split, "num_items": len(data)}  # type: ignore[arg-type]
        feats, labels, hits[split] = features_with_cache(
            probe, data, meta=meta, cache=cache, batch_size=batch_size, device=device, num_workers=num_workers
        )
        out[split] = (feats, labels)
    return out, hits
