"""Checkpoint detection and import against the layouts of the original repositories.

Each ``fixtures/checkpoint_layouts/*.json`` file lists every key, shape and dtype a trainer saves. Following
that folder's README, a checkpoint is built from it (each tensor a constant equal to its key's index, expanded
to the listed shape so files stay small and every key has its own value), wrapped in the file's top-level
layout (an ``argparse.Namespace`` for CMC's ``opt``), saved, loaded back and imported.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from selfsup.shared.checkpoints.formats import (
    FORMATS,
    AmbiguousCheckpointFormatError,
    ArchitectureMismatchError,
    BranchNotAvailableError,
    CheckpointMismatchError,
    ExtractedBackbone,
    HeadOnlyCheckpointError,
    UnknownCheckpointFormatError,
    UnsupportedArchitectureError,
    build_extracted,
    detect_format,
    extract_backbone,
    extract_head,
    get_format,
    infer_backbone_config,
    load_backbone,
    load_checkpoint_file,
    load_head,
    strip_prefix,
)
from selfsup.shared.models.alexnet import CMC_ALEXNET_HALF, CMCAlexNetHalf
from selfsup.shared.models.backbones import BackboneConfig, build_backbone
from selfsup.shared.models.two_stream import TwoStreamBackbone

LAYOUTS = Path(__file__).parent / "fixtures" / "checkpoint_layouts"
SYMBOLIC_SIZE = 8  # replaces data-dependent dims such as N_data
EMA_OFFSET = 100_000  # values of a second encoder ("same_layout_as") differ from the first one's
OTHER_OFFSET = 500_000

R50 = BackboneConfig("resnet50")
R50W2 = BackboneConfig("resnet50w2")


@dataclass(frozen=True)
class Case:
    format: str
    config: BackboneConfig
    ema: tuple[str | None, str] | None = None  # (top-level entry, prefix) of the EMA encoder
    head: tuple[int, int] | None = None  # shape of the trained classifier kept as head


CASES = {
    "moco_official_v1": Case("moco_official", R50, ema=("state_dict", "module.encoder_k.")),
    "moco_official_v2": Case("moco_official", R50, ema=("state_dict", "module.encoder_k.")),
    "moco_official_lincls": Case("lincls", R50, head=(1000, 2048)),
    "moco_eveningglow_train": Case("moco_eveningglow", R50, ema=("momentum_encoder", "module.resnet.")),
    "swav_train_resnet50": Case("swav", R50),
    "swav_train_resnet50w2": Case("swav", R50W2),
    "swav_released_resnet50": Case("swav", R50),
    "swav_released_resnet50w2": Case("swav", R50W2),
    "cmc_insdis_resnet50": Case("cmc_insdis", R50),
    "cmc_moco_resnet50": Case("cmc_insdis", R50, ema=("model_ema", "encoder.module.")),
    "intl_resnet50": Case("intl", R50),
    "intl_m_resnet50": Case("intl", R50, ema=("state_dict", "module.momentum_backbone.")),
    "intl_lincls": Case("lincls", R50, head=(1000, 2048)),
    "cwrgp_imagenet_resnet50": Case("cwrgp_imagenet", R50),
    "cwrgp_base_resnet18_cifar10": Case("cwrgp_base", BackboneConfig("resnet18", cifar_stem=True)),
}
# name -> (per-stream config with in_channels 1, stem width, projection head key prefix)
CMC_CASES = {
    "cmc_alexnet": (BackboneConfig(CMC_ALEXNET_HALF, in_channels=1), None, "fc8."),
    "cmc_resnet50v1": (BackboneConfig("resnet50", width=32, in_channels=1), 64, "fc."),
    "cmc_resnet50v2": (BackboneConfig("resnet50", in_channels=1), None, "fc."),
    "cmc_resnet50v3": (BackboneConfig("resnet50w2", in_channels=1), 64, "fc."),
}
HEAD_FILES = {
    "moco_eveningglow_linear": "linear_head_eveningglow",
    "cmc_linearprobing": "cmc_linearprobing",
    "cmc_eval_moco_ins": "cmc_linearprobing",
}


def _layout(name: str) -> dict[str, Any]:
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def _tensors(spec: dict[str, Any], offset: int) -> dict[str, torch.Tensor]:
    out = {}
    for index, (key, entry) in enumerate(spec.items()):
        shape = [
            SYMBOLIC_SIZE if isinstance(d, str) else d for d in entry.get("symbolic_shape", entry["shape"])
        ]
        dtype = torch.int64 if entry["dtype"] == "int64" else torch.float32
        out[key] = torch.full((), offset + index, dtype=dtype).expand(shape)
    return out


def _top_level_value(key: str, entry: Any, spec: dict[str, Any]) -> Any:
    entry = entry if isinstance(entry, dict) else {}
    if "Namespace" in entry.get("type", ""):
        return argparse.Namespace(**({attr: 0 for attr in entry["attributes"]} | {"view": "Lab"}))
    if "same_layout_as" in entry:
        return _tensors(spec, EMA_OFFSET)
    if "state_dict" in entry:
        return _tensors(entry["state_dict"], OTHER_OFFSET)
    if key == "epoch":
        return 7
    if key == "arch":
        return "resnet50"
    if key.startswith("best_acc"):
        return torch.tensor(61.5)
    if key == "optimizer":
        return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9).state_dict()
    return {}  # apex amp state and the like


def build_checkpoint(layout: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    """Random-free stand-in for the file a trainer writes, per the fixtures README."""
    spec = layout["variants"][variant]["state_dict"] if variant else layout["state_dict"]
    state_dict = _tensors(spec, 0)
    if layout["flat"]:
        return state_dict
    top = layout.get("top_level") or {}
    return {
        key: state_dict if key == layout["state_dict_location"] else _top_level_value(key, top.get(key), spec)
        for key in layout["top_level_keys"]
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    """``saved(name, variant)`` -> (path, in-memory checkpoint); each file is written once per module."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[tuple[str, str | None], tuple[Path, dict[str, Any]]] = {}

    def get(name: str, variant: str | None = None) -> tuple[Path, dict[str, Any]]:
        if (name, variant) not in cache:
            ckpt = build_checkpoint(_layout(name), variant)
            path = root / f"{name}-{variant}.pth"
            torch.save(ckpt, path)
            cache[name, variant] = (path, ckpt)
        return cache[name, variant]

    return get


def _drop_patterns(layout: dict[str, Any]) -> list[str]:
    return [entry.split(" ")[0] for entry in layout.get("drop_for_backbone", [])]


def _listed_drop(key: str, patterns: list[str]) -> bool:
    return any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in patterns)


def _expected(
    source: dict[str, torch.Tensor], prefix: str, drops: list[str], head: str
) -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` minus the listed drops and the projection/classifier head, prefix stripped."""
    out = {}
    for key, value in source.items():
        if (
            key.startswith(prefix)
            and not _listed_drop(key, drops)
            and not key[len(prefix) :].startswith(head)
        ):
            out[key[len(prefix) :]] = value
    return out


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Same keys, shapes, dtypes and values (large fixture tensors are constants: compare first and last)."""
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        got = actual[key]
        assert got.shape == value.shape and got.dtype == value.dtype, key
        if value.numel() <= 4096:
            assert torch.equal(got, value), key
        else:
            for corner in ((0,) * value.ndim, (-1,) * value.ndim):
                assert got[corner] == value[corner], key


def _assert_fits(extracted: ExtractedBackbone) -> None:
    """The module built from the extracted config has exactly the extracted keys and shapes."""
    with torch.device("meta"):
        model = build_extracted(extracted)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in extracted.state_dict.items()}


def test_every_fixture_file_has_a_case() -> None:
    stems = {path.stem for path in LAYOUTS.glob("*.json")}
    assert stems == set(CASES) | set(CMC_CASES) | set(HEAD_FILES)


def test_registry_names_and_aliases() -> None:
    for name in ("selfsup", "moco_official", "moco_eveningglow", "linear_head_eveningglow", "swav", "cmc"):
        assert name in FORMATS
    for name in ("cmc_insdis", "intl", "cwrgp_imagenet", "cwrgp_base", "torchvision", "lincls"):
        assert name in FORMATS
    assert get_format("moco_official_lincls").name == "lincls"
    assert get_format("cmc_moco").name == "cmc_insdis"
    assert get_format("cmc_eval").name == "cmc_linearprobing"
    with pytest.raises(ValueError, match=r"unknown checkpoint format 'dino'.*lincls"):
        get_format("dino")


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_backbone_import(name: str, saved) -> None:
    layout, case = _layout(name), CASES[name]
    path, original = saved(name)
    ckpt = load_checkpoint_file(path)
    assert [fmt for fmt, f in FORMATS.items() if f.detect(ckpt)] == [case.format]
    assert detect_format(ckpt) == case.format
    extracted = extract_backbone(ckpt)
    source = original if layout["flat"] else original[layout["state_dict_location"]]
    prefix, drops = layout["backbone_prefix"], _drop_patterns(layout)
    _assert_same(extracted.state_dict, _expected(source, prefix, drops, head="fc."))
    assert not any(_listed_drop(prefix + key, drops) for key in extracted.state_dict)
    assert extracted.format == case.format and extracted.branch == "online"
    assert extracted.config == case.config and extracted.stem_width is None
    if case.head is None:
        assert extracted.head is None
    else:
        assert tuple(extracted.head["weight"].shape) == case.head
        assert torch.equal(extracted.head["weight"], source[prefix + "fc.weight"])
        assert torch.equal(extract_head(ckpt)["bias"], source[prefix + "fc.bias"])
    _assert_fits(extracted)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.ema))
def test_fixture_ema_branch_only_when_asked(name: str, saved) -> None:
    path, original = saved(name)
    entry, prefix = CASES[name].ema
    ckpt = load_checkpoint_file(path)
    online = extract_backbone(ckpt)
    ema = extract_backbone(ckpt, branch="ema")
    _assert_same(ema.state_dict, _expected(original[entry], prefix, [], head="fc."))
    assert ema.branch == "ema" and sorted(ema.state_dict) == sorted(online.state_dict)
    for key in ("conv1.weight", "layer4.2.bn3.running_var"):
        assert not torch.equal(online.state_dict[key], ema.state_dict[key])


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c.ema))
def test_fixture_without_ema_refuses_ema_branch(name: str, saved) -> None:
    ckpt = load_checkpoint_file(saved(name)[0])
    with pytest.raises(BranchNotAvailableError):
        extract_backbone(ckpt, branch="ema")


@pytest.mark.parametrize("name", sorted(CMC_CASES))
def test_cmc_streams_and_views(name: str, saved) -> None:
    config, stem_width, head = CMC_CASES[name]
    path, original = saved(name)
    ckpt = load_checkpoint_file(path)  # opt is a pickled argparse.Namespace: allow-listed, not trusted
    assert isinstance(ckpt["opt"], argparse.Namespace)
    assert detect_format(ckpt) == "cmc"
    source = original["model"]
    expected = {}
    for view, stream, channels in (("l", "l_to_ab", 1), ("ab", "ab_to_l", 2)):
        extracted = extract_backbone(ckpt, view=view)
        part = _expected(source, f"encoder.module.{stream}.", [], head=head)
        _assert_same(extracted.state_dict, part)
        assert extracted.config == replace(config, in_channels=channels)
        assert extracted.stem_width == stem_width and extracted.view == view
        _assert_fits(extracted)
        expected.update({f"{stream}.{key}": value for key, value in part.items()})
    both = extract_backbone(ckpt)
    assert both.view == "both" and both.streams == ("l_to_ab", "ab_to_l")
    _assert_same(both.state_dict, expected)
    assert both.config == replace(config, in_channels=3) and both.stem_width == stem_width
    _assert_fits(both)
    if stem_width is not None:
        with pytest.raises(UnsupportedArchitectureError, match="stem has 64 channels"):
            infer_backbone_config(extract_backbone(ckpt, view="l").state_dict)


def _weight_key(state_dict: dict[str, torch.Tensor]) -> str:
    (key,) = [k for k in state_dict if k == "weight" or k.endswith(".weight")]
    return key


@pytest.mark.parametrize(
    ("name", "variant"),
    [("moco_eveningglow_linear", None)]
    + [(n, v) for n in ("cmc_linearprobing", "cmc_eval_moco_ins") for v in _layout(n)["variants"]],
)
def test_head_only_files(name: str, variant: str | None, saved) -> None:
    layout = _layout(name)
    path, original = saved(name, variant)
    ckpt = load_checkpoint_file(path)
    assert detect_format(ckpt) == HEAD_FILES[name]
    with pytest.raises(HeadOnlyCheckpointError, match="load_head"):
        extract_backbone(ckpt)
    with pytest.raises(HeadOnlyCheckpointError):
        load_backbone(path)
    linear = load_head(path)
    source = original if layout["flat"] else original["classifier"]
    weight = _weight_key(source)
    assert torch.equal(linear.weight, source[weight])
    assert torch.equal(linear.bias, source[weight[: -len("weight")] + "bias"])
    if variant is not None:
        assert linear.out_features == layout["variants"][variant]["n_label"]


def test_load_backbone_from_path_reports_provenance(saved) -> None:
    path, original = saved("moco_official_v2")
    model, report = load_backbone(path, arch="resnet50")
    assert report.format == "moco_official" and report.config == R50
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.head is None
    assert report.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(model.fc, nn.Identity) and model.feature_dim == 2048
    source = original["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, source["module.encoder_q." + key]), key


def test_lincls_load_keeps_classifier_as_head(saved) -> None:
    path, original = saved("moco_official_lincls")
    model, report = load_backbone(path)
    assert report.format == "lincls" and isinstance(model.fc, nn.Identity)
    assert torch.equal(report.head["weight"], original["state_dict"]["module.fc.weight"])
    assert torch.equal(
        model.layer4[2].bn3.running_var, original["state_dict"]["module.layer4.2.bn3.running_var"]
    )


def _swav_linear_checkpoint(features: int, use_bn: bool, classes: int = 10) -> dict[str, Any]:
    """What SwAV's ``eval_linear.py`` saves: the DDP-wrapped ``RegLog`` (spec ``swav_unmix.md`` §9)."""
    torch.manual_seed(0)
    reglog = nn.ModuleDict({"linear": nn.Linear(features, classes)})
    if use_bn:
        reglog["bn"] = nn.BatchNorm2d(features // 4)  # --global_pooling false: BN2d(2048) on a 2x2 map
    optimizer = torch.optim.SGD(reglog.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 100, eta_min=0)
    return {
        "epoch": 100,
        "state_dict": {f"module.{k}": v for k, v in reglog.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_acc": 75.25,
    }


@pytest.mark.parametrize(("features", "use_bn"), [(2048, False), (8192, True)])
def test_swav_linear_classifier_file_is_a_head(features: int, use_bn: bool, tmp_path: Path) -> None:
    original = _swav_linear_checkpoint(features, use_bn)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(original, path)
    ckpt = load_checkpoint_file(path)
    assert [name for name, fmt in FORMATS.items() if fmt.detect(ckpt)] == ["swav_linear"]
    assert detect_format(ckpt) == "swav_linear" and FORMATS["swav_linear"].kind == "head"
    assert get_format("swav_eval_linear").name == "swav_linear"
    with pytest.raises(HeadOnlyCheckpointError, match=r"swav_linear.*--pretrained.*load_head"):
        extract_backbone(ckpt)
    with pytest.raises(HeadOnlyCheckpointError, match="only a linear classifier"):
        load_backbone(path)
    linear = load_head(path)
    assert (linear.in_features, linear.out_features) == (features, 10)
    assert torch.equal(linear.weight, original["state_dict"]["module.linear.weight"])
    assert torch.equal(linear.bias, original["state_dict"]["module.linear.bias"])
    notes = " ".join(FORMATS["swav_linear"].run(ckpt).notes)
    assert "best top-1 75.25 % after epoch 100" in notes
    assert ("module.bn.*" in notes) == use_bn


def test_swav_linear_needs_only_classifier_keys() -> None:
    ckpt = _swav_linear_checkpoint(64, use_bn=False)
    trunk = {f"module.{k}": v for k, v in build_backbone("resnet18", width=8).state_dict().items()}
    mixed = {**ckpt, "state_dict": {**ckpt["state_dict"], **trunk}}
    assert not FORMATS["swav_linear"].detect(mixed)  # a classifier next to a trunk is not RegLog's file
    bare = {**ckpt, "state_dict": {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}}
    assert detect_format(bare) == "swav_linear"  # saved without the DDP wrapper
    assert load_head(bare).out_features == 10


def test_swav_semisup_file_keeps_trunk_and_head() -> None:
    """``eval_semisup.py`` saves the whole fine-tuned network: trunk + ``projection_head`` Linear [classes, D]."""
    torch.manual_seed(0)
    trunk = build_backbone("resnet18", width=8)
    head = nn.Linear(trunk.feature_dim, 10)
    state_dict = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    state_dict |= {f"module.projection_head.{k}": v for k, v in head.state_dict().items()}
    ckpt = {"epoch": 20, "state_dict": state_dict, "optimizer": {}, "scheduler": {}, "best_acc": (51.0, 77.5)}
    assert detect_format(ckpt) == "swav"
    model, report = load_backbone(ckpt)
    assert report.missing_keys == [] and torch.equal(report.head["weight"], head.weight)
    assert torch.equal(model.conv1.weight, trunk.conv1.weight)


def test_cmc_alexnet_loads_two_half_alexnets(saved) -> None:
    path, original = saved("cmc_alexnet")
    model, report = load_backbone(path, view="both")
    assert isinstance(model, TwoStreamBackbone) and report.view == "both"
    assert isinstance(model.l_to_ab, CMCAlexNetHalf) and model.l_to_ab.in_channels == 1
    assert model.ab_to_l.in_channels == 2 and model.feature_dim == 9216  # CMC's AlexNet classifier input
    source = original["model"]
    assert torch.equal(model.ab_to_l.fc7[0].weight, source["encoder.module.ab_to_l.fc7.0.weight"])
    assert torch.equal(
        model.l_to_ab.conv_block_1[0].weight, source["encoder.module.l_to_ab.conv_block_1.0.weight"]
    )


def test_cmc_half_width_resnet_loads(saved) -> None:
    path, original = saved("cmc_resnet50v1")
    model, report = load_backbone(path, view="l")
    assert report.stem_width == 64 and report.config == BackboneConfig("resnet50", width=32, in_channels=1)
    assert model.feature_dim == 1024 and model.conv1.weight.shape == (64, 1, 7, 7)
    source = original["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, source["encoder.module.l_to_ab." + key]), key


@pytest.fixture
def one_thread():
    """Tiny CPU forwards run faster (and steadier on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_cmc_two_stream_forward_concatenates_l_and_ab() -> None:
    torch.manual_seed(0)
    streams = {"l_to_ab": build_backbone("resnet18", width=8, in_channels=1), "ab_to_l": None}
    streams["ab_to_l"] = build_backbone("resnet18", width=8, in_channels=2)
    model_sd = {}
    for name, net in streams.items():
        net.fc = nn.Linear(net.feature_dim, 128)  # CMC's projection, to be dropped
        model_sd.update({f"encoder.module.{name}.{k}": v for k, v in net.state_dict().items()})
    ckpt = {"opt": argparse.Namespace(view="Lab"), "model": model_sd, "epoch": 1}
    model, report = load_backbone(ckpt)
    assert report.view == "both" and any("Lab" in note for note in report.notes)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.cat(
            [
                streams["l_to_ab"].eval().forward_features(x[:, :1]),
                streams["ab_to_l"].eval().forward_features(x[:, 1:]),
            ],
            dim=1,
        )
        assert torch.allclose(model(x), expected)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        model(x[:, :1])


@pytest.mark.usefixtures("one_thread")
def test_alexnet_half_shapes() -> None:
    net = CMCAlexNetHalf(in_channels=2).eval()
    with torch.no_grad():
        stages = net.forward_stages(torch.randn(1, 2, 224, 224))
    assert stages["conv5"].shape == (1, 128, 6, 6) and stages["fc7"].shape == (1, 2048)
    assert net(torch.randn(1, 2, 224, 224)).shape == (1, net.feature_dim) == (1, 4608)


def _selfsup_checkpoint(with_ema: bool = True) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    encoder = build_backbone("resnet18", width=8, cifar_stem=True)
    encoder.fc = nn.Linear(encoder.feature_dim, 16)
    momentum = copy.deepcopy(encoder)
    with torch.no_grad():
        for param in momentum.parameters():
            param.add_(1.0)

    def wrap(net: nn.Module) -> dict[str, torch.Tensor]:
        return {f"module.resnet.{k}": v for k, v in net.state_dict().items()}

    export = {"state_dict_location": "encoder", "prefix": "module.resnet.", "drop_prefixes": ["fc."]}
    if with_ema:
        export["ema_location"] = "momentum_encoder"
    ckpt = {
        "format": "selfsup",
        "format_version": 1,
        "project": "moco",
        "backbone": BackboneConfig("resnet18", width=8, cifar_stem=True).to_dict(),
        "export": export,
        "encoder": wrap(encoder),
        "momentum_encoder": wrap(momentum),
        "args": {"lr": 0.03, "moco_k": 4096},
        "epoch": 3,
        "global_step": 120,
    }
    return encoder, momentum, ckpt


@pytest.mark.usefixtures("one_thread")
def test_selfsup_round_trip(tmp_path: Path) -> None:
    encoder, momentum, ckpt = _selfsup_checkpoint()
    path = tmp_path / "ckpt_2.pkl"
    torch.save(ckpt, path)
    assert torch.load(path, weights_only=True)["format"] == "selfsup"
    model, report = load_backbone(path)
    assert report.format == "selfsup" and report.config == BackboneConfig("resnet18", 8, True, 3)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), encoder.eval().forward_features(x))
    ema_model, _ = load_backbone(path, branch="ema")
    for key, value in ema_model.state_dict().items():
        assert torch.equal(value, momentum.state_dict()[key]), key
    assert "fc.weight" not in extract_backbone(ckpt).state_dict


def test_selfsup_errors() -> None:
    _, _, ckpt = _selfsup_checkpoint(with_ema=False)
    with pytest.raises(BranchNotAvailableError, match="ema_location"):
        extract_backbone(ckpt, branch="ema")
    with pytest.raises(ValueError, match="format_version 2"):
        extract_backbone({**ckpt, "format_version": 2})


def test_unknown_checkpoint_lists_keys_and_suggests_checkpoint_key() -> None:
    student = build_backbone("resnet18", width=8).state_dict()
    ckpt = {"student": student, "epoch": 3, "lr": 0.1}
    with pytest.raises(UnknownCheckpointFormatError) as info:
        detect_format(ckpt)
    message = str(info.value)
    assert "'student', 'epoch', 'lr'" in message and "conv1.weight" in message
    assert "--checkpoint_key" in message and all(name in message for name in FORMATS)
    extracted = extract_backbone(ckpt, checkpoint_key="student")
    assert extracted.format == "torchvision" and extracted.config == BackboneConfig("resnet18", width=8)
    with pytest.raises(ValueError, match="checkpoint_key 'teacher' not found"):
        extract_backbone(ckpt, checkpoint_key="teacher")


def test_two_matching_formats_are_reported_as_ambiguous() -> None:
    plain = build_backbone("resnet18", width=8).state_dict()
    ckpt = {"state_dict": plain, "model": {f"encoder.module.{k}": v for k, v in plain.items()}}
    with pytest.raises(AmbiguousCheckpointFormatError, match="cmc_insdis, torchvision"):
        detect_format(ckpt)
    assert extract_backbone(ckpt, format="torchvision").config == BackboneConfig("resnet18", width=8)


def test_partial_load_fails_then_passes_with_allow_partial(saved) -> None:
    _, original = saved("cwrgp_base_resnet18_cifar10")
    state_dict = dict(original["state_dict"])
    del state_dict["model.module.layer3.1.bn2.weight"]
    state_dict["model.module.extra.weight"] = torch.zeros(3)
    ckpt = {**original, "state_dict": state_dict}
    with pytest.raises(CheckpointMismatchError, match=r"layer3\.1\.bn2\.weight[\s\S]*extra\.weight"):
        load_backbone(ckpt)
    model, report = load_backbone(ckpt, allow_partial=True)
    assert report.missing_keys == ["layer3.1.bn2.weight"] and report.unexpected_keys == ["extra.weight"]
    assert torch.equal(model.layer3[1].bn1.weight, state_dict["model.module.layer3.1.bn1.weight"])


def test_missing_num_batches_tracked_is_only_noted(saved) -> None:
    _, original = saved("cwrgp_base_resnet18_cifar10")
    state_dict = {k: v for k, v in original["state_dict"].items() if not k.endswith("num_batches_tracked")}
    _, report = load_backbone({**original, "state_dict": state_dict}, arch="resnet18")
    assert report.missing_keys == [] and any("num_batches_tracked" in note for note in report.notes)


def test_uninferable_weights_need_arch_and_allow_partial(saved) -> None:
    _, original = saved("cwrgp_base_resnet18_cifar10")
    state_dict = {k: v for k, v in original["state_dict"].items() if k != "model.module.conv1.weight"}
    ckpt = {**original, "state_dict": state_dict}
    with pytest.raises(UnsupportedArchitectureError, match="allow_partial"):
        load_backbone(ckpt)
    _, report = load_backbone(ckpt, arch="resnet18", allow_partial=True)
    assert report.missing_keys == ["conv1.weight"]


def test_arch_mismatch_is_a_clear_error(saved) -> None:
    ckpt = load_checkpoint_file(saved("swav_released_resnet50w2")[0])
    with pytest.raises(
        ArchitectureMismatchError, match=r"base width 128 in the weights, 64 for resnet50.*drop --arch"
    ):
        load_backbone(ckpt, arch="resnet50")
    with pytest.raises(ArchitectureMismatchError, match="Bottleneck"):
        load_backbone(ckpt, arch="resnet18")
    with pytest.raises(ValueError, match="unknown --arch 'vit_b16'"):
        load_backbone(ckpt, arch="vit_b16")


def test_view_and_branch_arguments_are_validated(saved) -> None:
    swav = load_checkpoint_file(saved("swav_train_resnet50")[0])
    with pytest.raises(ValueError, match="CMC two-stream checkpoints only"):
        extract_backbone(swav, view="l")
    with pytest.raises(ValueError, match="branch must be one of"):
        extract_backbone(swav, branch="teacher")
    with pytest.raises(ValueError, match="no trained linear classifier"):
        extract_head(swav)
    cmc = load_checkpoint_file(saved("cmc_resnet50v2")[0])
    with pytest.raises(ValueError, match="view must be one of"):
        extract_backbone(cmc, view="rgb")
    with pytest.raises(BranchNotAvailableError):
        extract_backbone(cmc, branch="ema")


def test_infer_backbone_config_from_shapes() -> None:
    with torch.device("meta"):
        r34 = build_backbone("resnet34").state_dict()
        narrow = build_backbone("resnet50", width=16, cifar_stem=True, in_channels=1).state_dict()
        r101 = torchvision.models.resnet101().state_dict()
        r152 = torchvision.models.resnet152().state_dict()
    assert infer_backbone_config(r34) == BackboneConfig("resnet34")
    assert infer_backbone_config(r101) == BackboneConfig("resnet101")
    assert infer_backbone_config(narrow) == BackboneConfig(
        "resnet50", width=16, cifar_stem=True, in_channels=1
    )
    with pytest.raises(UnsupportedArchitectureError, match=r"\[3, 8, 36, 3\]"):
        infer_backbone_config(r152)


def test_strip_prefix() -> None:
    state_dict = {"module.a.w": torch.zeros(1), "module.b": torch.ones(1), "queue": torch.zeros(2)}
    assert sorted(strip_prefix(state_dict, "module.")) == ["a.w", "b"]
    with pytest.raises(KeyError, match="encoder_q"):
        strip_prefix(state_dict, "encoder_q.")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_checkpoint_file(tmp_path / "nope.pth")
    with pytest.raises(IsADirectoryError):
        load_checkpoint_file(tmp_path)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth is empty"):
        load_checkpoint_file(empty)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"garbage\.pth is not a readable PyTorch checkpoint"):
        load_checkpoint_file(garbage)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(64)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.pth is not a readable PyTorch checkpoint"):
        load_backbone(truncated)
    bad_pickle = tmp_path / "bad_pickle.pth"
    bad_pickle.write_bytes(b"\x80\x02}q\x00garbage")
    with pytest.raises(ValueError, match=r"bad_pickle\.pth .*unpickling failed"):
        load_checkpoint_file(bad_pickle)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ValueError, match="holds a list; expected a dict"):
        load_checkpoint_file(listing)


def test_pickled_objects_need_trust(tmp_path: Path) -> None:
    path = tmp_path / "numpy.pth"
    torch.save({"acc": np.float64(0.5), "weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"numpy.*--trust"):
        load_checkpoint_file(path)
    assert load_checkpoint_file(path, trust=True)["acc"] == 0.5
    legacy = tmp_path / "legacy.pth"  # pre-1.6 (non-zip) serialisation, as old CMC checkpoints use
    torch.save({"opt": argparse.Namespace(view="Lab")}, legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint_file(legacy)["opt"].view == "Lab"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "view"), [("swav_train_resnet50w2", None), ("cmc_resnet50v3", "both")])
def test_wide_networks_load(name: str, view: str | None, saved) -> None:
    path, _ = saved(name)
    model, report = load_backbone(path, view=view)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert model.feature_dim == (4096 if view is None else 8192)
