"""SIGTERM / SIGUSR1 handling: finish the current step, write a checkpoint, exit so the job can be requeued.

Slurm sends SIGUSR1 ahead of the time limit when the job has ``--signal=USR1@<seconds>``, and SIGTERM on
pre-emption or ``scancel``; torchrun forwards SIGTERM to its workers. The handler only records the signal;
the training loop polls ``should_stop()`` after each step, where every rank agrees (an all-reduce of the
flag), so all ranks save the same step and leave together.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from types import FrameType

import torch
import torch.distributed as dist


class PreemptionGuard:
    """Context manager installing the handlers; restores the previous ones on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> PreemptionGuard:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self.received is not None else 0.0])
        if dist.is_available() and dist.is_initialized():
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def requeue_if_slurm(self) -> bool:
        """On SIGUSR1 inside a Slurm job, ask Slurm to requeue it (``scontrol requeue``)."""
        job = os.environ.get("SLURM_JOB_ID")
        if self.received != signal.SIGUSR1 or not job or shutil.which("scontrol") is None:
            return False
        return subprocess.run(["scontrol", "requeue", job], check=False).returncode == 0
