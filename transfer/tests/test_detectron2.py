"""The shipped Detectron2 configs, converted weights and ``selfsup-transfer``, against the real Detectron2.

Runs in ``nox -s transfer_d2`` (which builds Detectron2 from the vendored source when it is not installed); on a
machine without Detectron2 these tests skip, under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from selfsup.transfer.cli import main as convert_main
from selfsup.transfer.train_net import build_parser, load_config, main, shipped_configs

pytestmark = pytest.mark.detectron2

FIXTURES = Path(__file__).parent / "fixtures"
C4_LAYOUT = "detectron2_faster_rcnn_R_50_C4_voc_resnet.json"
FPN_LAYOUT = "detectron2_mask_rcnn_R_50_FPN_1x_resnet.json"
SHIPPED = ["coco_R_50_C4_1x", "coco_R_50_C4_2x", "coco_R_50_FPN_1x", "coco_R_50_FPN_2x", "voc_R_50_C4_24k"]
#: One CPU iteration at 64 px with few proposals: enough to run every part of training and evaluation.
TINY = [
    "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "16",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "5", "TEST.PRECISE_BN.NUM_ITER", "1", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.CHECKPOINT_PERIOD", "100000",
]  # fmt: skip


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    """Random torchvision ResNet-50 weights, every tensor distinct (a swapped key would change a value)."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for key, value in resnet50().state_dict().items():
        out[key] = value if value.dtype == torch.int64 else torch.randn(value.shape, generator=generator)
    return out


@pytest.fixture(scope="module")
def r50_pkl(r50, tmp_path_factory) -> Path:
    """``selfsup-convert detectron2`` output of ``r50``."""
    folder = tmp_path_factory.mktemp("weights")
    torch.save(r50, folder / "r50.pth")
    assert (
        convert_main(
            ["detectron2", "--checkpoint", str(folder / "r50.pth"), "--output", str(folder / "r50.pkl")]
        )
        == 0
    )
    return folder / "r50.pkl"


def _cfg(config: str, *opts: str):
    return load_config(build_parser().parse_args(["--config-file", config, *opts]))


def _fail(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("config", SHIPPED)
def test_each_shipped_config_builds(detectron2, config):
    from detectron2.layers import NaiveSyncBatchNorm
    from detectron2.modeling import build_model

    assert sorted(shipped_configs()) == sorted(SHIPPED)
    cfg = _cfg(config, "MODEL.DEVICE", "cpu")
    preset = (
        cfg.INPUT.FORMAT,
        list(cfg.MODEL.PIXEL_MEAN),
        cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        cfg.MODEL.BACKBONE.FREEZE_AT,
    )
    assert preset == ("RGB", [123.675, 116.28, 103.53], False, 0)
    assert (
        cfg.SOLVER.REFERENCE_WORLD_SIZE == 8
        and cfg.SOLVER.IMS_PER_BATCH == 16
        and cfg.TEST.PRECISE_BN.ENABLED
    )
    model = build_model(cfg)
    if "C4" in config:
        assert isinstance(model.roi_heads.res5.norm, NaiveSyncBatchNorm)  # MoCo's extra norm after res5
        assert model.roi_heads.res5.norm.num_features == 2048
        mask_on = cfg.MODEL.MASK_ON
        assert mask_on == config.startswith("coco")
    else:
        assert isinstance(model.backbone.fpn_lateral2.norm, torch.nn.SyncBatchNorm)
        assert isinstance(model.roi_heads.box_head.conv1.norm, torch.nn.SyncBatchNorm)
        assert isinstance(model.backbone.bottom_up.res2[0].conv1.norm, torch.nn.SyncBatchNorm)
    schedule = {
        "24k": (24000, (18000, 22000)),
        "1x": (90000, (60000, 80000)),
        "2x": (180000, (120000, 160000)),
    }
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedule[config.rsplit("_", 1)[1]]


def test_fewer_gpus_scale_batch_lr_and_iterations(detectron2):
    from detectron2.engine import DefaultTrainer

    scaled = DefaultTrainer.auto_scale_workers(_cfg("voc_R_50_C4_24k"), 2)
    assert (scaled.SOLVER.IMS_PER_BATCH, scaled.SOLVER.MAX_ITER, tuple(scaled.SOLVER.STEPS)) == (
        4,
        96000,
        (72000, 88000),
    )
    solver = scaled.SOLVER
    base_lr, warmup = solver.BASE_LR, solver.WARMUP_ITERS
    assert (base_lr, warmup) == (pytest.approx(0.005), 400)
    assert _cfg("voc_R_50_C4_24k", "--reference-world-size", "0").SOLVER.REFERENCE_WORLD_SIZE == 0


@pytest.mark.parametrize(
    ("config", "layout"), [("voc_R_50_C4_24k", C4_LAYOUT), ("coco_R_50_FPN_1x", FPN_LAYOUT)]
)
def test_converted_weights_land_with_equal_values(detectron2, r50, r50_pkl, config, layout):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(_cfg(config, "MODEL.DEVICE", "cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DetectionCheckpointer(model).load(str(r50_pkl))
    loaded = model.state_dict()
    expected = json.loads((FIXTURES / layout).read_text())["state_dict"]
    resnet_keys = {
        k for k in loaded if re.match(r"backbone\.(bottom_up\.)?(stem|res\d)\.|roi_heads\.res5\.\d", k)
    }
    assert resnet_keys == set(
        expected
    )  # the recorded layout is this model's ResNet, res5 in the ROI head for C4
    for key, spec in expected.items():
        assert torch.equal(loaded[key], r50[spec["torchvision_key"]]), key
    changed = {k for k in loaded if not torch.equal(loaded[k], before[k])}
    assert changed <= resnet_keys  # FPN, RPN, heads and the extra norm keep their own initialisation
    if "C4" in config:
        assert (
            any(k.startswith("roi_heads.res5.0.") for k in expected)
            and "roi_heads.res5.norm.weight" in loaded
        )


def test_the_launcher_refuses_a_config_the_weights_do_not_fit(detectron2, r50_pkl, tmp_path, capsys):
    base = ["--config-file", "voc_R_50_C4_24k", "MODEL.WEIGHTS", str(r50_pkl), "OUTPUT_DIR", str(tmp_path)]
    err = _fail(capsys, *base, "INPUT.FORMAT", "BGR", "MODEL.RESNETS.STRIDE_IN_1X1", "True")
    assert "INPUT.FORMAT is BGR, the weights need RGB" in err and "STRIDE_IN_1X1 is True" in err
    assert "MODEL.PIXEL_MEAN" in _fail(capsys, *base, "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]")
    assert "MODEL.RESNETS.DEPTH is 101" in _fail(capsys, *base, "MODEL.RESNETS.DEPTH", "101")
    assert "MODEL.WEIGHTS is empty" in _fail(capsys, "--config-file", "voc_R_50_C4_24k")
    assert "file not found" in _fail(capsys, "--config-file", "voc_R_50_C4_24k", "MODEL.WEIGHTS", "nope.pkl")
    assert "--config-file nope" in _fail(capsys, "--config-file", "nope", "MODEL.WEIGHTS", str(r50_pkl))
    err = _fail(capsys, "--register-voc", "x", str(tmp_path), "test", "2007", *base)
    assert "--register-voc x" in err and "Annotations" in err
    assert "odd length" in _fail(capsys, *base, "SOLVER.MAX_ITER")
    torch.save({"model": {}, "selfsup_preset": {"backbone": "resnet50"}}, tmp_path / "detr.pth")
    assert "converted for DETR" in _fail(capsys, *base[:2], "MODEL.WEIGHTS", str(tmp_path / "detr.pth"))


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_the_launcher_trains_and_evaluates_on_voc(detectron2, tiny_voc, r50_pkl, tmp_path):
    out = tmp_path / "voc"
    argv = [
        "--config-file",
        "voc_R_50_C4_24k",
        "--register-voc",
        "tiny_voc_trainval",
        str(tiny_voc),
        "trainval",
        "2007",
    ]
    argv += ["--register-voc", "tiny_voc_test", str(tiny_voc), "test", "2007", "--voc-classes", "cat", "dog"]
    argv += ["--reference-world-size", "0", "MODEL.WEIGHTS", str(r50_pkl), "OUTPUT_DIR", str(out)]
    argv += ["DATASETS.TRAIN", "('tiny_voc_trainval',)", "DATASETS.TEST", "('tiny_voc_test',)"]
    argv += ["MODEL.ROI_HEADS.NUM_CLASSES", "2", *TINY]
    assert main(argv) == 0
    metrics = _metrics(out)["bbox"]
    assert set(metrics) >= {"AP", "AP50", "AP75"} and all(
        0 <= metrics[k] <= 100 for k in ("AP", "AP50", "AP75")
    )
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()


def test_the_launcher_trains_evaluates_resumes_and_evaluates_only_on_coco(
    detectron2, tiny_coco, r50_pkl, tmp_path
):
    annotations, images = tiny_coco
    out = tmp_path / "coco"
    argv = ["--config-file", "coco_R_50_C4_1x", "--register-coco", "tiny_coco", str(annotations), str(images)]
    argv += ["--reference-world-size", "0", "MODEL.WEIGHTS", str(r50_pkl), "OUTPUT_DIR", str(out)]
    argv += ["DATASETS.TRAIN", "('tiny_coco',)", "DATASETS.TEST", "('tiny_coco',)"]
    argv += ["MODEL.ROI_HEADS.NUM_CLASSES", "2", *TINY]
    assert main(argv) == 0
    metrics = _metrics(out)
    assert set(metrics) == {"bbox", "segm"} and {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(
        metrics["bbox"]
    )
    assert (out / "inference" / "tiny_coco" / "coco_instances_results.json").is_file()

    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 0  # one iteration, counted from 0
    resumed = [*argv, "SOLVER.MAX_ITER", "2"]
    resumed = [a.replace("tiny_coco", "tiny_coco_resumed") for a in resumed]
    assert main(["--resume", *resumed]) == 0  # continues from last_checkpoint: one more iteration
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 1  # resumed at iteration 1, not restarted from the converted weights
    (out / "metrics.json").unlink()
    argv_eval = [a.replace("tiny_coco", "tiny_coco_eval") for a in argv]
    argv_eval[argv_eval.index("MODEL.WEIGHTS") + 1] = str(out / "model_final.pth")
    assert main(["--eval-only", *argv_eval]) == 0
    assert set(_metrics(out)) == {"bbox", "segm"}
