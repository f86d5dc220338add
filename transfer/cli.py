"""``selfsup-convert``: write a checkpoint's backbone as Detectron2, DETR or Hugging Face DETR init weights.

    selfsup-convert detectron2 --checkpoint ckpt.pth --output r50.pkl
    selfsup-convert detr --checkpoint ckpt.pth --output r50_detr.pth --use_ema
    selfsup-convert detr-hf --checkpoint ckpt.pth --output r50_hf_detr.pth

The checkpoint may be a selfsup checkpoint or any layout ``selfsup.shared.checkpoints.formats`` reads (official
MoCo, SwAV, INTL, CW-RGP, InsDis, a plain torchvision state dict, ...). The backbone is checked against the
network its shapes describe (and ``--arch``), then against what the target builds, before anything is written.

Outputs (see ``transfer/README.md`` for the configs that load them):

* detectron2 ``.pkl``: a plain pickle of ``{"model": {key: numpy array}, "__author__": "selfsup",
  "matching_heuristics": True, "selfsup_conversion": {...}, "selfsup_preset": {...}}``, the form MoCo's
  converter writes (plus provenance and the config preset ``selfsup-transfer`` checks) and
  ``MODEL.WEIGHTS`` reads; ``.pth``/``.pt``: the same dict with tensors, written by ``torch.save``.
* detr ``.pth``/``.pt``: ``{"model": {"backbone.0.body.<key>": tensor}, "selfsup_conversion": {...},
  "selfsup_preset": {...}}`` written by
  ``torch.save``; load it into a DETR model with ``strict=False``.
* detr-hf ``.pth``/``.pt``: the same, keyed ``model.backbone.model.<key>`` for Hugging Face
  ``DetrForObjectDetection`` (its timm ResNet backbone), with ``"target": "detr-hf"`` in the preset.

Every file is readable with ``torch.load(weights_only=True)`` / plain ``pickle`` (no pickled classes).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.shared.checkpoints.backbone_layout import BackboneLayout, build_backbone_for_layout
from selfsup.shared.checkpoints.formats import (
    BranchNotAvailableError,
    ExtractedBackbone,
    UnknownCheckpointFormatError,
    extract_backbone,
    file_sha256,
    get_format,
    load_checkpoint_file,
)
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.config import HelpFormatter
from selfsup.transfer.convert import (
    DETECTRON2_TARGET,
    DETR_HF_TARGET,
    DETR_TARGET,
    TARGETS,
    check_detr_backbone,
    detectron2_resnet_options,
    to_detectron2,
    to_detr,
    to_hf_detr,
)
from selfsup.transfer.presets import PIXEL_MEAN, PIXEL_STD, PRESET_KEY, detectron2_preset, detr_preset

__all__ = ["ConversionReport", "build_parser", "check_coverage", "convert_checkpoint", "main"]

#: Author tag Detectron2 logs when it reads the ``.pkl`` ("Reading a file from 'selfsup'").
AUTHOR = "selfsup"
_SUFFIXES = {
    DETECTRON2_TARGET: (".pkl", ".pth", ".pt"),
    DETR_TARGET: (".pth", ".pt"),
    DETR_HF_TARGET: (".pth", ".pt"),
}


@dataclass
class ConversionReport:
    """What ``convert_checkpoint`` wrote and how to use it."""

    target: str
    output: Path
    num_keys: int
    format: str
    branch: str
    architecture: str
    settings: list[str] = field(default_factory=list)  # config lines / flags for the target
    notes: list[str] = field(default_factory=list)


def check_coverage(
    state_dict: dict[str, torch.Tensor], layout: BackboneLayout, allow_partial: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Compare the weights with the module ``layout`` builds; return the weights to convert and notes.

    Mis-shaped keys always raise ``ValueError``. Missing keys (other than ``num_batches_tracked``, absent in
    files from torch < 0.4.1) and unexpected keys raise unless ``allow_partial``, which drops the unexpected
    ones and leaves the missing ones to the target's own initialisation.
    """
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = {k: tuple(v.shape) for k, v in build_backbone_for_layout(layout).state_dict().items()}
    mis_shaped = [
        f"{k}: weights {list(v.shape)} vs {list(expected[k])}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if mis_shaped:
        raise ValueError(f"the weights do not fit {layout.describe()}: {'; '.join(mis_shaped[:10])}")
    untracked = [k for k in expected if k not in state_dict and k.endswith("num_batches_tracked")]
    missing = [k for k in expected if k not in state_dict and k not in untracked]
    unexpected = [k for k in state_dict if k not in expected]
    notes = [f"{len(untracked)} num_batches_tracked buffers absent (old torch)"] if untracked else []
    if (missing or unexpected) and not allow_partial:
        raise ValueError(
            f"the backbone weights do not cover {layout.describe()}: {len(missing)} missing keys "
            f"{missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}; pass --allow_partial to "
            "convert what fits (missing weights keep the target's own initialisation)"
        )
    if missing:
        notes.append(
            f"--allow_partial: {len(missing)} keys missing, left to the target's init: {missing[:8]}"
        )
    if unexpected:
        notes.append(f"--allow_partial: dropped {len(unexpected)} unexpected keys: {unexpected[:8]}")
    return {k: v for k, v in state_dict.items() if k in expected}, notes


def _check_arch(arch: str, layout: BackboneLayout) -> None:
    cfg = layout.config
    if cfg.name not in ARCHITECTURES:
        raise ValueError(f"--arch {arch}: the weights are a {cfg.name}, not a ResNet")
    block, stages, default_width = ARCHITECTURES[arch]
    found_block, found_stages, found_default = ARCHITECTURES[cfg.name]
    if (block, stages, default_width) != (found_block, found_stages, cfg.width or found_default):
        raise ValueError(f"--arch {arch} does not match the weights, which describe {layout.describe()}")


def _check_output(target: str, output: Path) -> None:
    suffixes = _SUFFIXES[target]
    if output.suffix not in suffixes:
        raise ValueError(f"--output {output}: a {target} file must end with {' or '.join(suffixes)}")
    if output.is_dir():
        raise ValueError(f"--output {output} is a directory; name the file to write")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder, so an interrupted run leaves no truncated output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_numpy(value: torch.Tensor) -> Any:
    value = value.detach().cpu()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()


def _write(
    target: str,
    output: Path,
    weights: dict[str, torch.Tensor],
    provenance: dict[str, str],
    preset: dict[str, Any],
) -> None:
    if target in (DETR_TARGET, DETR_HF_TARGET):
        payload: dict[str, Any] = {"model": weights, "selfsup_conversion": provenance, PRESET_KEY: preset}
        _atomic_write(output, lambda stream: torch.save(payload, stream))
        return
    payload = {
        "__author__": AUTHOR,
        "matching_heuristics": True,
        "selfsup_conversion": provenance,
        PRESET_KEY: preset,
    }
    if output.suffix == ".pkl":
        payload["model"] = {k: _to_numpy(v) for k, v in weights.items()}
        _atomic_write(output, lambda stream: pickle.dump(payload, stream, protocol=4))
    else:
        payload["model"] = weights
        _atomic_write(output, lambda stream: torch.save(payload, stream))


def _settings(target: str, extracted: ExtractedBackbone, output: Path) -> list[str]:
    if target == DETR_TARGET:
        name = check_detr_backbone(extracted.config, extracted.stem_width)
        return [
            f"python -m selfsup.transfer.detr_train --detr_root DETR_CHECKOUT --selfsup_weights {output} "
            f"--backbone {name} --lr_backbone 5e-5 --coco_path COCO ...",
            f"(own code: selfsup.transfer.detr.load_into_detr(detr_model, '{output}', backbone_name='{name}'))",
        ]
    if target == DETR_HF_TARGET:
        name = check_detr_backbone(extracted.config, extracted.stem_width)
        return [
            f'DetrForObjectDetection(DetrConfig(backbone="{name}", use_timm_backbone=True, '
            "use_pretrained_backbone=False, ...))",
            f"selfsup.transfer.detr.load_into_hf_detr(model, '{output}')  "
            f"# or model.load_state_dict(torch.load('{output}')['model'], strict=False)",
            "DetrImageProcessor defaults: RGB, ImageNet mean/std on the 0-1 scale",
        ]
    options = detectron2_resnet_options(extracted.config, extracted.stem_width)
    return [
        f"MODEL.WEIGHTS {output}",
        *(f"MODEL.RESNETS.{key} {value}" for key, value in options.items()),
        f"MODEL.PIXEL_MEAN {PIXEL_MEAN}",
        f"MODEL.PIXEL_STD {PIXEL_STD}",
        "INPUT.FORMAT RGB",
    ]


def convert_checkpoint(
    target: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    arch: str | None = None,
    checkpoint_key: str | None = None,
    format: str | None = None,
    use_ema: bool = False,
    allow_partial: bool = False,
) -> ConversionReport:
    """Read ``checkpoint``, check its backbone, write it to ``output`` for ``target`` (one of ``TARGETS``)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if arch is not None and arch not in ARCHITECTURES:
        raise ValueError(f"--arch {arch!r} is unknown; known: {', '.join(ARCHITECTURES)}")
    checkpoint, output = Path(checkpoint), Path(output)
    _check_output(target, output)
    branch = "ema" if use_ema else "online"
    extracted = extract_backbone(
        load_checkpoint_file(checkpoint), format=format, checkpoint_key=checkpoint_key, branch=branch
    )
    if extracted.streams:
        raise ValueError(
            f"--checkpoint {checkpoint} holds a two-stream {extracted.format} encoder ({', '.join(extracted.streams)}) "
            f"for 1+2-channel Lab input; {target} needs one 3-channel RGB ResNet"
        )
    layout = BackboneLayout(extracted.config, extracted.stem_width)
    if arch is not None:
        _check_arch(arch, layout)
    settings = _settings(target, extracted, output)  # raises UnsupportedTargetError before any work
    weights, notes = check_coverage(extracted.state_dict, layout, allow_partial)
    if target == DETR_TARGET:
        converted = to_detr(weights)
    elif target == DETR_HF_TARGET:
        converted = to_hf_detr(weights)
    else:
        converted = to_detectron2(weights)
    provenance = {
        "source": str(checkpoint),
        "source_sha256": file_sha256(checkpoint),
        "source_format": extracted.format,
        "branch": branch,
        "architecture": layout.describe(),
        "target": target,
    }
    if target == DETR_TARGET:
        preset = detr_preset(extracted.config, extracted.stem_width)
    elif target == DETR_HF_TARGET:
        preset = {**detr_preset(extracted.config, extracted.stem_width), "target": DETR_HF_TARGET}
    else:
        preset = detectron2_preset(extracted.config, extracted.stem_width)
    _write(target, output, converted, provenance, preset)
    return ConversionReport(
        target=target,
        output=output,
        num_keys=len(converted),
        format=extracted.format,
        branch=branch,
        architecture=layout.describe(),
        settings=settings,
        notes=[*extracted.notes, *notes],
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup-convert",
        description=(
            "Convert a self-supervised checkpoint's backbone into Detectron2, DETR or Hugging Face DETR "
            "initialisation weights."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("target", choices=TARGETS, help="framework the output file is for")
    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint to read (selfsup or a supported original)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="file to write: .pkl or .pth for detectron2, .pth for detr and detr-hf",
    )
    parser.add_argument(
        "--arch", choices=sorted(ARCHITECTURES), default=None, help="assert the backbone architecture"
    )
    parser.add_argument("--checkpoint_key", default=None, help="top-level entry holding the state dict")
    parser.add_argument("--format", default=None, help="checkpoint layout name; skips detection")
    parser.add_argument(
        "--use_ema", action="store_true", help="convert the momentum / EMA encoder instead of the online one"
    )
    parser.add_argument(
        "--allow_partial",
        action="store_true",
        help="convert weights that miss keys or carry extra ones (missing ones keep the target's init)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format is not None:
        try:
            get_format(args.format)
        except ValueError as err:
            parser.error(f"--format: {err}")
    try:
        report = convert_checkpoint(
            args.target,
            args.checkpoint,
            args.output,
            arch=args.arch,
            checkpoint_key=args.checkpoint_key,
            format=args.format,
            use_ema=args.use_ema,
            allow_partial=args.allow_partial,
        )
    except FileNotFoundError as err:
        parser.error(f"--checkpoint: {err}")
    except BranchNotAvailableError as err:
        parser.error(f"--use_ema: {err}")
    except UnknownCheckpointFormatError as err:
        parser.error(f"--checkpoint {args.checkpoint}: {err}")
    except (ValueError, OSError) as err:
        parser.error(str(err))
    print(
        f"wrote {report.num_keys} {report.target} keys to {report.output} "
        f"({report.architecture}; format {report.format}, {report.branch} branch)"
    )
    for note in report.notes:
        print(f"  note: {note}")
    print(f"use with {report.target}:")
    for line in report.settings:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
