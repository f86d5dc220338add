"""CIFAR-10/100, STL-10 and Fashion-MNIST through ``torchvision.datasets``, with offline-friendly checks.

Each dataset is read from ``--dataset_root`` in torchvision's layout (see :data:`EXPECTED_FILES`). When the
files are absent and ``--download`` is not given (or the download fails offline) a ``FileNotFoundError``
lists the expected files and their folder. Items are ``(transform(PIL RGB image), int target)``; Fashion-MNIST
images are converted from gray to RGB.

Fashion-MNIST also accepts the official ``.gz`` files alone in ``FashionMNIST/raw/`` (as in a verbatim copy
of the Zalando release): they are decompressed in place, or, when that folder is read-only, into
``<cache>/fashion_mnist/<hash of the root>/`` where ``<cache>`` is ``$SELFSUP_CACHE_DIR`` or
``$XDG_CACHE_HOME/selfsup`` or ``~/.cache/selfsup``. No network is used for that.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from selfsup.shared.data.flags import data_root_flag

__all__ = [
    "EXPECTED_FILES",
    "TORCHVISION_DATASETS",
    "TorchvisionImageDataset",
    "build_torchvision_dataset",
    "cache_dir",
    "prepare_fashion_mnist_root",
]

logger = logging.getLogger(__name__)

#: Sub-folder of ``--dataset_root`` and the files torchvision needs there (it checks all of them).
EXPECTED_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": (
        "cifar-10-batches-py",
        (*(f"data_batch_{index}" for index in range(1, 6)), "test_batch", "batches.meta"),
    ),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
    "stl10": ("stl10_binary", ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin")),
    "fashion_mnist": (
        os.path.join("FashionMNIST", "raw"),
        (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ),
    ),
}
TORCHVISION_DATASETS: tuple[str, ...] = tuple(EXPECTED_FILES)

_STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def cache_dir() -> Path:
    """``$SELFSUP_CACHE_DIR``, else ``$XDG_CACHE_HOME/selfsup``, else ``~/.cache/selfsup``."""
    explicit = os.environ.get("SELFSUP_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "selfsup"


class TorchvisionImageDataset(Dataset):
    """Wrap a torchvision dataset built without a transform: RGB PIL images, ``int`` targets, ``classes``."""

    def __init__(
        self,
        base: Any,
        targets: list[int],
        classes: list[str],
        transform: Callable[[Image.Image], Any] | None,
    ) -> None:
        if len(targets) != len(base):
            raise ValueError(f"{type(base).__name__}: {len(targets)} targets for {len(base)} images")
        self.base = base
        self.targets = targets
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.base[index]
        if image.mode != "RGB":
            image = image.convert("RGB")
        target = self.targets[index]
        if self.transform is not None:
            return self.transform(image), target
        return image, target


def _missing_files(name: str, root: Path) -> list[Path]:
    folder, files = EXPECTED_FILES[name]
    return [root / folder / file for file in files if not (root / folder / file).is_file()]


def _not_found(name: str, root: Path, missing: list[Path], reason: str, hint: str) -> FileNotFoundError:
    folder, files = EXPECTED_FILES[name]
    return FileNotFoundError(
        f"--dataset {name}: {reason}. Expected {', '.join(files)} in {str(root / folder)!r} "
        f"({data_root_flag()} {str(root)!r} must contain '{folder}/'); "
        f"missing: {', '.join(p.name for p in missing)}. {hint}"
    )


def _is_writable_dir(path: Path) -> bool:
    """Whether ``path`` is meant to be written: it carries a write permission bit and a probe file can be
    created. The bits are checked explicitly because root may write into folders marked read-only."""
    try:
        if not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        probe = path / f".selfsup-write-probe-{os.getpid()}"
        with open(probe, "xb"):
            pass
        probe.unlink()
        return True
    except OSError:
        return False


def _gunzip(source: Path, target: Path) -> None:
    """Decompress ``source`` to ``target`` through a temporary file (atomic replace)."""
    temporary = target.with_name(f"{target.name}.part{os.getpid()}")
    try:
        with gzip.open(source, "rb") as compressed, open(temporary, "wb") as plain:
            shutil.copyfileobj(compressed, plain, 1 << 20)
        os.replace(temporary, target)
    except (OSError, EOFError) as error:
        temporary.unlink(missing_ok=True)
        raise RuntimeError(f"cannot decompress {str(source)!r} into {str(target)!r}: {error}") from error


def prepare_fashion_mnist_root(root: Path) -> Path:
    """Make the decompressed Fashion-MNIST IDX files available; return the root to hand to torchvision.

    Decompressed files already in ``root/FashionMNIST/raw`` are used as they are. Missing ones whose ``.gz``
    is present are decompressed there, or into the cache folder when ``root`` is read-only (then the cache
    root is returned). Files neither decompressed nor compressed are left to the caller to report.
    """
    folder, files = EXPECTED_FILES["fashion_mnist"]
    raw = root / folder
    missing = [file for file in files if not (raw / file).is_file()]
    if not missing or not all((raw / f"{file}.gz").is_file() for file in missing):
        return root
    if _is_writable_dir(raw):
        for file in missing:
            logger.info("decompressing %s", raw / f"{file}.gz")
            _gunzip(raw / f"{file}.gz", raw / file)
        return root
    key = hashlib.sha1(str(root.resolve()).encode("utf-8")).hexdigest()[:16]
    cache_root = cache_dir() / "fashion_mnist" / key
    cache_raw = cache_root / folder
    cache_raw.mkdir(parents=True, exist_ok=True)
    for file in files:
        source = raw / file if (raw / file).is_file() else raw / f"{file}.gz"
        target = cache_raw / file
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        if source.suffix == ".gz":
            _gunzip(source, target)
        else:
            shutil.copyfile(source, target)
    logger.warning("%s is read-only: using Fashion-MNIST decompressed into the cache %s", raw, cache_raw)
    return cache_root


def _construct(name: str, root: Path, split: str, download: bool) -> Any:
    from torchvision import datasets

    if name == "cifar10":
        return datasets.CIFAR10(str(root), train=split == "train", download=download)
    if name == "cifar100":
        return datasets.CIFAR100(str(root), train=split == "train", download=download)
    if name == "stl10":
        return datasets.STL10(str(root), split=split, download=download)
    if name == "fashion_mnist":
        return datasets.FashionMNIST(str(root), train=split == "train", download=download)
    raise ValueError(f"--dataset {name!r} is not one of the torchvision datasets {TORCHVISION_DATASETS}")


def build_torchvision_dataset(
    name: str,
    root: str | os.PathLike[str],
    split: str,
    *,
    transform: Callable[[Image.Image], Any] | None = None,
    download: bool = False,
) -> TorchvisionImageDataset:
    """Build split ``split`` of torchvision dataset ``name`` under ``root`` (see the module docstring)."""
    if name not in EXPECTED_FILES:
        raise ValueError(f"--dataset {name!r} is not one of the torchvision datasets {TORCHVISION_DATASETS}")
    base_root = Path(root).expanduser()
    if name == "fashion_mnist" and base_root.is_dir():
        base_root = prepare_fashion_mnist_root(base_root)
    missing = _missing_files(name, base_root)
    if missing and not download:
        raise _not_found(
            name,
            base_root,
            missing,
            "dataset files not found and --download not given",
            "Pass --download to fetch them when online, or copy them there.",
        )
    if download:
        base_root.mkdir(parents=True, exist_ok=True)
    try:
        base = _construct(name, base_root, split, download)
    except (OSError, RuntimeError) as error:
        missing = _missing_files(name, base_root)
        if missing:
            raise _not_found(
                name,
                base_root,
                missing,
                f"--download failed (offline?): {error}",
                "Copy the files there, or rerun with --download where the network is reachable.",
            ) from error
        folder, _ = EXPECTED_FILES[name]
        raise RuntimeError(
            f"--dataset {name}: the files in {str(base_root / folder)!r} are present but torchvision could "
            f"not read them (wrong checksum or truncated?): {error}"
        ) from error
    if name == "stl10":
        targets = [int(label) for label in base.labels]
        classes = list(getattr(base, "classes", None) or _STL10_CLASSES)
    else:
        targets = [int(label) for label in base.targets]
        classes = [str(class_name) for class_name in base.classes]
    return TorchvisionImageDataset(base, targets, classes, transform)
