"""Name the layout of a loaded checkpoint: exactly one registered format must recognise it.

When none does, the error lists what the file holds (top-level keys, the first state-dict keys, where nested
state dicts live) and the known formats, and suggests ``--checkpoint_key`` / ``--format``: "my checkpoint
will not load" should always come with the information needed to make it load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfsup.shared.checkpoints.format_base import is_tensor_dict
from selfsup.shared.checkpoints.layouts import FORMATS


class UnknownCheckpointFormatError(ValueError):
    """No registered format recognises the checkpoint."""


class AmbiguousCheckpointFormatError(ValueError):
    """More than one registered format recognises the checkpoint."""


def _unknown_message(ckpt: Mapping[str, Any]) -> str:
    nested = [key for key, value in ckpt.items() if is_tensor_dict(value)]
    lines = [f"unrecognised checkpoint layout; top-level keys: {list(ckpt)[:20]}"]
    if is_tensor_dict(ckpt):
        lines.append(f"it is a flat state dict; first keys: {list(ckpt)[:10]}")
    elif nested:
        lines.append(f"first keys of the state dict under {nested[0]!r}: {list(ckpt[nested[0]])[:10]}")
    lines.append(f"known formats: {', '.join(FORMATS)}")
    hint = f" (state dicts found under: {', '.join(map(repr, nested))})" if nested else ""
    lines.append(
        "if the weights live under another top-level key, pass --checkpoint_key KEY"
        + hint
        + "; if the layout is a known one that was not recognised, pass --format NAME"
    )
    return "\n  ".join(lines)


def detect_format(ckpt: Mapping[str, Any]) -> str:
    """The name of the one registered format recognising ``ckpt`` (a dict from ``load_checkpoint_file``)."""
    if not isinstance(ckpt, Mapping):
        raise UnknownCheckpointFormatError(f"expected a checkpoint dict, got a {type(ckpt).__name__}")
    if FORMATS["selfsup"].detect(ckpt):  # an explicit format field is authoritative
        return "selfsup"
    matches = [name for name, fmt in FORMATS.items() if fmt.detect(ckpt)]
    if not matches:
        raise UnknownCheckpointFormatError(_unknown_message(ckpt))
    if len(matches) > 1:
        raise AmbiguousCheckpointFormatError(
            f"several formats recognise this checkpoint: {', '.join(matches)}; pass format=NAME to choose"
        )
    return matches[0]


def select_entry(ckpt: Mapping[str, Any], checkpoint_key: str) -> Mapping[str, Any]:
    """``ckpt[checkpoint_key]``, or a nested entry by dotted path (``"model.encoder"``); must be a dict."""
    node: Any = ckpt
    if checkpoint_key in ckpt:
        node = ckpt[checkpoint_key]
    else:
        for part in checkpoint_key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(
                    f"checkpoint_key {checkpoint_key!r} not found; top-level keys: {list(ckpt)[:20]}"
                )
            node = node[part]
    if not isinstance(node, Mapping):
        raise ValueError(f"checkpoint_key {checkpoint_key!r} holds a {type(node).__name__}, not a state dict")
    return node
