"""Datasets, augmentations and deterministic loading shared by every project.

* :mod:`.datasets` - the registry (:data:`DATASET_NAMES`, :func:`dataset_info`, :func:`build_dataset`);
* :mod:`.imagefolder` - ImageNet-style folders with corrupt-image reporting and skipping;
* :mod:`.torchvision_sets`, :mod:`.digits`, :mod:`.arrays` - the other dataset sources;
* :mod:`.transforms` - the papers' augmentation recipes and multi-view wrappers;
* :mod:`.colorspace` - CMC's Lab / YCbCr views (NumPy and batched torch conversions, normalisation);
* :mod:`.mixtures` - image mixtures: Un-Mix's batch-level mixup/CutMix pieces and the per-item seeded
  Image-Mixture, Cutout and Random Erasing dataset wrappers (``--IM_type``);
* :mod:`.instances` - items followed by their instance index (memory-bank methods);
* :mod:`.sampling` - resumable sampler, per-item seeded augmentation and the DataLoader factory;
* :mod:`.flags` - the data-location flag that error messages name (the running trainer's own spelling).
"""

from selfsup.shared.data.colorspace import COLOR_NORMALIZATION, ColorSpaceToTensor, rgb_to_view_tensor
from selfsup.shared.data.datasets import (
    DATASET_NAMES,
    DatasetInfo,
    build_dataset,
    dataset_info,
    dataset_splits,
)
from selfsup.shared.data.imagefolder import CorruptImageError, ImageFolderDataset, verify_images
from selfsup.shared.data.mixtures import IMAGE_MIXTURES, build_image_mixture
from selfsup.shared.data.sampling import (
    ResumableSampler,
    SeededTransformDataset,
    build_loader,
    build_training_loader,
    mix_seed,
)
from selfsup.shared.data.transforms import (
    NORMALIZATION,
    MultiCropTransform,
    TwoCropsTransform,
    linear_eval_transform,
)

__all__ = [
    "COLOR_NORMALIZATION",
    "DATASET_NAMES",
    "IMAGE_MIXTURES",
    "NORMALIZATION",
    "ColorSpaceToTensor",
    "CorruptImageError",
    "DatasetInfo",
    "ImageFolderDataset",
    "MultiCropTransform",
    "ResumableSampler",
    "SeededTransformDataset",
    "TwoCropsTransform",
    "build_dataset",
    "build_image_mixture",
    "build_loader",
    "build_training_loader",
    "dataset_info",
    "dataset_splits",
    "linear_eval_transform",
    "mix_seed",
    "rgb_to_view_tensor",
    "verify_images",
]
