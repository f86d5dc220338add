"""k-nearest-neighbour classification on frozen features, chunked so memory stays bounded.

Two votes:

* ``weighted`` (InsDis, Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
  CVPR 2018, arXiv:1805.01978; lightly's ``knn_predict``): features are L2-normalised, the ``k`` train
  features with the largest cosine similarity ``s`` vote for their class with weight ``exp(s / τ)`` (τ =
  ``temperature``: 0.07 InsDis, 0.1 lightly). Classes are ranked by total weight; equal totals rank the
  smaller label first. Top-5 reads the first five classes of that ranking (all classes, as InsDis does).
* ``majority`` (the 5-NN column of the INTL / CW-RGP tables): the ``k`` train features with the smallest
  Euclidean distance vote once each. Classes are ranked by vote count; **ties go to the smaller label** (what
  INTL's ``torch.unique`` + ``argmax`` does). Classes without a vote are never ranked, so top-5 means "the
  true label is among the neighbours' labels".

Memory: queries are processed ``chunk_size`` at a time and train features ``train_chunk_size`` at a time (each
block converted to float32 and, for cosine, L2-normalised on the fly), keeping a running top-``k``. The
temporaries are one ``chunk_size x train_chunk_size`` score block and one ``train_chunk_size x dim`` float32
block, whatever the dataset size; the inputs are never copied whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from selfsup.shared.data import build_dataset
from selfsup.shared.distributed import get_rank
from selfsup.shared.evaluation.features import FeatureCache, module_sha256, split_features
from selfsup.shared.evaluation.inputs import build_transforms
from selfsup.shared.evaluation.presets import config_to_dict, resolve_config
from selfsup.shared.evaluation.probe_training import dataset_description, frozen_copy, resolve_device
from selfsup.shared.evaluation.probes import FeatureProbe
from selfsup.shared.evaluation.results import provenance, write_result

__all__ = ["class_ranking", "knn_accuracy", "nearest_neighbours", "run_knn", "topk_hits"]


def nearest_neighbours(
    train: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    *,
    metric: str = "cosine",
    train_chunk_size: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, indices)`` of the ``k`` nearest train rows of each query, best first.

    ``metric="cosine"``: each train block is L2-normalised on the fly (the queries are used as given, so
    normalise them for cosine similarities) and ``scores`` are dot products (larger is nearer).
    ``metric="euclidean"``: ``scores`` are negative Euclidean distances. ``k`` is capped at ``len(train)``.
    Each train block is reduced to its own top-``k`` before merging with the running top-``k``, so the
    temporaries are one ``queries x train_chunk_size`` score block and one float32 train block.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"--metric must be cosine or euclidean, got {metric!r}")
    k = min(k, train.shape[0])
    queries = queries.float()
    best_s = torch.empty((queries.shape[0], 0), dtype=torch.float32)
    best_i = torch.empty((queries.shape[0], 0), dtype=torch.int64)
    q_sq = (queries * queries).sum(1, keepdim=True) if metric == "euclidean" else None
    for start in range(0, train.shape[0], train_chunk_size):
        block = train[start : start + train_chunk_size].float()
        if metric == "cosine":
            block = F.normalize(block, dim=1)
            scores = queries @ block.T
        else:
            # -||q - t||^2 = 2 q.t - ||q||^2 - ||t||^2, computed in place on the score block.
            scores = (queries @ block.T).mul_(2.0).sub_(q_sq).sub_((block * block).sum(1)[None, :])
        blk_s, blk_i = scores.topk(min(k, scores.shape[1]), dim=1)
        del scores
        cand_s = torch.cat([best_s, blk_s], 1)
        cand_i = torch.cat([best_i, blk_i + start], 1)
        best_s, pos = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
        best_i = cand_i.gather(1, pos)
    if metric == "euclidean":
        best_s = -(-best_s).clamp_min(0.0).sqrt()
    return best_s, best_i


def class_ranking(scores: torch.Tensor) -> torch.Tensor:
    """Class indices sorted by ``scores`` (``Q x C``) descending; ties rank the smaller label first."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def topk_hits(ranking: torch.Tensor, labels: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> int:
    """Rows whose label is among the first ``k`` ranked classes (``valid`` masks ranked entries)."""
    head = ranking[:, :k]
    hit = head == labels[:, None]
    if valid is not None:
        hit &= valid[:, :k]
    return int(hit.any(1).sum())


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.07,
    metric: str = "cosine",
    vote: str = "weighted",
    chunk_size: int = 1024,
    train_chunk_size: int = 16384,
) -> dict[str, float | int]:
    """Top-1 / top-5 accuracy (percent) of the kNN classifier described in the module docstring."""
    if vote not in ("weighted", "majority"):
        raise ValueError(f"--vote must be weighted or majority, got {vote!r}")
    if train_features.shape[0] == 0:
        raise ValueError("kNN needs at least one train feature")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train features have dimension {train_features.shape[1]}, test features {test_features.shape[1]}"
        )
    train_f = train_features  # converted and normalised block by block in nearest_neighbours
    test_f = test_features
    train_y = train_labels.long()
    classes = int(num_classes or int(max(train_y.max(), test_labels.max())) + 1)
    hits1 = hits5 = 0
    for start in range(0, test_f.shape[0], chunk_size):
        queries = test_f[start : start + chunk_size].float()
        if metric == "cosine":
            queries = F.normalize(queries, dim=1)
        labels = test_labels[start : start + chunk_size].long()
        sims, idx = nearest_neighbours(train_f, queries, k, metric=metric, train_chunk_size=train_chunk_size)
        neighbour_labels = train_y[idx]
        if vote == "weighted":
            weights = (sims / temperature).exp()
        else:
            weights = torch.ones_like(sims)
        scores = torch.zeros((queries.shape[0], classes), dtype=weights.dtype)
        scores.scatter_add_(1, neighbour_labels, weights)
        ranking = class_ranking(scores)
        valid = None if vote == "weighted" else scores.gather(1, ranking) > 0
        hits1 += topk_hits(ranking, labels, 1, valid)
        hits5 += topk_hits(ranking, labels, min(5, classes), valid)
    total = test_f.shape[0]
    return {
        "top1": 100.0 * hits1 / max(total, 1),
        "top5": 100.0 * hits5 / max(total, 1),
        "num_train": int(train_f.shape[0]),
        "num_test": int(total),
        "num_classes": classes,
    }


def run_knn(
    backbone: nn.Module,
    *,
    dataset: str,
    root: str | Path | None = None,
    preset: str | None = None,
    k: int | None = None,
    temperature: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    transform: Callable[[Any], Any] | None = None,
    cache_dir: str | Path | None = None,
    checkpoint: dict[str, Any] | None = None,
    download: bool = False,
    output: str | Path | None = None,
    results_table: str | Path | bool | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """kNN accuracy of ``backbone``'s features: test split against train split (both un-augmented).

    ``preset`` names a :data:`~selfsup.shared.evaluation.presets.KNN_PRESETS` entry (default ``instdisc``:
    cosine, ``k`` 200, ``temperature`` 0.07); ``k``/``temperature``/``batch_size`` (extraction batch) and
    ``overrides`` replace its values. ``transform`` replaces the preset's test pipeline for both splits.
    ``use_cache=True`` reads/writes the feature cache in ``cache_dir``.
    """
    if batch_size is not None:  # ``batch_size`` names the preset's ``test_batch_size`` (also given as such)
        overrides["test_batch_size"] = batch_size
    config = resolve_config("knn", preset, dataset, k=k, temperature=temperature, **overrides)
    dev = resolve_device(device)
    _, test_tf, input_spec = build_transforms(config, dataset)
    if transform is not None:
        test_tf = transform
        input_spec = {"custom_transform": repr(transform)}
    train_set = build_dataset(dataset, root=root, split="train", transform=test_tf, download=download)
    test_set = build_dataset(dataset, root=root, split="test", transform=test_tf, download=download)
    trunk = frozen_copy(backbone, dev)
    weights_sha = module_sha256(trunk)
    probe = FeatureProbe(trunk, config.layer, config.pool)
    cache = FeatureCache(cache_dir) if config.use_cache else None
    tic = time.perf_counter()
    extracted, hits = split_features(
        probe,
        {"train": train_set, "test": test_set},
        weights_sha256=weights_sha,
        dataset=dataset,
        root=root,
        transform_spec=input_spec,
        cache=cache,
        batch_size=config.test_batch_size,
        device=dev,
        num_workers=config.num_workers,
    )
    features_s = time.perf_counter() - tic
    tic = time.perf_counter()
    metrics = knn_accuracy(
        extracted["train"][0],
        extracted["train"][1],
        extracted["test"][0],
        extracted["test"][1],
        num_classes=len(train_set.classes),
        k=config.k,
        temperature=config.temperature,
        metric=config.metric,
        vote=config.vote,
        chunk_size=config.chunk_size,
        train_chunk_size=config.train_chunk_size,
    )
    result = {
        "protocol": "knn",
        "preset": config.preset,
        "source": config.source,
        "path": "cached" if cache is not None else "standard",
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "hyperparameters": config_to_dict(config),
        "input": input_spec,
        "probe": {**probe.describe(), "feature_dim": int(extracted["train"][0].shape[1])},
        "dataset": dataset_description(dataset, root, train_set, test_set),
        "checkpoint": {**(checkpoint or {}), "weights_sha256": weights_sha},
        "curve": [],
        "cache_hits": hits,
        "timing": {"features_s": features_s, "knn_s": time.perf_counter() - tic},
        "notes": [],
        **provenance(),
    }
    if output is not None and get_rank() == 0:
        write_result(result, output, results_table=results_table)
    return result
