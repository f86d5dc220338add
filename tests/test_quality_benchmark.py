"""``benchmarks/quality.py`` end to end at a tiny budget on genuine CIFAR-10 images, and its length rules.

The images come from the CIFAR-10 subset in ``../shared/data/cifar10-subset/`` (beside the repository, where CI
has it); outside CI the end-to-end test is skipped when that file is absent, under ``CI=true`` it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT.parent / "shared" / "data" / "cifar10-subset" / "cifar10_prefix_subset.npz"


def _quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _quality()


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    if not SUBSET.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the CIFAR-10 subset at {SUBSET}")
        pytest.skip(f"the CIFAR-10 subset is not at {SUBSET}")
    with np.load(SUBSET) as z:
        out = tmp_path / "cifar_tiny.npz"
        np.savez(
            out,
            train_images=z["train_images"][:64],
            train_labels=z["train_labels"][:64],
            test_images=z["test_images"][:64],
            test_labels=z["test_labels"][:64],
        )
    return out


def test_quality_end_to_end(tiny_cifar: Path, tmp_path: Path):
    out = tmp_path / "bench"
    argv = ["--data", str(tiny_cifar), "--out", str(out), "--methods", "swav,intl", "--epochs", "1"]
    argv += ["--batch_size", "32", "--curve", "0", "--calib_steps", "1", "--threads", "1"]
    assert quality.main(argv) == 0
    for name in ("swav", "intl"):
        row = json.loads((out / f"{name}.json").read_text())
        assert row["method"] == name and row["library"] == "selfsup"
        assert row["epochs"] == 1 and row["steps"] == 2 and row["images"] == 64
        assert row["calibration"]["iters_per_epoch"] == 2 and row["calibration"]["fixed"]
        for which in ("random_init", "pretrained"):
            scores = row["results"][which]
            assert 0.0 <= scores["knn_top1"] <= 100.0 and 0.0 <= scores["linear_top1"] <= 100.0
        assert set(row["beats_random"]) == {"knn", "linear"}
        assert Path(row["checkpoint"]).is_file() and Path(row["random_init_checkpoint"]).is_file()
        assert row["train_flags"][row["train_flags"].index("--dataset") :][:2] == ["--dataset", "npz"]
        assert (out / "runs" / name / quality.MARKER).is_file()
    text = (out / "table.md").read_text()
    assert "| swav | swav-unmix-train |" in text and "| intl | intl-train |" in text
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "knn_vs_time.png").stat().st_size > 0


def test_an_unknown_folder_is_never_cleared(tmp_path: Path):
    kept = tmp_path / "runs" / "swav"
    kept.mkdir(parents=True)
    (kept / "mine.txt").write_text("not the benchmark's")
    with pytest.raises(FileExistsError):
        quality.fresh_folder(kept)
    assert (kept / "mine.txt").is_file()


def test_bad_data_is_one_line(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        quality.main(["--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")])
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lengths_scale_the_recipes_and_keep_them_at_full_length():
    ipe = 391  # full CIFAR-10 at batch 128
    swav = quality.RECIPES["swav"].length(200, ipe)
    assert swav[swav.index("--warmup_epochs") + 1] == "5"
    assert swav[swav.index("--freeze_prototypes_niters") + 1] == "5005"
    assert quality.RECIPES["intl"].length(200, ipe)[-1] == "2"
    cwrgp = quality.RECIPES["cwrgp"].length(200, ipe)
    assert cwrgp[cwrgp.index("--drop") + 1 :] == ["10", "5"] and "500" in cwrgp
    assert "none" in quality.RECIPES["cwrgp"].length(3, 43)  # no drops in a short run
    assert quality.RECIPES["cmc"].length(200, ipe)[-1] == "120,160"
    assert quality.RECIPES["cmc"].length(3, 43)[-1] == quality.NEVER
    short = quality.RECIPES["swav"].length(3, 43)
    assert short[short.index("--warmup_epochs") + 1] == "0"
    assert short[short.index("--freeze_prototypes_niters") + 1] == "12"


def test_epochs_nearest_the_budget_and_curve_points():
    assert quality.choose_epochs(1.0, 40, 180.0, 200) == 4  # 41.2 s per epoch
    assert quality.choose_epochs(10.0, 40, 60.0, 200) == 1
    assert quality.choose_epochs(0.001, 40, 1e6, 200) == 200
    assert quality.curve_epochs(4, 1) == [2]
    assert quality.curve_epochs(6, 2) == [2, 4]
    assert quality.curve_epochs(1, 2) == []


def test_a_run_stops_at_the_budget_where_one_epoch_overruns_it():
    assert quality.budget_iters(1.0, 40, 180.0) == 0  # whole epochs fit
    assert quality.budget_iters(10.0, 43, 180.0) == 17  # 443 s for one epoch: stop after 180 s of steps
    assert quality.budget_iters(500.0, 43, 180.0) == 1
