"""The original linear-probe command lines (LinearProbing.py, eval_moco_ins.py) on our checkpoints."""

import json

from selfsup.cmc.eval_moco_ins import main as eval_moco_ins
from selfsup.cmc.linear import build_parser, main, protocol
from selfsup.cmc.train import main as cmc_main
from selfsup.cmc.train_moco_ins import main as ins_main

SMALL = [
    "--image_size",
    "16",
    "--epochs",
    "2",
    "--num_workers",
    "0",
    "--batch_size",
    "64",
]


def test_original_defaults_map_to_the_papers_presets():
    args = build_parser().parse_args(["--model_path", "x.pth", "--model", "alexnet", "--layer", "5"])
    proto = protocol(args)
    assert proto["preset"] == "cmc_alexnet" and proto["layer"] == "5" and proto["lr"] == 0.1
    assert proto["milestones"] == (30, 40, 50) and proto["gamma"] == 0.2 and proto["crop_low"] == 0.2
    resnet = protocol(build_parser().parse_args(["--model_path", "x", "--model", "resnet50v3"]))
    assert resnet["preset"] == "cmc_resnet50v3" and resnet["crop_low"] == 0.08  # ResNets on imagenet
    ins = protocol(build_parser(moco_ins=True).parse_args(["--model_path", "x", "--cosine", "--aug", "NULL"]))
    assert ins["preset"] == "cmc_insdis" and ins["schedule"] == "cosine" and ins["train_aug"] == "rrc_flip"


def test_linear_probe_of_a_cmc_checkpoint_with_the_original_flags(tmp_path, tiny_cmc, digits192, capsys):
    assert cmc_main([*tiny_cmc, "--max_iters", "2", "--model_path", str(tmp_path / "run")]) == 0
    (checkpoint,) = (tmp_path / "run").glob("*/current.pth")
    argv = [
        "--model_path",
        str(checkpoint),
        "--model",
        "resnet18v1",
        "--save_path",
        str(tmp_path / "lin"),
        *SMALL,
        "--dataset",
        "npz",
        "--data_folder",
        str(digits192),
    ]
    assert main([*argv, "--view_stream", "l"]) == 0
    result = json.loads((tmp_path / "lin" / "resnet18v1_layer6.json").read_text())
    assert result["hyperparameters"]["preset"] == "cmc_resnet" and result["checkpoint"]["view"] == "l"
    assert 0 < result["top1"] <= 100 and "best top-1" in capsys.readouterr().out


def test_eval_moco_ins_on_a_moco_checkpoint(tmp_path, tiny_ins, digits192):
    assert ins_main([*tiny_ins, "--moco", "--max_iters", "2", "--model_path", str(tmp_path / "run")]) == 0
    (checkpoint,) = (tmp_path / "run").glob("*/current.pth")
    argv = [
        "--model_path",
        str(checkpoint),
        "--model",
        "resnet18",
        "--save_path",
        str(tmp_path / "lin"),
        *SMALL,
        "--dataset",
        "npz",
        "--data_folder",
        str(digits192),
    ]
    assert eval_moco_ins(argv) == 0
    result = json.loads((tmp_path / "lin" / "resnet18_layer6.json").read_text())
    assert (
        result["hyperparameters"]["train_aug"] == "rrc_cj_flip"
        and result["checkpoint"]["format"] == "selfsup"
    )


def test_a_missing_checkpoint_names_the_file(tmp_path, capsys):
    assert main(["--model_path", str(tmp_path / "nope.pth"), *SMALL, "--dataset", "digits"]) == 2
    assert "nope.pth" in capsys.readouterr().err
