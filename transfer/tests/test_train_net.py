"""``selfsup-transfer`` parts that need no Detectron2: config lookup and the message when Detectron2 is absent."""

from __future__ import annotations

import sys

import pytest

from selfsup.transfer.train_net import CONFIG_DIR, main, resolve_config, shipped_configs


def test_shipped_configs_resolve_by_name_or_path(tmp_path):
    assert shipped_configs() == [
        "coco_R_50_C4_1x",
        "coco_R_50_C4_2x",
        "coco_R_50_FPN_1x",
        "coco_R_50_FPN_2x",
        "voc_R_50_C4_24k",
    ]
    assert resolve_config("voc_R_50_C4_24k") == CONFIG_DIR / "voc_R_50_C4_24k.yaml"
    assert resolve_config("coco_R_50_FPN_2x.yaml") == CONFIG_DIR / "coco_R_50_FPN_2x.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("_BASE_: x\n")
    assert resolve_config(str(own)) == own
    with pytest.raises(ValueError, match=r"--config-file nope: no such file .*voc_R_50_C4_24k"):
        resolve_config("nope")
    with pytest.raises(ValueError, match="--config-file"):
        resolve_config(
            str(tmp_path / "voc_R_50_C4_24k")
        )  # a folder was named: no fallback to the shipped one


def test_every_shipped_config_keeps_the_preset_and_the_8_gpu_reference():
    for base in ("Base-RCNN-C4-BN.yaml", "Base-RCNN-FPN-SyncBN.yaml"):
        text = (CONFIG_DIR / base).read_text()
        for line in (
            'FORMAT: "RGB"',
            "PIXEL_MEAN: [123.675, 116.280, 103.530]",
            "PIXEL_STD: [58.395, 57.120, 57.375]",
            "STRIDE_IN_1X1: False",
            "FREEZE_AT: 0",
            "REFERENCE_WORLD_SIZE: 8",
        ):
            assert line in text, (base, line)


def test_without_detectron2_the_launcher_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # makes `import detectron2...` raise ImportError
    monkeypatch.setitem(sys.modules, "detectron2.engine", None)
    assert main(["--config-file", "voc_R_50_C4_24k"]) == 2
    err = capsys.readouterr().err
    assert "Detectron2 is not installed" in err and "--no-build-isolation" in err and "02b5c4e" in err
