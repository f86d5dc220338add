"""``selfsup-convert`` end to end for every source checkpoint layout, against the recorded target layouts.

Sources:

* the original repositories' layouts (``shared/tests/fixtures/checkpoint_layouts``), as the stand-ins
  ``shared/tests/test_checkpoint_formats.py`` builds from them: every tensor a constant equal to its key's index
  (a second encoder offset by ``EMA_OFFSET``), expanded to the recorded shape, so files stay small and a swapped
  key or the wrong branch changes a value;
* each project's own ``format: "selfsup"`` checkpoint, written by the project's save code (or, where the save
  is a closure inside the training loop, the dict that closure writes) around the project's real ResNet-50 model,
  built on the meta device and given constant per-key values the same way;
* plain torchvision state dicts.

Targets: the Detectron2 C4 and FPN model keys and the DETR backbone keys recorded from the originals
(``transfer/tests/fixtures``); Detectron2's suffix rule is ``test_convert._detectron2_match``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from selfsup.shared.checkpoints.formats import FORMATS
from selfsup.transfer.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _load_test_module(relative: str, name: str) -> ModuleType:
    """Another test file as a module (``--import-mode=importlib`` gives test files no importable name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


_formats = _load_test_module("shared/tests/test_checkpoint_formats.py", "_selfsup_sources_checkpoint_formats")
_convert = _load_test_module("transfer/tests/test_convert.py", "_selfsup_sources_test_convert")

TensorOf = Callable[[str], torch.Tensor]  # torchvision key -> the source tensor it must carry

C4 = _convert._layout(_convert.C4)["state_dict"]
FPN = _convert._layout(_convert.FPN)["state_dict"]
DETR = _convert._layout(_convert.DETR)["state_dict"]
DETR_PREFIX = "backbone.0.body."
#: Substrings of keys that belong to heads, other branches or wrappers: none may reach an output file.
FOREIGN = (
    "fc",
    "head",
    "projection",
    "prototype",
    "momentum",
    "encoder",
    "queue",
    "module",
    "l_to_ab",
    "ab_to_l",
)

D2_R50_PRESET = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
}
D2_R50W2_PRESET = {
    **D2_R50_PRESET,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 128,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 128,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 512,
}
DETR_R50_PRESET = {
    "backbone": "resnet50",
    "input_format": "RGB",
    "pixel_mean": [0.485, 0.456, 0.406],
    "pixel_std": [0.229, 0.224, 0.225],
}
R50_ARCHITECTURE = "resnet50 (Bottleneck x [3, 4, 6, 3], base width 64, 7x7 stem, in_channels 3)"
R50W2_ARCHITECTURE = "resnet50w2 (Bottleneck x [3, 4, 6, 3], base width 128, 7x7 stem, in_channels 3)"
CMC_REFUSAL = "encoder (l_to_ab, ab_to_l) for 1+2-channel Lab input; {target} needs one 3-channel RGB ResNet"
CIFAR_REFUSAL = (
    "the backbone has a 3x3 CIFAR stem; {target}'s ResNet stem is a 7x7/2 convolution with max-pool"
)
DETR_WIDTH_REFUSAL = (
    "these weights are resnet50w2 with base width 128 and stem width 128, which need DETR code changes"
)

# ------------------------------------------------------------------------------------- original layouts

#: Original ResNet-50 layouts that convert: (layout, branch); "ema" reads the momentum / EMA encoder.
ORIGINAL_R50 = [
    ("moco_official_v1", "online"),
    ("moco_official_v1", "ema"),
    ("moco_official_v2", "online"),
    ("moco_official_v2", "ema"),
    ("moco_official_lincls", "online"),
    ("moco_eveningglow_train", "online"),
    ("moco_eveningglow_train", "ema"),
    ("swav_train_resnet50", "online"),
    ("swav_released_resnet50", "online"),
    ("cmc_insdis_resnet50", "online"),
    ("cmc_moco_resnet50", "online"),
    ("cmc_moco_resnet50", "ema"),
    ("intl_resnet50", "online"),
    ("intl_m_resnet50", "online"),
    ("intl_m_resnet50", "ema"),
    ("intl_lincls", "online"),
    ("cwrgp_imagenet_resnet50", "online"),
]
ORIGINAL_R50W2 = ["swav_train_resnet50w2", "swav_released_resnet50w2"]
ORIGINAL_CIFAR = ["cwrgp_base_resnet18_cifar10"]
ORIGINAL_TWO_STREAM = ["cmc_alexnet", "cmc_resnet50v1", "cmc_resnet50v2", "cmc_resnet50v3"]


def _case_id(case: tuple[str, str]) -> str:
    return "-".join(case)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, dict[str, Any]]]:
    """``stand_in(layout)`` -> (saved file, in-memory checkpoint); each file is written once per module."""
    root = tmp_path_factory.mktemp("stand_ins")
    cache: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in cache:
            ckpt = _formats.build_checkpoint(_formats._layout(name))
            path = root / f"{name}.pth"
            torch.save(ckpt, path)
            cache[name] = (path, ckpt)
        return cache[name]

    return get


def _original_source(name: str, ckpt: Mapping[str, Any], branch: str) -> TensorOf:
    """The tensor a torchvision key must come from: the layout's prefix (or the EMA encoder's) + the key."""
    layout = _formats._layout(name)
    if branch == "ema":
        entry, prefix = _formats.CASES[name].ema
        state = ckpt if entry is None else ckpt[entry]
    else:
        state = ckpt if layout["flat"] else ckpt[layout["state_dict_location"]]
        prefix = layout["backbone_prefix"]
    return lambda key: state[prefix + key]


# ------------------------------------------------------------------------------------------ helpers


def _argv(target: str, checkpoint: Path, output: Path, *extra: str) -> list[str]:
    return [target, "--checkpoint", str(checkpoint), "--output", str(output), *extra]


def _run(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _refused(capsys: pytest.CaptureFixture, target: str, checkpoint: Path, output: Path, *extra: str) -> str:
    """Run a conversion that must fail: exit code 2, nothing written (no output, no temporary file)."""
    with pytest.raises(SystemExit) as exc:
        main(_argv(target, checkpoint, output, *extra))
    assert exc.value.code == 2
    assert not output.exists()
    assert not output.parent.exists() or not any(output.parent.iterdir())
    err = capsys.readouterr().err
    assert "selfsup-convert: error: " in err
    return err


def _read(path: Path) -> dict[str, Any]:
    """A written file's payload; the file is removed (a ResNet-50 ``.pkl`` is about 95 MB)."""
    if path.suffix == ".pkl":
        with path.open("rb") as handle:
            payload = pickle.load(handle)  # a plain pickle: no torch classes inside
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    path.unlink()
    return payload


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_no_foreign_keys(keys: Any) -> None:
    for key in keys:
        assert not any(part in key for part in FOREIGN), key


def _check_detectron2(payload: Mapping[str, Any], tensor_of: TensorOf, *, layout_shapes: bool = True) -> None:
    """Every C4 and FPN ResNet key is filled exactly once by the suffix rule, no decoy is, and each filled value
    is the source tensor of the recorded ``torchvision_key`` (with the recorded shape for a ResNet-50)."""
    model = payload["model"]
    assert payload["__author__"] == "selfsup" and payload["matching_heuristics"] is True
    _assert_no_foreign_keys(model)
    compared: dict[str, str] = {}  # converted key -> torchvision key whose values it was found equal to
    for spec in (C4, FPN):
        matches = _convert._detectron2_match([*spec, *_convert.DECOYS], list(model))
        assert set(matches) == set(spec)  # every listed key, and no FPN/RPN/ROI-head decoy
        assert sorted(matches.values()) == sorted(model)  # every converted key used, once
        for model_key, entry in spec.items():
            key, torchvision_key = matches[model_key], entry["torchvision_key"]
            value = torch.as_tensor(model[key])
            if layout_shapes:
                assert list(value.shape) == entry["shape"], model_key
            assert value.dtype == getattr(torch, entry["dtype"]), model_key
            if key not in compared:  # C4 and FPN take the same converted keys: compare each value once
                assert torch.equal(value, tensor_of(torchvision_key)), model_key
                compared[key] = torchvision_key
            assert compared[key] == torchvision_key, model_key


def _check_detr(payload: Mapping[str, Any], tensor_of: TensorOf) -> None:
    """Exactly the recorded DETR backbone keys, with the recorded shapes and the source values."""
    model = payload["model"]
    _assert_no_foreign_keys(key.removeprefix(DETR_PREFIX) for key in model)
    assert set(model) == set(DETR)
    for key, entry in DETR.items():
        value = model[key]
        assert list(value.shape) == entry["shape"], key
        assert value.dtype == getattr(torch, entry["dtype"]), key
        assert torch.equal(value, tensor_of(key.removeprefix(DETR_PREFIX))), key


def _check_record(
    payload: Mapping[str, Any],
    *,
    checkpoint: Path,
    target: str,
    source_format: str,
    branch: str,
    preset: dict[str, Any],
    architecture: str = R50_ARCHITECTURE,
) -> None:
    assert payload["selfsup_preset"] == preset
    assert payload["selfsup_conversion"] == {
        "source": str(checkpoint),
        "source_sha256": _sha256(checkpoint),
        "source_format": source_format,
        "branch": branch,
        "architecture": architecture,
        "target": target,
    }


def _convert_r50(
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    target: str,
    checkpoint: Path,
    tensor_of: TensorOf,
    *,
    source_format: str,
    branch: str,
) -> None:
    """Convert a ResNet-50 checkpoint (Detectron2 as ``.pkl``) and check keys, values, preset and provenance."""
    output = tmp_path / ("r50.pkl" if target == "detectron2" else "r50_detr.pth")
    extra = ["--use_ema"] if branch == "ema" else []
    stdout = _run(capsys, *_argv(target, checkpoint, output, *extra))
    assert f"({R50_ARCHITECTURE}; format {source_format}, {branch} branch)" in stdout
    payload = _read(output)
    if target == "detectron2":
        _check_detectron2(payload, tensor_of)
        preset = D2_R50_PRESET
        assert "MODEL.RESNETS.STRIDE_IN_1X1 False" in stdout and "INPUT.FORMAT RGB" in stdout
    else:
        _check_detr(payload, tensor_of)
        preset = DETR_R50_PRESET
        assert "--backbone resnet50" in stdout
    _check_record(
        payload,
        checkpoint=checkpoint,
        target=target,
        source_format=source_format,
        branch=branch,
        preset=preset,
    )


def _check_wide(
    capsys: pytest.CaptureFixture, tmp_path: Path, checkpoint: Path, tensor_of: TensorOf, fmt: str
) -> None:
    """SwAV's resnet50w2: Detectron2 file with the width-2 settings; DETR refused, nothing written.

    The Detectron2 file is a ``.pth`` (same dict, tensors kept compact); as a ``.pkl`` it would be ~380 MB.
    """
    output = tmp_path / "w2.pth"
    stdout = _run(capsys, *_argv("detectron2", checkpoint, output))
    for line in (
        "MODEL.RESNETS.STEM_OUT_CHANNELS 128",
        "MODEL.RESNETS.WIDTH_PER_GROUP 128",
        "MODEL.RESNETS.RES2_OUT_CHANNELS 512",
    ):
        assert line in stdout
    payload = _read(output)
    _check_detectron2(payload, tensor_of, layout_shapes=False)
    model = payload["model"]
    assert tuple(model["stem.conv1.weight"].shape) == (128, 3, 7, 7)
    assert tuple(model["res2.0.conv1.weight"].shape) == (128, 128, 1, 1)
    assert tuple(model["res5.2.conv3.weight"].shape) == (4096, 1024, 1, 1)
    _check_record(
        payload,
        checkpoint=checkpoint,
        target="detectron2",
        source_format=fmt,
        branch="online",
        preset=D2_R50W2_PRESET,
        architecture=R50W2_ARCHITECTURE,
    )
    err = _refused(capsys, "detr", checkpoint, tmp_path / "refused" / "w2_detr.pth")
    assert DETR_WIDTH_REFUSAL in err


# ------------------------------------------------------------------------ 1-4: the original layouts


def test_every_original_layout_is_covered() -> None:
    covered = {name for name, _ in ORIGINAL_R50} | {*ORIGINAL_R50W2, *ORIGINAL_CIFAR, *ORIGINAL_TWO_STREAM}
    assert covered == set(_formats.CASES) | set(_formats.CMC_CASES)
    emas = {name for name, branch in ORIGINAL_R50 if branch == "ema"}
    assert emas == {name for name, case in _formats.CASES.items() if case.ema}
    for name, _ in ORIGINAL_R50:
        assert _formats.CASES[name].config == _formats.R50, name


@pytest.mark.parametrize("target", ["detectron2", "detr"])
@pytest.mark.parametrize("case", ORIGINAL_R50, ids=_case_id)
def test_original_r50_layout_converts(case, target, stand_in, tmp_path, capsys) -> None:
    name, branch = case
    path, ckpt = stand_in(name)
    tensor_of = _original_source(name, ckpt, branch)
    if branch == "ema":  # the momentum encoder's values differ from the online encoder's
        online = _original_source(name, ckpt, "online")
        assert not torch.equal(tensor_of("layer3.2.bn1.running_mean"), online("layer3.2.bn1.running_mean"))
    _convert_r50(
        capsys, tmp_path, target, path, tensor_of, source_format=_formats.CASES[name].format, branch=branch
    )


@pytest.mark.parametrize("name", ORIGINAL_R50W2)
def test_wide_swav_layout_gets_wide_settings_and_no_detr(name, stand_in, tmp_path, capsys) -> None:
    path, ckpt = stand_in(name)
    _check_wide(capsys, tmp_path, path, _original_source(name, ckpt, "online"), "swav")


@pytest.mark.parametrize("target", ["detectron2", "detr", "detr-hf"])
@pytest.mark.parametrize("name", ORIGINAL_TWO_STREAM)
def test_cmc_two_stream_layout_is_refused(name, target, stand_in, tmp_path, capsys) -> None:
    path, _ = stand_in(name)
    output = tmp_path / "out" / ("cmc.pkl" if target == "detectron2" else "cmc.pth")
    err = _refused(capsys, target, path, output)
    assert f"--checkpoint {path} holds a two-stream cmc " + CMC_REFUSAL.format(target=target) in err


@pytest.mark.parametrize("target", ["detectron2", "detr"])
@pytest.mark.parametrize("name", ORIGINAL_CIFAR)
def test_cifar_stem_layout_is_refused(name, target, stand_in, tmp_path, capsys) -> None:
    path, _ = stand_in(name)
    err = _refused(capsys, target, path, tmp_path / "out" / "cifar.pth")
    assert CIFAR_REFUSAL.format(target=target) in err


def _torchvision_r50(offset: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    return _constant_state(model, offset).state_dict()


@pytest.mark.parametrize(
    ("wrapping", "source_format"),
    [
        ("flat", "torchvision"),  # torchvision's own state dict, fc included
        ("module_without_fc", "torchvision"),  # an nn.DataParallel trunk saved without a classifier
        (
            "state_dict_module_with_fc",
            "lincls",
        ),  # {"state_dict": DataParallel ResNet with fc}: linear evaluation
    ],
)
@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_plain_torchvision_state_dict(wrapping, source_format, target, tmp_path, capsys) -> None:
    weights = _torchvision_r50()
    ckpt: dict[str, Any] = weights
    if wrapping == "module_without_fc":
        ckpt = {f"module.{k}": v for k, v in weights.items() if not k.startswith("fc.")}
    elif wrapping == "state_dict_module_with_fc":
        ckpt = {"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 90, "arch": "resnet50"}
    path = tmp_path / "torchvision.pth"
    torch.save(ckpt, path)
    _convert_r50(
        capsys, tmp_path, target, path, weights.__getitem__, source_format=source_format, branch="online"
    )


# ------------------------------------------------------------------------- 5: the projects' checkpoints


def _constant_state(module: nn.Module, offset: int = 0) -> nn.Module:
    """Give every state entry of a (meta-built) module its own constant ``offset + index``, expanded to its shape:
    nothing is allocated, and each key carries a distinct value."""
    state = {
        key: torch.full((), offset + index, dtype=value.dtype).expand(value.shape)
        for index, (key, value) in enumerate(module.state_dict().items())
    }
    module.load_state_dict(state, assign=True)
    return module


def _meta(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def built(*args: Any, **kwargs: Any) -> nn.Module:
        with torch.device("meta"):
            module = build(*args, **kwargs)
        return _constant_state(module)  # the constants on the CPU

    return built


def _scaler() -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", enabled=False)


def _through_runtime(method: Any, optimizer: torch.optim.Optimizer, record: dict[str, Any]) -> dict[str, Any]:
    """What the trainer runtime writes for ``method`` (its original entries and the selfsup schema)."""
    from selfsup.shared.runtime.trainer import checkpoint_state

    return checkpoint_state(
        method.checkpoint_entries(),
        project=method.project,
        export=method.export(),
        optimizer=optimizer,
        scaler=_scaler(),
        position=(1, 0, 7),
        record=record,
    )


def _moco_checkpoint() -> dict[str, Any]:
    """``moco-train``'s checkpoint of a ResNet-50 MoCo (query and momentum encoders)."""
    from selfsup.moco import cli, train

    args = cli.parse_args(["--arch", "resnet50", "--mlp"])
    method = train.MoCoTrainer(args)
    method.model = model = _meta(train.build_model)(args)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    return _through_runtime(method, optimizer, {"args": {**vars(args)}})


def _swav_unmix_checkpoint(arch: str) -> dict[str, Any]:
    """``swav-unmix-train``'s checkpoint (``projects/swav_unmix/train.py``): the original's ``state_dict``
    (``module.`` keys) and queues next to the selfsup schema."""
    from types import SimpleNamespace

    from selfsup.swav_unmix import cli, train

    args = cli.parse_args(["--arch", arch])
    method = train.SwAVUnMixTrainer(args)
    method.model = _meta(train.build_model)(args)
    method.ctx = SimpleNamespace(env=SimpleNamespace(is_main=True, world_size=1))
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.1)
    return _through_runtime(method, optimizer, {"args": {"arch": args.arch}})


def _intl_checkpoint(method_name: str) -> dict[str, Any]:
    """``intl-train``'s checkpoint (``projects/intl/train.py``), ResNet-50."""
    from types import SimpleNamespace

    from selfsup.intl import cli, train

    args = cli.parse_args(["--method", method_name, "--arch", "resnet50"])
    method = train.INTLTrainer(args)
    method.model = _meta(train.build_model)(args)
    method.ctx = SimpleNamespace(env=SimpleNamespace(is_main=True))
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.1)
    return _through_runtime(method, optimizer, {"args": {"method": args.method, "arch": args.arch}})


def _cwrgp_checkpoint() -> dict[str, Any]:
    """``cwrgp-train``'s checkpoint, ``--arch resnet50`` (always a CIFAR stem)."""
    from selfsup.intl import cwrgp_cli, cwrgp_train

    args = cwrgp_cli.parse_args(["--arch", "resnet50"])
    method = cwrgp_train.CWRGPTrainer(args)
    method.model = _meta(cwrgp_train.build_model)(args)
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.1)
    return _through_runtime(method, optimizer, {"args": {"arch": args.arch}})


def _cmc_checkpoint(trainer_name: str, argv: list[str]) -> dict[str, Any]:
    """The checkpoint the CMC project's trainers (``cmc-train`` / ``cmc-moco-ins-train``) write through the
    runtime's ``checkpoint_state``: the model on the meta device, the contrast module (memory bank / queue) real
    and small."""
    from selfsup.cmc import cli, common, train, train_moco_ins
    from selfsup.shared.distributed.launch import DistEnv

    module, parse, method_class = {
        "cmc": (train, cli.parse_cmc_args, train.CMCTrainer),
        "moco_ins": (train_moco_ins, cli.parse_moco_ins_args, train_moco_ins.MocoInsTrainer),
    }[trainer_name]
    args = parse([*argv, "--nce_k", "4"])
    method = method_class(args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "build_cmc_model", _meta(module.build_cmc_model))
        method.build_modules(num_data=8)
    if trainer_name == "cmc" or not args.moco:  # the memory bank's per-rank generators of negatives
        single = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
        method.negatives = common.NegativeDraws(args.seed, single)
    else:
        method.negatives = None
    if getattr(method, "model_ema", None) is not None:
        _constant_state(method.model_ema, offset=_formats.EMA_OFFSET)  # a deep copy of the query encoder
    method.record = {"args": json.loads(json.dumps(vars(args), default=str))}
    optimizer = torch.optim.SGD(method.model.parameters(), lr=0.03)
    return _through_runtime(method, optimizer, method.record)


#: project checkpoint -> (builder, {branch: (entry, prefix)} of the converted tensors, or None when refused)
PROJECTS: dict[str, tuple[Callable[[Path], dict[str, Any]], dict[str, tuple[str, str]] | None]] = {
    "moco": (
        lambda path: _moco_checkpoint(),
        {"online": ("encoder", "module.resnet."), "ema": ("momentum_encoder", "module.resnet.")},
    ),
    "swav_unmix_resnet50": (
        lambda path: _swav_unmix_checkpoint("resnet50"),
        {"online": ("state_dict", "module.")},
    ),
    "swav_unmix_resnet50w2": (
        lambda path: _swav_unmix_checkpoint("resnet50w2"),
        {"online": ("state_dict", "module.")},
    ),
    "intl": (lambda path: _intl_checkpoint("intl"), {"online": ("state_dict", "module.backbone.")}),
    "intl_m": (
        lambda path: _intl_checkpoint("intl_m"),
        {"online": ("state_dict", "module.backbone."), "ema": ("state_dict", "module.momentum_backbone.")},
    ),
    "cmc_moco": (
        lambda path: _cmc_checkpoint("moco_ins", ["--model", "resnet50", "--moco"]),
        {"online": ("model", "encoder.module."), "ema": ("model_ema", "encoder.module.")},
    ),
    "cmc_insdis": (
        lambda path: _cmc_checkpoint("moco_ins", ["--model", "resnet50"]),
        {"online": ("model", "encoder.module.")},
    ),
    "cmc_resnet50v2": (lambda path: _cmc_checkpoint("cmc", ["--model", "resnet50v2"]), None),
    "cmc_alexnet": (lambda path: _cmc_checkpoint("cmc", ["--model", "alexnet"]), None),
    "cwrgp_resnet50": (lambda path: _cwrgp_checkpoint(), None),
}
PROJECT_R50 = [
    (name, branch)
    for name, (_, branches) in PROJECTS.items()
    if branches is not None and not name.endswith("w2")
    for branch in branches
]


@pytest.fixture(scope="module")
def project_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], tuple[Path, dict[str, Any]]]:
    """``project_checkpoint(name)`` -> (saved file, in-memory checkpoint), built once per module."""
    root = tmp_path_factory.mktemp("projects")
    cache: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in cache:
            path = root / f"{name}.pth"
            ckpt = PROJECTS[name][0](path)
            torch.save(ckpt, path)
            cache[name] = (path, ckpt)
        return cache[name]

    return get


def _project_source(name: str, ckpt: Mapping[str, Any], branch: str) -> TensorOf:
    entry, prefix = PROJECTS[name][1][branch]
    state = ckpt[entry]
    return lambda key: state[prefix + key]


#: project checkpoint -> (project, entry, keys of the heads / classifiers in that entry the conversion must drop)
PROJECT_HEADS = {
    "moco": ("moco", "encoder", ["module.resnet.fc.0.weight", "module.resnet.fc.2.bias"]),
    "swav_unmix_resnet50": ("swav_unmix", "state_dict", ["module.projection_head.0.weight", "module.prototypes.weight"]),
    "swav_unmix_resnet50w2": ("swav_unmix", "state_dict", ["module.projection_head.3.weight", "module.prototypes.weight"]),
    "intl": ("intl", "state_dict", ["module.projection.0.weight"]),
    "intl_m": ("intl", "state_dict", ["module.projection.0.weight", "module.momentum_projection.0.weight"]),
    "cmc_moco": ("cmc", "model", ["encoder.module.fc.weight"]),
    "cmc_insdis": ("cmc", "model", ["encoder.module.fc.weight"]),
    "cmc_resnet50v2": ("cmc", "model", ["encoder.module.l_to_ab.fc.weight", "encoder.module.ab_to_l.fc.bias"]),
    "cmc_alexnet": ("cmc", "model", ["encoder.module.l_to_ab.fc8.0.weight", "encoder.module.ab_to_l.fc8.0.bias"]),
    "cwrgp_resnet50": ("cwrgp", "state_dict", ["head.0.weight"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PROJECTS))
def test_project_checkpoint_is_selfsup_format_with_heads(name, project_checkpoint) -> None:
    """The files are selfsup checkpoints and carry the projection heads / classifiers the conversion must drop."""
    assert set(PROJECT_HEADS) == set(PROJECTS)
    project, entry, heads = PROJECT_HEADS[name]
    _, ckpt = project_checkpoint(name)
    assert ckpt["format"] == "selfsup" and ckpt["format_version"] == 1
    assert ckpt["project"] == project
    for key in heads:
        assert key in ckpt[entry], key


@pytest.mark.parametrize("target", ["detectron2", "detr"])
@pytest.mark.parametrize("case", PROJECT_R50, ids=_case_id)
def test_project_checkpoint_converts(case, target, project_checkpoint, tmp_path, capsys) -> None:
    name, branch = case
    path, ckpt = project_checkpoint(name)
    tensor_of = _project_source(name, ckpt, branch)
    if branch == "ema":
        online = _project_source(name, ckpt, "online")
        assert not torch.equal(tensor_of("layer3.2.bn1.running_mean"), online("layer3.2.bn1.running_mean"))
    _convert_r50(capsys, tmp_path, target, path, tensor_of, source_format="selfsup", branch=branch)


def test_project_wide_swav_gets_wide_settings_and_no_detr(project_checkpoint, tmp_path, capsys) -> None:
    path, ckpt = project_checkpoint("swav_unmix_resnet50w2")
    assert ckpt["backbone"]["name"] == "resnet50w2"
    _check_wide(capsys, tmp_path, path, _project_source("swav_unmix_resnet50w2", ckpt, "online"), "selfsup")


@pytest.mark.parametrize("target", ["detectron2", "detr"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("cmc_resnet50v2", "holds a two-stream selfsup " + CMC_REFUSAL, id="cmc_resnet50v2"),
        pytest.param("cmc_alexnet", "holds a two-stream selfsup " + CMC_REFUSAL, id="cmc_alexnet"),
        pytest.param("cwrgp_resnet50", CIFAR_REFUSAL, id="cwrgp_resnet50"),
    ],
)
def test_project_checkpoint_is_refused(name, message, target, project_checkpoint, tmp_path, capsys) -> None:
    path, _ = project_checkpoint(name)
    err = _refused(capsys, target, path, tmp_path / "out" / ("x.pkl" if target == "detectron2" else "x.pth"))
    assert message.format(target=target) in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param(
            "intl",
            "this selfsup checkpoint (project 'intl') exports no EMA weights (export has no ema_location)",
            id="intl",
        ),
        pytest.param(
            "swav_unmix_resnet50",
            "this selfsup checkpoint (project 'swav_unmix') exports no EMA weights",
            id="swav_unmix",
        ),
        pytest.param(
            "cmc_insdis", "no 'model_ema' state dict: only MoCo runs (--moco) save model_ema", id="cmc_insdis"
        ),
    ],
)
def test_project_checkpoint_without_ema_refuses_use_ema(name, message, project_checkpoint, tmp_path, capsys):
    path, _ = project_checkpoint(name)
    err = _refused(capsys, "detr", path, tmp_path / "out" / "ema.pth", "--use_ema")
    assert f"--use_ema: {message}" in err


# ----------------------------------------------------------------------------- 6: wrong or partial files

BASE = "moco_official_v2"  # the stand-in the wrong files are made from
BASE_PREFIX = "module.encoder_q."


def _variant(stand_in, tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """The MoCo v2 stand-in with ``edit`` applied to a copy of its state dict, saved under ``tmp_path``."""
    _, ckpt = stand_in(BASE)
    state = dict(ckpt["state_dict"])
    edit(state)
    path = tmp_path / "edited.pth.tar"
    torch.save({**ckpt, "state_dict": state}, path)
    return path


@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_missing_backbone_tensor_fails_then_allow_partial_converts_the_rest(
    target, stand_in, tmp_path, capsys
) -> None:
    missing = "layer4.1.conv2.weight"
    path = _variant(stand_in, tmp_path, lambda sd: sd.pop(BASE_PREFIX + missing))
    output = tmp_path / "out" / "partial.pth"
    err = _refused(capsys, target, path, output)
    assert f"the backbone weights do not cover {R50_ARCHITECTURE}: 1 missing keys ['{missing}'], " in err
    assert "0 unexpected keys []; pass --allow_partial to convert what fits" in err

    stdout = _run(capsys, *_argv(target, path, output, "--allow_partial"))
    assert f"--allow_partial: 1 keys missing, left to the target's init: ['{missing}']" in stdout
    model = _read(output)["model"]
    _, ckpt = stand_in(BASE)
    source = ckpt["state_dict"]
    if target == "detectron2":
        assert "res5.1.conv2.weight" not in model and len(model) == len(C4) - 1
        assert torch.equal(model["res5.1.conv3.weight"], source[BASE_PREFIX + "layer4.1.conv3.weight"])
    else:
        assert set(model) == set(DETR) - {DETR_PREFIX + missing}
        key = "layer4.1.conv1.weight"
        assert torch.equal(model[DETR_PREFIX + key], source[BASE_PREFIX + key])


@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_misshaped_tensor_is_named_with_both_shapes(target, stand_in, tmp_path, capsys) -> None:
    key = "layer2.1.bn2.running_var"
    path = _variant(stand_in, tmp_path, lambda sd: sd.__setitem__(BASE_PREFIX + key, torch.ones(64)))
    for extra in ([], ["--allow_partial"]):  # a wrong shape is never converted
        err = _refused(capsys, target, path, tmp_path / "out" / "bad.pth", *extra)
        assert f"the weights do not fit {R50_ARCHITECTURE}: {key}: weights [64] vs [128]" in err


@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_extra_non_resnet_backbone_key_is_named(target, stand_in, tmp_path, capsys) -> None:
    extra_key = "attnpool.proj.weight"
    path = _variant(stand_in, tmp_path, lambda sd: sd.__setitem__(BASE_PREFIX + extra_key, torch.zeros(8, 4)))
    err = _refused(capsys, target, path, tmp_path / "out" / "extra.pth")
    assert f"0 missing keys [], 1 unexpected keys ['{extra_key}']; pass --allow_partial" in err


@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_uninferable_weights_are_refused(target, stand_in, tmp_path, capsys) -> None:
    path = _variant(stand_in, tmp_path, lambda sd: sd.pop(BASE_PREFIX + "conv1.weight"))
    err = _refused(capsys, target, path, tmp_path / "out" / "noconv1.pth")
    assert "cannot infer the backbone: no 'conv1.weight' among the weights (first keys: bn1.weight," in err


@pytest.mark.parametrize("target", ["detectron2", "detr"])
def test_unrecognised_file_lists_known_formats(target, tmp_path, capsys) -> None:
    path = tmp_path / "student.pth"
    torch.save({"student": {"blocks.0.attn.qkv.weight": torch.zeros(6, 2)}, "epoch": 3}, path)
    err = _refused(capsys, target, path, tmp_path / "out" / "x.pth")
    assert "unrecognised checkpoint layout; top-level keys: ['student', 'epoch']" in err
    assert "first keys of the state dict under 'student': ['blocks.0.attn.qkv.weight']" in err
    assert f"known formats: {', '.join(FORMATS)}" in err
    assert "selfsup, moco_official, moco_eveningglow, swav, cmc, cmc_insdis, intl, cwrgp_imagenet" in err
    assert "pass --checkpoint_key KEY (state dicts found under: 'student')" in err
    assert "pass --format NAME" in err


def test_classifier_only_file_is_refused(stand_in, tmp_path, capsys) -> None:
    path, _ = stand_in("moco_eveningglow_linear")
    err = _refused(capsys, "detectron2", path, tmp_path / "out" / "head.pkl")
    assert "this file holds only a linear classifier (format linear_head_eveningglow" in err
    assert "the encoder was saved in another file" in err


def test_missing_ema_branch_of_an_original_layout(stand_in, tmp_path, capsys) -> None:
    path, _ = stand_in("intl_resnet50")
    err = _refused(capsys, "detectron2", path, tmp_path / "out" / "ema.pkl", "--use_ema")
    assert "--use_ema: branch 'ema' needs keys under 'module.momentum_backbone.'; this file has none" in err
    path, _ = stand_in("swav_train_resnet50")
    err = _refused(capsys, "detectron2", path, tmp_path / "out" / "ema.pkl", "--use_ema")
    assert "--use_ema: format 'swav' stores no EMA/momentum encoder (branches: online)" in err
