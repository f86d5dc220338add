"""The per-rank queue of embeddings (``main_swav_unmix.py``, spec ``swav_unmix.md`` §3).

The queue holds ``[len(crops_for_assign), queue_length / world_size, feat_dim]`` past *embeddings*; their scores
are recomputed with the current prototypes each time they are used. It is allocated (zeros) at the start of the
first epoch ``>= --epoch_queue_starts``; ``--queue_length`` is first rounded down to a multiple of the global
batch. ``use_the_queue`` is reset at the start of every epoch and set as soon as the queue is used or its last
row is non-zero (filled once); one flag serves every assignment crop, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EmbeddingQueue", "effective_queue_length"]


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
