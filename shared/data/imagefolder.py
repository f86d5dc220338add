"""An ImageFolder-like dataset (class sub-folders of image files) that reports and can skip corrupt images.

Layout: ``<dir>/<class name>/**/<image>`` with the usual image extensions. Classes are the sorted sub-folder
names; class ``k`` has target ``k``. :func:`resolve_imagefolder_split` maps ``--dataset_root`` and a split to
such a directory (ImageNet ``train``/``val`` layout, or a flat class-folder root used as the train split).

A file that PIL cannot decode raises :class:`CorruptImageError`. With ``skip_corrupt=True`` the item is
replaced by the next readable item (index ``i+1, i+2, ...`` modulo the length, so the replacement is
deterministic), a warning naming the file is logged, and the event is counted in a counter shared between
DataLoader worker processes (:meth:`ImageFolderDataset.num_skipped`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from selfsup.shared.data.flags import data_root_flag

__all__ = [
    "IMG_EXTENSIONS",
    "CorruptImageError",
    "ImageFolderDataset",
    "SharedCounter",
    "load_rgb_image",
    "resolve_imagefolder_split",
    "verify_images",
]

logger = logging.getLogger(__name__)

IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)


class CorruptImageError(RuntimeError):
    """An image file exists but cannot be decoded; the message names the file and the cause."""

    def __init__(self, message: str, *, path: str | None = None, cause: BaseException | None = None) -> None:
        # A single positional message keeps the type intact when a DataLoader worker re-raises it.
        super().__init__(message)
        self.path = path
        self.cause = cause

    @classmethod
    def from_cause(cls, path: str, cause: BaseException) -> CorruptImageError:
        """The error for ``path`` failing to decode because of ``cause``."""
        message = f"corrupt or unreadable image {path!r}: {type(cause).__name__}: {cause}"
        return cls(message, path=path, cause=cause)

    def one_line(self, skip_flag: str | None = "--skip_corrupt") -> str:
        """The error for a command line: which file failed and how to go on (``skip_flag``, where the command
        has one).

        Raised in a DataLoader worker, the error reaches the main process with the worker's traceback in its
        message; this keeps only the line that names the file.
        """
        lines = [line for line in str(self).splitlines() if "corrupt or unreadable image" in line]
        text = lines[-1] if lines else str(self).strip().splitlines()[-1]
        text = text[text.index("corrupt or unreadable image") :] if "corrupt or unreadable" in text else text
        if skip_flag is None:
            return f"{text}; fix or remove the file"
        return f"{text}; fix or remove the file, or pass {skip_flag} to skip (and count) unreadable images"


def load_rgb_image(path: str) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image, or raise :class:`CorruptImageError`."""
    try:
        with open(path, "rb") as handle, Image.open(handle) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptImageError.from_cause(path, error) from error


class SharedCounter:
    """An integer counter in shared memory, visible across the main process and DataLoader workers.

    Workers receive it when the dataset is sent to them (fork or spawn); copying the dataset in one process
    (``copy.copy``/``deepcopy``) shares the same counter.
    """

    def __init__(self) -> None:
        # Created in a "spawn" context: its lock may then go to fork, spawn and forkserver workers alike
        # (a lock made in a fork context cannot be sent to spawn workers).
        self._value = multiprocessing.get_context("spawn").Value("q", 0)

    def increment(self, amount: int = 1) -> None:
        """Add ``amount`` atomically."""
        with self._value.get_lock():
            self._value.value += amount

    @property
    def value(self) -> int:
        """The current count."""
        return int(self._value.value)

    def __copy__(self) -> SharedCounter:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedCounter:
        return self


def _scan_class_folder(class_dir: Path, extensions: tuple[str, ...]) -> list[str]:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames.sort()
        for filename in sorted(filenames):
            if filename.lower().endswith(extensions) and not filename.startswith("."):
                files.append(os.path.join(dirpath, filename))
    return files


def find_classes(directory: Path) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``directory``."""
    with os.scandir(directory) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"no class sub-folders in {str(directory)!r}; {data_root_flag()} for imagefolder must hold "
            f"<class>/<image> folders (or train/<class>/<image> and val/<class>/<image>)"
        )
    return classes


class ImageFolderDataset(Dataset):
    """Images in class sub-folders of ``directory``, returned as ``(transform(PIL RGB image), target)``.

    ``classes`` fixes the class list and order (e.g. the train classes when reading ``val``); by default it
    is the sorted sub-folder names. Attributes: ``samples`` (list of (path, target)), ``targets``,
    ``classes``, ``class_to_idx``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        classes: Sequence[str] | None = None,
        skip_corrupt: bool = False,
        extensions: tuple[str, ...] = IMG_EXTENSIONS,
    ) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist (check {data_root_flag()})")
        self.root = str(root)
        found = find_classes(root)
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(
                f"{str(root)!r} has class folders not present in the train split: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; the val/test folders must use the train class names"
            )
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        for name in self.classes:
            class_dir = root / name
            if class_dir.is_dir():
                target = self.class_to_idx[name]
                self.samples.extend((path, target) for path in _scan_class_folder(class_dir, extensions))
        if not self.samples:
            raise FileNotFoundError(
                f"no image files with extensions {', '.join(extensions)} under {str(root)!r} "
                f"(check {data_root_flag()})"
            )
        self.targets = [target for _, target in self.samples]
        self.transform = transform
        self.skip_corrupt = bool(skip_corrupt)
        self._skipped = SharedCounter()

    def __len__(self) -> int:
        return len(self.samples)

    def num_skipped(self) -> int:
        """How many times a corrupt image was replaced, summed over the main process and all workers."""
        return self._skipped.value

    def _load(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        if not self.skip_corrupt:
            return load_rgb_image(path), target
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            path, target = self.samples[candidate]
            try:
                return load_rgb_image(path), target
            except CorruptImageError as error:
                self._skipped.increment()
                logger.warning(
                    "skipping corrupt image %s (%s); using the next readable item instead", path, error.cause
                )
        raise RuntimeError(f"every image under {self.root!r} is unreadable; nothing to use instead")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self.samples) <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} images in {self.root!r}")
        image, target = self._load(index % len(self.samples))
        if self.transform is not None:
            return self.transform(image), target
        return image, target


def resolve_imagefolder_split(root: str | os.PathLike[str], split: str) -> tuple[Path, Path | None]:
    """Directory for ``split`` under ``--dataset_root`` and the train directory that fixes the classes.

    * ``root/train`` exists: ``train`` -> ``root/train``; ``test`` -> ``root/val`` or else ``root/test``.
    * otherwise ``root`` itself holds the class folders and is the train split; ``test`` is an error.

    Returns ``(split_dir, train_dir_or_None)``.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(
            f"imagefolder root {str(base)!r} does not exist; pass {data_root_flag()} pointing at an "
            f"ImageNet-style folder (train/<class>/*, val/<class>/*) or a folder of <class>/* sub-folders"
        )
    train_dir = base / "train"
    if not train_dir.is_dir():
        if split == "train":
            return base, None
        raise ValueError(
            f"imagefolder split {split!r} needs {str(base / 'val')!r} or {str(base / 'test')!r} next to "
            f"{str(train_dir)!r}; {data_root_flag()} {str(base)!r} has no train/ folder, so it is read as the "
            f"train split only"
        )
    if split == "train":
        return train_dir, None
    for name in ("val", "test"):
        candidate = base / name
        if candidate.is_dir():
            return candidate, train_dir
    raise FileNotFoundError(
        f"imagefolder split 'test' expects {str(base / 'val')!r} or {str(base / 'test')!r} "
        f"under {data_root_flag()} {str(base)!r}"
    )


def verify_images(dataset: Any) -> list[str]:
    """Decode every image of an :class:`ImageFolderDataset` (or a wrapper with ``.dataset``) and return
    the paths that fail."""
    inner = dataset
    while not hasattr(inner, "samples") and hasattr(inner, "dataset"):
        inner = inner.dataset
    if not hasattr(inner, "samples"):
        raise TypeError(
            "verify_images expects an image-folder dataset with .samples (path, target) pairs, "
            f"got {type(dataset)}"
        )
    bad: list[str] = []
    for path, _ in inner.samples:
        try:
            load_rgb_image(path)
        except CorruptImageError:
            bad.append(path)
    return bad
