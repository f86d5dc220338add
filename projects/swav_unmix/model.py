"""The SwAV network: ResNet trunk, projection head, L2-normalised embedding and prototypes (``src/resnet50.py``).

``forward(crops)`` takes the list of crops of a batch (each ``B x 3 x H x W``) and returns the embeddings
``z`` (``[len(crops)·B, feat_dim]``, unit norm) and the prototype scores ``s = z Cᵀ`` (``[len(crops)·B, K]``), rows
in input order. The trunk runs once per run of consecutive crops of equal side (``forward_mode="grouped"``, the
original: BatchNorm statistics are taken over the whole group) or once per crop (``"per_crop"``: each crop
normalised with its own batch statistics; identical in eval mode). The trunk is the shared torchvision-key
ResNet: SwAV's stem ``ConstantPad2d(1)`` + ``conv1`` with padding 2 equals padding 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.shared.models.backbones import BackboneConfig, ResNet, build_backbone_from_config

__all__ = ["SwAVModel", "crop_groups"]


def crop_groups(crops: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: runs of consecutive crops with the same last dimension (the original's
    ``unique_consecutive`` over ``shape[-1]``)."""
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(crops) + 1):
        if i == len(crops) or crops[i].shape[-1] != crops[start].shape[-1]:
            groups.append((start, i))
            start = i
    return groups


class SwAVModel(nn.Module):
    """Trunk + head + prototypes. State lives here; the loss is in :mod:`.loss`, the queue in :mod:`.queue`."""

    def __init__(
        self,
        backbone: BackboneConfig,
        *,
        hidden_mlp: int = 2048,
        feat_dim: int = 128,
        nmb_prototypes: int = 3000,
        forward_mode: str = "grouped",
    ) -> None:
        super().__init__()
        if feat_dim < 1 or nmb_prototypes < 1 or hidden_mlp < 0:
            raise ValueError(
                f"--feat_dim ({feat_dim}) and --nmb_prototypes ({nmb_prototypes}) must be >= 1, "
                f"--hidden_mlp ({hidden_mlp}) >= 0"
            )
        if forward_mode not in ("grouped", "per_crop"):
            raise ValueError(f"--forward_mode must be grouped or per_crop, got {forward_mode!r}")
        self.backbone_config = backbone
        self.backbone: ResNet = build_backbone_from_config(backbone)
        width = self.backbone.feature_dim
        if hidden_mlp == 0:
            self.projection_head: nn.Module = nn.Linear(width, feat_dim)
        else:
            self.projection_head = nn.Sequential(
                nn.Linear(width, hidden_mlp),
                nn.BatchNorm1d(hidden_mlp),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_mlp, feat_dim),
            )
        self.prototypes = nn.Linear(feat_dim, nmb_prototypes, bias=False)
        self.forward_mode = forward_mode

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """``C ← C / ‖C‖₂`` row-wise, in place (every iteration, before the forward)."""
        w = F.normalize(self.prototypes.weight.data.clone(), dim=1, p=2)
        self.prototypes.weight.copy_(w)

    def forward_trunk(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pooled trunk features of all crops, concatenated in input order."""
        if self.forward_mode == "per_crop":
            return torch.cat([self.backbone(c) for c in crops])
        parts = [self.backbone(torch.cat(list(crops[a:b]))) for a, b in crop_groups(crops)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def forward_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.projection_head(features), dim=1, p=2)
        return z, self.prototypes(z)

    def forward(self, crops: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        return self.forward_head(self.forward_trunk(crops))

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The original's ``state_dict`` entry: DDP keys ``module.<torchvision trunk key>``,
        ``module.projection_head.*``, ``module.prototypes.weight`` (no ``fc``)."""
        out = {f"module.{k}": v.detach().cpu() for k, v in self.backbone.state_dict().items()}
        for name in ("projection_head", "prototypes"):
            for k, v in getattr(self, name).state_dict().items():
                out[f"module.{name}.{k}"] = v.detach().cpu()
        return out

    def load_original_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the original's ``state_dict`` entry (:meth:`original_state_dict`); a one-line error names the
        flags when its keys or shapes do not fit this network."""
        own = self.original_state_dict()
        same = "pass the same --arch/--width/--hidden_mlp/--feat_dim/--nmb_prototypes"
        if set(own) != set(state_dict):
            missing, extra = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
            raise ValueError(
                f"the checkpoint's state_dict does not fit the flags (missing {missing[:4]}, unexpected "
                f"{extra[:4]}); {same}"
            )
        for key, value in state_dict.items():
            if own[key].shape != value.shape:
                raise ValueError(
                    f"the checkpoint's {key} has shape {tuple(value.shape)}, the flags give "
                    f"{tuple(own[key].shape)}; {same}"
                )
        trunk = {k[len("module.") :]: v for k, v in state_dict.items()}
        head = {k: v for k, v in trunk.items() if k.startswith(("projection_head.", "prototypes."))}
        self.backbone.load_state_dict({k: v for k, v in trunk.items() if k not in head}, strict=False)
        self.projection_head.load_state_dict(
            {k[len("projection_head.") :]: v for k, v in head.items() if k.startswith("projection_head.")}
        )
        self.prototypes.load_state_dict({"weight": head["prototypes.weight"]})
