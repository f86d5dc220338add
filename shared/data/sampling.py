"""Deterministic, resumable sampling and augmentation: the pieces that make a resumed run bitwise identical.

Three parts work together:

* :class:`ResumableSampler` yields this rank's share of a permutation that depends only on ``(seed, epoch)``;
  ``set_start(k)`` skips the first ``k`` samples of that share, so a run resumed mid-epoch sees exactly the
  tail it had not yet seen.
* :class:`SeededTransformDataset` applies the augmentation of item ``i`` under an RNG seeded from
  ``(seed, epoch, i)``, so the views do not depend on the number of DataLoader workers, on how workers were
  seeded, or on where the run was resumed.
* :func:`build_loader` builds a DataLoader with settings that keep the two above effective (non-persistent
  workers, so ``set_epoch`` reaches the workers of every new epoch).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from selfsup.shared.runtime.seeding import seed_worker

__all__ = ["ResumableSampler", "SeededTransformDataset", "build_loader", "build_training_loader", "mix_seed"]


def mix_seed(*values: int) -> int:
    """Hash a tuple of integers to a 63-bit seed.

    Unlike ``seed + epoch`` the result does not alias between different tuples (``(0, 1)`` and ``(1, 0)``
    give unrelated seeds), and it is the same in every process and Python version (no ``hash()`` salt).
    """
    payload = ",".join(str(int(v)) for v in values).encode("ascii")
    digest = hashlib.blake2b(payload, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ResumableSampler(Sampler[int]):
    """A sampler like ``DistributedSampler`` whose order depends only on ``(seed, epoch)`` and can resume.

    The epoch permutation of ``range(num_samples)`` is drawn with a ``torch.Generator`` seeded with
    ``mix_seed(seed, epoch)`` (or is the identity when ``shuffle=False``). As in ``DistributedSampler`` it is
    padded by wrapping around until its length is a multiple of ``num_replicas`` (or its tail is dropped when
    ``drop_last=True``), and rank ``r`` takes positions ``r, r + R, r + 2R, ...``. Every rank therefore gets
    the same number of samples and the shards are disjoint apart from the wrap-around padding.

    ``set_start(k)`` skips the first ``k`` samples of this rank's share for the current epoch (to resume
    mid-epoch after ``k`` samples were consumed); ``set_epoch`` with a *different* epoch resets the start
    to 0, so a training loop may call ``set_epoch(epoch)`` at the top of every epoch, the resumed one too.
    ``len(sampler)`` is the number of samples still to be yielded by this rank in the current epoch.

    With ``tag_epoch=True`` it yields ``(epoch, index)`` pairs, which :class:`SeededTransformDataset`
    understands: the epoch then travels with each index, so DataLoader workers can stay alive across epochs
    (``build_loader(..., persistent_workers=True)``) and still seed every item from its own epoch.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        tag_epoch: bool = False,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"ResumableSampler: num_samples must be >= 0, got {num_samples}")
        if num_replicas < 1:
            raise ValueError(f"ResumableSampler: num_replicas (world size) must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"ResumableSampler: rank must be in [0, {num_replicas}), got {rank}")
        self.num_samples_total = int(num_samples)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = bool(drop_last)
        self.tag_epoch = bool(tag_epoch)
        self.epoch = 0
        self.start = 0
        if self.drop_last:
            self.num_per_rank = self.num_samples_total // self.num_replicas
        else:
            self.num_per_rank = math.ceil(self.num_samples_total / self.num_replicas)
        self.total_size = self.num_per_rank * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation is yielded; a change of epoch resets ``set_start`` to 0."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def set_start(self, index: int) -> None:
        """Skip the first ``index`` samples of this rank's share of the current epoch."""
        index = int(index)
        if not 0 <= index <= self.num_per_rank:
            raise ValueError(
                f"ResumableSampler.set_start: index must be in [0, {self.num_per_rank}] "
                f"(samples per rank this epoch), got {index}"
            )
        self.start = index

    def epoch_indices(self) -> list[int]:
        """This rank's full share of the current epoch (ignoring ``set_start``)."""
        n = self.num_samples_total
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        if self.total_size > n:
            pad = self.total_size - n
            order = order + (order * math.ceil(pad / max(n, 1)))[:pad]
        else:
            order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = self.epoch_indices()[self.start :]
        if self.tag_epoch:
            return iter([(self.epoch, index) for index in indices])
        return iter(indices)

    def __len__(self) -> int:
        return self.num_per_rank - self.start


class SeededTransformDataset(Dataset):
    """Apply ``transform`` to ``dataset[i]`` under an RNG seeded from ``(seed, epoch, i)``.

    ``dataset`` should be built with ``transform=None`` (its items are ``(PIL image, target)``). The
    transform runs inside ``torch.random.fork_rng(devices=[])`` with the CPU torch generator, Python's
    ``random`` and NumPy's global RNG all seeded from ``mix_seed(seed, epoch, i)``; all three are restored
    afterwards, so the caller's RNG state is untouched and the output for item ``i`` in a given epoch is the
    same whatever the worker count, worker seeding or resume point. Call :meth:`set_epoch` before each epoch
    (with non-persistent DataLoader workers the new epoch reaches the workers).
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int = 0) -> None:
        if transform is None or not callable(transform):
            raise TypeError(f"SeededTransformDataset: transform must be callable, got {transform!r}")
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that enters the per-item seed."""
        self.epoch = int(epoch)

    def item_seed(self, index: int) -> int:
        """The seed used for item ``index`` in the current epoch."""
        return mix_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[Any, int]:
        if isinstance(index, tuple):  # (epoch, index) from ResumableSampler(tag_epoch=True)
            epoch, index = index
            item_seed = mix_seed(self.seed, epoch, index)
        else:
            item_seed = self.item_seed(index)
        return self.item_with_seed(index, item_seed)

    def item_with_seed(self, index: int, item_seed: int) -> tuple[Any, int]:
        """Item ``index`` with its augmentation drawn under ``item_seed`` instead of ``(seed, epoch, index)``.

        ``self[i]`` is ``item_with_seed(i, item_seed(i))``; another seed gives a fresh augmentation of the same
        image (e.g. a mixing partner, :mod:`.mixtures`), with the same guarantees (global RNGs untouched).
        """
        image, target = self.dataset[index]
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                # Seed only the CPU generator: torch.manual_seed would also reseed CUDA generators,
                # which fork_rng(devices=[]) does not restore.
                torch.default_generator.manual_seed(item_seed)
                random.seed(item_seed)
                np.random.seed(item_seed % (2**32))
                output = self.transform(image)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return output, target

    @property
    def targets(self) -> Sequence[int]:
        """Targets of the wrapped dataset."""
        return self.dataset.targets  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        """Class names of the wrapped dataset."""
        return self.dataset.classes  # type: ignore[attr-defined]

    def num_skipped(self) -> int:
        """Corrupt items replaced so far by the wrapped dataset (0 when it cannot skip)."""
        counter = getattr(self.dataset, "num_skipped", None)
        return int(counter()) if callable(counter) else 0


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    shuffle: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    persistent_workers: bool = False,
    seed: int = 0,
) -> DataLoader:
    """Build a DataLoader with the project's settings.

    ``pin_memory`` is on only when CUDA is available. Workers are not persistent by default, so that
    ``set_epoch`` on the dataset in the main process reaches the workers of the next epoch; with a sampler
    that tags indices with their epoch (``ResumableSampler(tag_epoch=True)``) ``persistent_workers=True``
    is safe and saves the worker start-up of every epoch.
    Pass either a ``sampler`` (e.g. :class:`ResumableSampler`) or ``shuffle=True``, not both.

    Workers are seeded from ``seed`` (the run's ``--seed``): the loader draws each worker's torch seed from a
    private generator seeded with it, and :func:`~selfsup.shared.runtime.seeding.seed_worker` seeds the
    worker's ``random`` and NumPy from that.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"build_loader: batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"build_loader: num_workers must be an integer >= 0, got {num_workers!r}")
    if sampler is not None and shuffle:
        raise ValueError("build_loader: pass either sampler or shuffle=True, not both")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        # a private generator: the worker base seed drawn at each iterator start must not consume the global
        # RNG, which training draws from (shuffle BN) and restores on resume
        generator=torch.Generator().manual_seed(int(seed)),
        worker_init_fn=seed_worker,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def build_training_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    num_workers: int,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = False,
) -> tuple[ResumableSampler, DataLoader]:
    """The pre-training loader every trainer uses: this rank's share of a ``(seed, epoch)`` permutation with
    epoch-tagged indices (:class:`ResumableSampler`), persistent workers, workers seeded from ``seed``.

    ``dataset`` takes the ``(epoch, index)`` keys (a :class:`SeededTransformDataset` or a wrapper of one).
    ``drop_last`` drops each rank's incomplete last batch (SwAV's loader: every batch has ``batch_size`` images).
    """
    sampler = ResumableSampler(
        len(dataset),  # type: ignore[arg-type]
        shuffle=True,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
        tag_epoch=True,
    )
    loader = build_loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=True,
        seed=seed,
    )
    return sampler, loader
