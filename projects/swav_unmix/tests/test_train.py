"""swav-unmix-train on the 192 digits: the original's checkpoint layout, the automatic restart with every rank's
queue, prototype freezing, LARC and the per-iteration schedule, CLI errors, the queues of 2 gloo ranks, and SIGTERM.
The generic checks (smoke run, bitwise resume, 2-process run, ``selfsup-eval``) are the contract test's
(``tests/test_trainer_contract.py``) for both registered entries, ``swav`` and ``unmix``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.shared.runtime.registry import TrainerEntry
from selfsup.shared.runtime.seeding import seed_everything
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.train import SWAV, UNMIX, build_model, main, train


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def run(out: Path, flags, *extra: str) -> Path:
    argv = [*flags, "--dump_path", str(out), *extra]
    return train(parse_args(argv), ["swav-unmix-train", *argv])


def test_both_entries_run_the_same_trainer_with_their_own_flags(digits192, tmp_path):
    assert isinstance(SWAV, TrainerEntry) and isinstance(UNMIX, TrainerEntry)
    assert (SWAV.name, UNMIX.name, SWAV.resume_flags, UNMIX.resume_flags) == ("swav", "unmix", (), ())
    assert SWAV.method is UNMIX.method and SWAV.parse_args is UNMIX.parse_args
    swav, unmix = (entry.parse_args(entry.smoke_flags(digits192, tmp_path)) for entry in (SWAV, UNMIX))
    assert swav.run_swav and not unmix.run_swav and unmix.unmix_prob == 0.5
    assert swav.dump_path == str(tmp_path) and swav.epochs == 1 and swav.workers == 0


def test_checkpoint_holds_the_original_entries_and_the_training_state(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--epochs", "1"))
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 0 and ckpt["global_step"] == 3  # 192 // 64, drop_last
    assert set(ckpt["optimizer"]) == {"state", "param_groups"}
    state_dict = ckpt["state_dict"]
    assert all(k.startswith("module.") for k in state_dict)
    assert state_dict["module.prototypes.weight"].shape == (20, 16)
    assert ckpt["project"] == "swav_unmix" and ckpt["method"] == "unmix" and ckpt["queues"] is None
    assert ckpt["input_normalization"] == "swav" and ckpt["export"]["prefix"] == "module."
    assert ckpt["args"]["args"]["unmix_prob"] == 0.5
    for name in ("checkpoint.pth.tar", "checkpoints/ckp-0.pth", "config.json", "log.csv"):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob("queue*.pth"))  # no queue: no queue files
    columns = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert columns[2:7] == ["loss", "loss_ori", "loss_mix", "loss_mix_rev", "lam"]


def test_restart_restores_the_queue_and_its_flag(tmp_path, tiny):
    """Cut mid-epoch 1 with the queue allocated and in use: the restart from checkpoint.pth.tar continues with
    the saved queue and flag (and NumPy's Un-Mix draws), so the queues end equal to an uncut run's."""
    flags = [
        *tiny,
        "--epochs",
        "2",
        "--queue_length",
        "64",
        "--epoch_queue_starts",
        "1",
        "--batch_size",
        "32",
    ]
    whole = load(run(tmp_path / "whole", flags))
    assert whole["queues"].shape == (1, 2, 64, 16) and whole["queue_in_use"] == [True]
    assert torch.equal(load(tmp_path / "whole" / "queue0.pth")["queue"], whole["queues"][0])
    run(tmp_path / "cut", flags, "--max_iters", "9")  # epoch 1, iteration 3
    cut = load(tmp_path / "cut" / "checkpoint.pth.tar")
    assert (cut["epoch"], cut["iteration"], cut["queues"].shape) == (1, 3, (1, 2, 64, 16))
    assert cut["queue_in_use"] == [True]  # 3 pushes of 32 per slot and call filled the 64 rows: in use
    resumed = load(run(tmp_path / "cut", flags))  # no flag: restarts from dump_path/checkpoint.pth.tar
    assert torch.equal(whole["queues"], resumed["queues"]) and resumed["queue_in_use"] == [True]
    assert torch.equal(
        whole["state_dict"]["module.prototypes.weight"], resumed["state_dict"]["module.prototypes.weight"]
    )
    assert torch.equal(whole["rng"]["numpy"]["keys"], resumed["rng"]["numpy"]["keys"])  # the Un-Mix draws
    assert whole["rng"]["numpy"]["pos"] == resumed["rng"]["numpy"]["pos"]


def _initial_prototypes(flags) -> torch.Tensor:
    seed_everything(parse_args(list(flags)).seed)
    model = build_model(parse_args(list(flags)))
    return F.normalize(model.prototypes.weight.detach(), dim=1)


def test_prototypes_are_frozen_for_the_first_iterations(tmp_path, tiny):
    flags = [f for f in tiny]
    i = flags.index("--freeze_prototypes_niters")
    frozen = [*flags[:i], "--freeze_prototypes_niters", "3", *flags[i + 2 :], "--run_swav", "true"]
    start = _initial_prototypes(frozen)
    after3 = load(run(tmp_path / "a", frozen, "--max_iters", "3"))["state_dict"]["module.prototypes.weight"]
    torch.testing.assert_close(after3, start)  # only re-normalised: no update in iterations 0, 1, 2
    after4 = load(run(tmp_path / "b", frozen, "--max_iters", "4"))["state_dict"]["module.prototypes.weight"]
    assert not torch.allclose(after4, start)
    opt = load(tmp_path / "a" / "checkpoint.pth.tar")["optimizer"]
    n_params = len(opt["param_groups"][0]["params"])
    assert len(opt["state"]) == n_params - 1  # no momentum buffer for the frozen prototypes


def test_larc_settings_and_per_iteration_schedule(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--max_iters", "2", "--base_lr", "0.5", "--warmup_epochs", "1",
                    "--start_warmup", "0.1", "--epochs", "2"))  # fmt: skip
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["eta"] == 0.001 and group["clip"] is False and group["weight_decay"] == 1e-6
    assert group["momentum"] == 0.9 and not group.get("lars_exclude", False)
    # linspace(0.1, 0.5, 3)[1]: the rate of the second iteration (3 iterations per epoch)
    assert group["lr"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--nmb_crops", "3", "--size_crops", "16", "--min_scale_crops", "0.3", "--max_scale_crops", "1"],
            "even",
        ),
        (["--size_crops", "16"], "--size_crops"),
        (["--crops_for_assign", "0", "9"], "--crops_for_assign"),
        (["--use_fp16", "maybe"], "boolean"),
    ],
)
def test_bad_flags_give_one_line_errors(tiny, extra, message, capsys):
    with pytest.raises(SystemExit):
        parse_args([*tiny, *extra])
    assert message in capsys.readouterr().err


def test_missing_data_folder_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    from .conftest import TINY

    flags = [f for f in TINY if f not in ("--dataset", "npz")]
    out = tmp_path / "run"
    assert main([*flags, "--data_path", str(tmp_path / "nowhere"), "--dump_path", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and err[0].startswith("swav-unmix-train: error:")
    assert not out.exists()  # nothing is written before the inputs are validated


def test_a_checkpoint_of_other_flags_is_a_one_line_error(tmp_path, tiny, capsys):
    run(tmp_path, tiny, "--max_iters", "1")
    assert main([*tiny, "--dump_path", str(tmp_path), "--feat_dim", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint.pth.tar" in err[0] and "--feat_dim" in err[0]


def test_cifar_data_path_selects_the_dataset_and_the_cifar_views():
    args = parse_args(["--data_path", "cifar10"])
    assert args.dataset == "cifar10" and args.data_path is None and args.cifar_aug
    assert not parse_args([]).cifar_aug and parse_args([]).dataset == "digits"


@pytest.mark.distributed
def test_two_gloo_ranks_checkpoint_both_queues(tmp_path, tiny, torchrun):
    flags = [
        *tiny,
        "--batch_size",
        "32",
        "--queue_length",
        "128",
        "--epoch_queue_starts",
        "0",
        "--max_iters",
        "3",
    ]
    proc = torchrun("selfsup.swav_unmix.train", *flags, "--dump_path", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = load(tmp_path / "checkpoint.pth.tar")
    assert ckpt["global_step"] == 3 and ckpt["args"]["world_size"] == 2
    assert ckpt["queues"].shape == (2, 2, 64, 16)  # per rank: 128 / 2 rows
    assert not torch.equal(ckpt["queues"][0], ckpt["queues"][1])  # each rank queues its own embeddings
    for rank in (0, 1):
        assert torch.equal(load(tmp_path / f"queue{rank}.pth")["queue"], ckpt["queues"][rank])


def test_sigterm_writes_a_checkpoint_and_the_run_restarts_from_it(tmp_path, tiny):
    cmd = [sys.executable, "-m", "selfsup.swav_unmix.train", *tiny, "--epochs", "50", "--log_every", "1"]
    cmd += ["--dump_path", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    csv_path = tmp_path / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    stopped_at = load(tmp_path / "checkpoint.pth.tar")["global_step"]
    assert 2 <= stopped_at < 150 and "signal" in output
    run(tmp_path, tiny, "--epochs", "50", "--max_iters", str(stopped_at + 2))
    assert load(tmp_path / "checkpoint.pth.tar")["global_step"] == stopped_at + 2
