"""Load ``selfsup-convert detr`` / ``detr-hf`` files into facebookresearch/detr and Hugging Face DETR models.

DETR has no package: a checkout of https://github.com/facebookresearch/detr is put on ``sys.path``, where its
``models/``, ``util/`` and ``datasets/`` folders and ``engine.py`` become top-level modules (``import_detr``).
Its ``Backbone`` asks torchvision for ImageNet weights (``pretrained=is_main_process()``), a download the
converted file then overwrites; ``import_detr`` makes that factory build random weights instead, so nothing is
fetched and nothing is needed offline.

* ``load_into_detr`` fills ``model.backbone[0].body`` (torchvision's ``IntermediateLayerGetter`` over the
  ResNet, frozen BN) of a DETR, ``DETRsegm`` or DDP-wrapped model, strictly: every body tensor, nothing else.
* ``load_into_hf_detr`` fills the timm ResNet of a Hugging Face ``DetrForObjectDetection`` (``model.backbone.model``
  in transformers 5, ``model.backbone.conv_encoder.model`` in transformers 4), strictly as well.

Both check the file's ``selfsup_preset`` first: the target it was written for, the ``--backbone`` name and the
ImageNet RGB normalisation DETR's transforms (and ``DetrImageProcessor``'s defaults) apply; a disagreement raises
``PresetMismatchError`` naming both sides.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torchvision
from torch import nn

from selfsup.transfer.convert import (
    DETR_BACKBONE_PREFIX,
    DETR_HF_TARGET,
    DETR_TARGET,
    HF_DETR_BACKBONE_PREFIX,
)
from selfsup.transfer.presets import IMAGENET_MEAN, IMAGENET_STD, PRESET_KEY, PresetMismatchError

__all__ = [
    "DETR_TOP_LEVEL",
    "ConvertedWeights",
    "LoadReport",
    "backbone_weights",
    "detr_backbone_body",
    "detr_preset_mismatches",
    "hf_detr_backbone",
    "import_detr",
    "import_detr_main",
    "load_into_detr",
    "load_into_hf_detr",
    "read_converted",
]

#: The top-level names a DETR checkout occupies once it is on ``sys.path``.
DETR_TOP_LEVEL = ("models", "util", "datasets", "engine")
#: The name DETR's ``main.py`` is imported under (``main`` is too common a name to take).
DETR_MAIN_MODULE = "detr_main"
_NO_DOWNLOAD = "_selfsup_no_download"
_PREFIXES = {DETR_TARGET: DETR_BACKBONE_PREFIX, DETR_HF_TARGET: HF_DETR_BACKBONE_PREFIX}


# --------------------------------------------------------------------------------------------- importing DETR


def _checkout(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser().resolve()
    if not (path / "models" / "detr.py").is_file():
        raise ValueError(
            f"{path} is not a facebookresearch/detr checkout (no models/detr.py); "
            "git clone https://github.com/facebookresearch/detr and pass its folder"
        )
    return path


def _origin(module: ModuleType) -> Path | None:
    """The file or package folder a module was imported from (``None`` for built-ins)."""
    file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        return path.parent if path.name == "__init__.py" else path
    locations = list(getattr(module, "__path__", []) or [])
    return Path(locations[0]).resolve() if locations else None


def _check_not_taken(root: Path, names: tuple[str, ...]) -> None:
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            continue
        origin = _origin(module)
        if origin is None or not origin.is_relative_to(root):
            raise ImportError(
                f"a module named {name!r} is already imported from {origin or 'a built-in'}; DETR's {name} "
                f"(in {root}) needs that top-level name: import DETR first or in a fresh process"
            )


class _ModelsWithoutWeights:
    """``torchvision.models`` as DETR's backbone sees it: every factory builds random weights (``weights=None``),
    whatever ``pretrained=`` or ``weights=`` it is given, so building DETR downloads nothing."""

    def __getattr__(self, name: str) -> Any:
        factory = getattr(torchvision.models, name)
        if not callable(factory):
            return factory

        @functools.wraps(factory)
        def build(*args: Any, pretrained: bool = False, **kwargs: Any) -> Any:
            del pretrained  # replaced by the converted weights; torchvision >= 0.13 spells it weights=
            kwargs["weights"] = None
            return factory(*args, **kwargs)

        return build


class _TorchvisionWithoutDownloads:
    """Stands in for the ``torchvision`` module inside DETR's ``models/backbone.py``."""

    models = _ModelsWithoutWeights()

    def __getattr__(self, name: str) -> Any:
        return getattr(torchvision, name)


def import_detr(root: str | os.PathLike) -> ModuleType:
    """Put the DETR checkout ``root`` on ``sys.path``, import and return its ``models`` package.

    ``models.build_model(args)`` (with ``args`` from DETR's ``main.get_args_parser()``) then builds a DETR whose
    backbone has random weights instead of downloaded ImageNet ones. Raises ``ValueError`` when ``root`` is not a
    checkout and ``ImportError`` when one of DETR's top-level names (``DETR_TOP_LEVEL``) is already imported from
    elsewhere (another DETR checkout, Hugging Face ``datasets``, a project's own ``util``).
    """
    path = _checkout(root)
    _check_not_taken(path, DETR_TOP_LEVEL)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    importlib.invalidate_caches()
    models = importlib.import_module("models")
    _check_not_taken(path, ("models", "util"))  # a same-named module earlier on sys.path wins otherwise
    backbone = importlib.import_module("models.backbone")
    if not getattr(backbone, _NO_DOWNLOAD, False):
        if not isinstance(getattr(backbone, "torchvision", None), ModuleType):
            raise ImportError(
                f"{backbone.__file__} does not build its ResNet through torchvision.models; this DETR version "
                "is not supported (tested with facebookresearch/detr 29901c5)"
            )
        backbone.torchvision = _TorchvisionWithoutDownloads()
        setattr(backbone, _NO_DOWNLOAD, True)
    return models


def import_detr_main(root: str | os.PathLike) -> ModuleType:
    """DETR's ``main.py`` (``get_args_parser``, ``main``, ``build_model``), imported as ``detr_main``."""
    import_detr(root)
    path = _checkout(root) / "main.py"
    loaded = sys.modules.get(DETR_MAIN_MODULE)
    if loaded is not None:
        if _origin(loaded) == path:
            return loaded
        raise ImportError(f"DETR's main.py is already imported from {_origin(loaded)}, not {path}")
    if not path.is_file():
        raise ValueError(f"{path.parent} has no main.py; pass the root of a facebookresearch/detr checkout")
    _check_not_taken(path.parent, DETR_TOP_LEVEL)
    spec = importlib.util.spec_from_file_location(DETR_MAIN_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[DETR_MAIN_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[DETR_MAIN_MODULE]
        raise
    _check_not_taken(path.parent, DETR_TOP_LEVEL)  # main.py imported datasets and engine from the checkout
    return module


# ------------------------------------------------------------------------------------------- converted files


@dataclass(frozen=True)
class ConvertedWeights:
    """The tensors and preset of a converted file (``source`` names it in messages)."""

    weights: dict[str, torch.Tensor]
    preset: dict[str, Any] | None
    source: str


@dataclass(frozen=True)
class LoadReport:
    """What a ``load_into_*`` call filled: ``loaded`` are the model's own state-dict keys."""

    source: str
    module: str
    loaded: tuple[str, ...]
    preset: dict[str, Any] | None

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} backbone tensors from {self.source} into {self.module}"


WeightsSource = str | os.PathLike | Mapping[str, Any] | ConvertedWeights


def read_converted(path_or_state: WeightsSource) -> ConvertedWeights:
    """Read a converted file (``torch.load(weights_only=True)``), or wrap an already loaded one.

    A mapping may be the whole file (``{"model": ..., "selfsup_preset": ...}``) or a bare state dict of tensors
    (no preset: nothing to check but the keys).
    """
    if isinstance(path_or_state, ConvertedWeights):
        return path_or_state
    if isinstance(path_or_state, Mapping):
        payload, source = path_or_state, "the given state dict"
    else:
        path = Path(path_or_state)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        source = str(path)
        if path.suffix == ".pkl":
            raise ValueError(
                f"{source} is a .pkl (Detectron2's format); write a .pth with selfsup-convert detr"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ValueError(
                f"{source} holds more than tensors (a Detectron2 .pkl?); write it with selfsup-convert detr"
            ) from None
        except (RuntimeError, EOFError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
            raise ValueError(f"{source} is not a torch.save file ({reason})") from None
    if not isinstance(payload, Mapping):
        raise ValueError(
            f"{source} holds a {type(payload).__name__}, not a dict; convert with selfsup-convert"
        )
    weights = payload.get("model", payload)
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{source} has no 'model' dict of tensors; convert with selfsup-convert")
    not_tensors = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{source}: entries {not_tensors[:5]} are not tensors; convert with selfsup-convert")
    preset = payload.get(PRESET_KEY)
    return ConvertedWeights(dict(weights), dict(preset) if isinstance(preset, Mapping) else None, source)


def _close(found: Any, wanted: list[float]) -> bool:
    return (
        isinstance(found, (list, tuple))
        and len(found) == len(wanted)
        and all(math.isclose(f, w, rel_tol=1e-4, abs_tol=1e-4) for f, w in zip(found, wanted))
    )


def detr_preset_mismatches(preset: Mapping[str, Any], target: str, backbone_name: str | None) -> list[str]:
    """``"X is A, the weights need B"`` for each way a DETR preset disagrees with the model about to load it.

    DETR (``datasets/coco.py``) and ``DetrImageProcessor`` both feed RGB images normalised with the ImageNet
    mean/std on the 0-1 scale; a preset asking for anything else cannot be honoured without code changes.
    """
    if "backbone" not in preset:
        return [
            f"the model is a {target} model, the weights' preset is not a DETR one (no 'backbone'; Detectron2?)"
        ]
    out = []
    wanted_target = preset.get("target", DETR_TARGET)
    if wanted_target != target:
        out.append(f"the model is a {target} model, the weights were written for {wanted_target}")
    wanted = preset.get("backbone")
    if backbone_name is not None and wanted is not None and wanted != backbone_name:
        out.append(f"--backbone is {backbone_name}, the weights need --backbone {wanted}")
    if preset.get("input_format", "RGB") != "RGB":
        out.append(f"DETR feeds RGB input, the weights need {preset['input_format']}")
    for key, used in (("pixel_mean", IMAGENET_MEAN), ("pixel_std", IMAGENET_STD)):
        if key in preset and not _close(preset[key], used):
            out.append(f"DETR normalises with {key} {used}, the weights need {preset[key]}")
    return out


def _check_preset(converted: ConvertedWeights, target: str, backbone_name: str | None) -> None:
    if converted.preset is None:
        return
    problems = detr_preset_mismatches(converted.preset, target, backbone_name)
    if problems:
        raise PresetMismatchError(f"{converted.source} does not fit this model: {'; '.join(problems)}")


def backbone_weights(
    converted: ConvertedWeights, target: str, backbone_name: str | None = None
) -> dict[str, torch.Tensor]:
    """The file's tensors keyed as the backbone module's own state dict, once its preset (against ``target`` and
    ``backbone_name``) and key prefix are checked; what ``load_into_*`` load, and what a launcher checks first."""
    _check_preset(converted, target, backbone_name)
    prefix = _PREFIXES[target]
    foreign = [k for k in converted.weights if not k.startswith(prefix)]
    if foreign:
        raise ValueError(
            f"{converted.source}: {len(foreign)} keys are not under {prefix!r} (e.g. {foreign[0]!r}); "
            f"write the file with `selfsup-convert {target}`"
        )
    return {k.removeprefix(prefix): v for k, v in converted.weights.items()}


def _load_strict(module: nn.Module, weights: dict[str, torch.Tensor], source: str, where: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mis_shaped = [
        f"{k} {list(v.shape)} vs {list(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        raise ValueError(
            f"{source} does not fit {where}: {len(missing)} missing {missing[:4]}, {len(unexpected)} unexpected "
            f"{unexpected[:4]}, {len(mis_shaped)} mis-shaped {mis_shaped[:2]} (another --backbone?)"
        )
    module.load_state_dict(weights, strict=True)


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


# ------------------------------------------------------------------------------------------------------- DETR


def detr_backbone_body(model: nn.Module) -> nn.Module:
    """The ResNet body of a facebookresearch/detr model: ``backbone[0].body`` of a ``DETR``, of a ``DETRsegm``'s
    ``.detr`` and of a DDP wrapper's ``.module``."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner = getattr(inner, "detr", inner)
    try:
        body = inner.backbone[0].body
    except (AttributeError, IndexError, TypeError):
        raise ValueError(
            f"{type(model).__name__} is not a facebookresearch/detr model (it has no backbone[0].body)"
        ) from None
    if not isinstance(body, nn.Module):
        raise ValueError(f"{type(model).__name__}.backbone[0].body is not a module")
    return body


def load_into_detr(
    model: nn.Module, path_or_state: WeightsSource, *, backbone_name: str | None = None
) -> LoadReport:
    """Fill a DETR model's backbone body with a ``selfsup-convert detr`` file, strictly.

    ``backbone_name`` is DETR's ``--backbone``; when given, the file's preset must name the same network.
    Raises ``PresetMismatchError`` (a subclass of ``ValueError``) on a preset disagreement, ``ValueError`` when
    the keys or shapes do not fill the body exactly, ``FileNotFoundError`` for a missing file.
    """
    converted = read_converted(path_or_state)
    weights = backbone_weights(converted, DETR_TARGET, backbone_name)
    body = detr_backbone_body(model)
    where = _name_of(model, body)
    _load_strict(body, weights, converted.source, f"the DETR {where}")
    loaded = tuple(f"{where}.{k}" for k in weights)
    return LoadReport(converted.source, where, loaded, converted.preset)


# ----------------------------------------------------------------------------------------- Hugging Face DETR


def _is_resnet(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"))


def hf_detr_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The name and module of the timm ResNet inside a Hugging Face DETR (``DetrForObjectDetection``,
    ``DetrModel``, ``DetrForSegmentation``), whatever the transformers version nests it under."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "model" and ".backbone" in f".{name}" and _is_resnet(module):
            return name, module
    raise ValueError(
        f"{type(model).__name__} has no timm ResNet backbone (backbone...model with conv1..layer4); build it "
        "with the timm backbone, DetrConfig(backbone='resnet50', use_timm_backbone=True, "
        "use_pretrained_backbone=False)"
    )


def _hf_backbone_name(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    backbone_config = getattr(config, "backbone_config", None)
    name = getattr(backbone_config, "backbone", None)  # transformers 5: TimmBackboneConfig
    if name is None and getattr(config, "use_timm_backbone", False):
        name = getattr(config, "backbone", None)  # transformers 4
    return name if isinstance(name, str) else None


def load_into_hf_detr(model: nn.Module, path_or_state: WeightsSource) -> LoadReport:
    """Fill a Hugging Face DETR's timm ResNet with a ``selfsup-convert detr-hf`` file, strictly.

    The preset's backbone is checked against the model's config (``backbone_config.backbone``). Raises like
    ``load_into_detr``.
    """
    converted = read_converted(path_or_state)
    weights = backbone_weights(converted, DETR_HF_TARGET, _hf_backbone_name(model))
    where, backbone = hf_detr_backbone(model)
    _load_strict(backbone, weights, converted.source, f"the Hugging Face DETR {where}")
    loaded = tuple(f"{where}.{k}" for k in weights)
    return LoadReport(converted.source, where, loaded, converted.preset)
