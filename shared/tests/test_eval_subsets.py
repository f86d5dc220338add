"""Labelled subsets: the packaged ImageNet lists, class-balanced subsets and subset files."""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pytest

from selfsup.shared.evaluation.subsets import (
    IMAGENET_SUBSET_FILES,
    IMAGENET_SUBSET_MD5,
    balanced_subset,
    choose_subset,
    imagenet_subset_names,
    read_subset_file,
    write_subset_file,
)


@pytest.mark.parametrize(("percent", "lines", "size"), [(1, 12811, 260323), (10, 128116, 2603168)])
def test_packaged_imagenet_lists_are_the_simclr_files(percent, lines, size):
    data = resources.files("selfsup.shared.evaluation") / "imagenet_subsets" / IMAGENET_SUBSET_FILES[percent]
    raw = data.read_bytes()
    assert len(raw) == size
    assert hashlib.md5(raw).hexdigest() == IMAGENET_SUBSET_MD5[percent]
    names = imagenet_subset_names(percent)
    assert len(names) == lines == len(set(names))
    assert all(name.endswith(".JPEG") and name.startswith("n") for name in names[:100])
    classes = Counter(name.split("_")[0] for name in names)
    assert len(classes) == 1000  # every ImageNet class is represented


def test_one_percent_list_is_a_subset_of_the_ten_percent_list_classes():
    one = {name.split("_")[0] for name in imagenet_subset_names(1)}
    ten = {name.split("_")[0] for name in imagenet_subset_names(10)}
    assert one == ten


def test_balanced_subset_counts_and_determinism():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, size=1000)
    subset = balanced_subset(targets, 10.0, seed=3)
    counts = Counter(int(targets[i]) for i in subset)
    assert set(counts.values()) == {20}  # round(0.10 * 1000 / 5) per class
    assert subset == sorted(set(subset))
    assert subset == balanced_subset(targets, 10.0, seed=3)
    assert subset != balanced_subset(targets, 10.0, seed=4)
    # A class smaller than the quota contributes all of its items; at least one item per class.
    small = [0] * 50 + [1] * 2
    picked = balanced_subset(small, 10.0, seed=0)
    assert Counter(small[i] for i in picked) == {0: 3, 1: 2}
    assert Counter(small[i] for i in balanced_subset(small, 0.1, seed=0)) == {0: 1, 1: 1}


def test_subset_file_round_trip(tmp_path):
    path = write_subset_file(tmp_path / "r.subset.txt", [3, 1, 4], {"seed": 5, "kind": "balanced"})
    entries, meta = read_subset_file(path)
    assert entries == ["3", "1", "4"] and meta == {"seed": 5, "kind": "balanced"}
    with pytest.raises(FileNotFoundError, match="--subset_file"):
        read_subset_file(tmp_path / "missing.txt")


def _config(**kwargs):
    base = dict(labels_perc=10.0, subset="auto", subset_seed=0, subset_file=None)
    return SimpleNamespace(**{**base, **kwargs})


def test_choose_subset_uses_the_imagenet_list_for_image_folders(tmp_path):
    names = imagenet_subset_names(1)
    listed = names[:3]
    samples = [(f"/data/train/{n.split('_')[0]}/{n}", i) for i, n in enumerate(listed)]
    samples += [("/data/train/n00000000/n00000000_1.JPEG", 3)]
    dataset = SimpleNamespace(samples=samples, targets=[s[1] for s in samples], classes=["a", "b", "c", "d"])
    indices, info, written = choose_subset(dataset, "imagefolder", _config(labels_perc=1.0))
    assert indices == [0, 1, 2] and info["kind"] == "imagenet_list" and written == listed
    # The written file reproduces the subset.
    path = write_subset_file(tmp_path / "s.txt", written, info)
    again, info2, _ = choose_subset(dataset, "imagefolder", _config(subset_file=str(path)))
    assert again == indices and info2["kind"] == "file"


def test_choose_subset_balanced_for_other_datasets_is_repeatable(tmp_path):
    targets = [i % 4 for i in range(400)]
    dataset = SimpleNamespace(targets=targets, classes=["0", "1", "2", "3"])
    indices, info, written = choose_subset(dataset, "digits", _config(subset_seed=7))
    assert info["kind"] == "balanced" and info["per_class"] == [10, 10, 10, 10] and info["count"] == 40
    path = write_subset_file(tmp_path / "s.txt", written, info)
    again, _, _ = choose_subset(dataset, "digits", _config(subset_file=str(path), subset_seed=99))
    assert again == indices
    with pytest.raises(ValueError, match="past the dataset"):
        bad = write_subset_file(tmp_path / "bad.txt", [1000], {})
        choose_subset(dataset, "digits", _config(subset_file=str(bad)))
