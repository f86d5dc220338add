"""End-to-end runs of every protocol on the embedded digits data (CPU, 16 px, a width-4 ResNet-18)."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.shared.evaluation import probe_training, run_knn, run_linear, run_semisup, write_report
from selfsup.shared.evaluation.features import module_sha256
from selfsup.shared.evaluation.subsets import read_subset_file
from selfsup.shared.models.alexnet import build_cmc_alexnet_half
from selfsup.shared.models.backbones import build_backbone
from selfsup.shared.models.two_stream import TwoStreamBackbone

SMALL = dict(resize=16, crop=16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run fastest on one thread (and do not fight other processes for the two cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("resnet18", width=4, cifar_stem=True)


def test_linear_cached_and_standard_paths_agree(backbone, tmp_path):
    before = module_sha256(backbone)
    common = dict(dataset="digits", preset="quick", epochs=3, cache_dir=tmp_path / "cache", **SMALL)
    cached = run_linear(backbone, **common)
    standard = run_linear(backbone, use_cache=False, **common)
    assert cached["path"] == "cached" and standard["path"] == "standard"
    assert cached["cache_hits"] == {"train": False, "test": False}
    assert [e["epoch"] for e in cached["curve"]] == [1, 2, 3]
    # No train-time augmentation in this preset: both paths see the same features in the same order.
    assert cached["top1"] == pytest.approx(standard["top1"], abs=0.5)
    assert cached["curve"][0]["train_loss"] == pytest.approx(standard["curve"][0]["train_loss"], rel=1e-3)
    assert 10.0 < cached["top1"] <= 100.0 and cached["top5"] >= cached["top1"]
    assert cached["hyperparameters"]["lr"] == 1e-2 and cached["input"]["crop"] == 16
    assert cached["checkpoint"]["weights_sha256"] == before
    assert module_sha256(backbone) == before  # the caller's module is never modified
    again = run_linear(backbone, **common)
    assert again["cache_hits"] == {"train": True, "test": True} and again["top1"] == cached["top1"]


def test_linear_eveningglow_bn_train_mode_keeps_callers_bn_statistics(backbone):
    before = backbone.bn1.running_mean.clone()
    result = run_linear(backbone, dataset="digits", preset="moco_eveningglow", epochs=2, lr=0.1, **SMALL)
    assert result["probe"]["bn_mode"] == "eval"
    faithful = run_linear(
        backbone, dataset="digits", preset="moco_eveningglow", epochs=2, lr=0.1, bn_train_mode=True, **SMALL
    )
    assert faithful["probe"]["bn_mode"] == "train" and faithful["hyperparameters"]["bn_train_mode"] is True
    assert [e["epoch"] for e in faithful["curve"] if e["top1"] is not None] == [1, 2]
    assert faithful["hyperparameters"]["test_batch_size"] == 100
    assert torch.equal(backbone.bn1.running_mean, before)
    assert faithful["curve"][0]["train_loss"] != pytest.approx(result["curve"][0]["train_loss"], rel=1e-6)


def test_linear_resume_continues_bitwise(backbone, tmp_path, monkeypatch):
    common = dict(dataset="digits", preset="quick", epochs=4, cache_dir=tmp_path / "cache", **SMALL)
    straight = run_linear(backbone, state_path=tmp_path / "a.state.pt", **common)
    original = probe_training.save_state

    def crash_after_epoch_2(path, payload):
        original(path, payload)
        if payload["epoch"] == 2:
            raise KeyboardInterrupt("simulated preemption")

    monkeypatch.setattr(probe_training, "save_state", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_linear(backbone, state_path=tmp_path / "b.state.pt", **common)
    monkeypatch.setattr(probe_training, "save_state", original)
    resumed = run_linear(backbone, state_path=tmp_path / "b.state.pt", resume=True, **common)
    assert [e["epoch"] for e in resumed["curve"]] == [1, 2, 3, 4]
    assert resumed["curve"] == straight["curve"]
    with pytest.raises(ValueError, match="different run"):
        run_linear(backbone, state_path=tmp_path / "b.state.pt", resume=True, **{**common, "epochs": 5})


def test_semisup_end_to_end_writes_a_repeatable_subset(backbone, tmp_path):
    out = tmp_path / "semi.json"
    result = run_semisup(
        backbone, dataset="digits", preset="swav_10pct", epochs=1, batch_size=32, output=out, **SMALL
    )
    assert result["subset"]["kind"] == "balanced" and result["subset"]["per_class"] == [13] * 10
    subset_file = tmp_path / "semi.subset.txt"
    entries, meta = read_subset_file(subset_file)
    assert len(entries) == 130 and meta["indices_sha256"] == result["subset"]["indices_sha256"]
    assert result["top1"] is not None and result["hyperparameters"]["lr_head"] == 0.2
    assert result["curve"][0]["lr"] == pytest.approx(0.01 * 1.0)  # trunk lr (SwAV --lr)
    assert json.loads(out.read_text())["protocol"] == "semisup"
    again = run_semisup(
        backbone,
        dataset="digits",
        preset="swav_10pct",
        epochs=1,
        batch_size=32,
        subset_file=subset_file,
        **SMALL,
    )
    assert again["subset"]["indices_sha256"] == result["subset"]["indices_sha256"]


def test_knn_end_to_end(backbone, tmp_path):
    weighted = run_knn(backbone, dataset="digits", **SMALL)
    assert weighted["hyperparameters"]["k"] == 200 and weighted["hyperparameters"]["temperature"] == 0.07
    assert weighted["top1"] > 30.0  # far above chance (10 %) even for random features
    nn5 = run_knn(backbone, dataset="digits", preset="nn5", use_cache=True, cache_dir=tmp_path, **SMALL)
    assert nn5["hyperparameters"]["metric"] == "euclidean" and nn5["top1"] > 30.0
    cached = run_knn(backbone, dataset="digits", preset="nn5", use_cache=True, cache_dir=tmp_path, **SMALL)
    assert cached["cache_hits"] == {"train": True, "test": True} and cached["top1"] == nn5["top1"]
    lightly = run_knn(backbone, dataset="digits", k=20, temperature=0.1, **SMALL)
    assert lightly["hyperparameters"]["k"] == 20


def test_cmc_alexnet_preset_on_a_two_stream_model(tmp_path):
    torch.manual_seed(0)
    model = TwoStreamBackbone(
        {"l_to_ab": build_cmc_alexnet_half(1), "ab_to_l": build_cmc_alexnet_half(2)}, [1, 2]
    )
    result = run_linear(
        model,
        dataset="digits",
        preset="cmc_alexnet",
        epochs=1,
        resize=64,
        crop=64,
        use_cache=True,
        cache_dir=tmp_path,
    )
    assert result["input"]["color_space"] == "lab" and result["probe"]["stage"] == "conv5_flat"
    assert result["probe"]["feature_dim"] == 2 * 128 * 1 * 1  # conv5 of a 64 px input is 1 x 1 per stream
    assert result["top1"] is not None


def test_results_table_and_report(backbone, tmp_path):
    for epochs in (1, 2):
        run_linear(
            backbone,
            dataset="digits",
            epochs=epochs,
            output=tmp_path / f"r{epochs}.json",
            cache_dir=tmp_path / "cache",
            **SMALL,
        )
    table = tmp_path / "results.jsonl"
    lines = [json.loads(line) for line in table.read_text().splitlines()]
    assert [len(r["curve"]) for r in lines] == [1, 2]
    log = tmp_path / "train_log.csv"
    log.write_text(
        "epoch,global_step,loss,lr,images_per_s\n0,1,8.3,0.03,100\n0,2,7.9,0.03,110\n1,3,7.5,0.03,120\n"
    )
    written = write_report([table], tmp_path / "report", logs=[log])
    markdown = written["markdown"].read_text()
    assert markdown.count("| linear | quick | digits |") == 2
    for name in ("accuracy_vs_epoch", "loss"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("step,value\n1,2\n")
    with pytest.raises(ValueError, match="global_step"):
        write_report([], tmp_path / "r2", logs=[bad])
