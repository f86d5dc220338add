"""--seed reaches Python's random, NumPy and torch, in the main process and in every loader worker, and the
states survive a checkpoint round trip (weights_only)."""

import io
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.shared.data import build_loader
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_seeds_all_three_generators():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
    seed_everything(8)
    assert all(a != b for a, b in zip(draws(), first))


def test_numpy_takes_seeds_beyond_32_bits():
    seed_everything(2**40 + 3)
    a = np.random.rand()
    seed_everything(3)
    assert np.random.rand() == a  # NumPy is seeded with seed % 2**32, torch and random with the seed


def test_rng_state_round_trips_through_a_weights_only_checkpoint():
    seed_everything(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    buffer = io.BytesIO()
    torch.save({"rng": capture_rng_state()}, buffer)
    expected = [draws() for _ in range(3)], float(np.random.randn())
    seed_everything(99)
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True)["rng"])
    assert ([draws() for _ in range(3)], float(np.random.randn())) == expected


class Draws(Dataset):
    """Each item is what the worker's three generators give: the reason worker seeding matters."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        return (torch.utils.data.get_worker_info().id, *draws())


def worker_draws(seed: int) -> list[tuple]:
    loader = build_loader(Draws(), batch_size=1, num_workers=2, collate_fn=lambda batch: batch[0], seed=seed)
    return list(loader)


def test_loader_workers_are_seeded_from_the_run_seed():
    a, b, c = worker_draws(1), worker_draws(1), worker_draws(2)
    assert a == b  # same --seed: the same numbers in every worker, whatever the parent's RNG did
    assert all(x[1:] != y[1:] for x, y in zip(a, c))  # another seed: other numbers
    by_worker = {}
    for worker, *values in a:
        by_worker.setdefault(worker, []).append(values)
    assert by_worker[0][0] != by_worker[1][0]  # workers differ from each other (numpy and random too)
    assert by_worker[0][0][0] != by_worker[1][0][0] and by_worker[0][0][1] != by_worker[1][0][1]
