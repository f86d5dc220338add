"""``--precision {fp32,fp16,bf16,auto}``, ``--channels_last`` and ``--compile``, shared by every trainer.

fp32 is the default everywhere, so the originals' numerics are kept unless a user opts in. Code that
must stay in fp32 (losses, Sinkhorn, whitening) wraps itself in ``fp32_region()``. ``auto`` is resolved
once at start-up by :func:`resolve_precision` (bf16 where the hardware runs it natively, else fp32); every
other function here takes the resolved name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from selfsup.shared.runtime.cpu import cpu_has_fast_bf16

PRECISIONS = ("fp32", "fp16", "bf16", "auto")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a CUDA device; on CPU use --precision bf16 or fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it (``torch.cuda.is_bf16_supported()``) and on a
    CPU with native bf16 matrix instructions (:func:`~selfsup.shared.runtime.cpu.cpu_has_fast_bf16`:
    AVX512-BF16 or AMX-BF16, where bf16 autocast roughly halves a ResNet step), else ``fp32``. Any other
    value is returned unchanged. Only the forward runs in bf16: losses, queues and weights stay fp32.
    """
    check_precision(precision, device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        with torch.cuda.device(device):
            return "bf16" if _cuda_native_bf16() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def _cuda_native_bf16() -> bool:
    """``torch.cuda.is_bf16_supported()`` without emulation (pre-Ampere GPUs emulate bf16 slowly)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation and reports native support only
        return torch.cuda.is_bf16_supported()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for the forward pass, or a no-op for fp32 (``auto`` must go through :func:`resolve_precision`)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ValueError(f"autocast needs a resolved precision (fp32, fp16, bf16), got {precision!r}")
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
