"""selfsup-demo --method intl / cwrgp: a one-epoch run of each writes the comparison of pretrained and random
init; the full demos (slow) must beat random initialisation on both probes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfsup.demo import DEMOS, load_demo
from selfsup.intl.demo import main_cwrgp, main_intl

ENTRIES = {"intl": main_intl, "cwrgp": main_cwrgp}


@pytest.fixture(autouse=True)
def keep_threads():
    """The demo sets torch's thread count; the other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_both_demos_are_registered():
    for method, entry in ENTRIES.items():
        assert method in DEMOS and load_demo(method) is entry


@pytest.mark.parametrize("method", sorted(ENTRIES))
def test_one_epoch_writes_the_comparison(method: str, tmp_path: Path, capsys):
    assert ENTRIES[method](["--output", str(tmp_path), "--epochs", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == method
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert set(row) == {"knn_top1", "knn_top5", "linear_top1", "linear_top5"}
        assert 0.0 < row["knn_top1"] <= row["knn_top5"] <= 100.0
        assert 0.0 < row["linear_top1"] <= row["linear_top5"] <= 100.0
    for name in ("pretrained", "random_init"):
        for probe in ("knn", "linear"):
            detail = results["details"][name][probe]
            assert detail["checkpoint"]["format"] == "selfsup" and detail["dataset"]["name"] == "digits"
    assert set(results["seconds"]) == {"train", "evaluate", "total"}
    assert "--dataset" in results["train_flags"] and "digits" in results["train_flags"]
    random_init = torch.load(results["random_init_checkpoint"], map_location="cpu", weights_only=True)
    trained = torch.load(results["checkpoint"], map_location="cpu", weights_only=True)
    assert random_init["epoch"] == 0 and trained["epoch"] == 1
    assert random_init["state_dict"].keys() == trained["state_dict"].keys()
    assert "random_init" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(ENTRIES))
def test_full_demo_beats_the_random_network(method: str, tmp_path: Path):
    """The full demo (under 3 minutes): pre-training must beat random initialisation on both probes."""
    assert ENTRIES[method](["--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], probe
