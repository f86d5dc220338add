"""``--precision {fp32,fp16,bf16}``, ``--channels_last`` and ``--compile``, shared by every trainer.

fp32 is the default everywhere, so the originals' numerics are kept unless a user opts in. Code that
must stay in fp32 (losses, Sinkhorn, whitening) wraps itself in ``fp32_region()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a CUDA device; on CPU use --precision bf16 or fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for the forward pass, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@contextlib.contextmanager
def fp32_region(device: torch.device) -> Iterator[None]:
    """Disable autocast inside (inputs must be cast with ``.float()`` by the caller)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling is only needed for fp16; the scaler is disabled (a pass-through) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def prepare_model(model: torch.nn.Module, *, channels_last: bool, compile_model: bool) -> torch.nn.Module:
    """Apply the memory-format and ``torch.compile`` switches in place (``state_dict`` keys are unchanged)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model.compile()
    return model
