"""swav-unmix-train end to end on the embedded digits: checkpoint layout, automatic restart that is bitwise with
Un-Mix and the queue on, prototype freezing, LARC, evaluation of our checkpoints, CLI errors, torchrun with 2 gloo
ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.shared.runtime.seeding import seed_everything
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.train import build_model, main, train


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def run(out: Path, flags, *extra: str) -> Path:
    argv = [*flags, "--dump_path", str(out), *extra]
    return train(parse_args(argv), ["swav-unmix-train", *argv])


def test_checkpoint_holds_the_original_entries_and_the_training_state(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--epochs", "1"))
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 0 and ckpt["global_step"] == 3  # 192 // 64, drop_last
    assert set(ckpt["optimizer"]) == {"state", "param_groups"}
    state_dict = ckpt["state_dict"]
    assert all(k.startswith("module.") for k in state_dict)
    assert state_dict["module.prototypes.weight"].shape == (20, 16)
    assert ckpt["project"] == "swav_unmix" and ckpt["method"] == "unmix" and ckpt["queues"] is None
    assert (tmp_path / "checkpoints" / "ckp-0.pth").is_file() and (tmp_path / "config.json").is_file()
    assert ckpt["args"]["args"]["unmix_prob"] == 0.5


def test_restart_is_bitwise_with_unmix_and_the_queue(tmp_path, tiny):
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
    run(
        tmp_path / "cut", flags, "--max_iters", "9"
    )  # mid-epoch 1: the queue is allocated and in the checkpoint
    cut = load(tmp_path / "cut" / "checkpoint.pth.tar")
    assert (cut["epoch"], cut["iteration"], cut["queues"].shape) == (1, 3, (1, 2, 64, 16))
    assert cut["queue_in_use"] == [True]  # 3 pushes of 32 per slot and call filled the 64 rows: in use
    resumed = load(run(tmp_path / "cut", flags))  # restarts from dump_path/checkpoint.pth.tar
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert torch.equal(whole["queues"], resumed["queues"])
    assert torch.equal(load(tmp_path / "whole" / "queue0.pth")["queue"], whole["queues"][0])
    for a, b in zip(whole["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
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


def test_selfsup_eval_reads_our_checkpoint(tmp_path, tiny):
    from selfsup.shared.evaluation import evaluate_checkpoint

    path = run(tmp_path, tiny, "--max_iters", "2")
    result = evaluate_checkpoint("knn", path, dataset="digits", k=5, resize=16, crop=16, normalization="swav")
    assert result["checkpoint"]["format"] == "selfsup" and 0 < result["top1"] <= 100


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


def test_missing_data_folder_is_a_one_line_error(tmp_path, tiny, capsys):
    flags = [f for f in tiny if f not in ("--dataset", "npz", "--data_path") and not f.endswith(".npz")]
    assert main([*flags, "--data_path", str(tmp_path / "nowhere"), "--dump_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]


def test_cifar_data_path_selects_the_dataset_and_the_cifar_views():
    args = parse_args(["--data_path", "cifar10"])
    assert args.dataset == "cifar10" and args.data_path is None and args.cifar_aug
    assert not parse_args([]).cifar_aug and parse_args([]).dataset == "digits"


@pytest.mark.distributed
def test_torchrun_two_process_gloo_run(tmp_path, tiny, free_port):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port),
    ]
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
    cmd += ["-m", "selfsup.swav_unmix.train", *flags, "--dump_path", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = load(tmp_path / "checkpoint.pth.tar")
    assert ckpt["global_step"] == 3 and ckpt["args"]["world_size"] == 2
    assert ckpt["queues"].shape == (2, 2, 64, 16)  # per rank: 128 / 2 rows
    assert (tmp_path / "queue0.pth").is_file() and (tmp_path / "queue1.pth").is_file()


def test_sigterm_writes_a_checkpoint_and_the_run_restarts_from_it(tmp_path, tiny):
    import signal
    import time

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
