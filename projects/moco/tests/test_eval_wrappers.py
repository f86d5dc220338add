"""The original's test.py and visualize.py, over the shared harness, on a tiny digits run."""

import json

import pytest

from selfsup.moco import test as eg_test
from selfsup.moco import visualize
from selfsup.moco.train import main as train_main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_args):
    root = tmp_path_factory.mktemp("runs")

    for version in ("M2", "M3"):
        extra = ["--shuffle_bn", "--bn_splits", "2"] if version == "M3" else []
        argv = [*tiny_args, "--max_epoch", "1", "--output_root", str(root), "--dataset_name", "DIGITS"]
        assert train_main([*argv, "--exp_version", version, *extra]) == 0
    return root


def eval_flags(root):
    return ["--dataset", "digits", "--encoder_output_root", str(root), "--encoder_dataset_name", "DIGITS",
            "--resize", "16", "--crop", "16", "--max_epoch", "2", "--eval_epoch", "1", "--num_workers", "0",
            "--load_pretrained_epoch", "0"]  # fmt: skip


def test_test_py_evaluates_the_requested_epoch(two_runs, capsys):
    assert eg_test.main([*eval_flags(two_runs), "--encoder_exp_version", "M3"]) == 0
    result = json.loads((two_runs / "DIGITS" / "M3" / "eval" / "result_ckpt_0.json").read_text())
    assert result["protocol"] == "linear" and 0.0 <= result["top1"] <= 100.0
    assert len([e for e in result["curve"] if e.get("top1") is not None]) == 2
    assert "top-1" in capsys.readouterr().out


def test_test_py_names_a_missing_checkpoint(two_runs, capsys):
    flags = [*eval_flags(two_runs), "--encoder_exp_version", "M3", "--load_pretrained_epoch", "7"]
    assert eg_test.main(flags) == 2
    assert "ckpt_7.pkl" in capsys.readouterr().err


def test_visualize_plots_every_version(two_runs, tmp_path):
    flags = [
        *eval_flags(two_runs),
        "--names-list",
        "M2",
        "M3",
        "--test_num",
        "1",
        "--result_path",
        str(tmp_path),
    ]
    assert visualize.main(flags) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["best_top1"]) == {"M2", "M3"}
    assert (tmp_path / "accr_ckpt_0.png").stat().st_size > 0 and (tmp_path / "loss.png").stat().st_size > 0
