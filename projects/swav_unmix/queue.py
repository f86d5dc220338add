"""The per-rank queue of embeddings (``main_swav_unmix.py``, spec ``swav_unmix.md`` §3).

The queue holds ``[len(crops_for_assign), queue_length / world_size, feat_dim]`` past *embeddings*; their scores
are recomputed with the current prototypes each time they are used. It is allocated (zeros) at the start of the
first epoch ``>= --epoch_queue_starts``; ``--queue_length`` is first rounded down to a multiple of the global
batch. ``use_the_queue`` is reset at the start of every epoch and set as soon as the queue is used or its last
row is non-zero (filled once); one flag serves every assignment crop, as in the original.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["EmbeddingQueue", "effective_queue_length", "gather_queues", "rank_queue"]


def effective_queue_length(queue_length: int, batch_size: int, world_size: int) -> int:
    """``queue_length − queue_length mod (batch_size · world_size)`` (0 when shorter than one global batch)."""
    if queue_length < 0:
        raise ValueError(f"--queue_length must be >= 0, got {queue_length}")
    return queue_length - queue_length % (batch_size * world_size)


class EmbeddingQueue(nn.Module):
    """Queue buffer plus the ``use_the_queue`` flag; both go into checkpoints."""

    def __init__(self, num_assign: int, length: int, dim: int) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"queue length per rank must be >= 1, got {length}")
        self.register_buffer("queue", torch.zeros(num_assign, length, dim))
        self.register_buffer("in_use", torch.zeros((), dtype=torch.bool))

    def reset_use(self) -> None:
        """Start of an epoch: ``use_the_queue = False``."""
        self.in_use.fill_(False)

    @torch.no_grad()
    def extend_scores(
        self, slot: int, scores: torch.Tensor, embeddings: torch.Tensor, prototypes: torch.Tensor
    ) -> torch.Tensor:
        """The original's queue step for assignment crop ``slot``: if the queue is in use or full, prepend
        ``queue[slot] · Cᵀ`` to ``scores``; then shift the queue by ``B`` and write ``embeddings`` at the front.
        Returns the scores Sinkhorn sees (queue rows first, the batch's last)."""
        queue = self.queue[slot]
        bs = embeddings.shape[0]
        if bs > queue.shape[0]:
            raise ValueError(f"queue of {queue.shape[0]} rows per rank is shorter than the batch ({bs})")
        if bool(self.in_use) or not bool(torch.all(queue[-1] == 0)):
            self.in_use.fill_(True)
            scores = torch.cat((queue.float() @ prototypes.float().t(), scores))
        queue[bs:] = queue[:-bs].clone()
        queue[:bs] = embeddings
        return scores


def gather_queues(queue: EmbeddingQueue | None, world_size: int) -> dict[str, Any]:
    """The checkpoint's ``queues`` (every rank's queue, ``[world_size, A, rows, dim]``, on CPU) and
    ``queue_in_use`` (one flag per rank), all-gathered (every rank must call it); ``None`` before the queue
    starts."""
    if queue is None:
        return {"queues": None, "queue_in_use": None}
    local = queue.queue.detach()
    in_use = queue.in_use.detach().reshape(1).to(torch.int32)
    parts, flags = [local], [in_use]
    if world_size > 1:
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local)
        flags = [torch.empty_like(in_use) for _ in range(world_size)]
        dist.all_gather(flags, in_use)
    return {"queues": torch.stack(parts).cpu(), "queue_in_use": [bool(f.item()) for f in flags]}


def rank_queue(
    ckpt: Mapping[str, Any], rank: int, world_size: int, new_queue: Callable[[], EmbeddingQueue]
) -> EmbeddingQueue | None:
    """This rank's queue from a checkpoint's :func:`gather_queues` entries (``None`` when it has none);
    ``new_queue`` builds the empty queue of the flags."""
    queues = ckpt.get("queues")
    if queues is None:
        return None
    if queues.shape[0] != world_size:
        raise ValueError(
            f"the checkpoint holds the queues of {queues.shape[0]} ranks; this run has {world_size}"
        )
    queue = new_queue()
    if queue.queue.shape != queues[rank].shape:
        raise ValueError(
            f"the checkpoint's queue {tuple(queues[rank].shape)} does not fit --queue_length/--feat_dim "
            f"{tuple(queue.queue.shape)}"
        )
    queue.queue.copy_(queues[rank])
    queue.in_use.fill_(bool(ckpt["queue_in_use"][rank]))
    return queue
