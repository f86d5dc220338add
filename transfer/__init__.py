"""selfsup.transfer: Detectron2 and DETR adapters for selfsup backbones."""

from selfsup.transfer.convert import (
    DETR_BACKBONE_PREFIX,
    HF_DETR_BACKBONE_PREFIX,
    TARGETS,
    UnsupportedTargetError,
    check_detr_backbone,
    detectron2_key,
    detectron2_resnet_options,
    to_detectron2,
    to_detr,
    to_hf_detr,
)
from selfsup.transfer.detr import import_detr, load_into_detr, load_into_hf_detr

__all__ = [
    "DETR_BACKBONE_PREFIX",
    "HF_DETR_BACKBONE_PREFIX",
    "TARGETS",
    "UnsupportedTargetError",
    "check_detr_backbone",
    "detectron2_key",
    "detectron2_resnet_options",
    "import_detr",
    "load_into_detr",
    "load_into_hf_detr",
    "to_detectron2",
    "to_detr",
    "to_hf_detr",
]
