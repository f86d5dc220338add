"""Labelled subsets for semi-supervised evaluation.

* ImageNet: the standard 1 % / 10 % lists of SimCLR (``google-research/simclr`` ``imagenet_subsets/``, also
  shipped by INTL and downloaded by SwAV's ``eval_semisup.py``), shipped in this package
  (``imagenet_subsets/{1percent,10percent}.txt``, 12 811 / 128 116 file names ``<wnid>_<id>.JPEG``). An
  ``imagefolder`` dataset is matched by file name; classes without listed files are simply absent.
* Any other dataset: a deterministic class-balanced subset: ``n = max(1, round(p/100 · N/C))`` items per class
  (capped at the class size), drawn per class, in class order, with ``numpy.random.default_rng(seed)``.

The chosen subset is written beside the result (``<result>.subset.txt``): comment lines starting with ``#`` (a
JSON description), then one entry per line, a dataset index or (for ImageNet lists) a file name. Passing that
file back as ``--subset_file`` repeats the run; the original SimCLR lists are accepted there too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IMAGENET_SUBSET_FILES",
    "IMAGENET_SUBSET_MD5",
    "balanced_subset",
    "choose_subset",
    "imagenet_subset_names",
    "match_file_names",
    "read_subset_file",
    "write_subset_file",
]

#: labels percentage -> packaged list file.
IMAGENET_SUBSET_FILES: dict[int, str] = {1: "1percent.txt", 10: "10percent.txt"}
#: MD5 of the packaged lists (byte-identical to google-research/simclr @383d414).
IMAGENET_SUBSET_MD5: dict[int, str] = {
    1: "b61c91b8ddb75fabdb02a9bb2ae3bd74",
    10: "b0d861160cc9531910d069ff547fc1b6",
}
_HEADER = "# selfsup-eval subset v1"


def imagenet_subset_names(percent: int) -> list[str]:
    """The file names of the packaged ImageNet ``percent`` % list (1 or 10)."""
    if percent not in IMAGENET_SUBSET_FILES:
        raise ValueError(f"--labels_perc {percent}: ImageNet lists exist for 1 and 10 only")
    package = (
        resources.files("selfsup.shared.evaluation") / "imagenet_subsets" / IMAGENET_SUBSET_FILES[percent]
    )
    return [line.strip() for line in package.read_text(encoding="ascii").splitlines() if line.strip()]


def balanced_subset(targets: Sequence[int], percent: float, seed: int) -> list[int]:
    """Sorted indices of a class-balanced ``percent`` % subset (module docstring), drawn from ``seed``."""
    labels = np.asarray(targets, dtype=np.int64)
    if labels.size == 0:
        raise ValueError("cannot draw a labelled subset from an empty dataset")
    classes = np.unique(labels)
    per_class = max(1, round(percent / 100.0 * labels.size / classes.size))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        chosen.extend(int(i) for i in rng.permutation(members)[:per_class])
    return sorted(chosen)


def match_file_names(samples: Sequence[tuple[str, int]], names: Sequence[str]) -> list[int]:
    """Indices of ``samples`` (``(path, target)`` pairs) whose file name is in ``names``."""
    wanted = set(names)
    return [i for i, (path, _) in enumerate(samples) if os.path.basename(path) in wanted]


def write_subset_file(
    path: str | os.PathLike[str], entries: Sequence[int | str], meta: dict[str, Any]
) -> Path:
    """Write a subset file (module docstring)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(str(entry) for entry in entries)
    out.write_text(f"{_HEADER}\n# {json.dumps(meta, sort_keys=True)}\n{body}\n", encoding="utf-8")
    return out


def read_subset_file(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, Any]]:
    """``(entries, meta)`` of a subset file or of a plain list of file names / indices."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--subset_file {file} does not exist")
    entries: list[str] = []
    meta: dict[str, Any] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("# {"):
            meta = json.loads(text[2:])
        elif text and not text.startswith("#"):
            entries.append(text)
    if not entries:
        raise ValueError(f"--subset_file {file} lists no items")
    return entries, meta


def _entries_to_indices(entries: list[str], dataset: Any, source: str) -> list[int]:
    if all(entry.isdigit() for entry in entries):
        indices = sorted(int(entry) for entry in entries)
        if indices[-1] >= len(dataset.targets):
            raise ValueError(
                f"{source}: index {indices[-1]} is past the dataset's {len(dataset.targets)} items"
            )
        return indices
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ValueError(f"{source} lists file names, but this dataset has no files (only imagefolder does)")
    indices = match_file_names(samples, entries)
    if not indices:
        raise ValueError(f"{source}: none of its {len(entries)} file names is in the dataset")
    return indices


def choose_subset(
    dataset: Any, dataset_name: str, config: Any
) -> tuple[list[int], dict[str, Any], list[Any]]:
    """``(indices, description, entries to write)`` for a semi-supervised run (``config``: SemisupConfig)."""
    percent = config.labels_perc
    if config.subset_file:
        entries, meta = read_subset_file(config.subset_file)
        indices = _entries_to_indices(entries, dataset, f"--subset_file {config.subset_file}")
        info = {"kind": "file", "file": str(config.subset_file), "file_meta": meta}
        written: list[Any] = entries
    else:
        use_list = config.subset == "imagenet" or (
            config.subset == "auto"
            and dataset_name == "imagefolder"
            and float(percent) in (1.0, 10.0)
            and hasattr(dataset, "samples")
        )
        indices = []
        if use_list:
            names = imagenet_subset_names(int(percent))
            indices = match_file_names(dataset.samples, names)
            if not indices and config.subset == "imagenet":
                raise ValueError(
                    f"--subset imagenet: no file of the {int(percent)}% list is in --dataset_root"
                )
        if indices:
            info = {
                "kind": "imagenet_list",
                "file": IMAGENET_SUBSET_FILES[int(percent)],
                "listed": len(names),
            }
            written = [os.path.basename(dataset.samples[i][0]) for i in indices]
        else:
            indices = balanced_subset(dataset.targets, percent, config.subset_seed)
            info = {"kind": "balanced", "seed": config.subset_seed}
            written = indices
    targets = np.asarray(dataset.targets)[indices]
    counts = np.bincount(targets, minlength=len(getattr(dataset, "classes", []))).tolist()
    digest = hashlib.sha256("\n".join(str(i) for i in indices).encode()).hexdigest()
    info.update(
        labels_perc=percent,
        dataset=dataset_name,
        num_items=len(dataset.targets),
        count=len(indices),
        per_class=counts,
        indices_sha256=digest,
    )
    return indices, info, written
