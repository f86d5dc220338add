"""Split batch normalisation: one process emulating the per-device BN of ``nn.DataParallel``.

Under ``nn.DataParallel`` on G devices the batch of N samples is scattered into G chunks
(``torch.tensor_split``: sizes ⌈N/G⌉ first, e.g. 256 over 6 devices → 43, 43, 43, 43, 42, 42) and every
replica normalises its chunk with that chunk's own statistics,

    y_i = γ · (x_i − μ_g) / √(σ²_g + ε) + β,   i ∈ chunk g,   μ_g, σ²_g = mean, biased variance over chunk g,

with γ, β shared. Running statistics are updated on every replica, but DataParallel keeps only replica 0's
buffers (the other replicas' copies are discarded after the forward), so the module's running mean/var and
``num_batches_tracked`` follow chunk 0 alone:

    μ_run ← (1−m)·μ_run + m·μ_0,   σ²_run ← (1−m)·σ²_run + m·σ̂²_0   (σ̂² unbiased, m = ``momentum``).

This matters for MoCo's shuffle BN (He et al., "Momentum Contrast for Unsupervised
Visual Representation Learning", CVPR 2020, arXiv:1911.05722, §3.3), which has an effect only when BN
statistics are per-device; the Un-Mix CIFAR demo uses the same idea (``SplitBatchNorm``) with 8 splits.

No library offers this emulation, hence this module. In eval mode the layers are plain BN with running
statistics, and their ``state_dict`` keys equal those of ``nn.BatchNorm1d``/``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SplitBatchNorm1d", "SplitBatchNorm2d", "convert_split_batchnorm"]


def _check_num_splits(num_splits: int) -> int:
    if not isinstance(num_splits, int) or isinstance(num_splits, bool) or num_splits < 1:
        raise ValueError(
            f"num_splits must be an integer >= 1 (number of emulated devices), got {num_splits!r}"
        )
    return num_splits


class _SplitBatchNormMixin:
    """The chunked forward shared by the 1d and 2d layers (``self`` is an
    ``nn.modules.batchnorm._BatchNorm``)."""

    num_splits: int

    def _split_forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        bn._check_input_dim(x)
        use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
        if not use_batch_stats or self.num_splits == 1:
            return super().forward(x)  # type: ignore[misc]
        splits = min(self.num_splits, x.shape[0])
        chunks = torch.tensor_split(x, splits, dim=0)
        values_per_channel = chunks[-1].numel() // max(x.shape[1], 1)
        if values_per_channel <= 1 and bn.training:
            raise ValueError(
                f"{type(self).__name__}(num_splits={self.num_splits}): a batch of {x.shape[0]} gives "
                f"chunks of {chunks[-1].shape[0]} sample(s) with one value per channel, so batch statistics "
                "are undefined; use a larger batch or fewer splits"
            )

        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm does
                factor = 1.0 / float(bn.num_batches_tracked)
        track = not bn.training or bn.track_running_stats
        outputs = [
            F.batch_norm(
                chunk,
                bn.running_mean if (track and g == 0) else None,
                bn.running_var if (track and g == 0) else None,
                bn.weight,
                bn.bias,
                True,
                factor,
                bn.eps,
            )
            for g, chunk in enumerate(chunks)
        ]
        return torch.cat(outputs, dim=0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"  # type: ignore[misc]


class SplitBatchNorm2d(_SplitBatchNormMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training forward normalises ``num_splits`` chunks of the batch separately.

    See the module docstring for the equation and the DataParallel semantics (running stats from chunk 0
    only). A batch with fewer samples than ``num_splits`` is cut into one chunk per sample, as DataParallel
    would scatter it.
    """

    def __init__(
        self,
        num_features: int,
        num_splits: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.num_splits = _check_num_splits(num_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._split_forward(x)


class SplitBatchNorm1d(_SplitBatchNormMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` counterpart of :class:`SplitBatchNorm2d` (inputs ``(N, C)`` or ``(N, C, L)``)."""

    def __init__(
        self,
        num_features: int,
        num_splits: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.num_splits = _check_num_splits(num_splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._split_forward(x)


def _to_split(bn: nn.modules.batchnorm._BatchNorm, num_splits: int) -> nn.Module:
    cls = SplitBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else SplitBatchNorm1d
    ref = bn.weight if bn.weight is not None else bn.running_mean
    new = cls(
        bn.num_features,
        num_splits,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device=None if ref is None else ref.device,
        dtype=None if ref is None else ref.dtype,
    )
    # Share the very Parameter and buffer objects (as nn.SyncBatchNorm.convert_sync_batchnorm does): values,
    # requires_grad and any optimiser reference survive the conversion.
    if bn.affine:
        new.weight = bn.weight
        new.bias = bn.bias
    new.running_mean = bn.running_mean
    new.running_var = bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` in ``module`` (recursively) by its split version.

    Parameters and buffers are carried over as they are; the returned module is ``module`` itself unless
    ``module`` is a batch-norm layer. ``num_splits == 1`` is a no-op (plain BN is already one device's BN).
    """
    _check_num_splits(num_splits)
    if num_splits == 1:
        return module
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _to_split(module, num_splits)
    for name, child in module.named_children():
        converted = convert_split_batchnorm(child, num_splits)
        if converted is not child:
            setattr(module, name, converted)
    return module
