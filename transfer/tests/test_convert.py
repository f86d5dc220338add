"""Key mapping for Detectron2 / DETR against the layouts recorded from the originals, and the CLI end to end.

The fixture files list the model-side ResNet keys of a Detectron2 C4 and FPN model and of DETR (recorded from
models built at pinned commits); Detectron2's loader is reproduced here as documented: a model key takes the
longest checkpoint key that equals it or is a ``"." + key`` suffix of it, and one checkpoint key may fill only one
model key.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from selfsup.shared.models.backbones import BackboneConfig, build_backbone
from selfsup.transfer.cli import main
from selfsup.transfer.convert import (
    DETR_BACKBONE_PREFIX,
    UnsupportedTargetError,
    check_detr_backbone,
    detectron2_key,
    detectron2_resnet_options,
    to_detectron2,
    to_detr,
)

FIXTURES = Path(__file__).parent / "fixtures"
C4 = "detectron2_faster_rcnn_R_50_C4_voc_resnet.json"
FPN = "detectron2_mask_rcnn_R_50_FPN_1x_resnet.json"
DETR = "detr_backbone_resnet50.json"
#: Non-ResNet keys of the same Detectron2 models; no converted key may fill them.
DECOYS = [
    "backbone.fpn_lateral2.weight",
    "backbone.fpn_output5.bias",
    "proposal_generator.rpn_head.conv.weight",
    "proposal_generator.rpn_head.objectness_logits.weight",
    "roi_heads.box_head.fc1.weight",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.mask_head.mask_fcn1.weight",
    "roi_heads.mask_head.predictor.weight",
]


def _layout(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _random_like(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A distinct random value for every entry (so a swapped key changes a value), built without init cost."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for index, (key, value) in enumerate(module.state_dict().items()):
        if value.dtype == torch.int64:
            out[key] = torch.tensor(index, dtype=torch.int64)
        else:
            out[key] = torch.randn(value.shape, generator=generator)
    return out


def _torchvision_weights(factory, seed: int) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = factory()
    return _random_like(model, seed)


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    """Random torchvision resnet50 weights including ``fc``."""
    return _torchvision_weights(resnet50, seed=0)


@pytest.fixture(scope="module")
def r50_file(r50, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "torchvision_r50.pth"
    torch.save(r50, path)
    return path


@pytest.fixture(scope="module")
def selfsup_file(r50, tmp_path_factory) -> Path:
    """A selfsup MoCo checkpoint whose momentum encoder is the online one plus 1."""
    prefix = "module.resnet."
    ckpt = {
        "format": "selfsup",
        "format_version": 1,
        "project": "moco",
        "backbone": {"name": "resnet50", "width": None, "cifar_stem": False, "in_channels": 3},
        "export": {
            "state_dict_location": "encoder",
            "prefix": prefix,
            "drop_prefixes": ["fc."],
            "ema_location": "momentum_encoder",
        },
        "encoder": {prefix + k: v for k, v in r50.items()},
        "momentum_encoder": {prefix + k: v + 1 for k, v in r50.items()},
    }
    path = tmp_path_factory.mktemp("ckpt") / "selfsup_moco.pth"
    torch.save(ckpt, path)
    return path


def _detectron2_match(model_keys: list[str], ckpt_keys: list[str]) -> dict[str, str]:
    """Detectron2's documented matching heuristic: a model key takes the longest checkpoint key that equals it or
    is a complete ``"." + key`` suffix of it; a checkpoint key may fill only one model key."""
    available = set(ckpt_keys)
    matches: dict[str, str] = {}
    for model_key in model_keys:
        parts = model_key.split(".")
        suffixes = [".".join(parts[i:]) for i in range(len(parts))]  # longest first, the key itself included
        found = next((suffix for suffix in suffixes if suffix in available), None)
        if found is not None:
            matches[model_key] = found
    used = list(matches.values())
    assert len(used) == len(set(used)), "a checkpoint key fills several model keys"
    return matches


# ------------------------------------------------------------------------------------------ key mapping


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_var", "stem.conv1.norm.running_var"),
        ("layer1.0.conv3.weight", "res2.0.conv3.weight"),
        ("layer2.3.bn2.bias", "res3.3.conv2.norm.bias"),
        ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
        ("layer4.0.downsample.1.num_batches_tracked", "res5.0.shortcut.norm.num_batches_tracked"),
        ("fc.weight", None),
        ("fc.2.bias", None),
    ],
)
def test_detectron2_key_by_hand(key, expected):
    assert detectron2_key(key) == expected


@pytest.mark.parametrize(
    "key",
    ["module.conv1.weight", "layer5.0.conv1.weight", "layer1.0.conv4.weight", "layer1.0.downsample.2.weight",
     "layer1.0.downsample.0.bias", "projection_head.0.weight", "prototypes.weight"],
)  # fmt: skip
def test_detectron2_key_rejects_foreign_keys(key):
    with pytest.raises(ValueError, match="not a torchvision ResNet key"):
        detectron2_key(key)
    with pytest.raises(ValueError, match="not a torchvision ResNet key"):
        to_detr({"conv1.weight": torch.zeros(1), key: torch.zeros(1)})


@pytest.mark.parametrize("name", [C4, FPN])
def test_detectron2_layouts_filled_exactly_once(r50, name):
    model_keys = _layout(name)["state_dict"]
    converted = to_detectron2(r50)
    assert not any(k.startswith("fc") for k in converted)
    matches = _detectron2_match([*model_keys, *DECOYS], list(converted))
    assert set(matches) == set(model_keys)  # every listed key, and no decoy
    assert sorted(matches.values()) == sorted(converted)  # every converted key used, once
    for model_key, spec in model_keys.items():
        value = converted[matches[model_key]]
        assert list(value.shape) == spec["shape"], model_key
        assert value.dtype == getattr(torch, spec["dtype"]), model_key
        assert torch.equal(value, r50[spec["torchvision_key"]]), model_key


def test_c4_res5_goes_to_roi_heads(r50):
    matches = _detectron2_match(list(_layout(C4)["state_dict"]), list(to_detectron2(r50)))
    assert matches["roi_heads.res5.2.conv3.norm.running_mean"] == "res5.2.conv3.norm.running_mean"
    assert matches["backbone.res4.5.conv1.weight"] == "res4.5.conv1.weight"
    assert matches["backbone.stem.conv1.norm.bias"] == "stem.conv1.norm.bias"


def test_basic_block_maps_to_detectron2_basic_block_names():
    weights = _torchvision_weights(resnet18, seed=1)
    converted = to_detectron2(weights)
    assert len(converted) == len(weights) - 2  # all but fc.weight / fc.bias
    norm = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected_res3_0 = {"res3.0.conv1.weight", "res3.0.conv2.weight", "res3.0.shortcut.weight"}
    expected_res3_0 |= {
        f"res3.0.{part}.norm.{field}" for part in ("conv1", "conv2", "shortcut") for field in norm
    }
    assert {k for k in converted if k.startswith("res3.0.")} == expected_res3_0
    assert not any("shortcut" in k for k in converted if k.startswith("res2."))  # 64 -> 64, stride 1
    assert not any("conv3" in k for k in converted)
    assert torch.equal(converted["res5.1.conv2.norm.running_var"], weights["layer4.1.bn2.running_var"])


def test_detr_layout_keys_and_shapes(r50):
    layout = _layout(DETR)
    assert layout["backbone_prefix"] == DETR_BACKBONE_PREFIX
    converted = to_detr(r50)
    assert set(converted) == set(layout["state_dict"])
    for key, spec in layout["state_dict"].items():
        assert list(converted[key].shape) == spec["shape"], key
        assert torch.equal(converted[key], r50[key.removeprefix(DETR_BACKBONE_PREFIX)]), key


def test_detr_body_loads_strictly(r50):
    """DETR's body is IntermediateLayerGetter(resnet50(norm_layer=FrozenBatchNorm2d)) up to layer4."""
    with torch.device("meta"):
        body = IntermediateLayerGetter(resnet50(norm_layer=FrozenBatchNorm2d), return_layers={"layer4": "0"})
    body.load_state_dict(to_detr(r50, prefix=""), strict=True, assign=True)
    assert torch.equal(body.layer3[2].bn1.running_mean, r50["layer3.2.bn1.running_mean"])


def test_classifier_only_is_rejected():
    with pytest.raises(ValueError, match="no backbone weights"):
        to_detectron2({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)})


# ------------------------------------------------------------------------------------- target checks


def test_detectron2_options_by_hand():
    assert detectron2_resnet_options(BackboneConfig("resnet50")) == {
        "DEPTH": 50, "STRIDE_IN_1X1": False, "STEM_OUT_CHANNELS": 64, "NUM_GROUPS": 1,
        "WIDTH_PER_GROUP": 64, "RES2_OUT_CHANNELS": 256,
    }  # fmt: skip
    wide = detectron2_resnet_options(BackboneConfig("resnet50w2"))
    assert (wide["STEM_OUT_CHANNELS"], wide["WIDTH_PER_GROUP"], wide["RES2_OUT_CHANNELS"]) == (128, 128, 512)
    small = detectron2_resnet_options(BackboneConfig("resnet18"))
    assert small == {"DEPTH": 18, "STRIDE_IN_1X1": False, "STEM_OUT_CHANNELS": 64, "RES2_OUT_CHANNELS": 64}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (BackboneConfig("resnet18", width=32), "RES2_OUT_CHANNELS 64"),
        (BackboneConfig("resnet50", cifar_stem=True), "CIFAR stem"),
        (BackboneConfig("resnet50", in_channels=1), "1-channel"),
    ],
)
def test_detectron2_rejects_unbuildable(config, message):
    with pytest.raises(UnsupportedTargetError, match=message):
        detectron2_resnet_options(config)


def test_detr_backbone_names():
    assert check_detr_backbone(BackboneConfig("resnet50")) == "resnet50"
    assert check_detr_backbone(BackboneConfig("resnet34")) == "resnet34"
    for config in (BackboneConfig("resnet50w2"), BackboneConfig("resnet50", width=32)):
        with pytest.raises(UnsupportedTargetError, match="DETR"):
            check_detr_backbone(config)


# ---------------------------------------------------------------------------------------------- CLI


def _run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def _fail(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_selfsup_to_detectron2_pkl(selfsup_file, r50, tmp_path, capsys):
    out = tmp_path / "r50.pkl"
    stdout = _run(capsys, "detectron2", "--checkpoint", str(selfsup_file), "--output", str(out))
    with out.open("rb") as handle:
        saved = pickle.load(handle)  # a plain pickle: no torch needed to read it
    assert saved["__author__"] == "selfsup" and saved["matching_heuristics"] is True
    assert saved["selfsup_conversion"]["source_format"] == "selfsup"
    expected = to_detectron2(r50)
    assert set(saved["model"]) == set(expected)
    for key, value in saved["model"].items():
        assert torch.equal(torch.from_numpy(value), expected[key]), key
    for line in ("MODEL.RESNETS.STRIDE_IN_1X1 False", "INPUT.FORMAT RGB", f"MODEL.WEIGHTS {out}"):
        assert line in stdout


def test_cli_selfsup_ema_to_detr(selfsup_file, r50, tmp_path, capsys):
    out = tmp_path / "detr.pth"
    stdout = _run(capsys, "detr", "--checkpoint", str(selfsup_file), "--output", str(out), "--use_ema")
    saved = torch.load(out, weights_only=True)
    assert set(saved["model"]) == set(_layout(DETR)["state_dict"])
    key = DETR_BACKBONE_PREFIX + "layer2.1.conv2.weight"
    assert torch.equal(saved["model"][key], r50["layer2.1.conv2.weight"] + 1)  # the momentum encoder
    assert saved["selfsup_conversion"]["branch"] == "ema"
    assert "--backbone resnet50" in stdout


def test_cli_plain_torchvision_to_detectron2_pth(r50_file, r50, tmp_path, capsys):
    out = tmp_path / "out.pth"
    stdout = _run(
        capsys, "detectron2", "--checkpoint", str(r50_file), "--output", str(out), "--arch", "resnet50"
    )
    assert "format torchvision" in stdout
    saved = torch.load(out, weights_only=True)
    assert saved["__author__"] == "selfsup" and saved["matching_heuristics"] is True
    expected = to_detectron2(r50)
    assert set(saved["model"]) == set(expected)
    assert all(torch.equal(saved["model"][k], v) for k, v in expected.items())


def _tiny_file(tmp_path: Path, **config) -> tuple[Path, dict[str, torch.Tensor]]:
    """A plain state dict of a tiny-width selfsup ResNet."""
    weights = _random_like(build_backbone(**config), seed=2)
    path = tmp_path / "tiny.pth"
    torch.save(weights, path)
    return path, weights


def test_cli_width_settings_and_detr_rejection(tmp_path, capsys):
    path, _ = _tiny_file(tmp_path, name="resnet50", width=8)
    stdout = _run(capsys, "detectron2", "--checkpoint", str(path), "--output", str(tmp_path / "w8.pkl"))
    assert "MODEL.RESNETS.WIDTH_PER_GROUP 8" in stdout and "MODEL.RESNETS.RES2_OUT_CHANNELS 32" in stdout
    err = _fail(capsys, "detr", "--checkpoint", str(path), "--output", str(tmp_path / "w8.pth"))
    assert "base width 8" in err
    assert not (tmp_path / "w8.pth").exists()


def test_cli_partial_weights(tmp_path, capsys):
    path, weights = _tiny_file(tmp_path, name="resnet50", width=8)
    del weights["layer4.1.conv2.weight"]
    torch.save(weights, path)
    out = tmp_path / "partial.pkl"
    assert "--allow_partial" in _fail(capsys, "detectron2", "--checkpoint", str(path), "--output", str(out))
    stdout = _run(capsys, "detectron2", "--checkpoint", str(path), "--output", str(out), "--allow_partial")
    assert "1 keys missing" in stdout
    with out.open("rb") as handle:
        model = pickle.load(handle)["model"]
    assert "res5.1.conv2.weight" not in model and "res5.1.conv3.weight" in model


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "OUT/x.onnx"], "--output"),
        (["--arch", "resnet18"], "--arch resnet18 does not match"),
        (["--checkpoint_key", "nope"], "checkpoint_key 'nope'"),
        (["--format", "nope"], "--format"),
    ],
)
def test_cli_errors_name_the_flag(r50_file, tmp_path, capsys, extra, message):
    argv = ["detectron2", "--checkpoint", str(r50_file), "--output", str(tmp_path / "out.pkl")]
    argv += [arg.replace("OUT", str(tmp_path)) for arg in extra]
    assert message in _fail(capsys, *argv)


def test_cli_missing_checkpoint_ema_and_cifar_stem(r50_file, tmp_path, capsys):
    err = _fail(
        capsys, "detr", "--checkpoint", str(tmp_path / "absent.pth"), "--output", str(tmp_path / "o.pth")
    )
    assert "--checkpoint" in err and "not found" in err
    err = _fail(
        capsys, "detr", "--checkpoint", str(r50_file), "--output", str(tmp_path / "o.pth"), "--use_ema"
    )
    assert "--use_ema" in err
    path, _ = _tiny_file(tmp_path, name="resnet18", width=8, cifar_stem=True)
    assert "CIFAR stem" in _fail(
        capsys, "detectron2", "--checkpoint", str(path), "--output", str(tmp_path / "c.pkl")
    )


# ------------------------------------------------------------------------------ with real detectron2


@pytest.mark.detectron2
def test_real_detectron2_checkpointer_fills_fpn_backbone(detectron2, r50_file, r50, tmp_path, capsys):
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    out = tmp_path / "r50.pkl"
    _run(capsys, "detectron2", "--checkpoint", str(r50_file), "--output", str(out))
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # frozen stages drop num_batches_tracked in some detectron2 versions
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(out))
    loaded = model.state_dict()
    for key, spec in _layout(FPN)["state_dict"].items():
        assert torch.equal(loaded[key], r50[spec["torchvision_key"]]), key
