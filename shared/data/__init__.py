"""Datasets, augmentations and deterministic loading shared by every project.

* :mod:`.datasets` - the registry (:data:`DATASET_NAMES`, :func:`dataset_info`, :func:`build_dataset`);
* :mod:`.imagefolder` - ImageNet-style folders with corrupt-image reporting and skipping;
* :mod:`.torchvision_sets`, :mod:`.digits`, :mod:`.arrays` - the other dataset sources;
* :mod:`.transforms` - the papers' augmentation recipes and multi-view wrappers;
* :mod:`.sampling` - resumable sampler, per-item seeded augmentation and the DataLoader factory.
"""

from selfsup.shared.data.datasets import (
    DATASET_NAMES,
    DatasetInfo,
    build_dataset,
    dataset_info,
    dataset_splits,
)
from selfsup.shared.data.imagefolder import CorruptImageError, ImageFolderDataset, verify_images
from selfsup.shared.data.sampling import ResumableSampler, SeededTransformDataset, build_loader, mix_seed
from selfsup.shared.data.transforms import (
    NORMALIZATION,
    MultiCropTransform,
    TwoCropsTransform,
    linear_eval_transform,
    moco_eveningglow_transform,
    moco_official_v1_transform,
    moco_v2_transform,
)

__all__ = [
    "DATASET_NAMES",
    "NORMALIZATION",
    "CorruptImageError",
    "DatasetInfo",
    "ImageFolderDataset",
    "MultiCropTransform",
    "ResumableSampler",
    "SeededTransformDataset",
    "TwoCropsTransform",
    "build_dataset",
    "build_loader",
    "dataset_info",
    "dataset_splits",
    "linear_eval_transform",
    "mix_seed",
    "moco_eveningglow_transform",
    "moco_official_v1_transform",
    "moco_v2_transform",
    "verify_images",
]
