"""Tests of the resumable sampler, the per-item seeded augmentation and the DataLoader factory."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from selfsup.shared.data import ResumableSampler, SeededTransformDataset, TwoCropsTransform, build_loader
from selfsup.shared.data.arrays import ArrayImageDataset
from selfsup.shared.data.sampling import mix_seed


def test_mix_seed_is_stable_and_does_not_alias() -> None:
    assert mix_seed(0, 1) == mix_seed(0, 1)
    assert mix_seed(0, 1) != mix_seed(1, 0)
    assert 0 <= mix_seed(3, 4, 5) < 2**63


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    sampler = ResumableSampler(50, seed=3)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert epoch0 != epoch1
    other = ResumableSampler(50, seed=3)
    other.set_epoch(1)
    assert list(other) == epoch1
    different_seed = ResumableSampler(50, seed=4)
    different_seed.set_epoch(1)
    assert list(different_seed) != epoch1
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(other) == epoch1
    assert list(ResumableSampler(7, shuffle=False)) == list(range(7))


@pytest.mark.parametrize(("num_samples", "replicas"), [(12, 3), (10, 3), (2, 4)])
def test_shards_disjoint_and_covering(num_samples: int, replicas: int) -> None:
    shards = []
    for rank in range(replicas):
        sampler = ResumableSampler(num_samples, seed=1, num_replicas=replicas, rank=rank)
        sampler.set_epoch(5)
        shards.append(list(sampler))
    per_rank = -(-num_samples // replicas)
    assert all(len(shard) == per_rank for shard in shards)
    merged = [index for shard in shards for index in shard]
    assert set(merged) == set(range(num_samples))
    # only the wrap-around padding repeats indices
    assert len(merged) - len(set(merged)) == per_rank * replicas - num_samples


def test_drop_last_drops_the_tail() -> None:
    shards = [list(ResumableSampler(10, seed=0, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert all(len(shard) == 3 for shard in shards)
    merged = [index for shard in shards for index in shard]
    assert len(set(merged)) == 9


def test_set_start_resumes_exactly_the_tail() -> None:
    sampler = ResumableSampler(23, seed=9, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    assert len(sampler) == 12
    resumed = ResumableSampler(23, seed=9, num_replicas=2, rank=1)
    resumed.set_epoch(4)
    resumed.set_start(5)
    assert len(resumed) == 7 and list(resumed) == full[5:]
    resumed.set_epoch(4)  # same epoch: the start is kept
    assert list(resumed) == full[5:]
    resumed.set_epoch(5)  # next epoch: from the beginning
    assert len(resumed) == 12
    with pytest.raises(ValueError, match="set_start"):
        resumed.set_start(13)
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(5, num_replicas=2, rank=2)


def _tiny_images(n: int = 10) -> ArrayImageDataset:
    pixels = np.random.default_rng(0).integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
    return ArrayImageDataset(pixels, [i % 3 for i in range(n)], ["a", "b", "c"])


def _random_view() -> v2.Compose:
    """A small random view of no method: crop, flip and jitter draw from the RNG that is seeded per item."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(8),
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.ToPureTensor(),
        ]
    )


def _seeded(seed: int = 7) -> SeededTransformDataset:
    return SeededTransformDataset(_tiny_images(), TwoCropsTransform(_random_view()), seed=seed)


def _run(dataset: SeededTransformDataset, sampler: ResumableSampler, workers: int) -> list[torch.Tensor]:
    loader = build_loader(dataset, batch_size=3, sampler=sampler, num_workers=workers)
    return [torch.cat(views) for views, _ in loader]


def test_seeded_transform_is_worker_independent() -> None:
    dataset = _seeded()
    dataset.set_epoch(2)
    sampler = ResumableSampler(len(dataset), seed=1)
    sampler.set_epoch(2)
    serial = _run(dataset, sampler, workers=0)
    parallel = _run(dataset, sampler, workers=2)
    assert len(serial) == 4
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    first, second = dataset[0][0]
    assert not torch.equal(first, second)  # the two views differ
    dataset.set_epoch(3)
    assert not torch.equal(dataset[0][0][0], first)  # a new epoch draws new views


def test_seeded_transform_resume_matches_tail() -> None:
    dataset = _seeded()
    dataset.set_epoch(1)
    sampler = ResumableSampler(len(dataset), seed=2)
    sampler.set_epoch(1)
    full = _run(dataset, sampler, workers=0)
    resumed_dataset = _seeded()
    resumed_dataset.set_epoch(1)
    resumed_sampler = ResumableSampler(len(dataset), seed=2)
    resumed_sampler.set_epoch(1)
    resumed_sampler.set_start(6)  # two batches of 3 were consumed before the interruption
    tail = _run(resumed_dataset, resumed_sampler, workers=2)
    assert len(tail) == 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], tail, strict=True))


def test_seeded_transform_leaves_global_rng_untouched() -> None:
    dataset = _seeded()
    torch.manual_seed(11)
    random.seed(11)
    np.random.seed(11)
    torch_state = torch.get_rng_state()
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    dataset[4]
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert torch.equal(dataset[4][0][1], dataset[4][0][1])


def test_seeded_transform_passes_through_metadata() -> None:
    dataset = _seeded()
    assert len(dataset) == 10
    assert dataset.targets == [i % 3 for i in range(10)] and dataset.classes == ["a", "b", "c"]
    assert dataset[5][1] == 2
    assert dataset.num_skipped() == 0


def test_build_loader_settings_and_errors() -> None:
    dataset = _tiny_images(4)
    loader = build_loader(dataset, batch_size=2, collate_fn=lambda batch: batch)
    assert loader.persistent_workers is False
    assert loader.pin_memory == torch.cuda.is_available()
    assert [len(batch) for batch in loader] == [2, 2]
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(dataset, batch_size=0)
    with pytest.raises(ValueError, match="sampler"):
        build_loader(dataset, batch_size=1, sampler=ResumableSampler(4), shuffle=True)


def test_epoch_tagged_indices_give_the_same_items_with_persistent_workers():
    """(epoch, index) pairs carry the epoch to long-lived workers: same views as set_epoch + plain indices."""
    from torchvision.transforms import v2

    from selfsup.shared.data import build_dataset

    base = build_dataset("digits", split="train")
    transform = v2.Compose([v2.RandomResizedCrop(8), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    seeded = SeededTransformDataset(base, transform, seed=3)
    sampler = ResumableSampler(20, seed=1, tag_epoch=True)
    loader = build_loader(seeded, batch_size=5, sampler=sampler, num_workers=1, persistent_workers=True)
    assert loader.persistent_workers
    reference = ResumableSampler(20, seed=1)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        tagged = torch.cat([x for x, _ in loader])
        seeded.set_epoch(epoch)
        reference.set_epoch(epoch)
        plain = torch.stack([seeded[i][0] for i in reference.epoch_indices()])
        assert torch.equal(tagged, plain)
