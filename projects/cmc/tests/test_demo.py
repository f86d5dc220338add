"""``selfsup-demo --method cmc``: registration, argument handling, a one-epoch run (offline, results.json, both
streams evaluated in the Lab view, the random-init checkpoint in the original layout) and, marked slow, the full
demo against random init."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from selfsup.cmc.demo import DATASET, TRAIN_FLAGS, build_parser, train_flags
from selfsup.cmc.demo import main as cmc_demo
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


def flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_cmc_and_cmc_moco_are_registered():
    from selfsup.cmc.demo_moco import main as cmc_moco_demo

    assert DEMOS["cmc"] == "selfsup.cmc.demo"
    assert DEMOS["cmc-moco"] == "selfsup.cmc.demo_moco"
    assert load_demo("cmc") is cmc_demo
    assert load_demo("cmc-moco") is cmc_moco_demo


def test_arguments_defaults_and_errors(capsys, tmp_path: Path):
    opts = build_parser().parse_args([])
    assert (opts.output, opts.epochs, opts.seed, opts.threads) == ("demo_output", 10, 0, 1)
    opts = build_parser().parse_args(["--output", str(tmp_path), "--epochs", "3", "--seed", "5"])
    flags = train_flags(opts)
    assert flags[: len(TRAIN_FLAGS)] == TRAIN_FLAGS  # the recipe, then the demo's options
    assert flag(flags, "--dataset") == DATASET == "digits_color"
    assert flag(flags, "--epochs") == "3" and flag(flags, "--seed") == "5"
    assert flag(flags, "--model_path") == str(tmp_path / "run")
    # the recipe uses cmc-train's own flags: L | ab views, two streams, a memory bank
    assert flag(flags, "--view") == "Lab" and flag(flags, "--model").startswith("resnet18v")
    from selfsup.cmc.cli import parse_cmc_args

    args = parse_cmc_args(flags)
    assert args.dataset == "digits_color" and args.view == "Lab" and args.softmax
    for bad in (["--epochs", "0"], ["--threads", "0"], ["--bogus"]):
        with pytest.raises(SystemExit) as exit_info:
            cmc_demo(["--output", str(tmp_path), *bad])
        assert exit_info.value.code == 2
    assert "--epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        selfsup_demo(["--method", "cmc", "--help"])
    assert exit_info.value.code == 0
    assert "selfsup-demo --method cmc" in capsys.readouterr().out
    assert not (tmp_path / "results.json").exists()


def test_one_epoch_demo_writes_its_results_offline(tmp_path: Path, capsys, offline):
    assert selfsup_demo(["--method", "cmc", "--output", str(tmp_path), *QUICK]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "cmc" and results["threads"] == 1
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert set(row) == {"knn_top1", "knn_top5", "linear_top1", "linear_top5"}
        assert 0.0 < row["knn_top1"] <= row["knn_top5"] <= 100.0
        assert 0.0 < row["linear_top1"] <= row["linear_top5"] <= 100.0
    assert set(results["seconds"]) == {"train", "evaluate", "total"}
    assert flag(results["train_flags"], "--epochs") == "1"

    # both encoders: the two streams concatenated, on the Lab view of the colourised digits at 16 px
    trained, random_init = load(results["checkpoint"]), load(results["random_init_checkpoint"])
    for name in ("pretrained", "random_init"):
        for probe in ("knn", "linear"):
            detail = results["details"][name][probe]
            assert detail["dataset"]["name"] == DATASET
            assert detail["checkpoint"]["view"] == "both" and detail["checkpoint"]["color_space"] == "lab"
            assert detail["checkpoint"]["epoch"] == (1 if name == "pretrained" else 0)
            assert detail["input"]["color_space"] == detail["hyperparameters"]["normalization"] == "lab"
            assert detail["input"]["resize"] == detail["input"]["crop"] == 16
    assert random_init["model"].keys() == trained["model"].keys()
    assert all(k.startswith("encoder.module.") for k in random_init["model"])
    assert random_init["opt"]["view"] == trained["opt"]["view"] == "Lab"
    assert not all(torch.equal(random_init["model"][k], v) for k, v in trained["model"].items())
    shown = capsys.readouterr().out
    assert "random_init" in shown and "1 epochs" in shown


@pytest.mark.slow
def test_full_demo_beats_the_random_network(tmp_path: Path):
    """The full demo (about a minute on 2 cores): pre-training must beat random init on both probes."""
    assert cmc_demo(["--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], (probe, summary)
