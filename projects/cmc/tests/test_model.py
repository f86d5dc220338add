"""The CMC / InsDis encoders: shapes per layer, parameter counts, the original checkpoint keys and shapes
(``shared/tests/fixtures/checkpoint_layouts/cmc_*.json``), normalisation, the L/ab split, and export to the
evaluation harness's loader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.cmc.model import (
    CMC_MODELS,
    INSDIS_MODELS,
    MODELS,
    CMCAlexNet,
    CMCResNet,
    InsResNet,
    ResNetEncoder,
    build_cmc_model,
    l2_normalize,
)
from selfsup.shared.checkpoints.backbone_layout import BackboneLayout, infer_backbone_layout, strip_prefix
from selfsup.shared.checkpoints.formats import load_backbone
from selfsup.shared.models.alexnet import CMCAlexNetHalf
from selfsup.shared.models.backbones import BackboneConfig, ResNet, build_backbone_from_config
from selfsup.shared.models.two_stream import TwoStreamBackbone

LAYOUTS = Path(__file__).resolve().parents[3] / "shared" / "tests" / "fixtures" / "checkpoint_layouts"

#: Trainable parameters per ``--model`` (both streams for CMC). resnet50v1 is the README's
#: "2xResNet50half (12 M params)"; alexnet, resnet50v1-v3 and resnet50 equal the sums over the fixtures.
PARAMETERS = {
    "alexnet": 29_687_760,
    "resnet18v1": 5_686_336,
    "resnet18v2": 22_474_944,
    "resnet18v3": 89_439_424,
    "resnet50v1": 12_058_048,
    "resnet50v2": 47_531_200,
    "resnet50v3": 188_752_576,
    "resnet101v1": 21_580_224,
    "resnet101v2": 85_515_456,
    "resnet101v3": 340_480_704,
    "resnet50": 23_770_304,
    "resnet50x2": 94_380_992,
    "resnet50x4": 376_152_512,
    "resnet18": 11_242_176,
    "resnet18x0.25": 733_728,  # ours (the cmc-moco demo's encoder)
}
FIXTURES = {
    "cmc_alexnet": "alexnet",
    "cmc_resnet50v1": "resnet50v1",
    "cmc_resnet50v2": "resnet50v2",
    "cmc_resnet50v3": "resnet50v3",
    "cmc_insdis_resnet50": "resnet50",
    "cmc_moco_resnet50": "resnet50",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fixture(name: str) -> dict:
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def _on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_cmc_model(name, **kwargs)


# ------------------------------------------------------------------------------------------ registry


def test_registry_choices_and_errors():
    expected = ("alexnet", *(f"resnet{depth}v{v}" for depth in (18, 50, 101) for v in (1, 2, 3)))
    assert expected == CMC_MODELS
    assert INSDIS_MODELS == ("resnet50", "resnet50x2", "resnet50x4", "resnet18", "resnet18x0.25")
    assert set(MODELS) == set(CMC_MODELS) | set(INSDIS_MODELS)
    with pytest.raises(
        ValueError,
        match=r"unknown --model 'resnet34v1'; choices: alexnet, resnet18v1, .*resnet50x4, resnet18, resnet18x0.25",
    ):
        build_cmc_model("resnet34v1")
    with pytest.raises(ValueError, match="alexnet has no CIFAR stem"):
        build_cmc_model("alexnet", cifar_stem=True)
    with pytest.raises(ValueError, match="--feat_dim must be a positive"):
        build_cmc_model("resnet18", feat_dim=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_types_widths_and_parameter_counts(name: str):
    model = _on_meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    width = {"v1": 0.5, "v2": 1.0, "v3": 2.0, "x2": 2.0, "x4": 4.0, "25": 0.25}.get(name[-2:], 1.0)
    if name == "alexnet":
        assert isinstance(model, CMCAlexNet)
        streams = [model.l_to_ab, model.ab_to_l]
    elif name in INSDIS_MODELS:
        assert isinstance(model, InsResNet)
        streams = [model]
    else:
        assert isinstance(model, CMCResNet)
        streams = [model.l_to_ab, model.ab_to_l]
    for stream, in_channels in zip(streams, (1, 2) if len(streams) == 2 else (3,)):
        if isinstance(stream, ResNetEncoder):
            base = int(64 * width)
            assert stream.conv1.weight.shape == (64, in_channels, 7, 7)  # 64-channel stem at every width
            assert stream.layer1[0].conv1.weight.shape[0] == base
            assert stream.fc.weight.shape == (128, stream.feature_dim)
            expansion = 4 if "resnet18" not in name else 1
            assert stream.feature_dim == base * 8 * expansion
        else:
            assert stream.conv_block_1[0].weight.shape == (48, in_channels, 11, 11)
            assert stream.fc8[0].weight.shape == (128, 2048)


def test_resnet50v1_is_the_readmes_12m_parameter_model():
    assert round(PARAMETERS["resnet50v1"] / 1e6) == 12


# ------------------------------------------------------------------------- original checkpoint keys


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_keys_and_shapes_equal_the_original_checkpoint(fixture: str):
    layout = _fixture(fixture)
    model = _on_meta(FIXTURES[fixture])
    got = [(key, list(value.shape)) for key, value in model.original_state_dict().items()]
    expected = [(key, entry["shape"]) for key, entry in layout["state_dict"].items()]
    assert got == expected  # names, shapes and order
    dtypes = {
        key: str(value.dtype).removeprefix("torch.") for key, value in model.original_state_dict().items()
    }
    assert dtypes == {key: entry["dtype"] for key, entry in layout["state_dict"].items()}
    fixture_parameters = sum(
        math.prod(e["shape"]) for e in layout["state_dict"].values() if not e.get("buffer")
    )
    assert fixture_parameters == PARAMETERS[FIXTURES[fixture]]


@pytest.mark.parametrize(("name", "base"), [("resnet50x2", 128), ("resnet50x4", 256)])
def test_wide_insdis_keeps_a_64_channel_stem(name: str, base: int):
    state = _on_meta(name).original_state_dict()
    assert state["encoder.module.conv1.weight"].shape == (64, 3, 7, 7)
    assert state["encoder.module.layer1.0.conv1.weight"].shape == (base, 64, 1, 1)
    assert state["encoder.module.layer1.0.downsample.0.weight"].shape == (base * 4, 64, 1, 1)
    assert state["encoder.module.fc.weight"].shape == (128, base * 32)


def test_load_original_state_dict_round_trip():
    torch.manual_seed(0)
    source, target = (
        build_cmc_model("resnet18v1", cifar_stem=True),
        build_cmc_model("resnet18v1", cifar_stem=True),
    )
    target.load_original_state_dict(source.original_state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    with pytest.raises(KeyError, match=r"encoder\.module\."):
        target.load_original_state_dict(source.state_dict())


# ------------------------------------------------------------------------------------- forward shapes


def test_alexnet_layers_at_224():
    torch.manual_seed(0)
    model = CMCAlexNet(feat_dim=16).eval()
    x = torch.randn(2, 3, 224, 224)
    expected = {1: (48, 27, 27), 2: (128, 13, 13), 3: (192, 13, 13), 4: (192, 13, 13), 5: (128, 6, 6)}
    expected |= {6: (2048,), 7: (2048,), 8: (16,)}
    with torch.no_grad():
        for layer, shape in expected.items():
            feat_l, feat_ab = model(x, layer)
            assert feat_l.shape == feat_ab.shape == (2, *shape), layer
        feat_l, feat_ab = model(x)
        assert feat_l.shape == (2, 16)
        fc7_l, _ = model(x, 7)
        assert torch.allclose(feat_l, l2_normalize(model.l_to_ab.fc8(fc7_l)))
        conv5_l, _ = model(x, 5)
        assert torch.equal(conv5_l.flatten(1), model.l_to_ab.forward_features(x[:, :1]))


def test_alexnet_conv_layers_at_any_size_fc_layers_need_224():
    model = CMCAlexNet().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x, 1)[0].shape == (2, 48, 7, 7)
        assert model(x, 5)[1].shape == (2, 128, 1, 1)
        with pytest.raises(ValueError, match="224x224"):
            model(x, 6)


@pytest.mark.parametrize(
    ("name", "cifar_stem", "side", "channels"),
    [
        ("resnet18v1", False, 64, (32, 64, 128, 256)),  # BasicBlock: pooled 256 per view
        ("resnet18v2", True, 16, (64, 128, 256, 512)),
        ("resnet50v1", False, 64, (128, 256, 512, 1024)),  # Bottleneck width 32: pooled 1024
    ],
)
def test_cmc_resnet_layers(name: str, cifar_stem: bool, side: int, channels: tuple[int, ...]):
    torch.manual_seed(0)
    model = build_cmc_model(name, cifar_stem=cifar_stem, feat_dim=24).eval()
    x = torch.randn(2, 3, side, side)
    stem_side = side if cifar_stem else side // 4
    sides = [stem_side, stem_side // 2, stem_side // 4, stem_side // 8]
    expected = {1: (64, stem_side, stem_side)}
    expected |= {layer: (c, s, s) for layer, c, s in zip(range(2, 6), channels, sides)}
    expected |= {6: (channels[-1],), 7: (24,)}
    with torch.no_grad():
        for layer, shape in expected.items():
            feat_l, feat_ab = model(x, layer)
            assert feat_l.shape == feat_ab.shape == (2, *shape), layer
        pooled_l, pooled_ab = model(x, 6)
        feat_l, feat_ab = model(x)
        assert torch.allclose(feat_l, l2_normalize(model.l_to_ab.fc(pooled_l)))
        assert torch.allclose(pooled_ab, model.ab_to_l.forward_features(x[:, 1:]))
        assert torch.allclose(pooled_ab, model.ab_to_l(x[:, 1:], 5).mean((2, 3)))


@pytest.mark.parametrize(("name", "cifar_stem", "side"), [("resnet18", True, 16), ("resnet50", False, 64)])
def test_insdis_resnet_layers(name: str, cifar_stem: bool, side: int):
    torch.manual_seed(0)
    model = build_cmc_model(name, cifar_stem=cifar_stem).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert model(x, 1).shape[1:2] == (64,)
        assert model(x, 6).shape == (2, model.feature_dim)
        out = model(x)
    assert out.shape == (2, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    with pytest.raises(ValueError, match=r"layer must be an integer in 1\.\.7, got 0"):
        model(x, 0)
    with pytest.raises(ValueError, match=r"1\.\.8, got 9"):
        CMCAlexNet()(torch.randn(1, 3, 64, 64), 9)


# ------------------------------------------------------------------------- normalisation and the split


def test_l2_normalize_is_the_originals_without_eps():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    assert torch.equal(out[0], torch.tensor([0.6, 0.8]))
    assert torch.isnan(out[1]).all()  # x / ||x|| with no epsilon, as Normalize(2)


@pytest.mark.parametrize("name", ["alexnet", "resnet18v2"])
def test_embeddings_are_unit_norm_and_channels_split_one_two(name: str):
    torch.manual_seed(0)
    model = build_cmc_model(name).eval()
    side = 224 if name == "alexnet" else 32
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        feat_l, feat_ab = model(x)
        for feat in (feat_l, feat_ab):
            assert torch.allclose(feat.norm(dim=1), torch.ones(2), atol=1e-6)
        assert torch.equal(feat_l, model.l_to_ab(x[:, :1]))
        assert torch.equal(feat_ab, model.ab_to_l(x[:, 1:]))
        y = x.clone()
        y[:, 1:] = torch.randn(2, 2, side, side)  # new ab, same L
        new_l, new_ab = model(y)
    assert torch.equal(new_l, feat_l) and not torch.allclose(new_ab, feat_ab)
    with pytest.raises(ValueError, match=r"split \[1, 2\]"):
        model(x[:, :2])


def test_resnet_initialisation_follows_the_original():
    torch.manual_seed(0)
    model = build_cmc_model("resnet50v2")
    conv = model.l_to_ab.layer4[0].conv2  # 3x3, 512 out: std sqrt(2 / (9 * 512))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 512)), rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3
    bn = model.ab_to_l.layer2[1].bn3
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(
        bn.bias, torch.zeros_like(bn.bias)
    )
    fc = model.l_to_ab.fc  # PyTorch's default: U(-1/sqrt(in), 1/sqrt(in))
    bound = 1 / math.sqrt(fc.in_features)
    assert fc.weight.abs().max().item() <= bound and fc.weight.abs().max().item() > 0.9 * bound


# ----------------------------------------------------------------------- export to the evaluation harness


def _save_original(model: nn.Module, path: Path) -> Path:
    torch.save({"model": model.original_state_dict(), "opt": {"model": "x", "view": "Lab"}, "epoch": 1}, path)
    return path


def test_cmc_resnet_checkpoint_loads_in_the_harness(tmp_path: Path):
    torch.manual_seed(0)
    model = build_cmc_model("resnet50v1").eval()
    backbone, report = load_backbone(_save_original(model, tmp_path / "ckpt_epoch_1.pth"))
    assert report.format == "cmc" and report.view == "both" and report.stem_width == 64
    assert report.config == BackboneConfig("resnet50", width=32, in_channels=3)
    assert isinstance(backbone, TwoStreamBackbone) and backbone.feature_dim == 2048
    assert report.missing_keys == [] and report.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x), torch.cat(model(x, 6), dim=1))


def test_cmc_alexnet_checkpoint_loads_in_the_harness(tmp_path: Path):
    torch.manual_seed(0)
    model = build_cmc_model("alexnet").eval()
    backbone, report = load_backbone(_save_original(model, tmp_path / "alexnet.pth"), view="ab")
    assert report.format == "cmc" and report.view == "ab"
    assert isinstance(backbone, CMCAlexNetHalf) and backbone.in_channels == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x[:, 1:]), model(x, 5)[1].flatten(1))
    both, report = load_backbone(tmp_path / "alexnet.pth")
    assert isinstance(both, TwoStreamBackbone) and both.feature_dim == 9216


def test_insdis_checkpoint_loads_in_the_harness(tmp_path: Path):
    torch.manual_seed(0)
    model = build_cmc_model("resnet18", cifar_stem=True).eval()
    backbone, report = load_backbone(_save_original(model, tmp_path / "insdis.pth"))
    assert report.format == "cmc_insdis" and report.stem_width is None
    assert report.config == BackboneConfig("resnet18", cifar_stem=True) == model.backbone_config()
    assert isinstance(backbone, ResNet) and isinstance(backbone.fc, nn.Identity)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x), model(x, 6))


@pytest.mark.parametrize(
    ("name", "stream", "config"),
    [
        ("resnet50v1", "l_to_ab", BackboneConfig("resnet50", width=32, in_channels=1, stem_width=64)),
        ("resnet50v3", "ab_to_l", BackboneConfig("resnet50w2", in_channels=2, stem_width=64)),
        ("resnet18v2", "l_to_ab", BackboneConfig("resnet18", in_channels=1)),
        ("resnet50x4", None, BackboneConfig("resnet50w4", stem_width=64)),
    ],
)
def test_backbone_config_matches_the_harness_inference(name: str, stream: str | None, config: BackboneConfig):
    model = _on_meta(name)
    encoder = getattr(model, stream) if stream else model
    assert encoder.backbone_config() == config
    trunk = {k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    assert infer_backbone_layout(trunk).to_config() == config
    with torch.device("meta"):
        rebuilt = build_backbone_from_config(config).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in trunk.items()}


def test_resnet101_streams_have_a_harness_config():
    encoder = _on_meta("resnet101v1").l_to_ab
    config = BackboneConfig("resnet101", width=32, in_channels=1, stem_width=64)
    assert encoder.backbone_config() == config
    trunk = {k: v for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    assert infer_backbone_layout(trunk).to_config() == config


def test_stem_width_config_round_trips_through_a_selfsup_checkpoint(tmp_path: Path):
    """An InsDis encoder of width 2 (64-channel stem, 128-plane stages) exported in the selfsup format."""
    torch.manual_seed(0)
    model = InsResNet("resnet18", width=2.0, cifar_stem=True).eval()
    config = model.backbone_config()
    assert config.to_dict()["stem_width"] == 64 and "stem_width" not in BackboneConfig().to_dict()
    ckpt = {
        "format": "selfsup",
        "format_version": 1,
        "project": "cmc",
        "backbone": config.to_dict(),
        "export": {"state_dict_location": "model", "prefix": "encoder.module.", "drop_prefixes": ["fc."]},
        "model": model.original_state_dict(),
        "epoch": 1,
    }
    torch.save(ckpt, tmp_path / "selfsup.pth")
    backbone, report = load_backbone(tmp_path / "selfsup.pth")
    assert report.format == "selfsup" and report.config == config and report.stem_width == 64
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x), model(x, 6))
    assert BackboneLayout(config).stem_width == 64
    assert strip_prefix(ckpt["model"], "encoder.module.").keys() == model.state_dict().keys()
