"""INTL's network (``src/model.py``, ``methods/intl*.py``) and CW-RGP's (``base/``), as modules that own their
state; the losses are in :mod:`.loss`, the whitening in :mod:`.whitening`.

* :class:`INTLModel`: the ResNet trunk (torchvision keys; zero-initialised last BN of each residual branch for
  every arch but ResNet-18, as the original), the projector ``(--projection_layers − 1) × [Linear(no bias) → BN1d →
  ReLU] → Linear(--emb)`` (``--projection_size`` hidden units), and for ``--method intl_m`` EMA copies of both
  (``momentum_backbone``, ``momentum_projection``), updated with :meth:`INTLModel.momentum_update`. The original's
  keys are ``module.backbone.*``, ``module.projection.{0,1,3,4,6}.*`` and ``module.momentum_*``
  (:meth:`INTLModel.original_state_dict`, read back by :meth:`INTLModel.load_original_state_dict`).
* :class:`CWRGPModel`: the W-MSE encoder (ResNet-18, zero-init residual, 3×3 stem) and head
  ``Linear(512, --head_size) → BN1d → ReLU → Linear(--emb)``; original keys ``model.module.*`` and ``head.*``.
  :meth:`CWRGPModel.embed_views` is CW-RGP's forward: the encoder one view at a time (its BatchNorm sees each
  view's batch, as the original), the head once on all views concatenated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from selfsup.shared.models.backbones import BackboneConfig, ResNet, build_backbone

__all__ = ["CWRGPModel", "INTLModel", "build_projector", "ema_momentum", "load_checked"]


def build_projector(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``(layers − 1) × [Linear(bias=False), BN1d, ReLU]`` then ``Linear(out_dim)`` with bias."""
    if layers < 1:
        raise ValueError(f"--projection_layers must be >= 1, got {layers}")
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def _trunk(config: BackboneConfig, zero_init_residual: bool) -> ResNet:
    return build_backbone(
        config.name,
        width=config.width,
        cifar_stem=config.cifar_stem,
        in_channels=config.in_channels,
        stem_width=config.stem_width,
        stem_padding=config.stem_padding,
        zero_init_residual=zero_init_residual,
    )


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], flag: str = "--resume") -> None:
    """``module.load_state_dict(state)``, refusing (one-line ``ValueError``) a state of other flags."""
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{flag}: the checkpoint does not fit the flags (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"{flag}: the checkpoint does not fit the flags ({reason})") from err


def _load_original(
    module: nn.Module, state: Mapping[str, torch.Tensor], own_key: Callable[[str], str]
) -> None:
    load_checked(module, {own_key(k): v for k, v in state.items()})


def ema_momentum(step: int, total_steps: int, base: float) -> float:
    """``adjust_momentum``: ``1 − ½(1 + cos(π · step / total)) · (1 − m₀)``, from ``m₀`` (``--m``) up to 1."""
    return 1 - 0.5 * (1 + math.cos(math.pi * step / max(total_steps, 1))) * (1 - base)


class INTLModel(nn.Module):
    """Trunk + projector (+ EMA copies for ``intl_m``)."""

    def __init__(
        self,
        backbone: BackboneConfig,
        *,
        projection_layers: int = 3,
        projection_size: int = 8192,
        emb: int = 8192,
        ema: bool = False,
    ) -> None:
        super().__init__()
        self.backbone_config = backbone
        self.backbone = _trunk(backbone, zero_init_residual=backbone.name != "resnet18")
        self.projection = build_projector(self.backbone.feature_dim, projection_size, emb, projection_layers)
        self.ema = ema
        if ema:
            self.momentum_backbone = copy.deepcopy(self.backbone)
            self.momentum_projection = copy.deepcopy(self.projection)
            for p in (*self.momentum_backbone.parameters(), *self.momentum_projection.parameters()):
                p.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output of one crop (the online network)."""
        return self.projection(self.backbone(x))

    @torch.no_grad()
    def forward_target(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output of the EMA network (``intl_m``)."""
        return self.momentum_projection(self.momentum_backbone(x))

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """``ξ ← m·ξ + (1 − m)·θ`` over the parameters of trunk and projector (buffers are not averaged)."""
        online = [*self.backbone.parameters(), *self.projection.parameters()]
        target = [*self.momentum_backbone.parameters(), *self.momentum_projection.parameters()]
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1 - m)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The original's ``state_dict`` entry (DDP keys ``module.backbone.*``, ``module.projection.*``, and
        ``module.momentum_*`` for ``intl_m``); the trunk has no ``fc``."""
        return {f"module.{k}": v.detach().cpu() for k, v in self.state_dict().items() if ".fc." not in k}

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """The inverse of :meth:`original_state_dict` (``ValueError`` when it does not fit the flags)."""
        _load_original(self, state, lambda key: key[len("module.") :])


class CWRGPModel(nn.Module):
    """CW-RGP's encoder and head (W-MSE's ``base/``)."""

    def __init__(
        self, backbone: BackboneConfig, *, head_size: int = 1024, emb: int = 64, head_layers: int = 2
    ) -> None:
        super().__init__()
        self.backbone_config = backbone
        self.model = _trunk(backbone, zero_init_residual=True)
        self.head = build_projector(self.model.feature_dim, head_size, emb, head_layers)
        # W-MSE's head keeps the bias of its hidden Linear layers
        for i, module in enumerate(self.head):
            if isinstance(module, nn.Linear) and i < len(self.head) - 1:
                self.head[i] = nn.Linear(module.in_features, module.out_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(x))

    def embed_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Head outputs ``[len(views) · bs, emb]``: the encoder per view, the head on the concatenation."""
        return self.head(torch.cat([self.model(x) for x in views]))

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """CW-RGP ``base/train.py`` keys: ``model.module.<resnet18 names>`` (DataParallel) and ``head.<i>.*``."""
        out = {f"model.module.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        out.update({f"head.{k}": v.detach().cpu() for k, v in self.head.state_dict().items()})
        return out

    def load_original_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """The inverse of :meth:`original_state_dict` (``model.module.x`` -> ``model.x``; ``head.*`` as is)."""
        _load_original(self, state, _cwrgp_own_key)


def _cwrgp_own_key(key: str) -> str:
    return "model." + key[len("model.module.") :] if key.startswith("model.module.") else key
