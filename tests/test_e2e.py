"""Train -> evaluate, as a user does it from the README: moco-train, then selfsup-eval on the checkpoint,
and the demo in a short configuration."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from selfsup.moco.demo import main as demo_main

TINY = ["--dataset", "digits", "--arch", "resnet18", "--width", "4", "--cifar_stem", "--crop", "16",
        "--batch_size", "64", "--num_keys", "128", "--num_workers", "0", "--no_progress", "--no_tensorboard"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=ENV)


def test_train_then_evaluate_from_the_command_line(tmp_path: Path):
    train = cli(
        "moco-train", *TINY, "--max_epoch", "1", "--output_root", str(tmp_path), "--dataset_name", "D"
    )
    assert train.returncode == 0, train.stdout + train.stderr
    checkpoint = tmp_path / "D" / "v1" / "weight" / "ckpt_0.pkl"
    for protocol, extra in (("knn", ["--k", "20"]), ("linear", ["--epochs", "3"])):
        out = tmp_path / f"{protocol}.json"
        run = cli("selfsup-eval", protocol, "--checkpoint", str(checkpoint), "--dataset", "digits",
                  "--resize", "16", "--crop", "16", "--output", str(out), *extra)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        result = json.loads(out.read_text())
        assert 10.0 < result["top1"] <= 100.0 and result["top1"] <= result["top5"] <= 100.0
        assert result["checkpoint"]["format"] == "selfsup"


def test_demo_runs_and_writes_its_outputs(tmp_path: Path, capsys):
    assert demo_main(["--output", str(tmp_path), "--epochs", "1"]) == 0
    results = json.loads((tmp_path / "moco" / "results.json").read_text())
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert 0.0 < row["knn_top1"] <= 100.0 and 0.0 < row["linear_top1"] <= 100.0
    assert results["calibration"]["epochs"] == 1 and results["calibration"]["fixed"]
    assert (tmp_path / "moco" / "loss.png").stat().st_size > 0
    assert "random_init" in capsys.readouterr().out


def test_wrong_checkpoint_file_is_reported_by_selfsup_eval(tmp_path: Path):
    bogus = tmp_path / "weights.pth"
    bogus.write_bytes(b"\x00not a checkpoint")
    run = cli("selfsup-eval", "knn", "--checkpoint", str(bogus), "--dataset", "digits", "--output",
              str(tmp_path / "r.json"))  # fmt: skip
    assert run.returncode != 0 and "weights.pth" in run.stderr


def test_selfsup_checkpoint_is_evaluated_with_its_training_normalisation(tmp_path: Path):
    from selfsup.moco.train import main as train_main
    from selfsup.shared.evaluation import evaluate_checkpoint

    argv = [*TINY, "--max_iters", "2", "--output_root", str(tmp_path), "--dataset_name", "D", "--aug-plus"]
    assert train_main(argv) == 0
    checkpoint = tmp_path / "D" / "v1" / "weight" / "ckpt_last.pkl"
    result = evaluate_checkpoint("knn", checkpoint, dataset="digits", k=5, resize=16, crop=16)
    assert result["checkpoint"]["input_normalization"] == "imagenet"
    assert result["hyperparameters"]["normalization"] == "imagenet"
    assert result["input"]["mean"] == [0.485, 0.456, 0.406]
    forced = evaluate_checkpoint(
        "knn", checkpoint, dataset="digits", k=5, resize=16, crop=16, normalization="half"
    )
    assert forced["hyperparameters"]["normalization"] == "half"


def test_selfsup_demo_dispatches_to_the_method_and_moco_demo_stays_an_alias(tmp_path: Path):
    run = cli("selfsup-demo", "--method", "moco", "--epochs", "1", "--output", str(tmp_path / "a"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((tmp_path / "a" / "moco" / "results.json").read_text())["train_flags"]
    assert "random_init" in run.stdout
    help_text = cli("moco-demo", "--help")
    assert help_text.returncode == 0 and "--epochs" in help_text.stdout


def test_selfsup_demo_without_a_method_names_the_flag_and_the_choices():
    run = cli("selfsup-demo")
    assert run.returncode == 2 and "--method" in run.stderr and "moco" in run.stderr
    run = cli("selfsup-demo", "--method", "nope")
    assert run.returncode == 2 and "--method" in run.stderr
    for argv in (["--help"], ["--method", "moco", "--help"]):
        shown = cli("selfsup-demo", *argv)
        assert shown.returncode == 0 and "usage: selfsup-demo" in shown.stdout


def test_every_registered_demo_has_a_main():
    from selfsup.demo import DEMOS, load_demo

    for name in DEMOS:
        assert callable(load_demo(name)), name


def test_cmc_moco_demo_runs_and_writes_its_outputs(tmp_path: Path, capsys):
    from selfsup.cmc.demo_moco import main as cmc_demo

    assert cmc_demo(["--output", str(tmp_path), "--epochs", "1"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"pretrained", "random_init"}
    assert results["details"]["pretrained"]["knn"]["checkpoint"]["format"] == "selfsup"
    assert "random_init" in capsys.readouterr().out


@pytest.mark.slow
def test_cmc_moco_demo_beats_the_random_encoder(tmp_path: Path):
    """The full demo (about 3 minutes): pre-training must beat random initialisation on both probes."""
    from selfsup.cmc.demo_moco import main as cmc_demo

    assert cmc_demo(["--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], probe
