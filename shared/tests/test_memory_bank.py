"""Tests of selfsup.shared.models.memory_bank: alias sampling, init, momentum update, and a 2-process gloo run.

Run as a script (``python test_memory_bank.py OUT_DIR`` with a torchrun-style environment), this file is also
the worker of the 2-process test: each rank updates the bank with its half of a batch and saves the result.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.shared.models.memory_bank import AliasMultinomial, MemoryBank, uniform_memory_init

THIS = Path(__file__).resolve()
N_ENTRIES, DIM, ROWS_PER_RANK = 10, 4, 3
GLOBAL_INDICES = [1, 3, 5, 3, 7, 1]  # rank 0: 1, 3, 5; rank 1: 3, 7, 1 (duplicates across ranks)


class OriginalAliasMethod:
    """The CMC / lemniscate ``AliasMethod`` semantics (fp32 tables built by popping the last small and large
    columns; draws = uniform column, then one Bernoulli per draw), kept as a reference."""

    def __init__(self, probs: torch.Tensor) -> None:
        probs = probs / probs.sum() if probs.sum() > 1 else probs
        n = len(probs)
        self.prob = torch.zeros(n)
        self.alias = torch.zeros(n, dtype=torch.long)
        small, large = [], []
        for i, p in enumerate(probs):
            self.prob[i] = n * p
            (small if self.prob[i] < 1.0 else large).append(i)
        while small and large:
            s, g = small.pop(), large.pop()
            self.alias[s] = g
            self.prob[g] = (self.prob[g] - 1.0) + self.prob[s]
            (small if self.prob[g] < 1.0 else large).append(g)
        for i in small + large:
            self.prob[i] = 1

    def draw(self, n: int) -> torch.Tensor:
        column = torch.zeros(n, dtype=torch.long).random_(0, self.alias.numel())
        keep = torch.bernoulli(self.prob.index_select(0, column))
        return column * keep.long() + self.alias.index_select(0, column) * (1 - keep).long()


def implied_distribution(sampler: AliasMultinomial) -> torch.Tensor:
    """P(i) = (prob[i] + Σ_{c: alias[c] = i} (1 − prob[c])) / n, read off the tables."""
    prob, alias = sampler.prob.double(), sampler.alias
    n = prob.numel()
    mass = prob.clone().index_add_(0, alias, 1.0 - prob)
    return mass / n


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected > 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


# ----------------------------------------------------------------------------------------------- alias


def test_alias_tables_of_a_uniform_distribution_keep_every_column():
    sampler = AliasMultinomial(torch.ones(7))
    assert torch.equal(sampler.prob, torch.ones(7))
    assert torch.equal(sampler.alias, torch.arange(7))
    assert sampler.num_outcomes == 7
    assert dict(sampler.state_dict()) == {}  # tables are derived, not state


SKEWED_50 = torch.rand(50, generator=torch.Generator().manual_seed(3)) ** 3


@pytest.mark.parametrize(
    "probs",
    [torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0]), torch.tensor([5.0, 1.0, 1.0, 3.0]), SKEWED_50],
    ids=["with-zero", "unnormalised", "skewed-50"],
)
def test_alias_tables_encode_the_distribution_exactly(probs):
    sampler = AliasMultinomial(probs)
    target = probs.double() / probs.double().sum()
    torch.testing.assert_close(implied_distribution(sampler), target, atol=1e-7, rtol=0)
    assert ((sampler.prob >= 0) & (sampler.prob <= 1)).all()


def test_alias_tables_and_draws_equal_the_original_alias_method():
    for probs in (torch.ones(1000), torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])):
        ours, original = AliasMultinomial(probs), OriginalAliasMethod(probs.clone())
        torch.testing.assert_close(ours.prob, original.prob)
        torch.manual_seed(5)
        expected = original.draw(5000)
        torch.manual_seed(5)
        assert torch.equal(ours.draw(5000), expected)


def test_alias_frequencies_pass_a_chi_square_check():
    # Non-uniform with a zero entry: 5 non-empty cells, df = 4; the 99.99 % quantile of chi2(4) is 23.5.
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])
    draws = AliasMultinomial(probs).draw(200_000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[5] == 0
    assert chi_square(counts, probs.double()) < 23.5
    # Uniform over 50 cells: df = 49, mean 49, sd 9.9; 49 + 6 sd = 108.
    draws = AliasMultinomial(torch.ones(50)).draw(100_000, generator=torch.Generator().manual_seed(1))
    assert chi_square(torch.bincount(draws, minlength=50).double(), torch.full((50,), 0.02).double()) < 108
    # Skewed over 50 cells.
    draws = AliasMultinomial(SKEWED_50).draw(200_000, generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(draws, minlength=50).double()
    assert chi_square(counts, (SKEWED_50 / SKEWED_50.sum()).double()) < 108


def test_alias_draws_are_longs_in_range_and_follow_the_generator():
    sampler = AliasMultinomial(torch.tensor([1.0, 2.0, 3.0]))
    a = sampler.draw(1000, generator=torch.Generator().manual_seed(7))
    b = sampler.draw(1000, generator=torch.Generator().manual_seed(7))
    assert a.dtype == torch.long and a.shape == (1000,)
    assert torch.equal(a, b) and int(a.min()) >= 0 and int(a.max()) <= 2
    assert sampler.draw(0).shape == (0,)


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([]),
        torch.tensor([1.0, -0.5]),
        torch.zeros(3),
        torch.ones(2, 2),
        torch.tensor([1.0, math.nan]),
    ],
)
def test_alias_rejects_invalid_probabilities(bad):
    with pytest.raises(ValueError, match="probabilities"):
        AliasMultinomial(bad)


# ------------------------------------------------------------------------------------------------ init


def test_init_is_uniform_in_plus_minus_sigma_and_not_normalised():
    dim = 128
    sigma = 1.0 / math.sqrt(dim / 3)
    bank = MemoryBank(2000, dim, generator=torch.Generator().manual_seed(0))
    memory = bank.memory
    assert memory.dtype == torch.float32 and memory.shape == (2000, dim)
    assert float(memory.min()) >= -sigma and float(memory.max()) < sigma
    assert float(memory.min()) < -0.99 * sigma and float(memory.max()) > 0.99 * sigma
    assert abs(float(memory.mean())) < 0.005
    assert math.isclose(float(memory.var()), sigma**2 / 3, rel_tol=0.02)  # = 1/dim
    norms = memory.norm(dim=1)
    assert math.isclose(float(norms.pow(2).mean()), 1.0, rel_tol=0.01)  # unit norm on average only
    assert float(norms.std()) > 0.01
    assert list(bank.state_dict()) == ["memory"]


def test_init_uses_the_generator_or_the_global_rng_like_the_original():
    a = MemoryBank(5, 6, generator=torch.Generator().manual_seed(1))
    b = MemoryBank(5, 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.memory, b.memory)
    stdv = 1.0 / math.sqrt(6 / 3)
    torch.manual_seed(4)
    expected = torch.rand(5, 6).mul_(2 * stdv).add_(-stdv)  # the original's expression
    torch.manual_seed(4)
    assert torch.equal(MemoryBank(5, 6).memory, expected)
    torch.manual_seed(4)
    assert torch.equal(uniform_memory_init(5, 6), expected)


def test_constructor_validates():
    with pytest.raises(ValueError, match="num_entries"):
        MemoryBank(0, 4)
    bank = MemoryBank(4, 2, sampler=False)
    assert bank.sampler is None
    with pytest.raises(RuntimeError, match="sampler=False"):
        bank.sample_indices(torch.tensor([0]), 3)


# ------------------------------------------------------------------------------------- sample / gather


def test_sample_indices_puts_the_positives_first_and_draws_uniform_negatives():
    bank = MemoryBank(20, 4, generator=torch.Generator().manual_seed(0))
    positives = torch.tensor([3, 19, 0])
    idx = bank.sample_indices(positives, 50, generator=torch.Generator().manual_seed(1))
    assert idx.shape == (3, 51) and idx.dtype == torch.long
    assert torch.equal(idx[:, 0], positives)
    assert int(idx.min()) >= 0 and int(idx.max()) < 20
    # B·(K+1) draws, then column 0 overwritten: columns 1..K are the draws at those positions.
    draws = bank.sampler.draw(3 * 51, generator=torch.Generator().manual_seed(1)).view(3, 51)
    assert torch.equal(idx[:, 1:], draws[:, 1:])
    same = bank.sample_indices(positives, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(idx, same)
    with pytest.raises(ValueError, match="positives"):
        bank.sample_indices(positives.view(3, 1), 5)


def test_negatives_cover_all_entries_including_the_positive():
    bank = MemoryBank(8, 2)
    idx = bank.sample_indices(torch.tensor([2]), 4000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(idx[0, 1:], minlength=8)
    assert (counts > 400).all()  # ~500 each, the positive (2) included


def test_gather_rows_returns_detached_copies_in_the_index_shape():
    bank = MemoryBank(6, 3, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([[0, 5], [2, 2]])
    rows = bank.gather_rows(idx)
    assert rows.shape == (2, 2, 3) and not rows.requires_grad
    assert torch.equal(rows[0, 1], bank.memory[5]) and torch.equal(rows[1, 0], bank.memory[2])
    before = rows.clone()
    bank.update(torch.ones(1, 3), torch.tensor([5]), 0.5)
    assert torch.equal(rows, before)  # a copy: the update does not reach it
    assert not torch.equal(bank.memory[5], before[0, 1])


# ---------------------------------------------------------------------------------------------- update


def test_update_matches_a_hand_computation_and_renormalises():
    bank = MemoryBank(3, 2)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.3, 0.4], [0.0, 2.0]]))
    bank.update(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), momentum=0.5)
    # 0.5·[1, 0] + 0.5·[0, 1] = [0.5, 0.5], norm √0.5 → [1/√2, 1/√2]
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(bank.memory[0], torch.tensor([s, s]))
    assert torch.equal(bank.memory[1:], torch.tensor([[0.3, 0.4], [0.0, 2.0]]))  # other rows untouched
    bank.update(torch.tensor([[0.6, 0.8]]), torch.tensor([1]), momentum=0.75)
    # 0.75·[0.3, 0.4] + 0.25·[0.6, 0.8] = [0.375, 0.5], norm 0.625 → [0.6, 0.8]
    torch.testing.assert_close(bank.memory[1], torch.tensor([0.6, 0.8]))
    bank.update(torch.tensor([[3.0, 4.0]]), torch.tensor([2]), momentum=0.0)  # m = 0: the normalised feature
    torch.testing.assert_close(bank.memory[2], torch.tensor([0.6, 0.8]))


def test_update_equals_the_originals_arithmetic_bitwise():
    bank = MemoryBank(50, 16, generator=torch.Generator().manual_seed(0))
    memory = bank.memory.clone()
    features = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    y = torch.tensor([4, 9, 0, 49, 17, 23, 5, 31])
    bank.update(features, y, 0.5)
    pos = torch.index_select(memory, 0, y)  # the original NCEAverage lines
    pos.mul_(0.5)
    pos.add_(torch.mul(features, 1 - 0.5))
    memory.index_copy_(0, y, pos.div(pos.pow(2).sum(1, keepdim=True).pow(0.5)))
    assert torch.equal(bank.memory, memory)
    torch.testing.assert_close(bank.memory[y].norm(dim=1), torch.ones(8))


def test_duplicate_indices_last_wins_each_from_the_old_row():
    bank = MemoryBank(4, 2)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    features = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])
    bank.update(features, torch.tensor([2, 3, 2, 3]), momentum=0.5)
    # row 2: last feature [1, 0] with the old row [1, 0] → [1, 0]; row 3: [-1, 0] with [0, 1] → [-s, s]
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(bank.memory[2], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(bank.memory[3], torch.tensor([-s, s]))
    assert torch.equal(bank.memory[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_update_is_fp32_without_gradient_under_autocast():
    bank = MemoryBank(5, 8, generator=torch.Generator().manual_seed(0))
    reference = MemoryBank(5, 8, generator=torch.Generator().manual_seed(0))
    features = F.normalize(torch.randn(3, 8), dim=1).requires_grad_(True)
    index = torch.tensor([0, 2, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bank.update(features.bfloat16(), index, 0.5)
    reference.update(features.detach().bfloat16().float(), index, 0.5)
    assert bank.memory.dtype == torch.float32 and not bank.memory.requires_grad
    assert torch.equal(bank.memory, reference.memory)
    with pytest.raises(ValueError, match="features"):
        bank.update(torch.ones(3, 7), index, 0.5)
    with pytest.raises(ValueError, match="indices"):
        bank.update(torch.ones(3, 8), index[:2], 0.5)


# --------------------------------------------------------------------------------- 2-process gloo run


def shared_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch (features, indices), identical on every rank and in the test."""
    features = F.normalize(
        torch.randn(2 * ROWS_PER_RANK, DIM, generator=torch.Generator().manual_seed(11)), dim=1
    )
    return features, torch.tensor(GLOBAL_INDICES)


def new_bank() -> MemoryBank:
    return MemoryBank(N_ENTRIES, DIM, generator=torch.Generator().manual_seed(0))


def _worker(out_dir: Path) -> None:
    from selfsup.shared import distributed as D

    env = D.init_distributed(backend="gloo", device="cpu", timeout_s=60)
    features, indices = shared_batch()
    part = slice(env.rank * ROWS_PER_RANK, (env.rank + 1) * ROWS_PER_RANK)
    bank = new_bank()
    bank.update(features[part], indices[part], 0.5)
    D.barrier()
    torch.save({"memory": bank.memory.clone(), "world": env.world_size}, out_dir / f"rank{env.rank}.pt")
    D.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(out_dir: Path, timeout_s: float = 90.0) -> list[dict]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID")
    output = ""
    for _attempt in range(3):  # a probed port can be taken before the rendezvous binds it
        port = _free_port()
        procs = []
        for rank in range(2):
            env = {k: v for k, v in os.environ.items() if k not in drop}
            env.update(
                RANK=str(rank),
                WORLD_SIZE="2",
                LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
            env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
            if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
                env["GLOO_SOCKET_IFNAME"] = "lo"
            cmd = [sys.executable, str(THIS), str(out_dir)]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        try:
            output = "\n".join(proc.communicate(timeout=timeout_s)[0] for proc in procs)
        except subprocess.TimeoutExpired:
            for proc in procs:
                proc.kill()
                proc.communicate()
            pytest.fail(f"2-process gloo run timed out after {timeout_s}s")
        if all(proc.returncode == 0 for proc in procs):
            return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
        if "address already in use" not in output.lower():
            break
    pytest.fail(f"2-process gloo run failed:\n{output[-4000:]}")


@pytest.mark.distributed
def test_two_ranks_update_equals_one_process_on_the_concatenated_batch(tmp_path):
    ranks = _launch(tmp_path)
    assert [r["world"] for r in ranks] == [2, 2]
    assert torch.equal(ranks[0]["memory"], ranks[1]["memory"])
    features, indices = shared_batch()
    single = new_bank()
    single.update(features, indices, 0.5)
    assert torch.equal(ranks[0]["memory"], single.memory)
    # duplicates across ranks: rank 1's rows (the later ones in rank order) win
    for row, last in ((1, 5), (3, 3)):
        expected = new_bank().memory[row] * 0.5 + features[last] * 0.5
        torch.testing.assert_close(ranks[0]["memory"][row], expected / expected.norm())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
