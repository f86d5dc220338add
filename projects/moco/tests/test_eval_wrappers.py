"""The original's test.py (:mod:`selfsup.moco.linear_eval`, run as ``python -m selfsup.moco.test``) and
visualize.py, over the shared harness, on tiny ``digits192`` runs."""

import json
import runpy
import sys

import pytest

from selfsup.moco import linear_eval, visualize
from selfsup.moco.train import main as train_main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_args, digits192):
    root = tmp_path_factory.mktemp("runs")
    for version in ("M2", "M3"):
        extra = ["--shuffle_bn", "--bn_splits", "2"] if version == "M3" else []
        argv = [*tiny_args, "--max_epoch", "1", "--output_root", str(root)]
        assert train_main([*argv, "--exp_version", version, *extra]) == 0
    return root


@pytest.fixture(scope="module")
def eval_flags(two_runs, digits192):
    return ["--dataset", "npz", "--dataset_root", str(digits192), "--encoder_output_root", str(two_runs),
            "--encoder_dataset_name", "DIGITS", "--resize", "16", "--crop", "16", "--max_epoch", "2",
            "--eval_epoch", "1", "--num_workers", "0", "--load_pretrained_epoch", "0"]  # fmt: skip


def test_linear_eval_evaluates_the_requested_epoch(two_runs, eval_flags, capsys):
    assert linear_eval.main([*eval_flags, "--encoder_exp_version", "M3"]) == 0
    result = json.loads((two_runs / "DIGITS" / "M3" / "eval" / "result_ckpt_0.json").read_text())
    assert result["protocol"] == "linear" and 0.0 <= result["top1"] <= 100.0
    assert len([e for e in result["curve"] if e.get("top1") is not None]) == 2
    assert "top-1" in capsys.readouterr().out


def test_linear_eval_names_a_missing_checkpoint(eval_flags, capsys):
    assert linear_eval.main([*eval_flags, "--encoder_exp_version", "M3", "--load_pretrained_epoch", "7"]) == 2
    assert "ckpt_7.pkl" in capsys.readouterr().err


def python_m_selfsup_moco_test(monkeypatch, *argv: str) -> int:
    """``python -m selfsup.moco.test ARGV`` in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["test.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("selfsup.moco.test", run_name="__main__", alter_sys=True)
    return exit_info.value.code


def test_python_m_selfsup_moco_test_is_the_original_test_py(eval_flags, monkeypatch, capsys):
    """The original's command keeps its name, flags and messages."""
    assert python_m_selfsup_moco_test(monkeypatch, "--help") == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m selfsup.moco.test")
    for flag in ("--load_pretrained_epoch", "--encoder_exp_version", "--bn_train_mode", "--trn_batch_size"):
        assert flag in usage
    assert python_m_selfsup_moco_test(monkeypatch, *eval_flags, "--encoder_exp_version", "nope") == 2
    assert capsys.readouterr().err.startswith("test.py: error:")


@pytest.mark.parametrize("plot_extra", [True, False], ids=["with-matplotlib", "without-matplotlib"])
def test_visualize_plots_every_version(plot_extra, eval_flags, tmp_path, monkeypatch, capsys):
    """The PNGs need the plot extra; without it each is skipped with one warning and the summary is written."""
    if plot_extra:
        pytest.importorskip(
            "matplotlib", reason="the PNG plots need the plot extra: pip install 'selfsup[plot]'"
        )
    else:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    flags = [*eval_flags, "--names-list", "M2", "M3", "--test_num", "1", "--result_path", str(tmp_path)]
    assert visualize.main(flags) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["best_top1"]) == {"M2", "M3"}
    plots = [tmp_path / "accr_ckpt_0.png", tmp_path / "loss.png"]
    if plot_extra:
        assert all(png.stat().st_size > 0 for png in plots)
    else:
        assert not any(png.exists() for png in plots)
        warnings = [line for line in capsys.readouterr().out.splitlines() if "selfsup[plot]" in line]
        assert len(warnings) == 2 and all(png.name in " ".join(warnings) for png in plots), warnings
