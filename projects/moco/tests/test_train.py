"""The trainer end to end on the embedded digits: checkpoint content, bitwise resume, signals, torchrun."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.moco.train import main


def run(tmp_path: Path, args: list[str], *extra: str) -> Path:
    assert (
        main(
            [*args, "--output_root", str(tmp_path), "--dataset_name", "DIGITS", "--exp_version", "t", *extra]
        )
        == 0
    )
    return tmp_path / "DIGITS" / "t"


def losses(run_dir: Path) -> list[tuple[int, str]]:
    with (run_dir / "loss" / "loss.csv").open() as handle:
        return [(int(row["global_step"]), row["loss"]) for row in csv.DictReader(handle)]


def test_checkpoint_holds_the_full_training_state(tmp_path, tiny_args):
    out = run(tmp_path, tiny_args, "--max_iters", "3")
    ckpt = torch.load(out / "weight" / "ckpt_last.pkl", weights_only=True)
    for key in (
        "encoder",
        "momentum_encoder",
        "queue",
        "queue_ptr",
        "optimizer",
        "scaler",
        "epoch",
        "iteration",
        "global_step",
        "rng",
        "args",
        "backbone",
        "export",
    ):
        assert key in ckpt, key
    assert ckpt["format"] == "selfsup" and ckpt["project"] == "moco"
    assert all(k.startswith("module.resnet.") for k in ckpt["encoder"])
    assert ckpt["encoder"]["module.resnet.fc.weight"].shape == (128, 32)
    assert ckpt["queue"].shape == (64, 128) and ckpt["global_step"] == 3 and ckpt["iteration"] == 3
    assert ckpt["queue_ptr"] == (3 * 32) % 64
    assert ckpt["args"]["args"]["num_keys"] == 64 and ckpt["args"]["argv"]
    assert (out / "config.json").is_file() and (out / "loss" / "loss.png").is_file()


def assert_same_rng(a: dict, b: dict) -> None:
    assert torch.equal(a["torch"], b["torch"])
    assert torch.equal(a["numpy"]["keys"], b["numpy"]["keys"]) and a["numpy"]["pos"] == b["numpy"]["pos"]
    assert a["python"] == b["python"]


def test_seed_fixes_python_numpy_and_torch_states(tmp_path, tiny_args):
    """Two runs with the same flags save the same RNG states (all three); another --seed saves others."""
    ckpts = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = run(tmp_path / name, [*tiny_args, "--seed", seed], "--max_iters", "2")
        ckpts.append(torch.load(out / "weight" / "ckpt_last.pkl", weights_only=True)["rng"])
    assert_same_rng(ckpts[0], ckpts[1])
    assert not torch.equal(ckpts[0]["numpy"]["keys"], ckpts[2]["numpy"]["keys"])
    assert ckpts[0]["python"] != ckpts[2]["python"]


def test_resume_is_bitwise_identical_across_an_epoch_boundary(tmp_path, tiny_args):
    # digits train split: 1347 images = 43 iterations of 32; stop at 20, resume to 50 (epoch 1, iteration 7)
    # shuffle BN draws a permutation from the global RNG every step: the RNG state must resume exactly too
    args = [*tiny_args, "--shuffle_bn", "--bn_splits", "2"]
    straight = run(tmp_path / "a", args, "--max_iters", "50")
    run(tmp_path / "b", args, "--max_iters", "20")
    resumed = run(tmp_path / "b", args, "--max_iters", "50", "--resume", "auto")
    a = torch.load(straight / "weight" / "ckpt_last.pkl", weights_only=True)
    b = torch.load(resumed / "weight" / "ckpt_last.pkl", weights_only=True)
    assert (
        (a["epoch"], a["iteration"], a["global_step"])
        == (b["epoch"], b["iteration"], b["global_step"])
        == (1, 7, 50)
    )
    for part in ("encoder", "momentum_encoder"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert torch.equal(a["queue"], b["queue"]) and a["queue_ptr"] == b["queue_ptr"]
    assert_same_rng(a["rng"], b["rng"])
    assert losses(straight) == losses(resumed)
    assert (straight / "weight" / "ckpt_0.pkl").is_file()  # epoch checkpoint, original naming


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tmp_path, tiny_args):
    out = tmp_path / "DIGITS" / "t"
    cmd = [
        sys.executable,
        "-m",
        "selfsup.moco.train",
        *tiny_args,
        "--output_root",
        str(tmp_path),
        "--dataset_name",
        "DIGITS",
        "--exp_version",
        "t",
        "--max_epoch",
        "1000",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    csv_path = out / "loss" / "loss.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    ckpt = torch.load(out / "weight" / "ckpt_last.pkl", weights_only=True)
    stopped_at = ckpt["global_step"]
    assert stopped_at >= 3 and "signal" in output
    run(tmp_path, tiny_args, "--resume", "auto", "--max_iters", str(stopped_at + 2))
    assert torch.load(out / "weight" / "ckpt_last.pkl", weights_only=True)["global_step"] == stopped_at + 2


@pytest.mark.distributed
def test_torchrun_two_process_gloo_run_with_shuffle_bn(tmp_path, tiny_args, free_port):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port),
        "-m",
        "selfsup.moco.train",
        *tiny_args,
        "--shuffle_bn",
        "--max_iters",
        "4",
        "--output_root",
        str(tmp_path),
        "--dataset_name",
        "DIGITS",
        "--exp_version",
        "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = torch.load(tmp_path / "DIGITS" / "ddp" / "weight" / "ckpt_last.pkl", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["args"]["world_size"] == 2
    assert ckpt["queue_ptr"] == (4 * 32) % 64  # both ranks' keys (16 each) enter the queue every step
