"""Tests of the dataset registry and every dataset source (all offline, tiny generated files)."""

from __future__ import annotations

import gzip
import logging
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.shared.data import (
    DATASET_NAMES,
    CorruptImageError,
    build_dataset,
    build_loader,
    dataset_info,
    verify_images,
)
from selfsup.shared.data.colorspace import rgb_to_lab
from selfsup.shared.data.digits import (
    DIGITS_COLOR_SEED,
    digits_arrays,
    digits_color_arrays,
    digits_color_palette,
    digits_split_indices,
)
from selfsup.shared.data.transforms import linear_eval_transform

# ----------------------------------------------------------------------------- registry


def test_names_and_info() -> None:
    assert DATASET_NAMES == (
        "imagefolder",
        "cifar10",
        "cifar100",
        "stl10",
        "fashion_mnist",
        "digits",
        "digits_color",
        "npz",
    )
    sizes = {name: dataset_info(name).image_size for name in DATASET_NAMES}
    assert sizes == {
        "imagefolder": 224,
        "cifar10": 32,
        "cifar100": 32,
        "stl10": 96,
        "fashion_mnist": 28,
        "digits": 32,
        "digits_color": 32,
        "npz": 32,
    }
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("imagefolder").num_classes is None
    assert dataset_info("npz").num_classes is None
    for name in DATASET_NAMES:
        info = dataset_info(name)
        assert len(info.mean) == 3 and len(info.std) == 3
        assert all(0 < value < 1 for value in info.mean + info.std)
    with pytest.raises(AttributeError):
        dataset_info("digits").num_classes = 3  # type: ignore[misc]


def test_unknown_name_and_split() -> None:
    with pytest.raises(ValueError, match="--dataset") as error:
        build_dataset("imagenet64")
    assert all(name in str(error.value) for name in DATASET_NAMES)
    with pytest.raises(ValueError, match="unlabeled"):
        build_dataset("digits", split="unlabeled")


# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_disjoint_and_stable() -> None:
    train_idx, test_idx = digits_split_indices("train"), digits_split_indices("test")
    assert len(train_idx) == 1347 and len(test_idx) == 450
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))
    train = build_dataset("digits", split="train")
    test = build_dataset("digits", split="test")
    assert len(train) == 1347 and len(test) == 450
    assert train.classes == [str(d) for d in range(10)]
    # stratified: every class has about a quarter of its images in test
    test_counts = np.bincount(np.asarray(test.targets), minlength=10)
    train_counts = np.bincount(np.asarray(train.targets), minlength=10)
    assert np.all(np.abs(test_counts / (test_counts + train_counts) - 0.25) < 0.02)
    # determinism: a second build gives identical pixels and targets
    again = build_dataset("digits", split="test")
    assert again.targets == test.targets
    assert np.array_equal(np.asarray(again[17][0]), np.asarray(test[17][0]))


def test_digits_pixels_follow_documented_recipe() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images, targets = digits_arrays("test")
    position = 5
    source = int(digits_split_indices("test")[position])
    assert targets[position] == raw.target[source]
    gray = np.rint(raw.images[source] * 255 / 16).astype(np.uint8)
    expected = np.asarray(Image.fromarray(gray).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(images[position][..., 0], expected)
    assert np.array_equal(images[position][..., 0], images[position][..., 2])


def test_digits_items_and_stats() -> None:
    dataset = build_dataset("digits", split="train")
    image, target = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert isinstance(target, int) and 0 <= target < 10
    info = dataset_info("digits")
    pixels = np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))]).astype(np.float64) / 255
    assert np.allclose(pixels.mean(axis=(0, 1, 2)), info.mean, atol=1e-3)
    assert np.allclose(pixels.std(axis=(0, 1, 2)), info.std, atol=1e-3)
    to_tensor = linear_eval_transform(False, resize=32, crop=28)
    transformed = build_dataset("digits", split="test", transform=to_tensor)
    tensor, _ = transformed[3]
    assert tensor.shape == (3, 28, 28) and tensor.dtype == torch.float32


# ----------------------------------------------------------------------------- digits_color


def test_digits_color_has_the_split_and_targets_of_digits() -> None:
    for split in ("train", "test"):
        gray = build_dataset("digits", split=split)
        colour = build_dataset("digits_color", split=split)
        assert len(colour) == len(gray) and colour.targets == gray.targets and colour.classes == gray.classes
    image, target = build_dataset("digits_color", split="test")[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    assert isinstance(target, int)


def test_digits_color_pixels_follow_documented_recipe() -> None:
    gray, _ = digits_arrays("test")
    images, _ = digits_color_arrays("test")
    foreground, background = digits_color_palette()
    assert foreground.shape == background.shape == (1797, 3)
    for position in (0, 5, 449):
        source = int(digits_split_indices("test")[position])
        weight = gray[position][..., :1].astype(np.float64) / 255
        fg, bg = foreground[source], background[source]
        expected = np.rint((bg + (fg - bg) * weight) * 255).clip(0, 255).astype(np.uint8)
        assert np.array_equal(images[position], expected)
    # deterministic: the palette is the documented draw, and a second read gives the same pixels
    assert DIGITS_COLOR_SEED == 2020
    assert np.array_equal(digits_color_arrays("test")[0], images)
    assert np.allclose(foreground[0], [0.37114528, 0.15277096, 0.31791333])
    assert np.allclose(background[0], [0.95431827, 0.89505741, 0.82685673])


def test_digits_color_strokes_show_in_both_views() -> None:
    foreground, background = digits_color_palette()
    assert np.all((foreground >= 0) & (foreground <= 1)) and np.all((background >= 0) & (background <= 1))
    fg, bg = rgb_to_lab(foreground), rgb_to_lab(background)
    assert np.abs(fg[:, 0] - bg[:, 0]).min() >= 29.9  # L: lightness gap (clipping moves a colour < 0.1)
    assert np.linalg.norm(fg[:, 1:] - bg[:, 1:], axis=1).min() >= 29.9  # ab: chroma gap
    images, _ = digits_color_arrays("train")
    lab = rgb_to_lab(images[:50])
    # the ab channels vary within an image (on the gray digits they are ~0 everywhere)
    assert lab[..., 1:].std(axis=(1, 2)).mean() > 5


def test_digits_color_colours_are_independent_of_the_class() -> None:
    from sklearn.datasets import load_digits

    targets = load_digits().target
    foreground, background = digits_color_palette()
    lab = np.concatenate([rgb_to_lab(foreground), rgb_to_lab(background)], axis=1)  # (1797, 6)
    # each class's mean colour lies within 4 standard errors of the mean over all images
    overall, spread = lab.mean(axis=0), lab.std(axis=0)
    for digit in range(10):
        rows = lab[targets == digit]
        assert np.all(np.abs(rows.mean(axis=0) - overall) < 4 * spread / np.sqrt(len(rows))), digit
    # the palette is drawn without the targets: relabelling the images would not change it
    digits_color_palette.cache_clear()
    again_fg, again_bg = digits_color_palette()
    assert np.array_equal(again_fg, foreground) and np.array_equal(again_bg, background)


def test_digits_color_stats() -> None:
    images, _ = digits_color_arrays("train")
    pixels = images.astype(np.float64) / 255
    info = dataset_info("digits_color")
    assert info.num_classes == 10 and info.image_size == 32
    assert np.allclose(pixels.mean(axis=(0, 1, 2)), info.mean, atol=1e-3)
    assert np.allclose(pixels.std(axis=(0, 1, 2)), info.std, atol=1e-3)


# ----------------------------------------------------------------------------- imagefolder


def _png(path: Path, value: int, size: tuple[int, int] = (6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path)


def _imagenet_tree(root: Path) -> None:
    for split, count in (("train", 3), ("val", 2)):
        for k, name in enumerate(("cat", "dog")):
            for i in range(count):
                _png(root / split / name / f"{name}_{i}.png", 40 * k + 10 * i)


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    _imagenet_tree(tmp_path)
    train = build_dataset("imagefolder", root=tmp_path, split="train")
    test = build_dataset("imagefolder", root=tmp_path, split="test")
    assert len(train) == 6 and len(test) == 4
    assert train.classes == test.classes == ["cat", "dog"]
    assert train.targets == [0, 0, 0, 1, 1, 1] and test.targets == [0, 0, 1, 1]
    image, target = test[3]
    assert image.mode == "RGB" and image.size == (6, 5) and target == 1
    assert image.getpixel((0, 0)) == (50, 205, 25)


def test_imagefolder_val_classes_follow_train(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a" / "0.png", 1)
    _png(tmp_path / "train" / "b" / "0.png", 2)
    _png(tmp_path / "test" / "b" / "0.png", 3)
    test = build_dataset("imagefolder", root=tmp_path, split="test")
    assert test.classes == ["a", "b"] and test.targets == [1]
    _png(tmp_path / "val" / "zebra" / "0.png", 4)
    with pytest.raises(ValueError, match="zebra"):
        build_dataset("imagefolder", root=tmp_path, split="test")


def test_imagefolder_flat_layout(tmp_path: Path) -> None:
    for k, name in enumerate(("b_class", "a_class")):
        _png(tmp_path / name / "nested" / "x.png", 100 + k)
    (tmp_path / "a_class" / "notes.txt").write_text("not an image")
    dataset = build_dataset("imagefolder", root=tmp_path)
    assert dataset.classes == ["a_class", "b_class"] and len(dataset) == 2
    with pytest.raises(ValueError, match="train"):
        build_dataset("imagefolder", root=tmp_path, split="test")


def test_imagefolder_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="--dataset_root") as error:
        build_dataset("imagefolder", root=missing)
    assert str(missing) in str(error.value)
    with pytest.raises(FileNotFoundError, match="--dataset_root"):
        build_dataset("imagefolder")


def _tree_with_corrupt_file(root: Path) -> Path:
    for i in range(4):
        _png(root / "c0" / f"{i}.png", 30 * i)
    bad = root / "c0" / "1_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return bad


def test_corrupt_image_raises_naming_file(tmp_path: Path) -> None:
    bad = _tree_with_corrupt_file(tmp_path)
    dataset = build_dataset("imagefolder", root=tmp_path)
    index = [path for path, _ in dataset.samples].index(str(bad))
    with pytest.raises(CorruptImageError, match=r"1_bad\.png") as error:
        dataset[index]
    assert isinstance(error.value, RuntimeError) and error.value.path == str(bad)
    assert verify_images(dataset) == [str(bad)]
    loader = build_loader(dataset, batch_size=1, num_workers=1, collate_fn=lambda batch: batch)
    with pytest.raises(CorruptImageError, match=r"1_bad\.png"):
        list(loader)


def test_skip_corrupt_replaces_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = _tree_with_corrupt_file(tmp_path)
    dataset = build_dataset("imagefolder", root=tmp_path, skip_corrupt=True)
    index = [path for path, _ in dataset.samples].index(str(bad))
    with caplog.at_level(logging.WARNING):
        image, _ = dataset[index]
    assert str(bad) in caplog.text
    assert np.array_equal(np.asarray(image), np.asarray(dataset[index + 1][0]))
    assert dataset.num_skipped() == 1

    loader = build_loader(dataset, batch_size=2, num_workers=2, collate_fn=lambda batch: batch)
    seen = sum(len(batch) for batch in loader)
    assert seen == len(dataset) == 5
    assert dataset.num_skipped() == 2  # one more, counted in a worker process


# ----------------------------------------------------------------------------- torchvision datasets


@pytest.mark.parametrize(
    ("name", "folder", "a_file"),
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "meta"),
        ("stl10", "stl10_binary", "train_X.bin"),
        ("fashion_mnist", "FashionMNIST", "train-images-idx3-ubyte"),
    ],
)
def test_missing_torchvision_data_is_explained(tmp_path: Path, name: str, folder: str, a_file: str) -> None:
    with pytest.raises(FileNotFoundError) as error:
        build_dataset(name, root=tmp_path, split="test", download=False)
    message = str(error.value)
    assert str(tmp_path / folder) in message and a_file in message
    assert "--dataset_root" in message and "--download" in message


def _idx_gz(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x800 + array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fashion_gz(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": np.array([9, 0, 3, 3, 1]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([2, 7, 8]),
    }
    for stem, array in arrays.items():
        _idx_gz(root / "FashionMNIST" / "raw" / f"{stem}.gz", array)
    return arrays


def test_fashion_mnist_decompresses_gz_in_place(tmp_path: Path) -> None:
    arrays = _fashion_gz(tmp_path)
    train = build_dataset("fashion_mnist", root=tmp_path, split="train")
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert len(train) == 5 and list(train.targets) == [9, 0, 3, 3, 1]
    assert train.classes[9] == "Ankle boot"
    image, target = train[0]
    assert image.mode == "RGB" and image.size == (28, 28) and target == 9
    assert np.array_equal(np.asarray(image)[..., 1], arrays["train-images-idx3-ubyte"][0])
    test = build_dataset("fashion_mnist", root=tmp_path, split="test")  # now reads the decompressed files
    assert list(test.targets) == [2, 7, 8]


def test_fashion_mnist_read_only_root_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = tmp_path / "ro"
    arrays = _fashion_gz(data_root)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(cache))
    raw = data_root / "FashionMNIST" / "raw"
    raw.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        test = build_dataset("fashion_mnist", root=data_root, split="test")
        assert sorted(os.listdir(raw)) == sorted(f"{stem}.gz" for stem in arrays)
    finally:
        raw.chmod(stat.S_IRWXU)
    assert list(test.targets) == [2, 7, 8]
    assert np.array_equal(np.asarray(test[2][0])[..., 0], arrays["t10k-images-idx3-ubyte"][2])
    cached = list(cache.rglob("t10k-images-idx3-ubyte"))
    assert len(cached) == 1 and cached[0].parent.name == "raw"


# ----------------------------------------------------------------------------- npz


def test_npz_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
        train_labels=np.array([0, 1, 2, 1]),
        test_images=rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        test_labels=np.array([2, 0], dtype=np.uint8),
        classes=np.array(["ant", "bee", "cow"]),
    )
    train = build_dataset("npz", root=path, split="train")
    test = build_dataset("npz", root=path, split="test")
    assert len(train) == 4 and len(test) == 2
    assert train.classes == ["ant", "bee", "cow"] and test.targets == [2, 0]
    image, target = train[3]
    assert image.mode == "RGB" and image.size == (8, 8) and target == 1
    assert np.array_equal(np.asarray(test[1][0]), np.load(path)["test_images"][1])


def test_npz_errors_and_default_classes(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, train_images=np.zeros((2, 4, 4, 3), np.uint8), train_labels=np.array([0, 4]))
    assert build_dataset("npz", root=path).classes == ["0", "1", "2", "3", "4"]
    with pytest.raises(KeyError, match="test_images"):
        build_dataset("npz", root=path, split="test")
    with pytest.raises(FileNotFoundError, match="--dataset_root"):
        build_dataset("npz", root=tmp_path / "absent.npz")
    bad = tmp_path / "float.npz"
    np.savez(bad, train_images=np.zeros((2, 4, 4, 3), np.float32), train_labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="uint8"):
        build_dataset("npz", root=bad)


@pytest.mark.slow
def test_skip_counter_reaches_spawned_workers(tmp_path: Path) -> None:
    _tree_with_corrupt_file(tmp_path)
    dataset = build_dataset("imagefolder", root=tmp_path, skip_corrupt=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn", collate_fn=list
    )
    assert sum(len(batch) for batch in loader) == 5
    assert dataset.num_skipped() == 1
