"""``selfsup-demo --method swav|unmix``: a one-epoch run of each (offline, results.json, the random-init
checkpoint in the trainer's format, determinism) and, marked slow, the full demos against random init."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from selfsup.demo import DEMOS, load_demo
from selfsup.demo import main as selfsup_demo
from selfsup.swav_unmix.demo import main_swav

#: One epoch on one thread (two threads crawl when other processes share a 2-core machine).
QUICK = ["--epochs", "1", "--threads", "1"]
#: The entries of a trainer checkpoint that say how to read it (the random-init file must carry the same).
FORMAT_KEYS = ("format", "format_version", "project", "method", "backbone", "export", "input_normalization")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails (the demos must run without one)."""

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


def test_both_methods_are_registered_with_an_entry_point():
    assert DEMOS["swav"] == "selfsup.swav_unmix.demo:main_swav"
    assert DEMOS["unmix"] == "selfsup.swav_unmix.demo:main_unmix"
    for name in DEMOS:  # "module" and "module:function" entries both resolve
        assert callable(load_demo(name)), name


@pytest.mark.parametrize("method", ["swav", "unmix"])
def test_one_epoch_demo_writes_its_results_offline(tmp_path: Path, capsys, offline, method: str):
    out = tmp_path / method
    assert selfsup_demo(["--method", method, "--output", str(out), *QUICK]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert set(row) == {"knn_top1", "knn_top5", "linear_top1", "linear_top5"}
        assert 0.0 < row["knn_top1"] <= row["knn_top5"] <= 100.0
        assert 0.0 < row["linear_top1"] <= row["linear_top5"] <= 100.0
    assert set(results["seconds"]) == {"train", "evaluate", "total"} and results["threads"] == 1
    flags = results["train_flags"]
    assert flags[flags.index("--run_swav") + 1] == ("true" if method == "swav" else "false")
    assert flags[flags.index("--epochs") + 1] == "1"

    # both encoders go through selfsup-eval's loader, at 16 px and the normalisation of pre-training
    trained, random_init = load(results["checkpoint"]), load(results["random_init_checkpoint"])
    for name, ckpt in (("pretrained", trained), ("random_init", random_init)):
        for probe in ("knn", "linear"):
            detail = results["details"][name][probe]
            assert detail["checkpoint"]["format"] == "selfsup"
            assert detail["checkpoint"]["epoch"] == (1 if name == "pretrained" else 0)
            assert detail["hyperparameters"]["normalization"] == ckpt["input_normalization"] == "cifar_swav"
            assert detail["input"]["resize"] == detail["input"]["crop"] == 16
    assert {k: random_init[k] for k in FORMAT_KEYS} == {k: trained[k] for k in FORMAT_KEYS}
    assert random_init["state_dict"].keys() == trained["state_dict"].keys()
    assert not all(torch.equal(random_init["state_dict"][k], v) for k, v in trained["state_dict"].items())
    shown = capsys.readouterr().out
    assert "random_init" in shown and "1 epochs" in shown


def test_demo_is_deterministic_and_starts_afresh(tmp_path: Path, capsys):
    """Two runs into the same folder give the same numbers (the second does not resume the first's run)."""
    summaries, weights = [], []
    for _ in range(2):
        assert main_swav(["--output", str(tmp_path), *QUICK]) == 0
        results = json.loads((tmp_path / "results.json").read_text())
        summaries.append(results["summary"])
        weights.append(load(results["checkpoint"])["state_dict"])
    assert summaries[0] == summaries[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert load(tmp_path / "run" / "checkpoint.pth.tar")["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["swav", "unmix"])
def test_full_demo_beats_the_random_network(tmp_path: Path, method: str):
    """The full demo (about 1.5-2 minutes on 2 cores): pre-training must beat random init on both probes."""
    assert load_demo(method)(["--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], (probe, summary)
