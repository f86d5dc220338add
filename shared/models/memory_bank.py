"""A memory bank of per-instance feature rows with uniform negative sampling, identical on every rank.

The non-parametric memory of instance discrimination (Wu et al., "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", CVPR 2018, arXiv:1805.01978, §3.2) holds one ``dim``-vector per
training example. Each step a method

1. draws ``K`` noise indices per sample (:meth:`MemoryBank.sample_indices`, Walker's alias method over the
   noise distribution, :class:`AliasMultinomial`; uniform here, as in the originals),
2. reads the rows (:meth:`MemoryBank.gather_rows`, detached copies, taken *before* the update), and
3. moves the rows of the batch's own examples towards the new features (:meth:`MemoryBank.update`):
   ``v_i ← normalize(m·v_i + (1−m)·f_i)``.

Under data parallelism the update first all-gathers features and indices from every rank (rank order), so the
bank stays identical on all ranks and equals a single process's bank after the concatenated batch, whatever the
number of processes. Every collective is a no-op at world size 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from selfsup.shared.distributed import all_gather_no_grad

__all__ = ["AliasMultinomial", "MemoryBank", "uniform_memory_init"]


def _alias_tables(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker/Vose tables: column ``i`` keeps itself with probability ``prob[i]``, else yields ``alias[i]``."""
    if probs.dim() != 1 or probs.numel() == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D tensor, got shape {tuple(probs.shape)}")
    p = probs.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0.0:
        raise ValueError("probabilities must be finite, non-negative and have a positive sum")
    n = p.numel()
    scaled = p * (n / p.sum())
    if bool((p == p[0]).all()):  # uniform (the originals' unigrams): every column keeps itself
        return torch.ones(n), torch.arange(n)
    prob = scaled.tolist()
    alias = list(range(n))
    small = [i for i, q in enumerate(prob) if q < 1.0]
    large = [i for i, q in enumerate(prob) if q >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        alias[s] = g
        prob[g] = (prob[g] - 1.0) + prob[s]
        (small if prob[g] < 1.0 else large).append(g)
    for i in small + large:  # left over only through rounding: their mass is ~1
        prob[i] = 1.0
    return torch.tensor(prob, dtype=torch.float32), torch.tensor(alias, dtype=torch.long)


class AliasMultinomial(nn.Module):
    """i.i.d. draws from a categorical distribution in O(1) each (Walker's alias method).

    Walker, "An efficient method for generating discrete random variables with general distributions", ACM
    TOMS 1977; built with Vose's O(n) pairing of under- and over-full columns. Column ``i`` of the table keeps
    itself with probability ``prob[i]`` and otherwise yields ``alias[i]``, so one draw is a uniform column
    ``c`` and one Bernoulli(``prob[c]``) — the ``AliasMethod`` of the CMC / InsDis code, which builds it over
    uniform unigrams (a uniform distribution gives ``prob = 1``, ``alias[i] = i``).

    Args:
        probs: ``[n]`` non-negative weights (normalised here; need not sum to 1).

    The tables ``prob`` (fp32) and ``alias`` (int64) are non-persistent buffers: they follow ``.to(device)``
    but stay out of ``state_dict``, since they are a function of ``probs``.
    """

    prob: torch.Tensor
    alias: torch.Tensor

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        prob, alias = _alias_tables(probs)
        self.register_buffer("prob", prob, persistent=False)
        self.register_buffer("alias", alias, persistent=False)

    @property
    def num_outcomes(self) -> int:
        return self.alias.numel()

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` i.i.d. outcomes, a LongTensor on the tables' device.

        Randomness: ``n`` uniform columns, then ``n`` Bernoulli trials (the original's order), from
        ``generator`` (which must live on the tables' device) or, when ``None``, from torch's global RNG of that
        device — whose state the trainers already checkpoint.
        """
        column = torch.randint(0, self.num_outcomes, (n,), generator=generator, device=self.alias.device)
        keep = torch.bernoulli(self.prob.index_select(0, column), generator=generator)
        return torch.where(keep.bool(), column, self.alias.index_select(0, column))


def uniform_memory_init(
    num_entries: int, dim: int, generator: torch.Generator | None = None, device: Any = None
) -> torch.Tensor:
    """``[num_entries, dim]`` fp32 rows ~ U(−σ, σ), σ = 1/√(dim/3), **not** normalised (the originals' init).

    σ makes each coordinate's variance σ²/3 = 1/dim, i.e. rows of expected squared norm 1. Drawn with one
    ``torch.rand`` from ``generator`` or, when ``None``, torch's global RNG.
    """
    stdv = 1.0 / math.sqrt(dim / 3)
    return torch.rand(num_entries, dim, generator=generator, device=device).mul_(2 * stdv).add_(-stdv)


def _last_occurrences(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique values of ``indices`` and, for each, the position of its last occurrence."""
    unique, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.numel(), device=indices.device)
    last = torch.full_like(unique, -1).scatter_reduce_(0, inverse, positions, reduce="amax")
    return unique, last


class MemoryBank(nn.Module):
    """``num_entries × dim`` feature rows (buffer ``memory``, fp32) with uniform negatives and momentum updates.

    Args:
        num_entries: number of rows N (the training-set size for a per-instance memory).
        dim: row dimension D (``--feat_dim``, 128).
        generator: torch generator for the U(−σ, σ) initialisation (:func:`uniform_memory_init`); ``None``
            draws from the global RNG, as the originals do.
        sampler: build the uniform :class:`AliasMultinomial` behind :meth:`sample_indices` (a second bank
            indexed with the first bank's indices does not need its own).

    Only ``memory`` is in ``state_dict``; randomness comes from the generator passed to
    :meth:`sample_indices` or the global RNG, so a checkpoint of the bank plus the RNG states resumes
    bitwise.
    """

    memory: torch.Tensor

    def __init__(
        self, num_entries: int, dim: int, *, generator: torch.Generator | None = None, sampler: bool = True
    ) -> None:
        super().__init__()
        if num_entries < 1 or dim < 1:
            raise ValueError(f"a memory bank needs num_entries >= 1 and dim >= 1, got {num_entries}, {dim}")
        self.register_buffer("memory", uniform_memory_init(num_entries, dim, generator))
        self.sampler = AliasMultinomial(torch.ones(num_entries)) if sampler else None

    @property
    def num_entries(self) -> int:
        return self.memory.shape[0]

    @property
    def dim(self) -> int:
        return self.memory.shape[1]

    def sample_indices(
        self, positives: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, K+1]`` indices: column 0 = ``positives`` ``[B]``, columns 1..K uniform over all N entries.

        Draws are with replacement and may hit the positive itself (as in the originals). ``B·(K+1)`` values
        are drawn and column 0 is then overwritten, which consumes the RNG as the original sampler does.
        """
        if self.sampler is None:
            raise RuntimeError("this MemoryBank was built with sampler=False")
        if positives.dim() != 1:
            raise ValueError(f"positives must be [B], got shape {tuple(positives.shape)}")
        if k < 0:
            raise ValueError(f"the number of negatives must be >= 0, got {k}")
        batch = positives.shape[0]
        idx = self.sampler.draw(batch * (k + 1), generator=generator).view(batch, k + 1)
        idx[:, 0] = positives.to(idx.device)
        return idx

    def gather_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Detached copies of the rows ``idx`` (any shape S), shape ``[*S, D]``; later updates do not alter
        them."""
        rows = self.memory.index_select(0, idx.reshape(-1).to(self.memory.device))
        return rows.view(*idx.shape, self.dim).detach()

    @torch.no_grad()
    def update(
        self, features: torch.Tensor, indices: torch.Tensor, momentum: float, group: Any = None
    ) -> None:
        """``memory[i] ← normalize(m·memory[i] + (1−m)·f)`` for each (feature, index) of the global batch.

        Args:
            features: ``[B, D]`` this rank's features (any float dtype; no gradient is kept).
            indices: ``[B]`` their row indices.
            momentum: m (``--nce_m``; 0.5 in CMC and InsDis).
            group: process group to gather over (default: the world).

        Features and indices of all ranks are all-gathered first (rank order; every rank must pass the same
        B), so every rank applies the same update. Arithmetic in fp32, in the originals' order
        (``row·m + f·(1−m)``, divided by ``√Σrow²``, no ε). Every row is computed from the pre-update memory; an
        index that occurs several times takes the last occurrence's result, as ``index_copy_`` does on CPU
        (made explicit here, since CUDA's ``index_copy_`` leaves duplicates unordered).
        """
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [B, {self.dim}], got shape {tuple(features.shape)}")
        if indices.shape != features.shape[:1]:
            raise ValueError(f"indices must be [{features.shape[0]}], got shape {tuple(indices.shape)}")
        features = all_gather_no_grad(features.detach().to(self.memory.dtype), group)
        indices = all_gather_no_grad(indices.to(self.memory.device, torch.long), group)
        with torch.autocast(device_type=self.memory.device.type, enabled=False):
            rows = self.memory.index_select(0, indices)
            rows.mul_(momentum).add_(features.mul(1 - momentum))
            rows = rows.div(rows.pow(2).sum(1, keepdim=True).pow(0.5))
        unique, last = _last_occurrences(indices)
        self.memory.index_copy_(0, unique, rows.index_select(0, last))
