"""Evaluate a checkpoint file: load any supported format, then run a protocol.

:func:`load_for_evaluation` wraps :func:`selfsup.shared.checkpoints.formats.load_backbone` (format
auto-detection, ``arch`` / ``checkpoint_key`` overrides, missing/unexpected keys fail unless
``allow_partial``) and records what was loaded (path, SHA-256 of the file, detected format, backbone, branch,
view, keys that did not fit, pre-training epoch when the file stores one) for the result file.
:func:`evaluate_checkpoint` adds the protocol run.

CMC checkpoints need CMC's colour view as input: unless the caller sets ``color_space``, it is taken from the
checkpoint (``opt.view``: Lab or YCbCr; Lab when not recorded). With ``view="l"`` / ``"ab"`` the single stream
reads channel 0 / channels 1-2 of that view (:class:`~selfsup.shared.evaluation.probes.ChannelSlice`).

selfsup checkpoints record the input normalisation of pre-training (``input_normalization``); presets whose
normalisation is the generic ``dataset`` use it instead, unless ``normalization`` is given. They also record the
side of the pre-training crops (``input_size``): unless ``resize`` or ``crop`` is given, or the preset fixes the
sizes of the dataset (a paper's protocol), the evaluation crops at that side and resizes by the preset's ratio
(a network pre-trained on 16 px digits is evaluated at 16 px, not at the dataset's native 32). What was used is
logged and stored in the result (``hyperparameters``, and ``checkpoint.evaluated_input``: resize, crop and
where they came from: ``checkpoint``, ``flags`` or ``preset``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from selfsup.shared.checkpoints.formats import file_sha256, load_backbone, load_checkpoint_file
from selfsup.shared.checkpoints.io import epoch_of_checkpoint_name
from selfsup.shared.evaluation.knn import run_knn
from selfsup.shared.evaluation.linear import run_linear
from selfsup.shared.evaluation.presets import PRESETS, default_preset, resolve_config
from selfsup.shared.evaluation.probes import ChannelSlice
from selfsup.shared.evaluation.semisup import run_semisup
from selfsup.shared.models.two_stream import TwoStreamBackbone

__all__ = ["PROTOCOLS", "evaluate_checkpoint", "load_for_evaluation"]

logger = logging.getLogger(__name__)

#: protocol name -> runner ``(backbone, **kwargs) -> result dict``.
PROTOCOLS = {"linear": run_linear, "semisup": run_semisup, "knn": run_knn}
#: CMC single-stream views -> the channels of the colour view they read.
_SINGLE_STREAM = {"l": (0, 1), "ab": (1, 3)}
_COLOUR_NOTE = re.compile(r"trained on the (\w+) colour space", re.IGNORECASE)


def _stored_epoch(ckpt: Any, path: Path) -> int | None:
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return epoch
    return epoch_of_checkpoint_name(path)


def load_for_evaluation(
    checkpoint_path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    checkpoint_key: str | None = None,
    allow_partial: bool = False,
    branch: str = "online",
    view: str | None = None,
    format: str | None = None,
    trust: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """``(backbone, checkpoint description)`` for any supported checkpoint file."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path} does not exist")
    ckpt = load_checkpoint_file(path, trust=trust)
    model, report = load_backbone(
        ckpt,
        arch=arch,
        checkpoint_key=checkpoint_key,
        branch=branch,
        view=view,
        allow_partial=allow_partial,
        format=format,
    )
    colour = None
    for note in report.notes:
        match = _COLOUR_NOTE.search(note)
        if match:
            colour = match.group(1).lower()
    info = {
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "format": report.format,
        "backbone": report.config.to_dict(),
        "branch": report.branch,
        "view": report.view,
        "color_space": colour,
        "missing_keys": list(report.missing_keys),
        "unexpected_keys": list(report.unexpected_keys),
        "allow_partial": allow_partial,
        "epoch": _stored_epoch(ckpt, path),
        "notes": list(report.notes),
        # selfsup trainers record the input normalisation they trained with (a NORMALIZATION name)
        "input_normalization": ckpt.get("input_normalization") if report.format == "selfsup" else None,
        "input_size": ckpt.get("input_size") if report.format == "selfsup" else None,
    }
    return model, info


def _input_size(protocol: str, info: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Evaluate at the side of the pre-training crops (``info["input_size"]``) unless ``resize``/``crop`` are
    given or the preset fixes the sizes of the dataset; log what is used and why, and record it in ``info``
    (the result's ``checkpoint`` entry: ``evaluated_input`` and a note)."""
    trained = int(info["input_size"])
    dataset, name = kwargs["dataset"], kwargs.get("preset") or default_preset(protocol)
    if kwargs.get("resize") is not None or kwargs.get("crop") is not None:
        source, why = "flags", "as given by --resize/--crop"
    else:
        preset = resolve_config(protocol, kwargs.get("preset"), dataset)
        base = PRESETS[protocol][name]
        if dataset in {d for d, _, _ in preset.sizes} or base.resize is not None or base.crop is not None:
            source, why = "preset", f"the sizes preset {name} fixes for {dataset}"
        else:
            kwargs["crop"], kwargs["resize"] = trained, max(trained, round(trained * preset.resize_ratio))
            source, why = "checkpoint", "the checkpoint's input size"
    config = resolve_config(
        protocol, kwargs.get("preset"), dataset, resize=kwargs.get("resize"), crop=kwargs.get("crop")
    )
    hint = "" if source == "flags" else "; --resize/--crop change it"
    line = (
        f"input resize {config.resize}, crop {config.crop}: {why} (pre-trained on {trained} px crops{hint})"
    )
    logger.info("%s", line)
    info["evaluated_input"] = {"resize": config.resize, "crop": config.crop, "from": source}
    info["notes"].append(line)


def evaluate_checkpoint(
    protocol: str,
    checkpoint_path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    checkpoint_key: str | None = None,
    allow_partial: bool = False,
    branch: str = "online",
    view: str | None = None,
    format: str | None = None,
    trust: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load ``checkpoint_path`` (see :func:`load_for_evaluation`) and run ``protocol`` (``linear``,
    ``semisup`` or ``knn``) on it; ``kwargs`` go to :func:`run_linear` / :func:`run_semisup` / :func:`run_knn`
    (``dataset``
    is required). Returns the result dict (written to ``output`` when given)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    model, info = load_for_evaluation(
        checkpoint_path,
        arch=arch,
        checkpoint_key=checkpoint_key,
        allow_partial=allow_partial,
        branch=branch,
        view=view,
        format=format,
        trust=trust,
    )
    if info["input_normalization"] and kwargs.get("normalization") is None and "dataset" in kwargs:
        preset = resolve_config(protocol, kwargs.get("preset"), kwargs["dataset"])
        if preset.normalization == "dataset":  # a generic preset: evaluate with what pre-training saw
            kwargs["normalization"] = info["input_normalization"]
    if info["input_size"] and "dataset" in kwargs:
        _input_size(protocol, info, kwargs)
    if info["view"] in _SINGLE_STREAM:
        model = ChannelSlice(model, *_SINGLE_STREAM[info["view"]])
    if (isinstance(model, TwoStreamBackbone) or info["view"] in _SINGLE_STREAM) and not kwargs.get(
        "color_space"
    ):
        space = "ycbcr" if info["color_space"] == "ycbcr" else "lab"
        kwargs["color_space"] = space
        kwargs["normalization"] = kwargs.get("normalization") or space
    return PROTOCOLS[protocol](model, checkpoint=info, **kwargs)
