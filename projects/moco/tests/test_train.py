"""The MoCo trainer end to end on ``digits192`` (6 steps of 32 per epoch): what its checkpoints hold, shuffle
BN across a resume, ``--start_epoch``, signals, and the queue under ``torchrun``. The generic checks (one
epoch, bitwise resume of the smoke run, export and kNN, a 2-process run) are the cross-project contract test's
(``tests/test_trainer_contract.py``)."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.moco.train import main


def run(tmp_path: Path, args: list[str], *extra: str) -> Path:
    assert main([*args, "--output_root", str(tmp_path), "--exp_version", "t", *extra]) == 0
    return tmp_path / "DIGITS" / "t"


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def losses(run_dir: Path) -> list[tuple[int, str]]:
    with (run_dir / "loss" / "loss.csv").open() as handle:
        return [(int(row["global_step"]), row["loss"]) for row in csv.DictReader(handle)]


def test_checkpoint_holds_the_original_entries_and_the_training_state(tmp_path, tiny_args):
    out = run(tmp_path, list(tiny_args), "--max_iters", "3")
    ckpt = load(out / "weight" / "ckpt_last.pkl")
    for key in ("encoder", "momentum_encoder", "queue", "queue_ptr", "optimizer", "scaler", "epoch",
                "iteration", "global_step", "rng", "args", "backbone", "export"):  # fmt: skip
        assert key in ckpt, key
    assert ckpt["format"] == "selfsup" and ckpt["project"] == "moco"
    assert all(k.startswith("module.resnet.") for k in ckpt["encoder"])
    assert ckpt["encoder"]["module.resnet.fc.weight"].shape == (128, 32)
    assert ckpt["queue"].shape == (64, 128) and ckpt["global_step"] == 3 and ckpt["iteration"] == 3
    assert ckpt["queue_ptr"] == (-3 * 32) % 64  # the ring is written backwards, 32 keys a step
    assert ckpt["args"]["args"]["num_keys"] == 64 and ckpt["args"]["argv"]
    assert (out / "config.json").is_file()


def test_the_loss_plot_is_drawn_with_the_plot_extra(tmp_path, tiny_args):
    pytest.importorskip("matplotlib", reason="loss.png needs the plot extra: pip install 'selfsup[plot]'")
    out = run(tmp_path, list(tiny_args), "--max_iters", "2")
    assert (out / "loss" / "loss.png").stat().st_size > 0


def assert_same_rng(a: dict, b: dict) -> None:
    assert torch.equal(a["torch"], b["torch"])
    assert torch.equal(a["numpy"]["keys"], b["numpy"]["keys"]) and a["numpy"]["pos"] == b["numpy"]["pos"]
    assert a["python"] == b["python"]


def test_seed_fixes_python_numpy_and_torch_states(tmp_path, tiny_args):
    """Two runs with the same flags save the same RNG states (all three); another --seed saves others."""
    states = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = run(tmp_path / name, [*tiny_args, "--seed", seed], "--max_iters", "2")
        states.append(load(out / "weight" / "ckpt_last.pkl")["rng"])
    assert_same_rng(states[0], states[1])
    assert not torch.equal(states[0]["numpy"]["keys"], states[2]["numpy"]["keys"])
    assert states[0]["python"] != states[2]["python"]


def test_shuffle_bn_queue_and_start_epoch_resume_across_an_epoch_boundary(tmp_path, tiny_args):
    """Shuffle BN draws a permutation from the global RNG every step and the queue carries state from step to
    step: stopping at step 4 and resuming to step 8 (epoch 1, iteration 2) ends bitwise where the
    uninterrupted run does; so does ``--resume auto --start_epoch 0`` from the epoch checkpoint ``ckpt_0``."""
    args = [*tiny_args, "--shuffle_bn", "--bn_splits", "2"]
    straight = run(tmp_path / "a", args, "--max_iters", "8")
    run(tmp_path / "b", args, "--max_iters", "4")
    resumed = run(tmp_path / "b", args, "--max_iters", "8", "--resume", "auto")
    a = load(straight / "weight" / "ckpt_last.pkl")
    assert (straight / "weight" / "ckpt_0.pkl").is_file()  # after epoch 0, the original's naming
    assert (a["epoch"], a["iteration"], a["global_step"]) == (1, 2, 8)

    def assert_same_as_straight(b: dict) -> None:
        assert (a["epoch"], a["iteration"], a["global_step"]) == (
            b["epoch"],
            b["iteration"],
            b["global_step"],
        )
        for part in ("encoder", "momentum_encoder"):
            for key in a[part]:
                assert torch.equal(a[part][key], b[part][key]), (part, key)
        assert torch.equal(a["queue"], b["queue"]) and a["queue_ptr"] == b["queue_ptr"]
        assert_same_rng(a["rng"], b["rng"])

    assert_same_as_straight(load(resumed / "weight" / "ckpt_last.pkl"))
    assert losses(straight) == losses(resumed)
    run(tmp_path / "b", args, "--max_iters", "8", "--resume", "auto", "--start_epoch", "0")
    assert_same_as_straight(load(resumed / "weight" / "ckpt_last.pkl"))


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tmp_path, tiny_args):
    out = tmp_path / "DIGITS" / "t"
    cmd = [sys.executable, "-m", "selfsup.moco.train", *tiny_args, "--output_root", str(tmp_path),
           "--exp_version", "t", "--max_epoch", "1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    csv_path = out / "loss" / "loss.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    stopped_at = load(out / "weight" / "ckpt_last.pkl")["global_step"]
    assert stopped_at >= 3 and "signal" in output
    run(tmp_path, list(tiny_args), "--resume", "auto", "--max_iters", str(stopped_at + 2))
    assert load(out / "weight" / "ckpt_last.pkl")["global_step"] == stopped_at + 2


@pytest.mark.distributed
def test_torchrun_shuffle_bn_enqueues_the_keys_of_both_ranks(tmp_path, tiny_args, torchrun):
    """Under 2 gloo processes (16 images per rank), shuffle BN goes through the all-gather and every step
    enqueues both ranks' keys: 32 per step, so the backwards ring's pointer is at -3·32 mod 64 after 3 steps
    (16 per step would leave it at 16)."""
    flags = [
        *tiny_args,
        "--shuffle_bn",
        "--max_iters",
        "3",
        "--output_root",
        str(tmp_path),
        "--exp_version",
        "ddp",
    ]
    proc = torchrun("selfsup.moco.train", *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = load(tmp_path / "DIGITS" / "ddp" / "weight" / "ckpt_last.pkl")
    assert ckpt["global_step"] == 3 and ckpt["args"]["world_size"] == 2
    assert ckpt["queue_ptr"] == (-3 * 32) % 64 == 32
