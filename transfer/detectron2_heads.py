"""``Res5ROIHeadsExtraNorm``: the C4 ROI head of the MoCo detection protocol, registered in Detectron2 once.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning" (CVPR 2020, arXiv:1911.05722),
Appendix A.3: with a C4 backbone the res5 stage runs in the ROI head, and fine-tuning adds one normalisation layer
after it (``MODEL.RESNETS.NORM``, so SyncBN in the shipped configs), because the self-supervised features are not
scaled like supervised ones. Same layer, same name (``roi_heads.res5.norm``) as facebookresearch/moco's
``detection/train_net.py``, so its checkpoints and ours load into each other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXTRA_NORM_HEAD", "register_extra_norm_head"]

#: The ``MODEL.ROI_HEADS.NAME`` of the head.
EXTRA_NORM_HEAD = "Res5ROIHeadsExtraNorm"


def register_extra_norm_head() -> Any:
    """Register ``Res5ROIHeadsExtraNorm`` in ``ROI_HEADS_REGISTRY`` unless a head of that name is there already
    (MoCo's ``train_net.py`` registers the same layer); return the registered class. Safe to call many times."""
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if EXTRA_NORM_HEAD in ROI_HEADS_REGISTRY:
        return ROI_HEADS_REGISTRY.get(EXTRA_NORM_HEAD)

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """``Res5ROIHeads`` with one ``MODEL.RESNETS.NORM`` layer after the last res5 block (MoCo, App. A.3)."""

        def __init__(self, cfg: Any, input_shape: Any) -> None:
            super().__init__(cfg, input_shape)
            self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)
    return Res5ROIHeadsExtraNorm
