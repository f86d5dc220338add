"""Pieces shared by the trained protocols (linear, semi-supervised): schedules, metrics, resume state.

Epochs are 1-based here (epoch ``e`` is the ``e``-th pass over the data). Learning rate of epoch ``e``:

* ``eveningglow``: ``lr · γ^⌊(e−1)/20⌋`` (γ = 0.2: 10, 2, 0.4, ... for epochs 1–20, 21–40, ...), what the
  unofficial MoCo's ``update_lr`` after each epoch produces;
* ``step``: ``lr · γ^{#{m ∈ milestones : m ≤ e−1}}`` (MultiStepLR / official MoCo / CMC's 1-based rule);
* ``cosine``: ``final + ½(lr − final)(1 + cos(π(e−1)/E))`` (CosineAnnealingLR stepped per epoch);
* ``exponential``: ``lr · (final/lr)^{(e−1)/E}`` (ExponentialLR with γ = (final/lr)^{1/E}, W-MSE/INTL);
* ``constant``.

Evaluation happens after epoch ``e`` when ``(e − 1) % eval_every == 0`` or ``e == E`` (the unofficial MoCo's
rule, which for ``eval_every = 1`` is every epoch). The reported accuracy is the best evaluated top-1
(``select = max``, ties keep the earliest epoch; top-5 is taken at that epoch) or the last one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.distributed import barrier, get_rank, get_world_size
from selfsup.shared.optim.schedules import cosine_lr, step_lr
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state

__all__ = [
    "STATE_FORMAT",
    "accuracy_counts",
    "counts_to_metrics",
    "eveningglow_linear_lr",
    "fit",
    "init_head",
    "load_state",
    "lr_for_epoch",
    "per_rank_batch",
    "resolve_device",
    "save_state",
    "seeded",
    "select_epoch",
    "should_evaluate",
]

logger = logging.getLogger(__name__)
STATE_FORMAT = "selfsup-eval-state"


def eveningglow_linear_lr(base_lr: float, epoch_1based: int, gamma: float = 0.2, every: int = 20) -> float:
    """Rate in effect during epoch ``e`` (1-based) of the unofficial MoCo linear eval.

    The original trains epoch ``e`` and then sets ``lr = base · 0.2^⌊e/20⌋`` for the next epoch, so epoch
    ``e`` runs at ``base · 0.2^⌊(e−1)/20⌋``: 10 for epochs 1–20, 2 for 21–40, 0.4 for 41–60, … (base 10).
    """
    if epoch_1based < 1:
        raise ValueError(f"the eveningglow linear-eval schedule counts epochs from 1, got {epoch_1based}")
    return base_lr * gamma ** ((epoch_1based - 1) // every)


def lr_for_epoch(config: Any, base_lr: float, epoch: int) -> float:
    """Learning rate of 1-based ``epoch`` under ``config.schedule`` (module docstring)."""
    if epoch < 1:
        raise ValueError(f"epochs are 1-based here, got {epoch}")
    kind = config.schedule
    if kind == "eveningglow":
        return eveningglow_linear_lr(base_lr, epoch, gamma=config.gamma)
    if kind == "step":
        return step_lr(base_lr, epoch - 1, config.milestones, config.gamma)
    if kind == "cosine":
        return cosine_lr(base_lr, epoch - 1, config.epochs, config.final_lr)
    if kind == "exponential":
        if config.final_lr <= 0 or base_lr <= 0:
            raise ValueError("the exponential schedule needs --lr > 0 and --final_lr > 0")
        return base_lr * (config.final_lr / base_lr) ** ((epoch - 1) / config.epochs)
    if kind == "constant":
        return base_lr
    raise ValueError(f"unknown --schedule {kind!r}")


def should_evaluate(epoch: int, epochs: int, eval_every: int) -> bool:
    """True after the epochs the protocol evaluates (module docstring)."""
    return (epoch - 1) % eval_every == 0 or epoch == epochs


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` on the CPU generator, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def init_head(head: nn.Linear, kind: str) -> nn.Linear:
    """``default``: PyTorch's Linear init; ``normal``: weight ~ N(0, 0.01), bias 0 (MoCo, SwAV, INTL, CMC)."""
    if kind == "normal":
        nn.init.normal_(head.weight, mean=0.0, std=0.01)
        nn.init.zeros_(head.bias)
    elif kind != "default":
        raise ValueError(f"--head_init must be default or normal, got {kind!r}")
    return head


@torch.no_grad()
def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor, loss_sum: float = 0.0) -> torch.Tensor:
    """``[n, top1 hits, top5 hits, loss sum]`` (float64) for one batch; top-5 is capped at the class count."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return torch.tensor(
        [labels.shape[0], hits[:, :1].any(1).sum().item(), hits.any(1).sum().item(), loss_sum],
        dtype=torch.float64,
    )


def counts_to_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Percentages from summed :func:`accuracy_counts` (and the mean loss)."""
    n = max(float(counts[0]), 1.0)
    return {
        "top1": 100.0 * float(counts[1]) / n,
        "top5": 100.0 * float(counts[2]) / n,
        "loss": float(counts[3]) / n,
    }


def select_epoch(curve: list[dict[str, Any]], select: str) -> dict[str, Any] | None:
    """The curve entry whose accuracy is reported: best evaluated top-1 (earliest on ties) or the last one."""
    evaluated = [entry for entry in curve if entry.get("top1") is not None]
    if not evaluated:
        return None
    if select == "last":
        return evaluated[-1]
    best = evaluated[0]
    for entry in evaluated[1:]:
        if entry["top1"] > best["top1"]:
            best = entry
    return best


def save_state(path: str | Path | None, payload: dict[str, Any]) -> None:
    """Write the resume state atomically on rank 0 (every rank waits for it)."""
    if path is None:
        return
    if get_rank() == 0:
        atomic_save({"format": STATE_FORMAT, "rng": capture_rng_state(), **payload}, path)
    barrier()


def load_state(path: str | Path | None, *, expect: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state at ``path`` (or None when there is none), checked against ``expect``.

    ``expect`` holds the values that must match for a resume to be valid (protocol, configuration, weights
    hash); a mismatch raises ``ValueError`` naming the differing entries (start fresh without ``--resume``).
    """
    if path is None or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"--resume: {path} is not a selfsup-eval state file (format {STATE_FORMAT!r})")
    differing = [key for key, value in expect.items() if state.get(key) != value]
    if differing:
        raise ValueError(
            f"--resume: {path} was written by a different run ({', '.join(differing)} differ); "
            "delete it or drop --resume to start fresh"
        )
    restore_rng_state(state["rng"])
    logger.info("resumed from %s after epoch %d", path, state["epoch"])
    return state


def fit(
    *,
    config: Any,
    start_epoch: int,
    curve: list[dict[str, Any]],
    set_lr: Any,
    train_epoch: Any,
    evaluate: Any,
    state_payload: Any,
    state_path: str | Path | None,
    tag: str,
) -> list[dict[str, Any]]:
    """Run epochs ``start_epoch..config.epochs``: set the rate, train, evaluate when due, save the state.

    ``set_lr(epoch) -> lr``, ``train_epoch(epoch) -> {"loss", "top1"}``, ``evaluate() -> {"top1", "top5",
    "loss"}`` and ``state_payload(epoch, curve) -> dict`` are supplied by the protocol. Returns the curve (one
    entry per epoch: epoch, lr, train_loss, train_top1, and top1/top5/test_loss when evaluated).
    """
    for epoch in range(start_epoch, config.epochs + 1):
        lr = set_lr(epoch)
        train = train_epoch(epoch)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train["loss"],
            "train_top1": train["top1"],
            "top1": None,
            "top5": None,
            "test_loss": None,
        }
        if should_evaluate(epoch, config.epochs, config.eval_every):
            metrics = evaluate()
            entry.update(top1=metrics["top1"], top5=metrics["top5"], test_loss=metrics["loss"])
        curve.append(entry)
        save_state(state_path, state_payload(epoch, curve))
        shown = (
            f" test top1 {entry['top1']:.2f} top5 {entry['top5']:.2f}" if entry["top1"] is not None else ""
        )
        logger.info(
            "%s epoch %d/%d lr %.4g loss %.4f train top1 %.2f%s",
            tag,
            epoch,
            config.epochs,
            lr,
            train["loss"],
            train["top1"],
            shown,
        )
    return curve


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, else ``cuda:<local rank>`` when CUDA is available, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def per_rank_batch(batch_size: int, flag: str = "--batch_size") -> int:
    """``batch_size`` split over the ranks; it must divide evenly."""
    world = get_world_size()
    if batch_size % world:
        raise ValueError(f"{flag} {batch_size} (global) must be divisible by the world size {world}")
    return batch_size // world


def frozen_copy(backbone: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``backbone`` on ``device`` with every parameter frozen."""
    trunk = copy.deepcopy(backbone).to(device)
    trunk.requires_grad_(False)
    return trunk


def dataset_description(name: str, root: Any, train: Any, test: Any) -> dict[str, Any]:
    return {
        "name": name,
        "root": str(root) if root is not None else None,
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": len(train.classes),
    }
