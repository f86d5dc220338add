"""CMC and InsDis under DDP. Memory-bank negatives come from a generator per rank (``common.NegativeDraws``): its
seed and its state in the checkpoint; with 2 gloo ranks, the ranks draw different negatives, the memory banks take
every rank's rows, an interrupted 2-rank run resumes bitwise, and a checkpoint of another world size is refused in
one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from selfsup.cmc import common
from selfsup.cmc.cli import parse_cmc_args
from selfsup.cmc.train import CMCTrainer
from selfsup.cmc.train import main as cmc_main
from selfsup.shared.distributed import DistEnv
from selfsup.shared.runtime.trainer import TrainingRun

WORKER = Path(__file__).with_name("negatives_worker.py")
LOG = logging.getLogger("test_negatives")


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def env(rank: int, world: int = 2) -> DistEnv:
    return DistEnv(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"), backend=None)


def draw(negatives: common.NegativeDraws, n: int = 8) -> torch.Tensor:
    return torch.randint(0, 1000, (n,), generator=negatives.generator)


def test_each_rank_has_its_own_stream_seeded_from_the_seed_and_the_rank():
    global_state = torch.get_rng_state()
    drawn = {(seed, rank): draw(common.NegativeDraws(seed, env(rank))) for seed in (0, 1) for rank in (0, 1)}
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is neither seeded nor drawn
    assert not torch.equal(drawn[0, 0], drawn[0, 1]) and not torch.equal(drawn[0, 0], drawn[1, 0])
    assert torch.equal(draw(common.NegativeDraws(0, env(1))), drawn[0, 1])  # reproducible


def test_state_round_trips_and_another_world_size_is_refused(caplog):
    negatives = common.NegativeDraws(3, env(0, world=1))
    draw(negatives)
    state = negatives.state()
    assert state.shape[0] == 1 and state.dtype == torch.uint8
    expected = draw(negatives)
    fresh = common.NegativeDraws(3, env(0, world=1))
    fresh.load({common.NEGATIVES_KEY: state}, LOG)
    assert torch.equal(draw(fresh), expected)
    with pytest.raises(ValueError, match=r"written by 1 process\(es\), this run has 2; resume with 1"):
        common.NegativeDraws(3, env(1)).load({common.NEGATIVES_KEY: state}, LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):  # a checkpoint written before the generators
        common.NegativeDraws(3, env(0, world=1)).load({}, LOG)
    assert "restart from --seed" in caplog.text


@pytest.mark.distributed
def test_two_ranks_draw_different_negatives(tmp_path, tiny_cmc, tiny_ins, torchrun):
    """Both ranks seed with --seed, yet the negatives (columns 1..K of idx) differ between them, in CMC and
    InsDis; the positives (column 0) are each rank's own half of the batch."""
    cmc = [*tiny_cmc, "--model_path", str(tmp_path / "cmc")]
    proc = torchrun(str(WORKER), str(tmp_path), *cmc, "::", *tiny_ins, "--model_path", str(tmp_path / "ins"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for which in ("cmc", "insdis"):
        idx = [load(tmp_path / f"{which}_rank{rank}.pt")["idx"] for rank in (0, 1)]
        assert idx[0].shape == idx[1].shape == (2, 16, 65)  # 2 steps, 16 rows per rank, K = 64
        assert not set(idx[0][:, :, 0].flatten().tolist()) & set(idx[1][:, :, 0].flatten().tolist())
        same = (idx[0][:, :, 1:] == idx[1][:, :, 1:]).float().mean()
        assert same < 0.05, (which, float(same))  # 1/192 by chance


@pytest.mark.distributed
def test_an_interrupted_two_rank_run_resumes_bitwise(tmp_path, tiny_cmc, torchrun, capsys):
    """2 ranks, 6 steps per epoch: stop at step 5, resume to step 8 (epoch 1), against 8 steps straight. On the
    way: after 5 steps both memory banks moved the rows of every rank's batch, as one process on the whole
    batches does. Then one process refuses the 2-rank checkpoint in one line."""

    def launch(model_path: Path, *extra: str) -> Path:
        proc = torchrun("selfsup.cmc.train", *tiny_cmc, "--model_path", str(model_path), *extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return next(model_path.glob("*/current.pth"))

    straight = load(launch(tmp_path / "straight", "--max_iters", "8"))
    interrupted = load(launch(tmp_path / "resumed", "--max_iters", "5"))
    one = load(run_one_process(tmp_path / "one", [*tiny_cmc, "--max_iters", "5"]))
    init = initial_contrast_state(tmp_path / "init", tiny_cmc)
    for name in ("memory_l.memory", "memory_ab.memory"):
        moved = {
            label: set(torch.nonzero((c["state"]["contrast"][name] != init[name]).any(1)).flatten().tolist())
            for label, c in (("ddp", interrupted), ("one", one))
        }
        assert len(moved["one"]) == 5 * 32 and moved["ddp"] == moved["one"], name

    resumed_path = launch(tmp_path / "resumed", "--max_iters", "8", "--resume", "auto")
    a, b = straight, load(resumed_path)
    assert (a["epoch"], a["iteration"], a["global_step"]) == (b["epoch"], b["iteration"], b["global_step"])
    assert (a["epoch"], a["iteration"], a["global_step"]) == (1, 2, 8)
    assert a["args"]["world_size"] == 2 and a[common.NEGATIVES_KEY].shape[0] == 2
    assert not torch.equal(a[common.NEGATIVES_KEY][0], a[common.NEGATIVES_KEY][1])
    assert torch.equal(a[common.NEGATIVES_KEY], b[common.NEGATIVES_KEY])
    for name in a["state"]:
        for key, value in a["state"][name].items():
            assert torch.equal(value, b["state"][name][key]), (name, key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert float(a["state"]["contrast"]["z_l"]) > 0 and float(a["state"]["contrast"]["z_ab"]) > 0

    flags = [*tiny_cmc, "--model_path", str(tmp_path / "refused"), "--resume", str(resumed_path)]
    assert cmc_main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        "the checkpoint was written by 2 process(es), this run has 1; resume with 2 (each rank draws its own "
        "negatives)"
    ), err


def run_one_process(model_path: Path, flags: list[str]) -> Path:
    assert cmc_main([*flags, "--model_path", str(model_path)]) == 0
    return next(model_path.glob("*/current.pth"))


def initial_contrast_state(model_path: Path, flags: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The memories a run of ``flags`` starts from (the same seed)."""
    args = parse_cmc_args([*flags, "--model_path", str(model_path)])
    start = TrainingRun.start(CMCTrainer(args), args, list(flags))
    try:
        return {k: v.clone() for k, v in start.method.contrast.state_dict().items()}
    finally:
        start.close()
