"""The MoCo model: query encoder, momentum (key) encoder, key queue and shuffle BN, in one module.

Follows the unofficial MoCo v1 (eveningglow/MoCo) as specified in ``specs/moco.md``:

* the key encoder starts as an exact copy of the query encoder's whole ``state_dict`` and is updated
  *after* each optimiser step as ``θ_k ← m·θ_k + (1−m)·θ_q`` over parameters **and** BN buffers;
* the queue holds ``K`` keys (FIFO), initialised from real key features before training;
* shuffle BN permutes the key batch before the key encoder and restores the order after it. It only
  changes anything when BN statistics are per device: across processes under DDP
  (:func:`batch_shuffle_ddp`) or, on one device, across the ``bn_splits`` sub-batches of a
  :class:`SplitBatchNorm2d` that emulates the original's per-GPU BN under ``nn.DataParallel``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.shared.distributed import (
    all_gather_no_grad,
    batch_shuffle_ddp,
    batch_unshuffle_ddp,
    get_world_size,
)
from selfsup.shared.models.backbones import ResNet
from selfsup.shared.models.split_batchnorm import convert_split_batchnorm


def projection_head(feature_dim: int, dim: int, mlp: bool) -> nn.Module:
    """v1: ``Linear(feature_dim, dim)``; v2 (``--mlp``): ``Linear → ReLU → Linear`` (keys ``fc.0``/``fc.2``)."""
    if not mlp:
        return nn.Linear(feature_dim, dim)
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, dim)
    )


class MoCo(nn.Module):
    """Momentum Contrast (He et al., CVPR 2020) with the unofficial v1's key-encoder update."""

    def __init__(
        self,
        encoder: ResNet,
        *,
        dim: int = 128,
        num_keys: int = 4096,
        momentum: float = 0.999,
        temperature: float = 0.07,
        mlp: bool = False,
        shuffle_bn: bool = False,
        bn_splits: int = 1,
    ) -> None:
        super().__init__()
        if num_keys < 1:
            raise ValueError(f"--num_keys must be positive, got {num_keys}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"--momentum must lie in [0, 1], got {momentum}")
        encoder.fc = projection_head(encoder.feature_dim, dim, mlp)
        self.encoder_q = convert_split_batchnorm(encoder, bn_splits)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad = False
        self.momentum = momentum
        self.temperature = temperature
        self.shuffle_bn = shuffle_bn
        self.bn_splits = bn_splits
        self.register_buffer("queue", F.normalize(torch.randn(num_keys, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def num_keys(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """``θ_k ← m·θ_k + (1−m)·θ_q`` for every floating-point ``state_dict`` entry (params + BN stats).

        Integer buffers (BN ``num_batches_tracked``) are copied; the original multiplied them by floats and
        truncated, which changes nothing that the models use. ``momentum=0`` makes an exact copy.
        """
        m = self.momentum if momentum is None else momentum
        q_state = self.encoder_q.state_dict()
        floats_k, floats_q = [], []
        for name, k_val in self.encoder_k.state_dict().items():
            if k_val.is_floating_point():
                floats_k.append(k_val)
                floats_q.append(q_state[name])
            else:
                k_val.copy_(q_state[name])
        if m == 0.0:
            torch._foreach_copy_(floats_k, floats_q)
        else:  # θ_k + (1−m)(θ_q − θ_k) in one fused pass (benchmarks/bench_moco_step.py: 28 -> 19 ms on R50)
            torch._foreach_lerp_(floats_k, floats_q, 1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """FIFO: ``keys`` (all ranks' keys under DDP, in rank order) replace the oldest entries.

        The ring is written backwards: each batch goes, in its own order, just before the previous newest
        batch (wrapping around), and ``queue_ptr`` points at its first key. Read from ``queue_ptr`` on, the
        queue is then exactly the original's ``queue = cat([k, queue[:K-N]])``: newest batch first, each
        batch in batch order (:meth:`ordered_queue`). A batch of ``K`` keys or more fills the queue with its
        first ``K`` keys, the original's leading ``K`` entries.
        """
        keys = all_gather_no_grad(keys.detach()).to(self.queue.dtype)
        n, size = keys.shape[0], self.num_keys
        if n >= size:
            self.queue.copy_(keys[:size])
            self.queue_ptr.zero_()
            return
        start = (int(self.queue_ptr) - n) % size
        first = min(n, size - start)
        self.queue[start : start + first] = keys[:first]
        self.queue[: n - first] = keys[first:]
        self.queue_ptr.fill_(start)

    @torch.no_grad()
    def init_queue(self, keys: torch.Tensor) -> None:
        """Fill the whole queue with real key features in collection order (the original's start-up pass)."""
        if keys.shape[0] < self.num_keys:
            raise ValueError(f"queue init needs {self.num_keys} keys, got {keys.shape[0]}")
        self.queue.copy_(keys[: self.num_keys])
        self.queue_ptr.zero_()

    def ordered_queue(self) -> torch.Tensor:
        """The queue in the original's order (``cat([k, queue[:K-N]])`` after each step): a rotation of the
        ring so that it starts at the newest batch's first key."""
        ptr = int(self.queue_ptr)
        return torch.cat([self.queue[ptr:], self.queue[:ptr]])

    @torch.no_grad()
    def encode_keys(self, x_k: torch.Tensor) -> torch.Tensor:
        """``k = normalize(f_k(x_k))`` with shuffle BN when enabled (order of the batch is restored)."""
        if self.shuffle_bn and get_world_size() > 1:
            x_k, idx_unshuffle = batch_shuffle_ddp(x_k)
            return batch_unshuffle_ddp(F.normalize(self.encoder_k(x_k), dim=1), idx_unshuffle)
        if self.shuffle_bn:
            perm = torch.randperm(x_k.shape[0], device=x_k.device)
            k = F.normalize(self.encoder_k(x_k[perm]), dim=1)
            return k[torch.argsort(perm)]
        return F.normalize(self.encoder_k(x_k), dim=1)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the queries and keys ``(q [N, D], k [N, D])``, both L2-normalised; the objective is
        :func:`~selfsup.moco.loss.info_nce_loss` against :attr:`queue`. Call :meth:`momentum_update` and
        :meth:`enqueue` (with the keys) after the optimiser step, as the original does."""
        return F.normalize(self.encoder_q(x_q), dim=1), self.encode_keys(x_k)

    @torch.no_grad()
    def fill_queue(self, key_views: Iterable[torch.Tensor]) -> None:
        """The original's start-up pass: key features of ``key_views`` (batches of the second view; all ranks'
        keys under DDP) fill the queue in collection order."""
        keys, have = [], 0
        for x_k in key_views:
            k = all_gather_no_grad(F.normalize(self.encoder_k(x_k), dim=1))
            keys.append(k)
            have += k.shape[0]
            if have >= self.num_keys:
                break
        if have < self.num_keys:
            raise ValueError(
                f"--num_keys {self.num_keys} exceeds the {have} images of the training set; lower --num_keys"
            )
        self.init_queue(torch.cat(keys))
