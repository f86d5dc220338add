"""The config preset that converted files record and the launchers check (no Detectron2 needed)."""

from __future__ import annotations

import pickle

import pytest
import torch

from selfsup.shared.models.backbones import BackboneConfig, build_backbone
from selfsup.transfer.cli import main as convert_main
from selfsup.transfer.presets import (
    PIXEL_MEAN,
    PRESET_KEY,
    detectron2_preset,
    detectron2_preset_mismatches,
    detr_preset,
    read_preset,
)


def _cfg(**overrides) -> dict:
    """A nested dict shaped like the Detectron2 config keys the preset names (CfgNode is a dict too)."""
    cfg = {
        "INPUT": {"FORMAT": "RGB"},
        "MODEL": {
            "PIXEL_MEAN": [123.675, 116.280, 103.530],
            "PIXEL_STD": [58.395, 57.120, 57.375],
            "RESNETS": {
                "DEPTH": 50,
                "STRIDE_IN_1X1": False,
                "STEM_OUT_CHANNELS": 64,
                "NUM_GROUPS": 1,
                "WIDTH_PER_GROUP": 64,
                "RES2_OUT_CHANNELS": 256,
            },
        },
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return cfg


def test_detectron2_preset_by_hand():
    preset = detectron2_preset(BackboneConfig("resnet50"))
    assert preset == {
        "INPUT.FORMAT": "RGB",
        "MODEL.PIXEL_MEAN": PIXEL_MEAN,
        "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
        "MODEL.RESNETS.DEPTH": 50,
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
        "MODEL.RESNETS.NUM_GROUPS": 1,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    }
    assert detectron2_preset_mismatches(_cfg(), preset) == []


@pytest.mark.parametrize(("name", "width"), [("resnet50w2", 128), ("resnet50w4", 256), ("resnet50w5", 320)])
def test_wide_swav_resnets_need_their_widths(name, width):
    preset = detectron2_preset(BackboneConfig(name))
    assert preset["MODEL.RESNETS.STEM_OUT_CHANNELS"] == width  # SwAV's wide stems widen with the blocks
    assert preset["MODEL.RESNETS.WIDTH_PER_GROUP"] == width
    assert preset["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 4 * width
    assert detectron2_preset_mismatches(_cfg(), preset) == [
        f"MODEL.RESNETS.STEM_OUT_CHANNELS is 64, the weights need {width}",
        f"MODEL.RESNETS.WIDTH_PER_GROUP is 64, the weights need {width}",
        f"MODEL.RESNETS.RES2_OUT_CHANNELS is 256, the weights need {4 * width}",
    ]


def test_mismatches_name_the_key_and_both_values():
    preset = detectron2_preset(BackboneConfig("resnet50"))
    found = detectron2_preset_mismatches(
        _cfg(
            INPUT__FORMAT="BGR", MODEL__PIXEL_MEAN=[103.53, 116.28, 123.675], MODEL__PIXEL_STD=[1.0, 1.0, 1.0]
        ),
        preset,
    )
    assert found == [
        "INPUT.FORMAT is BGR, the weights need RGB",
        "MODEL.PIXEL_MEAN is [103.53, 116.28, 123.675], the weights need [123.675, 116.28, 103.53]",
        "MODEL.PIXEL_STD is [1.0, 1.0, 1.0], the weights need [58.395, 57.12, 57.375]",
    ]
    assert detectron2_preset_mismatches(_cfg(MODEL__PIXEL_MEAN=(123.675, 116.28, 103.53)), preset) == []
    cfg = _cfg()
    del cfg["MODEL"]["RESNETS"]["STRIDE_IN_1X1"]
    assert detectron2_preset_mismatches(cfg, preset) == [
        "MODEL.RESNETS.STRIDE_IN_1X1 is absent, the weights need False"
    ]


def test_detr_preset():
    assert detr_preset(BackboneConfig("resnet50"))["backbone"] == "resnet50"
    assert detr_preset(BackboneConfig("resnet18"))["backbone"] == "resnet18"


@pytest.mark.parametrize(
    ("target", "suffix"), [("detectron2", ".pkl"), ("detectron2", ".pth"), ("detr", ".pth")]
)
def test_converted_files_carry_their_preset(tmp_path, target, suffix):
    with torch.device("meta"):
        shapes = build_backbone(name="resnet50").state_dict()
    weights = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
    torch.save(weights, tmp_path / "r50.pth")
    out = tmp_path / f"out{suffix}"
    assert convert_main([target, "--checkpoint", str(tmp_path / "r50.pth"), "--output", str(out)]) == 0
    expected = (
        detr_preset(BackboneConfig("resnet50"))
        if target == "detr"
        else detectron2_preset(BackboneConfig("resnet50"))
    )
    assert read_preset(out) == expected
    if suffix == ".pkl":
        with out.open("rb") as handle:
            assert pickle.load(handle)[PRESET_KEY] == expected


def test_files_without_a_preset(tmp_path):
    with (tmp_path / "moco.pkl").open("wb") as handle:  # what MoCo's convert-pretrain-to-detectron2.py writes
        pickle.dump({"model": {}, "__author__": "MOCO", "matching_heuristics": True}, handle)
    assert read_preset(tmp_path / "moco.pkl") is None
    torch.save({"model": {}}, tmp_path / "plain.pth")
    assert read_preset(tmp_path / "plain.pth") is None
    with pytest.raises(FileNotFoundError, match=r"absent\.pkl"):
        read_preset(tmp_path / "absent.pkl")


def test_depth_follows_the_stages_and_unbuildable_ones_are_refused():
    from selfsup.transfer.convert import UnsupportedTargetError

    assert detectron2_preset(BackboneConfig("resnet101"))["MODEL.RESNETS.DEPTH"] == 101
    assert detectron2_preset(BackboneConfig("resnet34"))["MODEL.RESNETS.DEPTH"] == 34
    for name in ("resnet200", "resnet18_bottleneck"):
        with pytest.raises(UnsupportedTargetError, match="depths 18/34/50/101/152"):
            detectron2_preset(BackboneConfig(name))
    with pytest.raises(UnsupportedTargetError, match="pads by 2"):
        detectron2_preset(BackboneConfig("resnet50", stem_padding=2))
    assert detectron2_preset(BackboneConfig("resnet50", stem_padding=3))["MODEL.RESNETS.DEPTH"] == 50
