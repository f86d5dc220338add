"""Un-Mix on SwAV: the mixed crops, the chained λ and the output re-slicing (``main_swav_unmix.py``, spec §4).

Per iteration, from NumPy's global RNG in the original's order (seeded by ``--seed``, identical on every rank):
``r = rand(1)``, then ``λ ~ Beta(β, β)`` (``--unmix_beta``). For each pair of crops ``(c_k, c_{k+1})``,
``k = 0, 2, 4, …``, with ``x̄ = flip_batch(c_k)``:

* ``r < --unmix_prob``: global mixture ``m_k = λ·c_k + (1−λ)·x̄``;
* otherwise region mixture: ``m_k = c_k`` with the box ``rand_bbox(c_k, λ)`` copied from ``x̄``, and **λ is
  overwritten** by the kept area, so the next pair's box uses the corrected λ and the λ that weights the loss is
  the last pair's.

The forward list is ``[c0, c1, m0, c2, c3, m2, …]``; its outputs split into the original set
``[c0, c1, c2, c3, …]`` and the mixed set ``[m0, c1, m2, c3, …]`` (:func:`split_unmix_rows`). The loss is
``L_ori + λ·L_mix + (1−λ)·L_mix_rev`` (:func:`.loss.unmix_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from selfsup.shared.data.mixtures import Box, flip_batch, global_mix, kept_area, rand_bbox, region_mix

__all__ = ["UnMixBatch", "mix_crops", "split_unmix_rows"]


@dataclass(frozen=True)
class UnMixBatch:
    """The forward list, the λ that weights the loss, the mode and each pair's box (region mode)."""

    crops: list[torch.Tensor]
    lam: float
    mode: str  # "global" or "region"
    boxes: tuple[Box | None, ...]


def mix_crops(
    crops: Sequence[torch.Tensor], *, unmix_prob: float, beta: float, rng: Any = np.random
) -> UnMixBatch:
    """Draw ``r`` and ``λ`` from ``rng`` and build the forward list of the module docstring."""
    if len(crops) % 2:
        raise ValueError(f"Un-Mix mixes crops in pairs; got {len(crops)} crops")
    r = float(rng.rand(1)[0])
    lam = float(rng.beta(beta, beta))
    mode = "global" if r < unmix_prob else "region"
    out: list[torch.Tensor] = []
    boxes: list[Box | None] = []
    for k in range(0, len(crops), 2):
        x = crops[k]
        if crops[k + 1].shape != x.shape:
            raise ValueError(f"Un-Mix pairs crops {k} and {k + 1} of different shapes")
        reverse = flip_batch(x)
        if mode == "global":
            mixed, box = global_mix(x, reverse, lam), None
        else:
            height, width = x.shape[-2], x.shape[-1]
            box = rand_bbox(height, width, lam, rng)
            mixed = region_mix(x, reverse, box)
            lam = kept_area(box, height, width)
        out += [x, crops[k + 1], mixed]
        boxes.append(box)
    return UnMixBatch(out, lam, mode, tuple(boxes))


def split_unmix_rows(rows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of ``[c0, c1, m0, c2, c3, m2, …]`` (``[3P·B, …]``) -> (original ``[c0, c1, c2, c3, …]``,
    mixed ``[m0, c1, m2, c3, …]``), each ``[2P·B, …]``."""
    triples = rows.shape[0] // (3 * batch_size)
    if triples * 3 * batch_size != rows.shape[0]:
        raise ValueError(f"{rows.shape[0]} rows are not triples of crops of batch {batch_size}")
    view = rows.view(triples, 3, batch_size, *rows.shape[1:])
    original = view[:, [0, 1]].reshape(2 * triples * batch_size, *rows.shape[1:])
    mixed = view[:, [2, 1]].reshape(2 * triples * batch_size, *rows.shape[1:])
    return original, mixed
