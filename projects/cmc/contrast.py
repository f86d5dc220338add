"""The contrast modules of CMC, InsDis and MoCo: memory banks, queue, constants Z, and the scores.

The originals' ``NCEAverage`` (CMC), ``MemoryInsDis`` and ``MemoryMoCo`` (``NCE/NCEAverage.py``), as specified in
``specs/cmc.md`` §3–§4. Each module owns all of its state as buffers, so ``state_dict`` holds everything a
bitwise resume needs (the memories, the one-time constants Z, the queue *and* its pointer, which the original
did not save); negatives are drawn from the generator passed to ``forward`` (the trainers pass each rank's own,
:class:`selfsup.cmc.common.NegativeDraws`, and checkpoint its state) or else torch's global RNG. ``original_state_dict`` / ``load_original_state_dict`` read and write the original
checkpoint's ``contrast`` entry (§10).

Scores and updates run in fp32 with autocast disabled, whatever the encoders' precision. Under DDP each rank
scores its own batch against the same (pre-update) memory; the updates gather all ranks' features, indices or
keys first (rank order), and Z is set from the mean over the global batch, so memories, queue and Z stay
identical on every rank. ``forward`` must therefore be called on every rank at every step, with the same batch
size on every rank (a ``DistributedSampler`` ensures it). Do not wrap these modules in DDP: they have no
parameters, and DDP's buffer broadcast would only copy identical memories.

The losses on the returned scores are :func:`selfsup.cmc.loss.nce_loss` and :func:`selfsup.cmc.loss.softmax_loss`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from selfsup.shared.distributed import all_gather_no_grad, all_reduce_mean
from selfsup.shared.models.memory_bank import MemoryBank, uniform_memory_init
from selfsup.shared.runtime.precision import fp32_region

__all__ = ["CMCContrast", "CMCScores", "InsDisContrast", "MoCoContrast"]

log = logging.getLogger(__name__)


class CMCScores(NamedTuple):
    """The two outputs of :class:`CMCContrast`, each ``[B, K+1]`` with the positive in column 0."""

    out_l: torch.Tensor
    """L anchors scored against the ab memory: ``⟨memory_ab[idx], l⟩`` (the loss term that trains the L
    encoder against ab targets)."""
    out_ab: torch.Tensor
    """ab anchors scored against the L memory: ``⟨memory_l[idx], ab⟩``."""


def _check_args(num_data: int, dim: int, k: int, temperature: float, k_flag: str = "--nce_k") -> None:
    if num_data < 1:
        raise ValueError(f"num_data (the training-set size) must be positive, got {num_data}")
    if dim < 1:
        raise ValueError(f"--feat_dim must be positive, got {dim}")
    if k < 1:
        raise ValueError(f"{k_flag} must be positive, got {k}")
    if not temperature > 0:
        raise ValueError(f"--nce_t must be positive, got {temperature}")


def _check_momentum(momentum: float) -> None:
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"--nce_m must lie in [0, 1], got {momentum}")


def _batch(features: torch.Tensor, dim: int, name: str) -> int:
    if features.dim() != 2 or features.shape[1] != dim:
        raise ValueError(f"{name} must be [B, {dim}], got shape {tuple(features.shape)}")
    return features.shape[0]


def _check_index(index: torch.Tensor, batch: int) -> None:
    if index.shape != (batch,):
        raise ValueError(f"index must be [{batch}] (the instance ids), got shape {tuple(index.shape)}")


def _check_idx(idx: torch.Tensor, batch: int, k: int) -> None:
    if idx.shape != (batch, k + 1):
        raise ValueError(f"idx must be [{batch}, {k + 1}] (positive first), got shape {tuple(idx.shape)}")


def _nce_probs(
    scores: torch.Tensor, temperature: float, z: torch.Tensor, num_data: int, name: str
) -> torch.Tensor:
    """``exp(s/T)/Z``; on the first call (``z < 0``) set ``z = mean(exp(s/T))·N`` over the global batch."""
    out = torch.exp(torch.div(scores, temperature))
    if float(z) < 0:
        mean = all_reduce_mean(out.detach().mean().reshape(1))
        z.copy_(mean.reshape(()) * num_data)
        log.info("normalization constant %s is set to %.1f", name, float(z))
    return torch.div(out, z)


class _RowScores(torch.autograd.Function):
    """``s[b, j] = ⟨rows[b, j], a[b]⟩`` with the gradient to ``a`` only (the memory rows are constants).

    The forward is the original's ``bmm(rows, a)``. Autograd's backward of that ``bmm`` multiplies the transposed
    ``[D, K+1]`` slices by a column, a strided pass that took 89 ms per view at K = 4096, batch 128 on our CPU;
    ``grad_a[b] = g[b] @ rows[b]`` as one row-vector ``bmm`` gives the same values in 14 ms
    (``benchmarks/bench_cmc_step.py``).
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(rows)
        batch, dim = anchors.shape
        return torch.bmm(rows, anchors.view(batch, dim, 1)).view(batch, -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        return None, torch.bmm(grad.unsqueeze(1).to(rows.dtype), rows).squeeze(1)


def _scores(rows: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``[B, K+1]`` inner products of ``rows`` ``[B, K+1, D]`` (detached memory rows) with ``anchors`` ``[B, D]``
    (the original's ``bmm``), differentiable in ``anchors``."""
    return _RowScores.apply(rows.detach(), anchors)


def _check_original(state: Mapping[str, Any], expected: dict[str, tuple[int, ...]], what: str) -> None:
    found = sorted(state)
    if found != sorted(expected):
        raise KeyError(f"not an original {what} 'contrast' state: keys {found}, expected {sorted(expected)}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"original {what} state: {key} has shape {tuple(state[key].shape)}, expected {shape}"
            )


def _check_params(params: torch.Tensor, expected: dict[int, tuple[str, float]], what: str) -> None:
    """Compare the hyper-parameters stored in the original ``params`` with this module's (as fp32)."""
    for pos, (flag, value) in expected.items():
        mine = torch.tensor(value, dtype=torch.float32)
        if not torch.equal(params[pos].float().cpu(), mine):
            raise ValueError(
                f"original {what} state was written with {flag} {float(params[pos]):g}, this module has {value:g}"
            )


class _MemoryContrast(nn.Module):
    """Hyper-parameters shared by the memory-bank contrasts (validated, kept as plain attributes)."""

    def __init__(
        self,
        num_data: int,
        dim: int,
        num_negatives: int,
        temperature: float,
        momentum: float,
        use_softmax: bool,
    ) -> None:
        super().__init__()
        _check_args(num_data, dim, num_negatives, temperature)
        _check_momentum(momentum)
        self.num_data = num_data
        self.dim = dim
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.momentum = momentum
        self.use_softmax = use_softmax

    def extra_repr(self) -> str:
        return (
            f"num_data={self.num_data}, dim={self.dim}, num_negatives={self.num_negatives}, "
            f"temperature={self.temperature}, momentum={self.momentum}, use_softmax={self.use_softmax}"
        )


class CMCContrast(_MemoryContrast):
    """Two-view memory-bank contrast of CMC (the original's ``NCEAverage``), ``specs/cmc.md`` §3.

    Args (keyword only):
        num_data: N, the training-set size (rows per memory; also the noise normaliser of Z).
        dim: D, the feature size (``--feat_dim``, 128).
        num_negatives: K (``--nce_k``, 16384).
        temperature: T (``--nce_t``, 0.07).
        momentum: m of the memory update (``--nce_m``, 0.5).
        use_softmax: ``--softmax``: return logits ``s/T`` (for :func:`~selfsup.cmc.loss.softmax_loss`);
            otherwise NCE probabilities ``exp(s/T)/Z`` (for :func:`~selfsup.cmc.loss.nce_loss`).
        generator: draws the U(−σ, σ) initial memories (``memory_l`` first); ``None``: the global RNG.

    State: ``memory_l.memory`` and ``memory_ab.memory`` (``[N, D]`` fp32), ``z_l`` and ``z_ab`` (fp32 scalars,
    −1 until set on the first NCE batch, then frozen).
    """

    z_l: torch.Tensor
    z_ab: torch.Tensor

    def __init__(
        self,
        *,
        num_data: int,
        dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        use_softmax: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_data, dim, num_negatives, temperature, momentum, use_softmax)
        self.memory_l = MemoryBank(num_data, dim, generator=generator)
        self.memory_ab = MemoryBank(num_data, dim, generator=generator, sampler=False)
        self.register_buffer("z_l", torch.tensor(-1.0))
        self.register_buffer("z_ab", torch.tensor(-1.0))

    def forward(
        self,
        l: torch.Tensor,  # noqa: E741 (the original's name for the L view)
        ab: torch.Tensor,
        index: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        idx: torch.Tensor | None = None,
    ) -> CMCScores:
        """Score both views against the other view's memory, then update both memories.

        Args:
            l: ``[B, D]`` unit-norm features of the L (or Y) view; gradients flow through.
            ab: ``[B, D]`` unit-norm features of the ab (or CbCr) view.
            index: ``[B]`` instance ids (the positives).
            generator: for the K uniform negatives (on the memory's device); ``None``: the global RNG.
            idx: ``[B, K+1]`` indices to use instead of sampling (column 0 must be ``index``), as the original
                allows.

        Returns:
            :class:`CMCScores` ``(out_l, out_ab)``, each ``[B, K+1]`` fp32, positive first:
            ``s_l[b, j] = ⟨memory_ab[idx[b, j]], l_b⟩`` and ``s_ab[b, j] = ⟨memory_l[idx[b, j]], ab_b⟩`` with
            the pre-update, detached rows; ``s/T`` in softmax mode, else ``exp(s/T)/Z_l`` and
            ``exp(s/T)/Z_ab``. Afterwards ``memory_l[index] ← normalize(m·memory_l[index] + (1−m)·l)`` and
            likewise ``memory_ab`` with ``ab`` (all ranks' rows).
        """
        batch = _batch(l, self.dim, "l")
        _batch(ab, self.dim, "ab")
        _check_index(index, batch)
        l, ab = l.float(), ab.float()  # noqa: E741
        with fp32_region(l.device):
            if idx is None:
                idx = self.memory_l.sample_indices(index, self.num_negatives, generator=generator)
            _check_idx(idx, batch, self.num_negatives)
            s_ab = _scores(self.memory_l.gather_rows(idx), ab)
            s_l = _scores(self.memory_ab.gather_rows(idx), l)
            if self.use_softmax:
                out_l, out_ab = torch.div(s_l, self.temperature), torch.div(s_ab, self.temperature)
            else:
                out_l = _nce_probs(s_l, self.temperature, self.z_l, self.num_data, "Z_l")
                out_ab = _nce_probs(s_ab, self.temperature, self.z_ab, self.num_data, "Z_ab")
            self.memory_l.update(l, index, self.momentum)
            self.memory_ab.update(ab, index, self.momentum)
        return CMCScores(out_l, out_ab)

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The original checkpoint's ``contrast``: ``params = [K, T, Z_l, Z_ab, m]`` (fp32), ``memory_l``,
        ``memory_ab``: the buffers themselves, not copies, so that a checkpoint holding this beside
        ``state_dict()`` stores each memory once (``torch.save`` keeps one copy of a shared storage)."""
        params = torch.tensor(
            [self.num_negatives, self.temperature, float(self.z_l), float(self.z_ab), self.momentum],
            dtype=torch.float32,
        )
        return {
            "params": params.to(self.z_l.device),
            "memory_l": self.memory_l.memory.detach(),
            "memory_ab": self.memory_ab.memory.detach(),
        }

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
        """Load an original ``contrast`` entry; with ``strict`` its K, T and m must equal this module's."""
        shape = tuple(self.memory_l.memory.shape)
        _check_original(state, {"params": (5,), "memory_l": shape, "memory_ab": shape}, "CMC")
        params = state["params"]
        if strict:
            _check_params(
                params,
                {
                    0: ("--nce_k", self.num_negatives),
                    1: ("--nce_t", self.temperature),
                    4: ("--nce_m", self.momentum),
                },
                "CMC",
            )
        with torch.no_grad():
            self.memory_l.memory.copy_(state["memory_l"])
            self.memory_ab.memory.copy_(state["memory_ab"])
            self.z_l.copy_(params[2])
            self.z_ab.copy_(params[3])


class InsDisContrast(_MemoryContrast):
    """Instance-discrimination memory bank (the original's ``MemoryInsDis``), ``specs/cmc.md`` §4.

    Args (keyword only): as :class:`CMCContrast` — ``num_data`` (N), ``dim`` (``--feat_dim``),
    ``num_negatives`` (``--nce_k``), ``temperature`` (``--nce_t``), ``momentum`` (``--nce_m``, 0.5),
    ``use_softmax`` (``--softmax``), ``generator`` (initial memory).

    State: ``memory.memory`` (``[N, D]`` fp32) and ``z`` (fp32 scalar, −1 until the first NCE batch).
    """

    z: torch.Tensor

    def __init__(
        self,
        *,
        num_data: int,
        dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        use_softmax: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_data, dim, num_negatives, temperature, momentum, use_softmax)
        self.memory = MemoryBank(num_data, dim, generator=generator)
        self.register_buffer("z", torch.tensor(-1.0))

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score ``x`` ``[B, D]`` against its own memory row (positive) and K uniform rows, then update.

        Returns ``[B, K+1]`` fp32: ``s[b, j] = ⟨memory[idx[b, j]], x_b⟩`` (pre-update rows, column 0 =
        ``index``), as ``s/T`` (softmax) or ``exp(s/T)/Z``. Then ``memory[index] ← normalize(m·memory[index] +
        (1−m)·x)`` with all ranks' rows. ``generator`` and ``idx`` as in :meth:`CMCContrast.forward`.
        """
        batch = _batch(x, self.dim, "x")
        _check_index(index, batch)
        x = x.float()
        with fp32_region(x.device):
            if idx is None:
                idx = self.memory.sample_indices(index, self.num_negatives, generator=generator)
            _check_idx(idx, batch, self.num_negatives)
            scores = _scores(self.memory.gather_rows(idx), x)
            if self.use_softmax:
                out = torch.div(scores, self.temperature)
            else:
                out = _nce_probs(scores, self.temperature, self.z, self.num_data, "Z")
            self.memory.update(x, index, self.momentum)
        return out

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The original checkpoint's ``contrast``: ``params = [K, T, Z, m]`` (fp32) and ``memory`` (a copy)."""
        params = torch.tensor(
            [self.num_negatives, self.temperature, float(self.z), self.momentum], dtype=torch.float32
        )
        return {"params": params.to(self.z.device), "memory": self.memory.memory.detach()}

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
        """Load an original ``contrast`` entry; with ``strict`` its K, T and m must equal this module's."""
        _check_original(state, {"params": (4,), "memory": tuple(self.memory.memory.shape)}, "InsDis")
        params = state["params"]
        if strict:
            _check_params(
                params,
                {
                    0: ("--nce_k", self.num_negatives),
                    1: ("--nce_t", self.temperature),
                    3: ("--nce_m", self.momentum),
                },
                "InsDis",
            )
        with torch.no_grad():
            self.memory.memory.copy_(state["memory"])
            self.z.copy_(params[2])


class MoCoContrast(nn.Module):
    """Key queue of the MoCo trainer in the CMC repository (the original's ``MemoryMoCo``), ``specs/cmc.md`` §4.

    Args (keyword only):
        num_data: N, the training-set size (only used for Z).
        dim: D, the key size (128).
        queue_size: K, the number of queued keys (``--nce_k``, 16384).
        temperature: T (``--nce_t``).
        use_softmax: ``--softmax``: logits ``/T``; otherwise ``exp(·/T)/Z``.
        generator: draws the U(−σ, σ) initial queue (**not** normalised: the first K/B steps contrast against
            noise, as in the original); ``None``: the global RNG.

    State: ``queue`` (``[K, D]`` fp32), ``queue_ptr`` (int64 scalar, the next slot to write; saved here, unlike
    the original) and ``z`` (fp32 scalar, −1 until the first NCE batch).
    """

    queue: torch.Tensor
    queue_ptr: torch.Tensor
    z: torch.Tensor

    def __init__(
        self,
        *,
        num_data: int,
        dim: int = 128,
        queue_size: int = 16384,
        temperature: float = 0.07,
        use_softmax: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_args(num_data, dim, queue_size, temperature)
        self.num_data = num_data
        self.temperature = temperature
        self.use_softmax = use_softmax
        self.register_buffer("queue", uniform_memory_init(queue_size, dim, generator))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("z", torch.tensor(-1.0))

    @property
    def queue_size(self) -> int:
        return self.queue.shape[0]

    @property
    def dim(self) -> int:
        return self.queue.shape[1]

    def extra_repr(self) -> str:
        return (
            f"num_data={self.num_data}, dim={self.dim}, queue_size={self.queue_size}, "
            f"temperature={self.temperature}, use_softmax={self.use_softmax}"
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Logits of queries ``q`` ``[B, D]`` against their keys ``k`` ``[B, D]`` and the queue, then enqueue.

        Returns ``[B, 1+K]`` fp32: ``[q·k, q·queueᵀ]`` (no gradient into ``k`` or the queue, which is read
        before this batch's keys enter it), as ``/T`` (softmax) or ``exp(·/T)/Z``. Then :meth:`enqueue` with
        ``k``.
        """
        batch = _batch(q, self.dim, "q")
        if k.shape != q.shape:
            raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
        q, k = q.float(), k.detach().float()
        with fp32_region(q.device):
            l_pos = torch.bmm(q.view(batch, 1, -1), k.view(batch, -1, 1)).view(batch, 1)
            l_neg = torch.mm(self.queue.clone(), q.t()).t()
            out = torch.cat((l_pos, l_neg), dim=1)
            if self.use_softmax:
                out = torch.div(out, self.temperature)
            else:
                out = _nce_probs(out, self.temperature, self.z, self.num_data, "Z")
            self.enqueue(k)
        return out

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, group: Any = None) -> None:
        """Write all ranks' ``keys`` (gathered in rank order, ``n`` rows) at slots ``ptr … ptr+n−1 (mod K)`` and
        advance ``ptr`` by ``n``. When ``n > K`` the later keys overwrite the earlier ones (the original's
        ``index_copy_``), so the queue holds the last K keys."""
        keys = all_gather_no_grad(keys.detach().to(self.queue.dtype), group)
        n, size = keys.shape[0], self.queue_size
        slots = torch.remainder(torch.arange(n, device=self.queue.device) + self.queue_ptr, size)
        if n > size:
            keys, slots = keys[n - size :], slots[n - size :]
        self.queue.index_copy_(0, slots, keys)
        self.queue_ptr.add_(n).remainder_(size)

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The original checkpoint's ``contrast``: ``params = [Z]`` (fp32) and ``memory`` (the queue, a copy).
        The pointer is not part of it (the original kept it as a Python int)."""
        return {"params": self.z.detach().clone().reshape(1), "memory": self.queue.detach()}

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
        """Load an original ``contrast`` entry. The pointer restarts at 0, as the original's did on resume.
        ``strict`` is accepted for symmetry; the original stores no hyper-parameter to check."""
        del strict
        _check_original(state, {"params": (1,), "memory": tuple(self.queue.shape)}, "MoCo")
        with torch.no_grad():
            self.queue.copy_(state["memory"])
            self.z.copy_(state["params"][0])
            self.queue_ptr.zero_()
