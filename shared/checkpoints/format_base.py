"""The ``CheckpointFormat`` type and the state-dict helpers every format's importer is built from.

A format pairs ``detect(ckpt)``, a predicate on the loaded top-level dict, with an importer that returns a
``FormatResult``: the backbone's state dict under torchvision key names (wrapper prefix stripped;
projection heads, prototypes, queues and momentum encoders left out), a trained linear classifier when the
file holds one, the ``BackboneConfig`` when the file saves it, and notes on what was taken and left out.
The formats themselves and the ``FORMATS`` registry are in ``checkpoint_layouts``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from selfsup.shared.checkpoints.backbone_layout import is_resnet_key, strip_prefix
from selfsup.shared.models.backbones import BackboneConfig

BRANCHES = ("online", "ema")
StateDict = dict[str, torch.Tensor]


class HeadOnlyCheckpointError(ValueError):
    """The file holds a linear classifier only; its encoder was saved elsewhere."""


class BranchNotAvailableError(ValueError):
    """The requested branch ("ema") or view is not stored in this checkpoint."""


@dataclass
class FormatResult:
    """What an importer found: the backbone (torchvision keys), an optional trained head, notes."""

    state_dict: StateDict
    head: StateDict | None = None
    config: BackboneConfig | None = None  # saved by the trainer (selfsup); None = infer from shapes
    streams: tuple[str, ...] = ()  # CMC view "both": key prefixes of the two streams, in input-channel order
    view: str | None = None
    notes: list[str] = field(default_factory=list)


Importer = Callable[[Mapping[str, Any], str, "str | None"], FormatResult]


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint layout: ``detect`` recognises it, ``extract`` returns the torchvision-keyed backbone."""

    name: str
    description: str
    detect: Callable[[Mapping[str, Any]], bool]
    importer: Importer
    kind: str = "backbone"  # "backbone", or "head" for files that hold only a linear classifier
    aliases: tuple[str, ...] = ()
    branches: tuple[str, ...] = ("online",)
    views: tuple[str, ...] = ()

    def run(
        self, ckpt: Mapping[str, Any], *, branch: str = "online", view: str | None = None
    ) -> FormatResult:
        """Import the checkpoint: backbone, head, saved config (the backbone hint) and notes."""
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        if branch not in self.branches:
            raise BranchNotAvailableError(
                f"format {self.name!r} stores no EMA/momentum encoder (branches: {', '.join(self.branches)})"
            )
        if view is not None and not self.views:
            raise ValueError(
                f"view={view!r} applies to CMC two-stream checkpoints only, not to format {self.name!r}"
            )
        if view is not None and view not in self.views:
            raise ValueError(f"view must be one of {self.views}, got {view!r}")
        return self.importer(ckpt, branch, view)

    def extract(
        self, ckpt: Mapping[str, Any], *, branch: str = "online", view: str | None = None
    ) -> StateDict:
        """The backbone state dict with torchvision keys (no prefix, head dropped)."""
        if self.kind == "head":
            raise HeadOnlyCheckpointError(
                f"a {self.name!r} checkpoint holds only a linear classifier ({self.description}); its "
                "encoder was saved in another file: load this one with load_head()"
            )
        return self.run(ckpt, branch=branch, view=view).state_dict

    def backbone_hint(self, ckpt: Mapping[str, Any]) -> BackboneConfig | None:
        """The ``BackboneConfig`` saved in the checkpoint, if the format stores one (else: infer it)."""
        return self.run(ckpt).config if self.kind == "backbone" else None


# --------------------------------------------------------------------------------------------- helpers


def is_tensor_dict(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors (a state dict)."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def locate(
    ckpt: Mapping[str, Any], locations: Sequence[str | None]
) -> tuple[str | None, Mapping[str, Any]] | None:
    """The first of ``locations`` holding a state dict (``None`` = the checkpoint itself is flat)."""
    for where in locations:
        candidate = ckpt if where is None else ckpt.get(where)
        if is_tensor_dict(candidate):
            return where, candidate
    return None


def require_state_dict(
    ckpt: Mapping[str, Any], locations: Sequence[str | None], what: str
) -> tuple[str, Mapping[str, Any]]:
    found = locate(ckpt, locations)
    if found is None:
        names = ", ".join("the top level" if w is None else repr(w) for w in locations)
        raise KeyError(f"no {what} state dict at {names}; top-level keys: {list(ckpt)[:20]}")
    where, state_dict = found
    return ("the file itself (flat state dict)" if where is None else repr(where)), state_dict


def has_state_dict(
    ckpt: Mapping[str, Any], locations: Sequence[str | None], test: Callable[[Mapping[str, Any]], bool]
) -> bool:
    found = locate(ckpt, locations)
    return found is not None and test(found[1])


def starts_with(state_dict: Iterable[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in state_dict)


def is_dropped(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p if p.endswith(".") else p + ".") for p in patterns)


def summarize_keys(keys: Iterable[str], limit: int = 6) -> str:
    """``module.encoder_k.* (320), module.queue`` - keys grouped by their first two components."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        name = ".".join(parts[:2]) + (".*" if len(parts) > 2 else "")
        groups[name] = groups.get(name, 0) + 1
    items = [f"{name} ({count})" if count > 1 else name for name, count in groups.items()]
    return ", ".join(items[:limit]) + (
        f", ... ({len(items) - limit} more groups)" if len(items) > limit else ""
    )


def select_backbone(
    state_dict: Mapping[str, torch.Tensor],
    prefix: str,
    drop: Sequence[str],
    notes: list[str],
    role: str,
    *,
    note_outside: bool = True,
) -> StateDict:
    """Strip ``prefix``, remove the ``drop`` patterns (applied after stripping), note what was left out."""
    stripped = strip_prefix(state_dict, prefix) if prefix else dict(state_dict)
    kept = {k: v for k, v in stripped.items() if not is_dropped(k, drop)}
    removed = [k for k in stripped if k not in kept]
    outside = [k for k in state_dict if not k.startswith(prefix)]
    notes.append(f"backbone = keys under {prefix!r} ({role})" if prefix else f"backbone = all keys ({role})")
    if removed:
        notes.append(f"left out {len(removed)} head keys: {summarize_keys(removed)}")
    if outside and note_outside:
        notes.append(f"ignored {len(outside)} keys outside the backbone: {summarize_keys(outside)}")
    return kept


def linear_head(state_dict: Mapping[str, torch.Tensor], weight: str, bias: str) -> StateDict | None:
    """``{"weight", "bias"}`` of a linear layer stored under ``weight``/``bias``, if both exist and fit."""
    w, b = state_dict.get(weight), state_dict.get(bias)
    if isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor) and w.ndim == 2 and b.shape == w.shape[:1]:
        return {"weight": w, "bias": b}
    return None


def opt_attr(ckpt: Mapping[str, Any], attr: str) -> Any:
    """An attribute of a pickled ``opt``/``args`` Namespace (or dict), or None."""
    opt = ckpt.get("opt", ckpt.get("args"))
    if isinstance(opt, argparse.Namespace):
        return getattr(opt, attr, None)
    return opt.get(attr) if isinstance(opt, Mapping) else None


def prefix_format(
    locations: Sequence[str | None], prefixes: Mapping[str, str], drop: Sequence[str], role: str
) -> tuple[Callable[[Mapping[str, Any]], bool], Importer]:
    """Detector and importer for layouts that keep the backbone under one key prefix per branch."""

    def detect(ckpt: Mapping[str, Any]) -> bool:
        prefix = prefixes["online"]

        def test(sd: Mapping[str, Any]) -> bool:
            return any(key.startswith(prefix) and is_resnet_key(key[len(prefix) :]) for key in sd)

        return has_state_dict(ckpt, locations, test)

    def run(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
        where, state_dict = require_state_dict(ckpt, locations, role)
        prefix = prefixes[branch]
        if not starts_with(state_dict, prefix):
            raise BranchNotAvailableError(
                f"branch {branch!r} needs keys under {prefix!r}; this file has none"
            )
        notes = [f"state dict taken from {where}"]
        backbone = select_backbone(state_dict, prefix, drop, notes, f"{role}, branch {branch}")
        return FormatResult(backbone, notes=notes)

    return detect, run
