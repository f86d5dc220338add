"""The encoders of CMC and of its InsDis/MoCo trainers, with the original checkpoints' parameter names.

Tian et al., "Contrastive Multiview Coding" (arXiv:1906.05849), as HobbitLong/CMC ``models/alexnet.py`` and
``models/resnet.py`` build them (``specs/cmc.md`` §2, §10):

* :class:`CMCAlexNet` (``MyAlexNetCMC``, ``--model alexnet``): two half-width AlexNets, ``l_to_ab`` on the L
  (or Y) channel and ``ab_to_l`` on the ab (or CbCr) channels, each ending in ``fc8`` = Linear(2048,
  ``feat_dim``) and L2 normalisation;
* :class:`CMCResNet` (``MyResNetsCMC``, ``--model resnet{18,50,101}v{1,2,3}``): two ResNets of width
  0.5 / 1 / 2 with a 64-channel stem, ``fc`` = Linear(pooled, ``feat_dim``) and L2 normalisation;
* :class:`InsResNet` (``InsResNet50``, ``--model resnet50|resnet50x2|resnet50x4``): one RGB ResNet of width
  1 / 2 / 4 (64-channel stem), the encoder ``train_moco_ins.py`` trains with InsDis or MoCo.

The trunks are the evaluation harness's own modules (``CMCAlexNetHalf``; ``ResNet`` with ``stem_width``),
and ``original_state_dict()`` gives the original's ``encoder.module.*`` keys, which ``selfsup-eval`` imports
as the ``cmc`` / ``cmc_insdis`` checkpoint formats.

``forward(x, layer)`` returns what the original returns for ``layer``: AlexNet 1-5 = ``conv_block_<layer>``
map, 6 / 7 = fc6 / fc7 vector, 8 (default) = normalised fc8; ResNet 1 = after the max-pool, 2-5 = after
``layer1``-``layer4``, 6 = pooled vector, 7 (default) = normalised ``fc``. The CMC models return
``(feat_l, feat_ab)``, the single-stream encoder one tensor.

Differences from the original:

* the ResNets pool with ``AdaptiveAvgPool2d(1)`` instead of ``AvgPool2d(7)``: the same on a 224 x 224 input
  (``layer4`` is 7 x 7 there), and smaller images work too;
* ``feat_dim`` sets the ResNets' ``fc`` as well; the original fixes it at 128 and ignores ``--feat_dim``
  (any other value then made its memory bank and its features disagree). The default is 128;
* ``cifar_stem`` (3x3/1 stem convolution, no max-pool, still 64 channels) and ``--model resnet18`` for the
  single-stream trainer are additions for small-image runs and demos;
* a ``layer`` outside 1..8 (AlexNet) / 1..7 (ResNet) raises; the original returned the input for
  ``layer <= 0`` and the embedding above the range.

The key encoder of the repository's MoCo trainer (``train_moco_ins.py --moco``) is an exact copy of the encoder
(:func:`key_encoder`), updated by :func:`momentum_update` (parameters only) and run by :func:`encode_keys` (BN on
batch statistics, shuffle BN).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from selfsup.shared.checkpoints.backbone_layout import strip_prefix
from selfsup.shared.distributed import batch_shuffle_ddp, batch_unshuffle_ddp, get_world_size
from selfsup.shared.models.alexnet import CMCAlexNetHalf
from selfsup.shared.models.backbones import ARCHITECTURES, BackboneConfig, Block, ResNet
from selfsup.shared.runtime.precision import autocast

__all__ = [
    "CMC_MODELS",
    "DEPTHS",
    "INSDIS_MODELS",
    "MODELS",
    "ORIGINAL_PREFIX",
    "STEM_WIDTH",
    "CMCAlexNet",
    "CMCAlexNetStream",
    "CMCResNet",
    "InsResNet",
    "ResNetEncoder",
    "build_cmc_model",
    "encode_keys",
    "key_encoder",
    "key_encoder_mode",
    "l2_normalize",
    "momentum_update",
]

#: Prefix of the encoder's keys in the original checkpoints (``self.encoder = nn.DataParallel(net)``).
ORIGINAL_PREFIX = "encoder.module."
#: Channels of the stem of every CMC and InsDis ResNet, whatever the stage width.
STEM_WIDTH = 64
#: ResNet depth -> (block, blocks per stage).
DEPTHS: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (ARCHITECTURES["resnet18"][0], ARCHITECTURES["resnet18"][1]),
    "resnet50": (ARCHITECTURES["resnet50"][0], ARCHITECTURES["resnet50"][1]),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ‖x‖₂`` along dim 1 with no epsilon, as the original's ``Normalize(2)`` (a zero row gives NaN)."""
    return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5))


def _check_layer(layer: int, last: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= last:
        raise ValueError(f"layer must be an integer in 1..{last}, got {layer!r}")


def _check_feat_dim(feat_dim: int) -> None:
    if feat_dim < 1:
        raise ValueError(f"--feat_dim must be a positive integer, got {feat_dim}")


class _OriginalKeys(nn.Module):
    """``state_dict`` in and out under the original's ``encoder.module.`` prefix."""

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The ``model`` entry of an original checkpoint: this ``state_dict`` with keys ``encoder.module.*``.

        Saved as ``{"model": ..., ...}``, ``selfsup.shared.checkpoints.formats.load_backbone`` reads it as the
        ``cmc`` format (two streams) or the ``cmc_insdis`` format (one encoder).
        """
        return dict(self.state_dict(prefix=ORIGINAL_PREFIX))

    def load_original_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
    ) -> None:
        """Load an original checkpoint's ``model`` (or ``model_ema``) entry, keys ``encoder.module.*``."""
        self.load_state_dict(strip_prefix(state_dict, ORIGINAL_PREFIX), strict=strict)


# ------------------------------------------------------------------------------------------- streams


class CMCAlexNetStream(CMCAlexNetHalf):
    """One half of CMC's AlexNet (``alexnet_half``): the harness's ``CMCAlexNetHalf`` plus ``fc8``.

    ``fc8`` = ``Sequential(Linear(2048, feat_dim))`` (keys ``fc8.0.*``), then L2 normalisation. Layers 6-8
    need a 224 x 224 input (``conv_block_5`` must be 6 x 6, as in the original); 1-5 work at any size.
    PyTorch's default initialisation throughout, as the original.
    """

    num_layers = 8

    def __init__(self, in_channels: int = 1, feat_dim: int = 128) -> None:
        super().__init__(in_channels)
        _check_feat_dim(feat_dim)
        fc7: nn.Linear = self.fc7[0]
        self.fc8 = nn.Sequential(nn.Linear(fc7.out_features, feat_dim))
        self.feat_dim = feat_dim

    def forward(self, x: torch.Tensor, layer: int = 8) -> torch.Tensor:
        _check_layer(layer, self.num_layers)
        for index, block in enumerate(self.conv_blocks(), start=1):
            x = block(x)
            if layer == index:
                return x
        x = self.fc6(self.fc_input(x))
        if layer == 6:
            return x
        x = self.fc7(x)
        if layer == 7:
            return x
        return l2_normalize(self.fc8(x))


class ResNetEncoder(ResNet):
    """The harness's ResNet with a 64-channel stem, ``fc`` = Linear(pooled, ``feat_dim``), L2 normalisation.

    One stream of CMC's ResNets (``in_channels`` 1 or 2) or the InsDis/MoCo encoder (3). ``width`` is the
    original's multiplier: the stages use ``int(64 * width)`` planes, the stem 64 channels whatever the width.
    Initialisation as the original: convolutions N(0, sqrt(2 / (k·k·out_channels))) (the shared ResNet's
    Kaiming fan-out init is that distribution), BN weight 1 and bias 0, ``fc`` PyTorch's default.
    """

    num_layers = 7

    def __init__(
        self,
        depth: str = "resnet50",
        *,
        width: float = 1.0,
        in_channels: int = 3,
        feat_dim: int = 128,
        cifar_stem: bool = False,
    ) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r}; known: {', '.join(DEPTHS)}")
        base = int(STEM_WIDTH * width)
        if base < 1:
            raise ValueError(f"width {width} leaves int(64 * width) = {base} planes; it must be positive")
        _check_feat_dim(feat_dim)
        block, layers = DEPTHS[depth]
        super().__init__(
            block, layers, width=base, cifar_stem=cifar_stem, in_channels=in_channels, stem_width=STEM_WIDTH
        )
        # Difference from the original: it pools with AvgPool2d(7), which assumes a 224 x 224 input; the
        # inherited self.avgpool is AdaptiveAvgPool2d(1), the same there (7 x 7 map), and small images work.
        self.fc = nn.Linear(self.feature_dim, feat_dim)
        self.depth = depth
        self.width_multiplier = width
        self.base_width = base
        self.in_channels = in_channels
        self.cifar_stem = cifar_stem
        self.feat_dim = feat_dim

    def forward(self, x: torch.Tensor, layer: int = 7) -> torch.Tensor:
        _check_layer(layer, self.num_layers)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if layer == 1:
            return x
        for index, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=2):
            x = stage(x)
            if layer == index:
                return x
        x = torch.flatten(self.avgpool(x), 1)
        if layer == 6:
            return x
        return l2_normalize(self.fc(x))

    def backbone_config(self) -> BackboneConfig:
        """The harness's ``BackboneConfig`` of this trunk (without ``fc``), ``stem_width`` included.

        Equals ``infer_backbone_layout(<trunk weights>).to_config()``. Raises ``ValueError`` for a depth the
        harness does not know.
        """
        block, layers = DEPTHS[self.depth]
        names = [n for n, (b, stages, _) in ARCHITECTURES.items() if (b, tuple(stages)) == (block, layers)]
        if not names:
            raise ValueError(
                f"{self.depth} is not among the evaluation harness's architectures "
                f"({', '.join(ARCHITECTURES)})"
            )
        name = next((n for n in names if ARCHITECTURES[n][2] == self.base_width), names[0])
        return BackboneConfig(
            name=name,
            width=None if ARCHITECTURES[name][2] == self.base_width else self.base_width,
            cifar_stem=self.cifar_stem,
            in_channels=self.in_channels,
            stem_width=None if self.base_width == STEM_WIDTH else STEM_WIDTH,
        )


# -------------------------------------------------------------------------------------------- models


class _TwoStream(_OriginalKeys):
    """CMC's split: channel 0 (L or Y) to ``l_to_ab``, channels 1-2 (ab or CbCr) to ``ab_to_l``."""

    channels = (1, 2)

    def __init__(self, l_to_ab: nn.Module, ab_to_l: nn.Module) -> None:
        super().__init__()
        self.l_to_ab = l_to_ab
        self.ab_to_l = ab_to_l

    def _both(self, x: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != sum(self.channels):
            raise ValueError(
                f"expected an [N, 3, H, W] L+ab (or Y+CbCr) tensor split {list(self.channels)}, "
                f"got shape {list(x.shape)}"
            )
        x_l, x_ab = torch.split(x, list(self.channels), dim=1)
        return self.l_to_ab(x_l, layer), self.ab_to_l(x_ab, layer)


class CMCAlexNet(_TwoStream):
    """``MyAlexNetCMC``: ``forward(x, layer=8)`` -> ``(feat_l, feat_ab)``, each ``[N, feat_dim]`` at layer 8.

    ``x`` is ``[N, 3, 224, 224]`` (layers 1-5 accept other sizes). Keys ``l_to_ab.conv_block_1.0.weight`` ...
    ``ab_to_l.fc8.0.bias``: the original's after ``encoder.module.``.
    """

    def __init__(self, *, feat_dim: int = 128) -> None:
        super().__init__(CMCAlexNetStream(1, feat_dim), CMCAlexNetStream(2, feat_dim))
        self.feat_dim = feat_dim

    def forward(self, x: torch.Tensor, layer: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        return self._both(x, layer)


class CMCResNet(_TwoStream):
    """``MyResNetsCMC``: ``forward(x, layer=7)`` -> ``(feat_l, feat_ab)``, each ``[N, feat_dim]`` at layer 7.

    ``l_to_ab`` and ``ab_to_l`` are :class:`ResNetEncoder` s with 1 and 2 input channels; ``width``
    0.5 / 1 / 2 is ``v1`` / ``v2`` / ``v3``.
    """

    def __init__(
        self, depth: str = "resnet50", *, width: float = 0.5, feat_dim: int = 128, cifar_stem: bool = False
    ) -> None:
        streams = [
            ResNetEncoder(depth, width=width, in_channels=c, feat_dim=feat_dim, cifar_stem=cifar_stem)
            for c in self.channels
        ]
        super().__init__(*streams)
        self.feat_dim = feat_dim

    def forward(self, x: torch.Tensor, layer: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
        return self._both(x, layer)


class InsResNet(ResNetEncoder, _OriginalKeys):
    """``InsResNet50``: one RGB :class:`ResNetEncoder`; ``forward(x, layer=7)`` -> ``[N, feat_dim]``.

    The layer-7 output has unit L2 norm. Keys are torchvision's (``conv1.weight`` ... ``fc.bias``), the
    original's after ``encoder.module.``.
    """

    def __init__(
        self, depth: str = "resnet50", *, width: float = 1.0, feat_dim: int = 128, cifar_stem: bool = False
    ) -> None:
        super().__init__(depth, width=width, in_channels=3, feat_dim=feat_dim, cifar_stem=cifar_stem)


# ------------------------------------------------------------------------------------------ registry

CMCModel = CMCAlexNet | CMCResNet | InsResNet

#: ``--model`` -> builder (called with ``feat_dim=`` and, for the ResNets, ``cifar_stem=``).
MODELS: dict[str, Callable[..., CMCModel]] = {
    # train_CMC.py: two streams, L (or Y) and ab (or CbCr)
    "alexnet": CMCAlexNet,
    "resnet18v1": partial(CMCResNet, "resnet18", width=0.5),
    "resnet18v2": partial(CMCResNet, "resnet18", width=1.0),
    "resnet18v3": partial(CMCResNet, "resnet18", width=2.0),
    "resnet50v1": partial(CMCResNet, "resnet50", width=0.5),
    "resnet50v2": partial(CMCResNet, "resnet50", width=1.0),
    "resnet50v3": partial(CMCResNet, "resnet50", width=2.0),
    "resnet101v1": partial(CMCResNet, "resnet101", width=0.5),
    "resnet101v2": partial(CMCResNet, "resnet101", width=1.0),
    "resnet101v3": partial(CMCResNet, "resnet101", width=2.0),
    # train_moco_ins.py (InsDis, MoCo): one RGB encoder; resnet18 and its quarter width (16 planes in the first
    # stage, the 64-channel stem kept) are ours, for small-image runs and CPU demos
    "resnet50": partial(InsResNet, "resnet50", width=1.0),
    "resnet50x2": partial(InsResNet, "resnet50", width=2.0),
    "resnet50x4": partial(InsResNet, "resnet50", width=4.0),
    "resnet18": partial(InsResNet, "resnet18", width=1.0),
    "resnet18x0.25": partial(InsResNet, "resnet18", width=0.25),
}
#: ``--model`` choices of the InsDis/MoCo trainer; every other name is a CMC (two-stream) model.
INSDIS_MODELS = ("resnet50", "resnet50x2", "resnet50x4", "resnet18", "resnet18x0.25")
CMC_MODELS = tuple(name for name in MODELS if name not in INSDIS_MODELS)


def build_cmc_model(name: str, *, feat_dim: int = 128, cifar_stem: bool = False) -> CMCModel:
    """Build ``--model name`` (see ``MODELS``) with a ``feat_dim``-dimensional, L2-normalised embedding.

    ``cifar_stem`` gives the ResNets a 3x3/1 stem convolution (64 channels) and no max-pool; AlexNet has none.
    """
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choices: {', '.join(MODELS)}")
    builder = MODELS[name]
    if builder is CMCAlexNet:
        if cifar_stem:
            raise ValueError("--model alexnet has no CIFAR stem (cifar_stem is for the ResNets)")
        return builder(feat_dim=feat_dim)
    return builder(feat_dim=feat_dim, cifar_stem=cifar_stem)


# ------------------------------------------------------------------------- the MoCo trainer's key encoder


def key_encoder(model: nn.Module) -> nn.Module:
    """The original's ``moment_update(model, model_ema, 0)`` at start-up: an exact copy, without gradients."""
    model_ema = copy.deepcopy(model)
    for param in model_ema.parameters():
        param.requires_grad = False
    return model_ema


def key_encoder_mode(model_ema: nn.Module) -> None:
    """The original's ``model_ema.eval()`` followed by ``train()`` on every BN layer: keys use batch statistics."""
    model_ema.eval()
    for module in model_ema.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()


@torch.no_grad()
def encode_keys(model_ema: nn.Module, x_k: torch.Tensor, precision: str) -> torch.Tensor:
    """Key features (fp32) of ``x_k`` with shuffle BN: the batch permuted across ranks under DDP
    (``batch_shuffle_ddp``), by a local ``randperm`` on one device; the key encoder runs under ``precision``'s
    autocast in :func:`key_encoder_mode`."""
    key_encoder_mode(model_ema)
    if get_world_size() > 1:
        shuffled, idx_unshuffle = batch_shuffle_ddp(x_k)
        with autocast(precision, x_k.device):
            keys = model_ema(shuffled)
        return batch_unshuffle_ddp(keys.float(), idx_unshuffle)
    perm = torch.randperm(x_k.shape[0], device=x_k.device)
    with autocast(precision, x_k.device):
        keys = model_ema(x_k[perm])
    return keys.float()[torch.argsort(perm)]


@torch.no_grad()
def momentum_update(model_ema: nn.Module, model: nn.Module, alpha: float) -> None:
    """``θ_k ← α·θ_k + (1−α)·θ_q`` over parameters only, not buffers (the original's ``moment_update``,
    ``--alpha``)."""
    ema = [p.data for p in model_ema.parameters()]
    online = [p.data for p in model.parameters()]
    torch._foreach_lerp_(ema, online, 1.0 - alpha)
