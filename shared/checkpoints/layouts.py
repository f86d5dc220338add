"""The registry of checkpoint layouts we import: how to recognise each one and where its backbone lives.

The layouts were read from the original repositories' save code (``shared/tests/fixtures/checkpoint_layouts``
describes each file key by key). Detection rules are chosen so that no two formats claim the same file;
``detect_format`` in ``checkpoint_formats`` (the public entry point) checks that exactly one matches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch

from selfsup.shared.checkpoints.backbone_layout import is_resnet_key
from selfsup.shared.checkpoints.format_base import (
    BRANCHES,
    BranchNotAvailableError,
    CheckpointFormat,
    FormatResult,
    has_state_dict,
    is_tensor_dict,
    linear_head,
    opt_attr,
    prefix_format,
    require_state_dict,
    select_backbone,
    starts_with,
    summarize_keys,
)
from selfsup.shared.models.backbones import BackboneConfig

#: Newest ``format_version`` of the selfsup checkpoint format this module reads.
SELFSUP_FORMAT_VERSION = 1
CMC_VIEWS = ("l", "ab", "both")
_CMC_STREAMS = MappingProxyType({"l": "l_to_ab", "ab": "ab_to_l"})  # view -> key prefix, in channel order

# ------------------------------------------------------------------------------------------- formats


def _detect_selfsup(ckpt: Mapping[str, Any]) -> bool:
    return ckpt.get("format") == "selfsup"


def _import_selfsup(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    version = ckpt.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= SELFSUP_FORMAT_VERSION:
        raise ValueError(
            f"selfsup checkpoint has format_version {version!r}; this version of selfsup reads 1.."
            f"{SELFSUP_FORMAT_VERSION} (upgrade selfsup to read newer files)"
        )
    export, backbone = ckpt.get("export"), ckpt.get("backbone")
    if isinstance(export, Mapping) and "original_format" in export:
        # the trainer kept the original repository's layout (e.g. CMC's two streams): import it as that format
        original = export["original_format"]
        if original not in FORMATS or original == "selfsup":
            raise ValueError(f"selfsup checkpoint: export names an unknown original format {original!r}")
        result = FORMATS[original].run(ckpt, branch=branch, view=view)
        note = f"selfsup checkpoint of project {ckpt.get('project')!r} in the original {original!r} layout"
        return dataclasses.replace(result, notes=[note, *result.notes])
    if view is not None:
        raise ValueError(f"view={view!r} applies to CMC two-stream checkpoints only")
    if (
        not isinstance(export, Mapping)
        or "state_dict_location" not in export
        or not isinstance(backbone, Mapping)
    ):
        raise ValueError(
            "selfsup checkpoint lacks its 'export' (state_dict_location, prefix) or 'backbone' entry"
        )
    location = export["state_dict_location"] if branch == "online" else export.get("ema_location")
    if location is None:
        raise BranchNotAvailableError(
            f"this selfsup checkpoint (project {ckpt.get('project')!r}) exports no EMA weights "
            "(export has no ema_location)"
        )
    if not is_tensor_dict(ckpt.get(location)):
        raise KeyError(
            f"selfsup checkpoint: export names {location!r}, which is not a state dict in the file"
        )
    try:
        config = BackboneConfig(**backbone)
    except TypeError as err:
        raise ValueError(f"selfsup checkpoint: invalid 'backbone' entry {dict(backbone)} ({err})") from err
    notes = [
        f"selfsup checkpoint of project {ckpt.get('project')!r}, epoch {ckpt.get('epoch')}, "
        f"global_step {ckpt.get('global_step')}; state dict taken from {location!r}"
    ]
    drop = tuple(export.get("drop_prefixes", ()))
    prefix = export.get("prefix", "")
    if branch != "online":  # an EMA network kept in the same state dict under its own prefix (INTL's intl_m)
        prefix = export.get("ema_prefix", prefix)
    state_dict = select_backbone(ckpt[location], prefix, drop, notes, f"branch {branch}")
    return FormatResult(state_dict, config=config, notes=notes)


def _resnet_keys(keys: Sequence[str]) -> bool:
    """Torchvision ResNet keys only, and some of the trunk (not just an ``fc``)."""
    return all(map(is_resnet_key, keys)) and any(key.startswith("layer") for key in keys)


def _moco_base(state_dict: Mapping[str, Any]) -> str | None:
    for base in ("module.", ""):
        if any(key.startswith(base + "encoder_q.layer") for key in state_dict):
            return base
    return None


def _import_moco_official(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, ("state_dict", None), "MoCo")
    base = _moco_base(state_dict) or ""
    prefix = base + ("encoder_q." if branch == "online" else "encoder_k.")
    if not starts_with(state_dict, prefix):
        raise BranchNotAvailableError(f"this MoCo checkpoint has no key encoder ({prefix!r})")
    version = (
        "v2 (MLP head fc.0/fc.2)"
        if starts_with(state_dict, base + "encoder_q.fc.0.")
        else "v1 (linear fc head)"
    )
    notes = [f"MoCo {version}; state dict taken from {where}"]
    role = "query encoder" if branch == "online" else "key (momentum) encoder"
    return FormatResult(select_backbone(state_dict, prefix, ("fc.",), notes, role), notes=notes)


def _detect_eveningglow(ckpt: Mapping[str, Any]) -> bool:
    def has_resnet(sd: Any) -> bool:
        return is_tensor_dict(sd) and starts_with(sd, "module.resnet.layer")

    if "encoder" in ckpt and set(ckpt) <= {"encoder", "momentum_encoder"}:
        return has_resnet(ckpt["encoder"])
    return has_resnet(ckpt)


def _import_eveningglow(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    flat = is_tensor_dict(ckpt)
    key = "encoder" if branch == "online" else "momentum_encoder"
    if flat and branch == "ema":
        raise BranchNotAvailableError(
            "a bare module.resnet.* state dict holds one encoder only; no EMA branch"
        )
    state_dict = ckpt if flat else ckpt.get(key)
    if not is_tensor_dict(state_dict):
        raise BranchNotAvailableError(
            f"no {key!r} state dict in this checkpoint (top-level keys {list(ckpt)})"
        )
    notes = ["state dict taken from " + ("the file itself" if flat else repr(key))]
    role = "query encoder" if branch == "online" else "momentum encoder"
    return FormatResult(select_backbone(state_dict, "module.resnet.", ("fc.",), notes, role), notes=notes)


def _detect_linear_head(ckpt: Mapping[str, Any]) -> bool:
    return (
        is_tensor_dict(ckpt)
        and set(ckpt) == {"weight", "bias"}
        and linear_head(ckpt, "weight", "bias") is not None
    )


def _import_linear_head(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    head = linear_head(ckpt, "weight", "bias")
    if head is None:
        raise ValueError("expected a flat nn.Linear state dict: weight [classes, features], bias [classes]")
    classes, features = head["weight"].shape
    return FormatResult({}, head=head, notes=[f"flat nn.Linear({features}, {classes}) state dict"])


def _detect_swav(ckpt: Mapping[str, Any]) -> bool:
    def test(sd: Mapping[str, Any]) -> bool:
        return starts_with(sd, "module.layer") and (
            starts_with(sd, "module.projection_head") or starts_with(sd, "module.prototypes")
        )

    return has_state_dict(ckpt, ("state_dict", None), test)


def _import_swav(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, ("state_dict", None), "SwAV")
    notes = [f"state dict taken from {where}"]
    head = None
    if not starts_with(state_dict, "module.prototypes"):
        head = linear_head(state_dict, "module.projection_head.weight", "module.projection_head.bias")
        if head is not None:
            notes.append(
                "projection_head is a single Linear and there are no prototypes: read as the classifier"
            )
    notes.append("SwAV's stem (ConstantPad2d(1), conv1 padding 2) equals torchvision's padding 3")
    backbone = select_backbone(state_dict, "module.", ("projection_head", "prototypes"), notes, "SwAV trunk")
    return FormatResult(backbone, head=head, notes=notes)


def _detect_cmc(ckpt: Mapping[str, Any]) -> bool:
    def test(sd: Mapping[str, Any]) -> bool:
        return starts_with(sd, "encoder.module.l_to_ab.") and starts_with(sd, "encoder.module.ab_to_l.")

    return has_state_dict(ckpt, ("model", None), test)


def _import_cmc(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, ("model", None), "CMC")
    notes = [f"state dict taken from {where}"]
    colour = opt_attr(ckpt, "view")
    if colour:
        notes.append(f"trained on the {colour} colour space (opt.view); stream l_to_ab = first channel")
    if view is None:
        view = "both"
        notes.append("view not given: using both streams (the CMC linear protocol concatenates them)")
    heads = ("fc", "fc8")  # ResNet / AlexNet projection to the 128-d embedding
    if view != "both":
        stream = _CMC_STREAMS[view]
        prefix = f"encoder.module.{stream}."
        backbone = select_backbone(
            state_dict, prefix, heads, notes, f"CMC {stream} stream", note_outside=False
        )
        return FormatResult(backbone, view=view, notes=notes)
    streams = tuple(_CMC_STREAMS.values())
    drop = tuple(f"{stream}.{head}" for stream in streams for head in heads)
    backbone = select_backbone(
        state_dict, "encoder.module.", drop, notes, f"CMC streams {', '.join(streams)}"
    )
    return FormatResult(backbone, streams=streams, view="both", notes=notes)


def _import_cmc_insdis(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    key = "model" if branch == "online" else "model_ema"
    if is_tensor_dict(ckpt):
        if branch == "ema":
            raise BranchNotAvailableError(
                "a bare encoder.module.* state dict holds one encoder only; no EMA branch"
            )
        state_dict, where = ckpt, "the file itself"
    elif is_tensor_dict(ckpt.get(key)):
        state_dict, where = ckpt[key], repr(key)
    else:
        raise BranchNotAvailableError(
            f"no {key!r} state dict: " + ("only MoCo runs (--moco) save model_ema" if branch == "ema" else "")
        )
    notes = [f"state dict taken from {where}"]
    role = "query encoder" if branch == "online" else "momentum encoder"
    return FormatResult(select_backbone(state_dict, "encoder.module.", ("fc",), notes, role), notes=notes)


_CMC_HEAD_KEYS = ("classifier.LinearClassifier.", "classifier.LiniearClassifier.")  # sic: the original's typo


def _detect_cmc_head(ckpt: Mapping[str, Any]) -> bool:
    def test(sd: Mapping[str, Any]) -> bool:
        return any(prefix + "weight" in sd for prefix in _CMC_HEAD_KEYS)

    return has_state_dict(ckpt, ("classifier", None), test)


def _import_cmc_head(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, ("classifier", None), "CMC classifier")
    prefix = next(p for p in _CMC_HEAD_KEYS if p + "weight" in state_dict)
    head = linear_head(state_dict, prefix + "weight", prefix + "bias")
    if head is None:
        raise ValueError(f"{prefix}weight/bias in {where} do not form a linear layer")
    notes = [f"classifier {prefix}* taken from {where}; input = {head['weight'].shape[1]} features"]
    model, layer = opt_attr(ckpt, "model"), opt_attr(ckpt, "layer")
    if model is not None:
        notes.append(f"trained on --model {model} --layer {layer} features")
    other = [k for k in state_dict if not k.startswith(prefix)]
    if other:
        notes.append(f"ignored {len(other)} other classifier keys: {summarize_keys(other)}")
    return FormatResult({}, head=head, notes=notes)


_SWAV_LINEAR_BASES = ("module.", "")  # eval_linear.py saves the DDP-wrapped RegLog: module.linear.*


def _swav_linear_base(state_dict: Mapping[str, Any]) -> str | None:
    """The wrapper prefix of a SwAV ``RegLog`` state dict (``linear.*`` and optional ``bn.*`` only), or None."""
    for base in _SWAV_LINEAR_BASES:
        if linear_head(state_dict, base + "linear.weight", base + "linear.bias") is not None and all(
            key.startswith((base + "linear.", base + "bn.")) for key in state_dict
        ):
            return base
    return None


def _detect_swav_linear(ckpt: Mapping[str, Any]) -> bool:
    return has_state_dict(ckpt, ("state_dict",), lambda sd: _swav_linear_base(sd) is not None)


def _import_swav_linear(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, ("state_dict",), "SwAV linear classifier")
    base = _swav_linear_base(state_dict)
    head = None if base is None else linear_head(state_dict, base + "linear.weight", base + "linear.bias")
    if base is None or head is None:
        raise ValueError(f"{where} is not a SwAV RegLog state dict (linear.weight/bias [, bn.*] only)")
    classes, features = head["weight"].shape
    notes = [f"classifier {base}linear.* ({features} -> {classes}) taken from {where}"]
    bn = [key for key in state_dict if key.startswith(base + "bn.")]
    if bn:
        notes.append(
            "the BatchNorm2d applied before the classifier (--global_pooling false --use_bn true) is not "
            f"part of the returned head: {summarize_keys(bn)}"
        )
    best, epoch = ckpt.get("best_acc"), ckpt.get("epoch")
    if isinstance(best, int | float) or (isinstance(best, torch.Tensor) and best.numel() == 1):
        notes.append(f"best top-1 {float(best):.2f} % after epoch {epoch}")
    return FormatResult({}, head=head, notes=notes)


def _lincls_test(state_dict: Mapping[str, Any], with_fc: bool) -> bool:
    if not all(k.startswith("module.") for k in state_dict):
        return False
    stripped = [k[len("module.") :] for k in state_dict]
    return _resnet_keys(stripped) and ("fc.weight" in stripped) == with_fc


def _detect_lincls(ckpt: Mapping[str, Any]) -> bool:
    return has_state_dict(ckpt, ("state_dict", None), lambda sd: _lincls_test(sd, with_fc=True))


def _import_resnet_with_head(
    ckpt: Mapping[str, Any], locations: Sequence[str | None], prefix: str
) -> FormatResult:
    where, state_dict = require_state_dict(ckpt, locations, "ResNet")
    notes = [f"state dict taken from {where}"]
    head = linear_head(state_dict, prefix + "fc.weight", prefix + "fc.bias")
    if head is not None:
        classes, features = head["weight"].shape
        notes.append(f"fc ({features} -> {classes}) returned as the head, not loaded into the backbone")
    backbone = select_backbone(state_dict, prefix, ("fc",), notes, "ResNet trunk")
    return FormatResult(backbone, head=head, notes=notes)


def _import_lincls(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    return _import_resnet_with_head(ckpt, ("state_dict", None), "module.")


def _detect_torchvision(ckpt: Mapping[str, Any]) -> bool:
    def test(sd: Mapping[str, Any]) -> bool:
        return _resnet_keys(list(sd)) or _lincls_test(sd, with_fc=False)

    return has_state_dict(ckpt, ("state_dict", "model", None), test)


def _import_torchvision(ckpt: Mapping[str, Any], branch: str, view: str | None) -> FormatResult:
    _, state_dict = require_state_dict(ckpt, ("state_dict", "model", None), "ResNet")
    prefix = "module." if all(key.startswith("module.") for key in state_dict) else ""
    return _import_resnet_with_head(ckpt, ("state_dict", "model", None), prefix)


_intl_detect, _intl_import = prefix_format(
    ("state_dict", None),
    {"online": "module.backbone.", "ema": "module.momentum_backbone."},
    ("fc",),
    "INTL backbone",
)
_cmc_insdis_detect, _ = prefix_format(
    ("model", None), {"online": "encoder.module."}, ("fc",), "InsDis encoder"
)
_cwrgp_in_detect, _cwrgp_in_import = prefix_format(
    ("state_dict", None), {"online": "module.model."}, ("fc",), "CW-RGP encoder"
)
_cwrgp_base_detect, _cwrgp_base_import = prefix_format(
    ("state_dict", None), {"online": "model.module."}, ("fc",), "CW-RGP encoder"
)

#: name -> format. Order only affects the listing; detection requires exactly one format to match.
FORMATS: dict[str, CheckpointFormat] = {
    f.name: f
    for f in (
        CheckpointFormat(
            "selfsup",
            "written by a selfsup trainer (format='selfsup')",
            _detect_selfsup,
            _import_selfsup,
            branches=BRANCHES,
            views=CMC_VIEWS,
        ),
        CheckpointFormat(
            "moco_official",
            "official MoCo v1/v2 main_moco.py (module.encoder_q./encoder_k.; also Un-Mix MoCo)",
            lambda c: has_state_dict(c, ("state_dict", None), lambda sd: _moco_base(sd) is not None),
            _import_moco_official,
            branches=BRANCHES,
        ),
        CheckpointFormat(
            "moco_eveningglow",
            "unofficial MoCo train.py {encoder, momentum_encoder} (module.resnet.)",
            _detect_eveningglow,
            _import_eveningglow,
            branches=BRANCHES,
        ),
        CheckpointFormat(
            "swav",
            "SwAV / Un-Mix SwAV main_swav.py checkpoint or released flat weights (module.)",
            _detect_swav,
            _import_swav,
        ),
        CheckpointFormat(
            "cmc",
            "CMC train_CMC.py two-stream encoder (encoder.module.l_to_ab./ab_to_l.; AlexNet or ResNet)",
            _detect_cmc,
            _import_cmc,
            views=CMC_VIEWS,
        ),
        CheckpointFormat(
            "cmc_insdis",
            "CMC-repo InsDis/MoCo train_moco_ins.py (encoder.module.; model and model_ema)",
            _cmc_insdis_detect,
            _import_cmc_insdis,
            aliases=("cmc_moco",),
            branches=BRANCHES,
        ),
        CheckpointFormat(
            "intl",
            "INTL main.py (module.backbone.; intl_m EMA module.momentum_backbone.)",
            _intl_detect,
            _intl_import,
            branches=BRANCHES,
        ),
        CheckpointFormat(
            "cwrgp_imagenet", "CW-RGP ImageNet/train.py (module.model.)", _cwrgp_in_detect, _cwrgp_in_import
        ),
        CheckpointFormat(
            "cwrgp_base", "CW-RGP base/train.py (model.module.)", _cwrgp_base_detect, _cwrgp_base_import
        ),
        CheckpointFormat(
            "lincls",
            "linear-evaluation ResNet with trained fc (MoCo main_lincls.py, INTL evaluate.py; module.)",
            _detect_lincls,
            _import_lincls,
            aliases=("moco_official_lincls", "intl_lincls"),
        ),
        CheckpointFormat(
            "torchvision",
            "plain torchvision ResNet state dict (optionally module.; fc optional, kept as head)",
            _detect_torchvision,
            _import_torchvision,
        ),
        CheckpointFormat(
            "linear_head_eveningglow",
            "unofficial MoCo test.py nn.Linear classifier {weight, bias}",
            _detect_linear_head,
            _import_linear_head,
            kind="head",
        ),
        CheckpointFormat(
            "cmc_linearprobing",
            "CMC LinearProbing.py / eval_moco_ins.py classifier (classifier.Lin*Classifier.)",
            _detect_cmc_head,
            _import_cmc_head,
            kind="head",
            aliases=("cmc_eval",),
        ),
        CheckpointFormat(
            "swav_linear",
            "SwAV / Un-Mix SwAV eval_linear.py classifier checkpoint.pth.tar (state_dict module.linear.[, "
            "module.bn.]; the trunk is the --pretrained file it was trained on)",
            _detect_swav_linear,
            _import_swav_linear,
            kind="head",
            aliases=("swav_eval_linear",),
        ),
    )
}


def get_format(name: str) -> CheckpointFormat:
    """The format registered under ``name`` or one of its aliases."""
    for fmt in FORMATS.values():
        if name == fmt.name or name in fmt.aliases:
            return fmt
    known = sorted([*FORMATS, *(a for f in FORMATS.values() for a in f.aliases)])
    raise ValueError(f"unknown checkpoint format {name!r}; known: {', '.join(known)}")
