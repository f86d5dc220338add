"""Semi-supervised evaluation: fine-tune the whole network on 1 % / 10 % of the labels.

Model: a copy of the trunk (the caller's module is untouched) read at ``layer`` (default the pooled feature)
followed by a linear head. Everything trains, in train mode (BN updates its statistics), with two learning
rates: the trunk's (``lr_backbone``: SwAV ``--lr``, INTL ``--lr-backbone``) and the head's (``lr_head``: SwAV
``--lr_last_layer``, INTL ``--lr-classifier``); INTL scales both by ``batch_size / 256``. SwAV converts the
model to SyncBN under DDP; that conversion is applied on CUDA devices (SyncBN has no CPU kernel) and skipped,
with a note in the result, on the CPU. The test set is evaluated in eval mode after each epoch and the best
top-1 (with its top-5) is reported, as both originals do. The labelled subset comes from :mod:`.subsets` and
is written beside the result so the run can be repeated.
"""

from __future__ import annotations

import copy
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
from selfsup.shared.evaluation.features import module_sha256
from selfsup.shared.evaluation.inputs import build_transforms
from selfsup.shared.evaluation.presets import SemisupConfig, config_to_dict, resolve_config
from selfsup.shared.evaluation.probe_training import (
    accuracy_counts,
    counts_to_metrics,
    dataset_description,
    fit,
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
from selfsup.shared.evaluation.subsets import choose_subset, write_subset_file
from selfsup.shared.optim.optimizers import build_optimizer

__all__ = ["default_subset_path", "run_semisup"]

logger = logging.getLogger(__name__)


def default_subset_path(output: str | Path) -> Path:
    """``RESULT.subset.txt`` beside ``RESULT.json``."""
    out = Path(output)
    return out.with_name(out.stem + ".subset.txt")


def run_semisup(
    backbone: nn.Module,
    *,
    dataset: str,
    root: str | Path | None = None,
    preset: str | None = None,
    device: str | torch.device | None = None,
    state_path: str | Path | None = None,
    resume: bool = False,
    checkpoint: dict[str, Any] | None = None,
    download: bool = False,
    output: str | Path | None = None,
    results_table: str | Path | bool | None = None,
    subset_out: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune ``backbone`` + a linear head on a labelled subset and test it; returns the result dict.

    ``preset`` names a :data:`~selfsup.shared.evaluation.presets.SEMISUP_PRESETS` entry (default
    ``swav_10pct``); ``overrides`` replace its fields (``labels_perc``, ``lr_backbone``, ``lr_head``, ...).
    The subset is written to ``subset_out`` (default ``<output stem>.subset.txt`` when ``output`` is given).
    """
    config: SemisupConfig = resolve_config("semisup", preset, dataset, **overrides)
    dev = resolve_device(device)
    world, rank = get_world_size(), get_rank()
    train_tf, test_tf, input_spec = build_transforms(config, dataset)
    train_raw = build_dataset(dataset, root=root, split="train", transform=None, download=download)
    test_set = build_dataset(dataset, root=root, split="test", transform=test_tf, download=download)
    num_classes = len(train_raw.classes)
    indices, subset_info, entries = choose_subset(train_raw, dataset, config)
    subset_path = subset_out or (default_subset_path(output) if output is not None else None)
    if subset_path is not None and rank == 0:
        write_subset_file(subset_path, entries, subset_info)
        subset_info["written_to"] = str(subset_path)
    train_set = SeededTransformDataset(Subset(train_raw, indices), train_tf, seed=config.seed)

    trunk = copy.deepcopy(backbone).to(dev)
    trunk.requires_grad_(True)
    weights_sha = module_sha256(trunk)
    probe = FeatureProbe(trunk, config.layer, config.pool)
    dim = probe.output_dim(test_set[0][0].unsqueeze(0).to(dev))
    with seeded(config.seed):
        head = init_head(nn.Linear(dim, num_classes), config.head_init).to(dev)
    model = nn.Sequential(probe, head)
    notes: list[str] = []
    if config.sync_bn and world > 1:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            probe, head = model[0], model[1]
        else:
            notes.append("sync_bn requested but SyncBatchNorm needs CUDA; per-rank BN used on the CPU")
    trained: nn.Module = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    scale = config.batch_size / 256 if config.lr_scale_batch else 1.0
    base_lrs = (config.lr_backbone * scale, config.lr_head * scale)
    optimizer = build_optimizer(
        "sgd",
        [
            {"params": [p for p in probe.parameters() if p.requires_grad], "lr": base_lrs[0]},
            {"params": list(head.parameters()), "lr": base_lrs[1]},
        ],
        lr=base_lrs[1],
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    config_record = {k: v for k, v in config_to_dict(config).items() if k != "num_workers"}
    expect = {
        "protocol": "semisup",
        "config": config_record,
        "weights_sha256": weights_sha,
        "dataset": dataset,
    }
    state = load_state(state_path, expect=expect) if resume else None
    curve: list[dict[str, Any]] = []
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        curve = list(state["curve"])
        start_epoch = int(state["epoch"]) + 1
    batch = per_rank_batch(config.batch_size)
    sampler = ResumableSampler(
        len(train_set),
        shuffle=True,
        seed=config.seed,
        num_replicas=world,
        rank=rank,
        drop_last=config.drop_last,
    )

    def set_lr(epoch: int) -> float:
        rates = [lr_for_epoch(config, base, epoch) for base in base_lrs]
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
        return rates[0]

    def train_epoch(epoch: int) -> dict[str, float]:
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        loader = build_loader(
            train_set,
            batch_size=batch,
            sampler=sampler,
            num_workers=config.num_workers,
            drop_last=config.drop_last,
        )
        model.train()
        counts = torch.zeros(4, dtype=torch.float64)
        for images, labels in loader:
            labels = labels.to(dev)
            logits = trained(images.to(dev, non_blocking=True))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counts += accuracy_counts(logits.detach(), labels, loss.item() * labels.shape[0])
        return counts_to_metrics(all_reduce_sum(counts))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        shard = Subset(test_set, list(range(rank, len(test_set), world))) if world > 1 else test_set
        loader = build_loader(shard, batch_size=config.test_batch_size, num_workers=config.num_workers)
        model.eval()
        counts = torch.zeros(4, dtype=torch.float64)
        for images, labels in loader:
            labels = labels.to(dev)
            logits = model(images.to(dev))
            counts += accuracy_counts(logits, labels, F.cross_entropy(logits, labels, reduction="sum").item())
        model.train()
        return counts_to_metrics(all_reduce_sum(counts))

    def payload(epoch: int, curve_now: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **expect,
            "epoch": epoch,
            "curve": curve_now,
            "model": model.state_dict(),
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
        tag=f"semisup[{config.preset}]",
    )
    chosen = select_epoch(curve, config.select)
    final = select_epoch(curve, "last")
    result = {
        "protocol": "semisup",
        "preset": config.preset,
        "source": config.source,
        "path": "standard",
        "top1": chosen["top1"] if chosen else None,
        "top5": chosen["top5"] if chosen else None,
        "best_epoch": chosen["epoch"] if chosen else None,
        "final_top1": final["top1"] if final else None,
        "final_top5": final["top5"] if final else None,
        "hyperparameters": {
            **config_to_dict(config),
            "effective_lr_backbone": base_lrs[0],
            "effective_lr_head": base_lrs[1],
        },
        "input": input_spec,
        "probe": {**probe.describe(), "feature_dim": dim},
        "subset": subset_info,
        "dataset": dataset_description(dataset, root, train_raw, test_set),
        "checkpoint": {**(checkpoint or {}), "weights_sha256": weights_sha},
        "curve": curve,
        "timing": {"train_s": time.perf_counter() - tic},
        "world_size": world,
        "notes": notes,
        **provenance(),
    }
    if output is not None and rank == 0:
        write_result(result, output, results_table=results_table)
    return result
