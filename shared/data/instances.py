"""Instance discrimination needs each image's position in the dataset: a wrapper that returns it.

Memory-bank methods keep one row per training image and update the rows of the batch's images, so each item
carries its instance index (the original CMC's ``ImageFolderInstance`` returns ``(img, target, index)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

__all__ = ["InstanceIndexed"]


class InstanceIndexed(Dataset):
    """``dataset[key]`` followed by the instance index: ``(*item, index)``.

    ``key`` is an index or the ``(epoch, index)`` pair of ``ResumableSampler(tag_epoch=True)``; the pair is
    passed on unchanged (the wrapped dataset seeds its augmentation from it) and ``index`` is appended.
    ``set_epoch``, ``targets`` and ``classes`` are those of the wrapped dataset.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        index = key[1] if isinstance(key, tuple) else key
        item = self.dataset[key]
        return (*item, int(index)) if isinstance(item, tuple) else (item, int(index))

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]

    @property
    def targets(self) -> Sequence[int]:
        return self.dataset.targets  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes  # type: ignore[attr-defined]
