"""Train -> evaluate, as a user does it from the README: moco-train, then selfsup-eval on the checkpoint; and
every registered demo (``selfsup.demo.DEMOS``): one epoch of each (quick), each at its defaults beating random
init (slow), and the demo's edges (SIGTERM, no matplotlib, output folders)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.demo import DEMOS, load_demo
from selfsup.demo import main as selfsup_demo
from selfsup.shared.evaluation.demo import MARKER

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


@pytest.fixture
def keep_threads():
    """A demo sets torch's thread count; the rest of the session keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails (the demos run without one)."""

    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(*args, **kwargs):
        raise OSError("network access during the demo")

    def local_only(original):  # loader workers pass tensors over AF_UNIX sockets
        def guarded(sock, *args, **kwargs):
            if sock.family != socket.AF_UNIX:
                refuse()
            return original(sock, *args, **kwargs)

        return guarded

    monkeypatch.setattr(socket.socket, "connect", local_only(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", local_only(connect_ex))
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _demo_folder(path: Path, *files: str) -> Path:
    """A folder as a previous demo leaves it (the marker and ``files``)."""
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by selfsup-demo\n")
    for name in files:
        (path / name).write_text("x")
    return path


@pytest.mark.parametrize("method", sorted(DEMOS))
def test_every_demo_runs_one_epoch_into_its_own_folder(
    method: str, tmp_path: Path, capsys, keep_threads, offline
):
    """One epoch (``--epochs 1``) of each registered demo, offline: results.json under OUTPUT/METHOD/ with both encoders
    evaluated at the input size and normalisation their checkpoints record; the random-init file is the same
    network at epoch 0; another method's folder is left alone and this method's previous demo is replaced."""
    other = _demo_folder(tmp_path / "some-other-method", "results.json")
    _demo_folder(tmp_path / method, "stale.txt")
    assert selfsup_demo(["--method", method, "--output", str(tmp_path), "--epochs", "1"]) == 0
    out = tmp_path / method
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method and (out / MARKER).is_file() and not (out / "stale.txt").exists()
    assert sorted(p.name for p in other.iterdir()) == sorted([MARKER, "results.json"])
    assert results["calibration"]["epochs"] == 1 and results["calibration"]["fixed"]
    assert results["calibration"]["step_s"] > 0 and results["precision"] in ("fp32", "bf16")
    assert {"calibrate", "train", "evaluate", "total"} <= set(results["seconds"])
    assert set(results["summary"]) == {"pretrained", "random_init"}
    for row in results["summary"].values():
        assert 0.0 < row["knn_top1"] <= row["knn_top5"] <= 100.0
        assert 0.0 < row["linear_top1"] <= row["linear_top5"] <= 100.0
    trained, random_init = _load(results["checkpoint"]), _load(results["random_init_checkpoint"])
    assert trained["epoch"] == 1 and random_init["epoch"] == 0
    for key in ("format", "project", "method", "backbone", "export", "input_normalization", "input_size"):
        assert random_init.get(key) == trained.get(key), key
    for name in ("pretrained", "random_init"):
        for probe in ("knn", "linear"):
            detail = results["details"][name][probe]
            assert detail["checkpoint"]["format"] == "selfsup"
            if trained.get("input_size"):
                assert detail["input"]["crop"] == trained["input_size"], (name, probe, detail["input"])
    shown = capsys.readouterr().out
    assert "random_init" in shown and "1 epochs (--epochs)" in shown


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(DEMOS))
def test_every_demo_beats_random_init_at_its_defaults(method: str, tmp_path: Path, keep_threads):
    """The README's promise: at its defaults (sized to a 150 s budget), within 3 minutes, pre-training beats the
    same network at random initialisation on kNN and on the linear probe."""
    started = time.perf_counter()
    assert load_demo(method)(["--output", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - started
    results = json.loads((tmp_path / method / "results.json").read_text())
    summary = results["summary"]
    for probe in ("knn_top1", "linear_top1"):
        assert summary["pretrained"][probe] > summary["random_init"][probe], (probe, summary)
    assert elapsed < 180, (elapsed, results["seconds"], results["calibration"])


def test_a_folder_not_made_by_a_demo_is_refused(tmp_path: Path, capsys):
    mine = tmp_path / "moco"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    assert selfsup_demo(["--method", "moco", "--output", str(tmp_path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "not made by selfsup-demo" in err and "--output" in err and str(mine) in err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_a_demo_without_matplotlib_says_so_once_and_finishes(
    tmp_path: Path, capsys, monkeypatch, keep_threads
):
    """MoCo's trainer draws its own loss plot too: the demo still prints one line about the missing extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert selfsup_demo(["--method", "moco", "--output", str(tmp_path), "--epochs", "1"]) == 0
    out = tmp_path / "moco"
    assert (out / "results.json").is_file() and not (out / "loss.png").exists()
    shown = capsys.readouterr()
    lines = [line for line in (shown.out + shown.err).splitlines() if "selfsup[plot]" in line]
    assert len(lines) == 1 and "matplotlib is not installed" in lines[0], lines


def test_an_interrupted_demo_says_so_writes_no_results_and_fails(tmp_path: Path):
    """SIGTERM during pre-training: the trainer checkpoints and stops; the demo evaluates nothing."""
    out = tmp_path / "demo"
    log = out / "intl" / "run" / "INTL" / "log.csv"
    proc = subprocess.Popen(
        ["selfsup-demo", "--method", "intl", "--epochs", "50", "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 300
        while not (log.is_file() and len(log.read_text().splitlines()) > 1):
            assert proc.poll() is None and time.monotonic() < deadline, "no log row before the deadline"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None), stdout + stderr
    assert "interrupted" in stderr and "no results" in stderr, stderr
    assert not (out / "intl" / "results.json").exists()
    assert "random_init" not in stdout
