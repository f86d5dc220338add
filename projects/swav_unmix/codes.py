"""Codes of the assignment crops: the queue step, then Sinkhorn (``swav_loss``'s ``no_grad`` block, spec §3-4).

For each assignment crop ``a`` (position ``i`` in ``--crops_for_assign``): the batch's scores ``s_a`` (detached,
fp32), batch-reversed for crop 0 when ``reverse_first`` (Un-Mix's ``L_mix_rev``: sample ``n``'s other crops must
predict the code of ``flip_batch(m0)[n]``); with a queue, :meth:`~.queue.EmbeddingQueue.extend_scores` prepends
the queue's scores and pushes the (equally reversed) embeddings; the codes are the last ``B`` rows of
:func:`~.sinkhorn.distributed_sinkhorn`. Unlike the original (which reads the prototypes through a global
``model`` and crashes with a NameError once the queue is used), the prototype matrix is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from selfsup.swav_unmix.queue import EmbeddingQueue
from selfsup.swav_unmix.sinkhorn import distributed_sinkhorn

__all__ = ["assignment_codes"]


@torch.no_grad()
def assignment_codes(
    scores: torch.Tensor,
    embeddings: torch.Tensor,
    *,
    batch_size: int,
    crops_for_assign: Sequence[int],
    prototypes: torch.Tensor,
    queue: EmbeddingQueue | None = None,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    reverse_first: bool = False,
    group: Any = None,
) -> dict[int, torch.Tensor]:
    """``{crop index: codes [B, K]}``; advances ``queue`` by ``B`` rows per assignment crop."""
    bs = batch_size
    codes: dict[int, torch.Tensor] = {}
    for slot, crop_id in enumerate(crops_for_assign):
        out = scores[bs * crop_id : bs * (crop_id + 1)].detach().float()
        emb = embeddings[bs * crop_id : bs * (crop_id + 1)].detach().float()
        if reverse_first and crop_id == 0:
            out, emb = out.flip(0), emb.flip(0)
        if queue is not None:
            out = queue.extend_scores(slot, out, emb, prototypes)
        codes[crop_id] = distributed_sinkhorn(
            out, epsilon=epsilon, iterations=sinkhorn_iterations, group=group
        )[-bs:]
    return codes
