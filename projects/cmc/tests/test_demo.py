"""``selfsup-demo --method cmc`` and ``--method cmc-moco``: registration, the recipes (the trainers' own flags,
sized by the shared demo runner), a one-epoch CMC run (offline, results.json, both streams evaluated in the Lab
view, the random-init checkpoint in the original layout) and, marked slow, both full demos against random init."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from selfsup.cmc import demo, demo_moco
from selfsup.demo import DEMOS, load_demo
from selfsup.demo import main as selfsup_demo

QUICK = ["--epochs", "1", "--threads", "1"]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails (the demo must run without one)."""

    def refuse(*args, **kwargs):
        raise OSError("network access during the demo")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def keep_threads():
    """The demo sets torch's thread count; give the rest of the session back its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_cmc_and_cmc_moco_are_registered():
    assert DEMOS["cmc"] == "selfsup.cmc.demo" and DEMOS["cmc-moco"] == "selfsup.cmc.demo_moco"
    assert load_demo("cmc") is demo.main and load_demo("cmc-moco") is demo_moco.main


def test_the_recipes_use_the_trainers_own_flags(tmp_path: Path):
    args = demo.RECIPE.entry.parse_args([*demo.RECIPE.flags(tmp_path / "run"), *demo.RECIPE.length(3)])
    # L | ab views of the colourised digits, two streams, memory banks; the probes see the same data
    assert (args.dataset, args.view, args.epochs) == ("digits_color", "Lab", 3)
    assert args.model.startswith("resnet18v") and args.nce_k >= 1
    assert demo.RECIPE.eval_dataset == demo.DATASET == "digits_color"
    assert demo.run_dir(tmp_path).parent == tmp_path / "cmc" / "run"
    args = demo_moco.RECIPE.entry.parse_args([*demo_moco.RECIPE.flags(tmp_path), *demo_moco.RECIPE.length(2)])
    assert args.moco and args.softmax and args.bn_splits == 4 and args.epochs == 2
    assert demo_moco.run_dir(tmp_path).name.startswith("MoCo")
    for recipe in (demo.RECIPE, demo_moco.RECIPE):  # the demo runner adds these
        flags = recipe.flags(tmp_path)
        assert not {"--seed", "--device", "--precision", "--epochs"} & set(flags), recipe.name


def test_arguments_are_checked_before_anything_is_written(capsys, tmp_path: Path):
    for bad in (["--epochs", "0"], ["--threads", "0"], ["--bogus"]):
        with pytest.raises(SystemExit) as exit_info:
            demo.main(["--output", str(tmp_path), *bad])
        assert exit_info.value.code == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        selfsup_demo(["--method", "cmc", "--help"])
    assert exit_info.value.code == 0
    assert "selfsup-demo --method cmc" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_one_epoch_demo_writes_its_results_offline(tmp_path: Path, capsys, offline):
    assert selfsup_demo(["--method", "cmc", "--output", str(tmp_path), *QUICK]) == 0
    out = tmp_path / "cmc"
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "cmc" and results["calibration"]["epochs"] == 1
    assert results["calibration"]["fixed"] and results["precision"] in ("fp32", "bf16")
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert 0.0 < row["knn_top1"] <= row["knn_top5"] <= 100.0
        assert 0.0 < row["linear_top1"] <= row["linear_top5"] <= 100.0

    # both encoders: the two streams concatenated, on the Lab view of the colourised digits at 16 px
    trained, random_init = load(results["checkpoint"]), load(results["random_init_checkpoint"])
    for name in ("pretrained", "random_init"):
        for probe in ("knn", "linear"):
            detail = results["details"][name][probe]
            assert detail["dataset"]["name"] == "digits_color"
            assert detail["checkpoint"]["view"] == "both" and detail["checkpoint"]["color_space"] == "lab"
            assert detail["checkpoint"]["epoch"] == (1 if name == "pretrained" else 0)
            assert detail["input"]["color_space"] == detail["hyperparameters"]["normalization"] == "lab"
            assert detail["input"]["crop"] == 16
    assert random_init["model"].keys() == trained["model"].keys()
    assert all(k.startswith("encoder.module.") for k in random_init["model"])
    assert random_init["opt"]["view"] == trained["opt"]["view"] == "Lab"
    assert not all(torch.equal(random_init["model"][k], v) for k, v in trained["model"].items())
    assert Path(results["checkpoint"]).parent == demo.run_dir(tmp_path)
    assert "random_init" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cmc", "cmc-moco"])
def test_full_demo_beats_the_random_network(tmp_path: Path, method: str):
    """The full demo at its defaults (under 3 minutes on 2 cores): pre-training beats random init on both
    probes."""
    assert load_demo(method)(["--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / method / "results.json").read_text())["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], (probe, summary)
