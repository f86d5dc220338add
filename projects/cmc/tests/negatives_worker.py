"""One rank of the 2-process check that the ranks of a CMC or InsDis run draw different negatives (run by
``test_negatives.py`` through the root conftest's ``torchrun`` fixture).

Usage: ``torchrun --nproc_per_node 2 negatives_worker.py OUT_DIR CMC_FLAG... :: INSDIS_FLAG...``. The rank
starts ``cmc-train`` and then ``cmc-moco-ins-train`` (InsDis) on the runtime with those flags, runs two steps of
each, records the ``[B, K+1]`` indices the memory bank drew at each step and saves them to
``OUT_DIR/<cmc|insdis>_rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def negatives_of_two_steps(method, args, flags: list[str]) -> tuple[torch.Tensor, int]:
    """``[2, B, K+1]`` indices drawn by the trainer's first memory bank in two steps, and the rank."""
    from selfsup.shared.runtime.trainer import TrainingRun

    run = TrainingRun.start(method, args, flags)  # joins the process group, or reuses it
    bank = getattr(method.contrast, "memory_l", None) or method.contrast.memory
    drawn: list[torch.Tensor] = []
    sample = bank.sample_indices

    def record(*a, **kw):
        idx = sample(*a, **kw)
        drawn.append(idx.clone())
        return idx

    bank.sample_indices = record
    batches = iter(run.parts.data.loader)
    for _ in range(2):
        run.step(next(batches))
    return torch.stack(drawn), run.ctx.env.rank


def main(out_dir: Path, cmc_flags: list[str], ins_flags: list[str]) -> None:
    from selfsup.cmc.cli import parse_cmc_args, parse_moco_ins_args
    from selfsup.cmc.train import CMCTrainer
    from selfsup.cmc.train_moco_ins import MocoInsTrainer
    from selfsup.shared.distributed import cleanup

    try:
        for name, parse, trainer, flags in (
            ("cmc", parse_cmc_args, CMCTrainer, cmc_flags),
            ("insdis", parse_moco_ins_args, MocoInsTrainer, ins_flags),
        ):
            args = parse(flags)
            idx, rank = negatives_of_two_steps(trainer(args), args, flags)
            torch.save({"idx": idx}, out_dir / f"{name}_rank{rank}.pt")
    finally:
        cleanup()


if __name__ == "__main__":
    rest = sys.argv[2:]
    split = rest.index("::")
    main(Path(sys.argv[1]), rest[:split], rest[split + 1 :])
