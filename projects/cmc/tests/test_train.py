"""The CMC trainers end to end on the embedded digits: checkpoint content in the original layout, bitwise resume
(memories, Z, queue, every RNG, Image Mixture on), evaluation of our checkpoints, torchrun with 2 gloo ranks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfsup.cmc.train import main as cmc_main
from selfsup.cmc.train_moco_ins import main as ins_main


def run(main, tmp_path: Path, args, *extra: str) -> Path:
    assert main([*args, "--model_path", str(tmp_path), *extra]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return run_dir


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert (a["epoch"], a["iteration"], a["global_step"]) == (b["epoch"], b["iteration"], b["global_step"])
    for name in a["state"]:
        for key, value in a["state"][name].items():
            assert torch.equal(value, b["state"][name][key]), (name, key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"])
    assert a["rng"]["python"] == b["rng"]["python"]


def test_cmc_checkpoint_holds_the_original_entries_and_the_training_state(tmp_path, tiny_cmc):
    out = run(cmc_main, tmp_path, tiny_cmc, "--max_iters", "3")
    assert out.name == "memory_nce_64_resnet18v1_lr_0.03_decay_0.0001_bsz_32_view_Lab"  # the original's name
    ckpt = load(out / "current.pth")
    for key in ("opt", "model", "contrast", "optimizer", "epoch"):  # what LinearProbing.py reads
        assert key in ckpt, key
    assert all(
        k.startswith("encoder.module.l_to_ab.") or k.startswith("encoder.module.ab_to_l.")
        for k in ckpt["model"]
    )
    assert set(ckpt["contrast"]) == {"params", "memory_l", "memory_ab"}
    params = ckpt["contrast"]["params"]
    assert params[0] == 64 and abs(float(params[1]) - 0.07) < 1e-6 and float(params[2]) > 0  # K, T, Z_l set
    assert ckpt["contrast"]["memory_l"].shape == (1347, 128)
    assert ckpt["opt"]["nce_k"] == 64 and ckpt["opt"]["view"] == "Lab"
    assert ckpt["global_step"] == 3 and ckpt["iteration"] == 3 and ckpt["format"] == "selfsup"
    # the memories (1.3 GB for ImageNet) appear in `contrast` and in the training state, stored once
    for name in ("memory_l", "memory_ab"):
        original, state = ckpt["contrast"][name], ckpt["state"]["contrast"][f"{name}.memory"]
        assert original.untyped_storage().data_ptr() == state.untyped_storage().data_ptr()
    assert (out / "config.json").is_file() and (out / "log.csv").is_file()


def test_cmc_resume_is_bitwise_across_an_epoch_boundary(tmp_path, tiny_cmc):
    # 1347 digits = 43 iterations of 32: stop at 40, resume to 46 (epoch 1, iteration 3); NCE sets Z at step 1
    straight = run(cmc_main, tmp_path / "a", tiny_cmc, "--max_iters", "46")
    run(cmc_main, tmp_path / "b", tiny_cmc, "--max_iters", "40")
    resumed = run(cmc_main, tmp_path / "b", tiny_cmc, "--max_iters", "46", "--resume", "auto")
    a, b = load(straight / "current.pth"), load(resumed / "current.pth")
    assert (a["epoch"], a["iteration"]) == (1, 3)
    assert_same_state(a, b)
    assert torch.equal(a["contrast"]["params"], b["contrast"]["params"])


@pytest.mark.parametrize("im_type", ["IM", "Cutout"])
def test_moco_resume_with_image_mixture_is_bitwise(tmp_path, tiny_ins, im_type):
    flags = [
        *tiny_ins,
        "--moco",
        "--softmax",
        "--IM",
        "--IM_type",
        im_type,
        "--g_prob",
        "0.5",
        "--r_prob",
        "0.5",
    ]
    flags += ["--cutout_p", "0.5", "--mask_size", "6", "--num_workers", "1"]
    straight = run(ins_main, tmp_path / "a", flags, "--max_iters", "45")
    run(ins_main, tmp_path / "b", flags, "--max_iters", "41")
    resumed = run(ins_main, tmp_path / "b", flags, "--max_iters", "45", "--resume", "auto")
    assert straight.name.startswith("MoCo0.999_softmax_64_resnet18_lr_0.03")
    a, b = load(straight / "current.pth"), load(resumed / "current.pth")
    assert_same_state(a, b)
    assert set(a) >= {"model", "model_ema", "contrast"} and set(a["contrast"]) == {"params", "memory"}
    assert int(a["state"]["contrast"]["queue_ptr"]) == (1347 + 2 * 32) % 64  # epoch 0, then 2 steps


def test_insdis_epoch_checkpoints_use_the_original_names(tmp_path, tiny_ins):
    out = run(ins_main, tmp_path, tiny_ins, "--epochs", "2", "--save_freq", "1", "--softmax")
    assert (out / "ckpt_epoch_1.pth").is_file() and (out / "ckpt_epoch_2.pth").is_file()
    ckpt = load(out / "ckpt_epoch_2.pth")
    assert ckpt["epoch"] == 2 and set(ckpt["contrast"]) == {"params", "memory"} and "model_ema" not in ckpt


def test_selfsup_eval_reads_our_checkpoints_in_the_original_layout(tmp_path, tiny_cmc, tiny_ins):
    from selfsup.shared.evaluation import evaluate_checkpoint

    cmc = run(cmc_main, tmp_path / "cmc", tiny_cmc, "--max_iters", "2") / "current.pth"
    for view in ("both", "l", "ab"):
        result = evaluate_checkpoint("knn", cmc, dataset="digits", k=5, resize=16, crop=16, view=view)
        assert result["checkpoint"]["format"] == "selfsup" and 0 < result["top1"] <= 100
        assert result["checkpoint"]["view"] == view
    ins = run(ins_main, tmp_path / "ins", [*tiny_ins, "--moco"], "--max_iters", "2") / "current.pth"
    for branch in ("online", "ema"):
        result = evaluate_checkpoint("knn", ins, dataset="digits", k=5, resize=16, crop=16, branch=branch)
        assert 0 < result["top1"] <= 100


@pytest.mark.distributed
def test_torchrun_two_process_gloo_run(tmp_path, tiny_cmc, free_port):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port),
    ]
    cmd += ["-m", "selfsup.cmc.train", *tiny_cmc, "--max_iters", "3", "--model_path", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (out,) = list(tmp_path.iterdir())
    ckpt = load(out / "current.pth")
    assert ckpt["global_step"] == 3 and ckpt["args"]["world_size"] == 2


def test_bn_splits_emulates_per_gpu_bn_and_keeps_the_original_keys(tmp_path, tiny_ins):
    from selfsup.cmc.cli import parse_moco_ins_args
    from selfsup.cmc.train_moco_ins import MocoInsTrainer
    from selfsup.shared.models.split_batchnorm import SplitBatchNorm2d

    flags = [*tiny_ins, "--moco", "--bn_splits", "4", "--max_iters", "2", "--model_path", str(tmp_path)]
    trainer = MocoInsTrainer(parse_moco_ins_args(flags), flags)
    trainer.train()
    for module in (trainer.model, trainer.model_ema):
        assert any(isinstance(m, SplitBatchNorm2d) for m in module.modules())
    (ckpt_path,) = tmp_path.glob("*/current.pth")
    plain = run(ins_main, tmp_path / "plain", [*tiny_ins, "--moco"], "--max_iters", "1")
    assert set(load(ckpt_path)["model"]) == set(load(plain / "current.pth")["model"])
