"""Load a self-supervised checkpoint as a torchvision-keyed backbone, with errors that say why it won't load.

Entry points, from lowest to highest level:

* ``load_checkpoint_file(path)`` reads a file with ``torch.load(weights_only=True)``; a pickled
  ``argparse.Namespace`` (CMC's ``opt``, DETR's ``args``) is allowed by a second, allow-listed attempt. Other
  pickled objects need ``trust=True``; there is no silent fallback to unrestricted pickle.
* ``detect_format(ckpt)`` names the layout (see ``FORMATS`` in ``checkpoint_layouts``); exactly one format
  must recognise the file, else ``UnknownCheckpointFormatError`` / ``AmbiguousCheckpointFormatError`` explain.
* ``extract_backbone(ckpt)`` returns the backbone's state dict (torchvision keys, no ``fc``), the
  ``BackboneConfig`` that rebuilds it, a trained linear head when the file carries one, and notes on what was
  left out. ``extract_head`` returns only the classifier of linear-evaluation files.
* ``load_backbone(path_or_ckpt)`` builds the module, loads the weights and fails on any missing or unexpected
  key unless ``allow_partial=True``. For CMC with ``view="both"`` the module is a ``TwoStreamBackbone``: it
  takes a 3-channel Lab (or YCbCr) tensor, splits it into L (1 channel) and ab (2 channels) and concatenates
  the two streams' features.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.shared.checkpoints.backbone_layout import (
    BackboneLayout,
    UnsupportedArchitectureError,
    build_backbone_for_layout,
    infer_backbone_config,
    infer_backbone_layout,
    strip_prefix,
)
from selfsup.shared.checkpoints.detection import (
    AmbiguousCheckpointFormatError,
    UnknownCheckpointFormatError,
    detect_format,
    select_entry,
)
from selfsup.shared.checkpoints.format_base import (
    BranchNotAvailableError,
    CheckpointFormat,
    FormatResult,
    HeadOnlyCheckpointError,
)
from selfsup.shared.checkpoints.layouts import FORMATS, get_format
from selfsup.shared.checkpoints.reading import file_sha256, load_checkpoint_file
from selfsup.shared.models.alexnet import CMC_ALEXNET_HALF
from selfsup.shared.models.backbones import ARCHITECTURES, BackboneConfig
from selfsup.shared.models.two_stream import TwoStreamBackbone

__all__ = [
    "FORMATS",
    "AmbiguousCheckpointFormatError",
    "ArchitectureMismatchError",
    "BranchNotAvailableError",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "ExtractedBackbone",
    "HeadOnlyCheckpointError",
    "LoadReport",
    "UnknownCheckpointFormatError",
    "UnsupportedArchitectureError",
    "build_extracted",
    "detect_format",
    "extract_backbone",
    "extract_head",
    "file_sha256",
    "get_format",
    "infer_backbone_config",
    "infer_backbone_layout",
    "load_backbone",
    "load_checkpoint_file",
    "load_head",
    "strip_prefix",
]

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The weights do not fit the module built for them (missing, unexpected or mis-shaped keys)."""


class ArchitectureMismatchError(ValueError):
    """``arch`` names a different network than the one the weights describe."""


def _import(
    ckpt: Mapping[str, Any], format: str | None, checkpoint_key: str | None, branch: str, view: str | None
) -> tuple[CheckpointFormat, FormatResult]:
    if not isinstance(ckpt, Mapping):
        raise TypeError(f"expected a checkpoint dict, got a {type(ckpt).__name__} (use load_checkpoint_file)")
    source = select_entry(ckpt, checkpoint_key) if checkpoint_key else ckpt
    fmt = get_format(format) if format else FORMATS[detect_format(source)]
    try:
        result = fmt.run(source, branch=branch, view=view)
    except KeyError as err:
        raise ValueError(f"checkpoint does not fit format {fmt.name!r}: {err.args[0]}") from err
    if checkpoint_key:
        result.notes.insert(0, f"entry {checkpoint_key!r} selected by checkpoint_key")
    if format and not fmt.detect(source):
        result.notes.insert(0, f"format {fmt.name!r} forced; automatic detection did not recognise the file")
    result.notes.insert(0, f"format {fmt.name}: {fmt.description}")
    return fmt, result


# ---------------------------------------------------------------------------------------- extraction


def _head_only(fmt: CheckpointFormat, result: FormatResult) -> HeadOnlyCheckpointError:
    shape = list(result.head["weight"].shape) if result.head else "?"
    return HeadOnlyCheckpointError(
        f"this file holds only a linear classifier (format {fmt.name}: {fmt.description}; weight {shape}); "
        "the encoder was saved in another file. Load the classifier with load_head()"
    )


@dataclass
class ExtractedBackbone:
    """A backbone state dict with torchvision keys (no ``fc``) and what is needed to rebuild it.

    ``config`` comes from the checkpoint for selfsup files and is inferred from shapes otherwise.
    ``stem_width`` is set when the stem width differs from the base width, which ``BackboneConfig`` cannot
    express (CMC's ResNets). For CMC ``view="both"``, keys are prefixed by the stream (``l_to_ab.`` /
    ``ab_to_l.``, listed in ``streams``), ``config.in_channels`` is the 3 channels of the Lab input and each
    stream's own layout is in ``stream_layouts``.
    """

    state_dict: dict[str, torch.Tensor]
    config: BackboneConfig
    format: str
    head: dict[str, torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)
    branch: str = "online"
    view: str | None = None
    stem_width: int | None = None
    streams: tuple[str, ...] = ()
    stream_layouts: tuple[BackboneLayout, ...] = ()


def _layouts(result: FormatResult) -> tuple[BackboneLayout, ...]:
    """One layout per stream (one in total without streams), from the saved config or the shapes."""
    if result.config is not None:
        return (BackboneLayout(result.config),)
    if not result.streams:
        return (infer_backbone_layout(result.state_dict),)
    return tuple(infer_backbone_layout(strip_prefix(result.state_dict, s + ".")) for s in result.streams)


def _combined(layouts: tuple[BackboneLayout, ...]) -> BackboneLayout:
    if len(layouts) == 1:
        return layouts[0]
    first = layouts[0]
    for other in layouts[1:]:
        if replace(other.config, in_channels=first.config.in_channels) != first.config:
            raise UnsupportedArchitectureError(
                f"the streams differ: {first.describe()} vs {other.describe()}"
            )
    in_channels = sum(layout.config.in_channels for layout in layouts)
    return BackboneLayout(replace(first.config, in_channels=in_channels), first.stem_width)


def extract_backbone(
    ckpt: Mapping[str, Any],
    *,
    format: str | None = None,
    checkpoint_key: str | None = None,
    branch: str = "online",
    view: str | None = None,
) -> ExtractedBackbone:
    """The backbone weights of a loaded checkpoint; see ``ExtractedBackbone``.

    ``format`` skips detection; ``checkpoint_key`` names the entry holding the state dict (detection then runs
    on that entry); ``branch`` is ``"online"`` (query / student) or ``"ema"`` (momentum / teacher encoder);
    ``view`` selects CMC's ``"l"``, ``"ab"`` or ``"both"`` streams (default both).
    """
    fmt, result = _import(ckpt, format, checkpoint_key, branch, view)
    if fmt.kind == "head":
        raise _head_only(fmt, result)
    layouts = _layouts(result)
    combined = _combined(layouts)
    return ExtractedBackbone(
        state_dict=result.state_dict,
        config=combined.config,
        format=fmt.name,
        head=result.head,
        notes=result.notes,
        branch=branch,
        view=result.view,
        stem_width=combined.stem_width,
        streams=result.streams,
        stream_layouts=layouts if result.streams else (),
    )


def extract_head(
    ckpt: Mapping[str, Any], *, format: str | None = None, checkpoint_key: str | None = None
) -> dict[str, torch.Tensor]:
    """A checkpoint's trained linear classifier: ``{"weight": [classes, features], "bias": [classes]}``."""
    fmt, result = _import(ckpt, format, checkpoint_key, "online", None)
    if result.head is None:
        raise ValueError(f"this {fmt.name!r} checkpoint carries no trained linear classifier")
    return result.head


# ------------------------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What ``load_backbone`` loaded: format, architecture, keys that did not fit, provenance and head."""

    format: str
    config: BackboneConfig
    missing_keys: list[str]
    unexpected_keys: list[str]
    checkpoint_sha256: str | None
    head: dict[str, torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)
    branch: str = "online"
    view: str | None = None
    stem_width: int | None = None


def _check_arch(arch: str, layout: BackboneLayout) -> None:
    """``--arch`` asserts the network the weights describe: one line names each field that differs."""
    cfg = layout.config
    if arch not in ARCHITECTURES or cfg.name not in ARCHITECTURES:
        differences = [] if arch == cfg.name else [f"architecture {cfg.name} in the weights, {arch} asked"]
    else:
        asked_block, asked_layers, asked_width = ARCHITECTURES[arch]
        block, layers, default = ARCHITECTURES[cfg.name]
        differences = []
        if asked_block is not block:
            differences.append(f"block {block.__name__} in the weights, {asked_block.__name__} for {arch}")
        if tuple(asked_layers) != tuple(layers):
            differences.append(
                f"blocks per stage {list(layers)} in the weights, {list(asked_layers)} for {arch}"
            )
        if asked_width != (cfg.width or default):
            differences.append(f"base width {cfg.width or default} in the weights, {asked_width} for {arch}")
    if differences:
        raise ArchitectureMismatchError(
            f"--arch {arch} does not match the weights ({'; '.join(differences)}); the weights describe "
            f"{layout.describe()}: drop --arch to build that network"
        )


def _resolve_layouts(
    result: FormatResult, arch: str | None, allow_partial: bool, notes: list[str]
) -> tuple[BackboneLayout, ...]:
    if arch is not None and arch not in ARCHITECTURES and arch != CMC_ALEXNET_HALF:
        raise ValueError(f"unknown --arch {arch!r}; known: {', '.join([*ARCHITECTURES, CMC_ALEXNET_HALF])}")
    try:
        layouts = _layouts(result)
    except UnsupportedArchitectureError as err:
        if arch is None or not allow_partial or result.streams:
            raise UnsupportedArchitectureError(
                f"{err}. For incomplete weights pass --arch NAME together with --allow_partial"
            ) from err
        notes.append(f"architecture not inferable ({err}); built --arch {arch}")
        return (BackboneLayout(BackboneConfig(name=arch)),)
    if arch is not None:
        for layout in layouts:
            _check_arch(arch, layout)
    return layouts


def _compare(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    return missing, unexpected, mis_shaped


def _build(layouts: tuple[BackboneLayout, ...], streams: tuple[str, ...]) -> nn.Module:
    if not streams:
        return build_backbone_for_layout(layouts[0])
    modules = {name: build_backbone_for_layout(layout) for name, layout in zip(streams, layouts)}
    return TwoStreamBackbone(modules, [layout.config.in_channels for layout in layouts])


def build_extracted(extracted: ExtractedBackbone) -> nn.Module:
    """A randomly initialised module whose ``state_dict`` keys and shapes match ``extracted.state_dict``.

    Works under ``with torch.device("meta"):`` to check a layout without allocating the weights.
    """
    layouts = extracted.stream_layouts or (BackboneLayout(extracted.config, extracted.stem_width),)
    return _build(layouts, extracted.streams)


def _listing(keys: list[str], limit: int = 20) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_backbone(
    path_or_ckpt: str | os.PathLike | Mapping[str, Any],
    *,
    arch: str | None = None,
    checkpoint_key: str | None = None,
    branch: str = "online",
    view: str | None = None,
    allow_partial: bool = False,
    format: str | None = None,
    trust: bool = False,
) -> tuple[nn.Module, LoadReport]:
    """Build the backbone a checkpoint describes and load its weights.

    ``arch`` (a name from ``ARCHITECTURES``) asserts the architecture; weights of another architecture or
    width raise ``ArchitectureMismatchError``. Missing or unexpected keys raise ``CheckpointMismatchError``
    unless ``allow_partial=True``, which loads what fits and reports the rest (also logged). Missing
    ``num_batches_tracked`` buffers (files from torch < 0.4.1) are only noted. Returns ``(module, report)``;
    the module's ``fc`` stays ``Identity`` and a trained classifier, if any, is in ``report.head``.
    """
    sha256 = None
    if isinstance(path_or_ckpt, Mapping):
        ckpt = path_or_ckpt
    else:
        path = Path(path_or_ckpt)
        ckpt = load_checkpoint_file(path, trust=trust)
        sha256 = file_sha256(path)
    fmt, result = _import(ckpt, format, checkpoint_key, branch, view)
    if fmt.kind == "head":
        raise _head_only(fmt, result)
    notes = result.notes
    layouts = _resolve_layouts(result, arch, allow_partial, notes)
    model = _build(layouts, result.streams)
    if isinstance(model, TwoStreamBackbone):
        notes.append(
            f"two-stream module: input [N, {model.in_channels}, H, W] split {list(model.channels)} across "
            f"{list(result.streams)}; features concatenated ({model.feature_dim})"
        )
    missing, unexpected, mis_shaped = _compare(model, result.state_dict)
    if mis_shaped:
        raise CheckpointMismatchError(f"weights do not fit the {fmt.name} backbone: {_listing(mis_shaped)}")
    untracked = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in untracked]
    if untracked:
        notes.append(f"{len(untracked)} num_batches_tracked buffers absent (old torch); left at 0")
    if (missing or unexpected) and not allow_partial:
        raise CheckpointMismatchError(
            f"the {fmt.name} weights do not fit the backbone built for them.\n"
            f"  missing keys ({len(missing)}): {_listing(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}\n"
            "  to load what fits, pass --allow_partial (selfsup-eval)"
        )
    if missing or unexpected:
        logger.warning(
            "partial load: %d missing keys (%s), %d unexpected keys (%s)",
            len(missing),
            _listing(missing, 5),
            len(unexpected),
            _listing(unexpected, 5),
        )
    model.load_state_dict({k: v for k, v in result.state_dict.items() if k not in unexpected}, strict=False)
    combined = _combined(layouts)
    report = LoadReport(
        format=fmt.name,
        config=combined.config,
        missing_keys=missing,
        unexpected_keys=unexpected,
        checkpoint_sha256=sha256,
        head=result.head,
        notes=notes,
        branch=branch,
        view=result.view,
        stem_width=combined.stem_width,
    )
    return model, report


def load_head(
    path_or_ckpt: str | os.PathLike | Mapping[str, Any],
    *,
    format: str | None = None,
    checkpoint_key: str | None = None,
    trust: bool = False,
) -> nn.Linear:
    """The trained linear classifier of a checkpoint as an ``nn.Linear`` (weights copied in)."""
    ckpt = (
        path_or_ckpt if isinstance(path_or_ckpt, Mapping) else load_checkpoint_file(path_or_ckpt, trust=trust)
    )
    head = extract_head(ckpt, format=format, checkpoint_key=checkpoint_key)
    classes, features = head["weight"].shape
    linear = nn.Linear(features, classes)
    linear.load_state_dict(head)
    return linear
