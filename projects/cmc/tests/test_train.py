"""The CMC trainers on the runtime, on the 192-image fixture: checkpoints in the original layout, bitwise resume
with Image Mixture and the MoCo queue across an epoch boundary, the resume guards, ``--bn_splits``, evaluation of
our checkpoints. (2-process runs: ``test_negatives.py``; plain bitwise resume, a 2-process smoke run and
``selfsup-eval knn`` of every registered trainer: ``tests/test_trainer_contract.py``.)"""

from pathlib import Path

import pytest
import torch

from selfsup.cmc.cli import parse_moco_ins_args
from selfsup.cmc.train import main as cmc_main
from selfsup.cmc.train_moco_ins import MocoInsTrainer
from selfsup.cmc.train_moco_ins import main as ins_main
from selfsup.shared.runtime.trainer import TrainingRun


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
    assert ckpt["contrast"]["memory_l"].shape == (192, 128)
    assert ckpt["opt"]["nce_k"] == 64 and ckpt["opt"]["view"] == "Lab" and ckpt["opt"] == ckpt["args"]["args"]
    assert ckpt["global_step"] == 3 and ckpt["iteration"] == 3 and ckpt["format"] == "selfsup"
    assert (ckpt["project"], ckpt["method"], ckpt["export"]) == ("cmc", "cmc", {"original_format": "cmc"})
    assert set(ckpt["state"]) == {"model", "contrast"}
    # the memories (1.3 GB for ImageNet) appear in `contrast` and in the training state, stored once
    for name in ("memory_l", "memory_ab"):
        original, state = ckpt["contrast"][name], ckpt["state"]["contrast"][f"{name}.memory"]
        assert original.untyped_storage().data_ptr() == state.untyped_storage().data_ptr()
    assert (out / "config.json").is_file() and (out / "log.csv").is_file()
    assert "l_prob" in (out / "log.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("im_type", ["IM", "Cutout"])
def test_moco_resume_with_image_mixture_is_bitwise_across_an_epoch_boundary(tmp_path, tiny_ins, im_type):
    flags = [*tiny_ins, "--moco", "--softmax", "--nce_k", "48", "--IM", "--IM_type", im_type]
    flags += [
        "--g_prob",
        "0.5",
        "--r_prob",
        "0.5",
        "--cutout_p",
        "0.5",
        "--mask_size",
        "6",
        "--num_workers",
        "1",
    ]
    # 6 steps per epoch: stop at 5, resume to 8 (epoch 1, iteration 2)
    straight = run(ins_main, tmp_path / "a", flags, "--max_iters", "8")
    run(ins_main, tmp_path / "b", flags, "--max_iters", "5")
    resumed = run(ins_main, tmp_path / "b", flags, "--max_iters", "8", "--resume", "auto")
    assert straight.name.startswith("MoCo0.999_softmax_48_resnet18_lr_0.03")
    a, b = load(straight / "current.pth"), load(resumed / "current.pth")
    assert (a["epoch"], a["iteration"]) == (1, 2)
    assert_same_state(a, b)
    assert set(a) >= {"model", "model_ema", "contrast"} and set(a["contrast"]) == {"params", "memory"}
    assert a["export"] == {"original_format": "cmc_insdis"} and a["method"] == "moco"
    assert int(a["state"]["contrast"]["queue_ptr"]) == (192 + 2 * 32) % 48  # epoch 0, then 2 steps


def test_insdis_epoch_checkpoints_use_the_original_names(tmp_path, tiny_ins):
    out = run(ins_main, tmp_path, tiny_ins, "--epochs", "3", "--save_freq", "2", "--softmax")
    names = sorted(p.name for p in out.glob("*.pth"))
    assert names == ["ckpt_epoch_2.pth", "ckpt_epoch_3.pth", "current.pth"]  # --save_freq, and the last epoch
    ckpt = load(out / "ckpt_epoch_3.pth")
    assert ckpt["epoch"] == 3 and set(ckpt["contrast"]) == {"params", "memory"} and "model_ema" not in ckpt
    assert load(out / "ckpt_epoch_2.pth")["epoch"] == 2 and ckpt["method"] == "insdis"


def test_resume_refuses_another_method_or_model(tmp_path, tiny_ins, capsys):
    out = run(ins_main, tmp_path / "ins", tiny_ins, "--max_iters", "1")
    ckpt = str(out / "current.pth")
    assert ins_main([*tiny_ins, "--moco", "--model_path", str(tmp_path / "m"), "--resume", ckpt]) == 2
    assert "method 'insdis'; this run is cmc/moco" in capsys.readouterr().err
    flags = [*tiny_ins, "--model", "resnet50", "--model_path", str(tmp_path / "r50"), "--resume", ckpt]
    assert ins_main(flags) == 2
    assert "--model is 'resnet18', not 'resnet50'" in capsys.readouterr().err


def test_bn_splits_emulates_per_gpu_bn_and_keeps_the_original_keys(tmp_path, tiny_ins):
    from selfsup.shared.models.split_batchnorm import SplitBatchNorm2d

    flags = [*tiny_ins, "--moco", "--bn_splits", "4", "--model_path", str(tmp_path)]
    args = parse_moco_ins_args(flags)
    method = MocoInsTrainer(args)
    run_ = TrainingRun.start(method, args, flags)
    try:
        for module in (method.model, method.model_ema):
            assert any(isinstance(m, SplitBatchNorm2d) for m in module.modules())
        batch = next(iter(run_.parts.data.loader))
        assert torch.isfinite(run_.step(batch)["loss"])
        split_keys = set(method.checkpoint_entries()["model"])
    finally:
        run_.close()
    plain_dir = run(ins_main, tmp_path / "plain", [*tiny_ins, "--moco"], "--max_iters", "1")
    assert split_keys == set(load(plain_dir / "current.pth")["model"])


def test_selfsup_eval_reads_our_checkpoints_in_the_original_layout(tmp_path, tiny_cmc, tiny_ins, digits192):
    from selfsup.shared.evaluation import evaluate_checkpoint

    data = {"dataset": "npz", "root": str(digits192), "k": 5, "resize": 16, "crop": 16}
    cmc = run(cmc_main, tmp_path / "cmc", tiny_cmc, "--cifar_stem", "--max_iters", "2") / "current.pth"
    for view in ("both", "l", "ab"):
        result = evaluate_checkpoint("knn", cmc, view=view, **data)
        assert result["checkpoint"]["format"] == "selfsup" and 0 < result["top1"] <= 100
        assert result["checkpoint"]["view"] == view
    ins = run(ins_main, tmp_path / "ins", [*tiny_ins, "--moco"], "--max_iters", "2") / "current.pth"
    for branch in ("online", "ema"):
        result = evaluate_checkpoint("knn", ins, branch=branch, **data)
        assert 0 < result["top1"] <= 100
