"""Linear evaluation: a linear classifier on a frozen trunk's features (presets in :mod:`.presets`).

Two paths give the same protocol:

* **standard** (every preset's default unless it says otherwise): each training step reads images through the
  preset's train augmentation and encodes them with the frozen trunk;
* **cached** (``use_cache=True``, ``--use_cache``): the train and test features are extracted once (through
  the *test* transform, sharded over ranks) and stored in the feature cache, and the head is trained on them.
  It is exact when the protocol has no train-time augmentation (``train_aug = none``: ``quick``,
  ``intl_cifar``); for the others it drops the augmentation, and the result records ``train_aug: none`` and
  ``path: cached``.

The trunk is a copy of the given module (the caller's module is never changed), with every parameter frozen.
It runs in eval mode (BN uses its running statistics) unless ``bn_train_mode=True`` reproduces the unofficial
MoCo's ``test.py``, which never called ``eval()``: BN then normalises with each batch's statistics (train
batches of 256, test batches of 100) and updates the copy's running statistics.

Under torchrun the head is wrapped in DistributedDataParallel; ``batch_size`` is the global batch, split
evenly over the ranks; each rank evaluates a shard of the test set and the counts are summed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Subset

from selfsup.shared.data import ResumableSampler, SeededTransformDataset, build_dataset, build_loader
from selfsup.shared.distributed import get_rank, get_world_size
from selfsup.shared.distributed.collectives import all_reduce_sum
from selfsup.shared.evaluation.features import FeatureCache, module_sha256, split_features
from selfsup.shared.evaluation.inputs import build_transforms
from selfsup.shared.evaluation.presets import LinearConfig, config_to_dict, resolve_config
from selfsup.shared.evaluation.probe_training import (
    accuracy_counts,
    counts_to_metrics,
    dataset_description,
    fit,
    frozen_copy,
    init_head,
    load_state,
    lr_for_epoch,
    per_rank_batch,
    resolve_device,
    seeded,
    select_epoch,
)
from selfsup.shared.evaluation.probes import FeatureProbe
from selfsup.shared.evaluation.results import provenance, write_result
from selfsup.shared.optim.optimizers import build_optimizer

__all__ = ["run_linear"]

logger = logging.getLogger(__name__)
_RESUME_IGNORED = ("num_workers",)


def make_optimizer(config: LinearConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return build_optimizer(
        "sgd",
        params,
        lr=lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


class _Evaluator:
    """Test accuracy of ``head`` on images (standard path) or on cached features."""

    def __init__(
        self, probe: FeatureProbe, head: nn.Module, device: torch.device, bn_train_mode: bool
    ) -> None:
        self.probe, self.head, self.device, self.bn_train_mode = probe, head, device, bn_train_mode

    @torch.no_grad()
    def on_images(self, test_set: Any, batch_size: int, num_workers: int) -> dict[str, float]:
        world, rank = get_world_size(), get_rank()
        shard = Subset(test_set, list(range(rank, len(test_set), world))) if world > 1 else test_set
        loader = build_loader(shard, batch_size=batch_size, num_workers=num_workers)
        self.probe.train(self.bn_train_mode)
        self.head.eval()
        counts = torch.zeros(4, dtype=torch.float64)
        for images, labels in loader:
            labels = labels.to(self.device)
            logits = self.head(self.probe(images.to(self.device)))
            loss = F.cross_entropy(logits, labels, reduction="sum").item()
            counts += accuracy_counts(logits, labels, loss)
        self.head.train()
        return counts_to_metrics(all_reduce_sum(counts))

    @torch.no_grad()
    def on_features(self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict[str, float]:
        self.head.eval()
        counts = torch.zeros(4, dtype=torch.float64)
        for start in range(0, feats.shape[0], batch_size):
            x = feats[start : start + batch_size].to(self.device)
            y = labels[start : start + batch_size].to(self.device)
            logits = self.head(x)
            counts += accuracy_counts(logits, y, F.cross_entropy(logits, y, reduction="sum").item())
        self.head.train()
        return counts_to_metrics(counts)


def run_linear(
    backbone: nn.Module,
    *,
    dataset: str,
    root: str | Path | None = None,
    preset: str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    state_path: str | Path | None = None,
    resume: bool = False,
    checkpoint: dict[str, Any] | None = None,
    download: bool = False,
    output: str | Path | None = None,
    results_table: str | Path | bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train and test a linear classifier on ``backbone``'s frozen features; returns the result dict.

    ``preset`` names a :data:`~selfsup.shared.evaluation.presets.LINEAR_PRESETS` entry (default ``quick``);
    ``overrides`` replace any of its fields (``lr``, ``epochs``, ``bn_train_mode``, ``use_cache``, ...).
    ``state_path`` receives the head/optimizer state after every epoch (atomically); with ``resume=True`` a
    run continues from it. ``checkpoint`` (the load report) is copied into the result; ``output`` writes the
    result JSON there (rank 0) and appends it to ``results_table`` (default ``results.jsonl`` beside it).
    """
    config: LinearConfig = resolve_config("linear", preset, dataset, **overrides)
    dev = resolve_device(device)
    world, rank = get_world_size(), get_rank()
    train_tf, test_tf, input_spec = build_transforms(config, dataset)
    train_raw = build_dataset(dataset, root=root, split="train", transform=None, download=download)
    test_set = build_dataset(dataset, root=root, split="test", transform=test_tf, download=download)
    num_classes = len(train_raw.classes)
    trunk = frozen_copy(backbone, dev)
    weights_sha = module_sha256(trunk)
    probe = FeatureProbe(trunk, config.layer, config.pool)
    batch = per_rank_batch(config.batch_size)
    base_lr = config.lr * (config.batch_size / 256 if config.lr_scale_batch else 1.0)
    timing: dict[str, float] = {}
    notes: list[str] = []
    train_feats = train_y = test_feats = test_y = None
    train_set: Any = None
    cache_hits: dict[str, bool] = {}
    if config.use_cache:
        tic = time.perf_counter()
        train_eval_set = build_dataset(
            dataset, root=root, split="train", transform=test_tf, download=download
        )
        extracted, cache_hits = split_features(
            probe,
            {"train": train_eval_set, "test": test_set},
            weights_sha256=weights_sha,
            dataset=dataset,
            root=root,
            transform_spec=input_spec,
            cache=FeatureCache(cache_dir),
            batch_size=config.test_batch_size,
            device=dev,
            num_workers=config.num_workers,
        )
        (train_feats, train_y), (test_feats, test_y) = extracted["train"], extracted["test"]
        timing["features_s"] = time.perf_counter() - tic
        dim = int(train_feats.shape[1])
        notes.append(
            "cached path: head trained on features of the test transform (no train-time augmentation)"
        )
    else:
        train_set = SeededTransformDataset(train_raw, train_tf, seed=config.seed)
        dim = probe.output_dim(test_set[0][0].unsqueeze(0).to(dev))
    with seeded(config.seed):
        head = init_head(nn.Linear(dim, num_classes), config.head_init).to(dev)
    trained: nn.Module = head
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(
            head, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    optimizer = make_optimizer(config, head.parameters(), base_lr)
    config_record = {k: v for k, v in config_to_dict(config).items() if k not in _RESUME_IGNORED}
    expect = {
        "protocol": "linear",
        "config": config_record,
        "weights_sha256": weights_sha,
        "dataset": dataset,
    }
    state = load_state(state_path, expect=expect) if resume else None
    curve: list[dict[str, Any]] = []
    start_epoch = 1
    if state is not None:
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        curve = list(state["curve"])
        start_epoch = int(state["epoch"]) + 1
    num_train = len(train_raw)
    sampler = ResumableSampler(
        num_train, shuffle=True, seed=config.seed, num_replicas=world, rank=rank, drop_last=config.drop_last
    )
    evaluator = _Evaluator(probe, head, dev, config.bn_train_mode)

    def set_lr(epoch: int) -> float:
        lr = lr_for_epoch(config, base_lr, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def batches(epoch: int) -> Any:
        sampler.set_epoch(epoch)
        if train_feats is not None:
            order = torch.tensor(sampler.epoch_indices(), dtype=torch.int64)
            stop = len(order) - len(order) % batch if config.drop_last else len(order)
            for start in range(0, stop, batch):
                idx = order[start : start + batch]
                yield train_feats[idx].to(dev), train_y[idx].to(dev)
            return
        train_set.set_epoch(epoch)
        loader = build_loader(
            train_set,
            batch_size=batch,
            sampler=sampler,
            num_workers=config.num_workers,
            drop_last=config.drop_last,
        )
        for images, labels in loader:
            probe.train(config.bn_train_mode)
            with torch.no_grad():
                feats = probe(images.to(dev, non_blocking=True))
            yield feats, labels.to(dev)

    def train_epoch(epoch: int) -> dict[str, float]:
        counts = torch.zeros(4, dtype=torch.float64)
        head.train()
        for feats, labels in batches(epoch):
            logits = trained(feats)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counts += accuracy_counts(logits.detach(), labels, loss.item() * labels.shape[0])
        return counts_to_metrics(all_reduce_sum(counts))

    def evaluate() -> dict[str, float]:
        if test_feats is not None:
            return evaluator.on_features(test_feats, test_y, config.test_batch_size)
        return evaluator.on_images(test_set, config.test_batch_size, config.num_workers)

    def payload(epoch: int, curve_now: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **expect,
            "epoch": epoch,
            "curve": curve_now,
            "head": head.state_dict(),
            "optimizer": optimizer.state_dict(),
        }

    tic = time.perf_counter()
    curve = fit(
        config=config,
        start_epoch=start_epoch,
        curve=curve,
        set_lr=set_lr,
        train_epoch=train_epoch,
        evaluate=evaluate,
        state_payload=payload,
        state_path=state_path,
        tag=f"linear[{config.preset}]",
    )
    timing["train_s"] = time.perf_counter() - tic
    chosen = select_epoch(curve, config.select)
    final = select_epoch(curve, "last")
    result = {
        "protocol": "linear",
        "preset": config.preset,
        "source": config.source,
        "path": "cached" if config.use_cache else "standard",
        "top1": chosen["top1"] if chosen else None,
        "top5": chosen["top5"] if chosen else None,
        "best_epoch": chosen["epoch"] if chosen else None,
        "final_top1": final["top1"] if final else None,
        "final_top5": final["top5"] if final else None,
        "hyperparameters": {**config_to_dict(config), "effective_lr": base_lr},
        "input": input_spec,
        "probe": {
            **probe.describe(),
            "feature_dim": dim,
            "bn_mode": "train" if config.bn_train_mode else "eval",
        },
        "dataset": dataset_description(dataset, root, train_raw, test_set),
        "checkpoint": {**(checkpoint or {}), "weights_sha256": weights_sha},
        "curve": curve,
        "cache_hits": cache_hits,
        "timing": timing,
        "world_size": world,
        "notes": notes,
        **provenance(),
    }
    if output is not None and rank == 0:
        write_result(result, output, results_table=results_table)
    return result
