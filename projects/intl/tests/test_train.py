"""intl-train end to end on 192 embedded digits: the original's checkpoint entries, the EMA update, the per-step
learning rate, evaluation of both branches, resume refusals, the registered entries. (Bitwise resume and the
2-process run of both entries: tests/test_trainer_contract.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfsup.intl.cli import parse_args
from selfsup.intl.model import INTLModel
from selfsup.intl.train import INTL, INTL_M, build_model, train
from selfsup.shared.models.backbones import BackboneConfig


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def run(out: Path, flags, *extra: str) -> Path:
    argv = [*flags, "--ckpt_dir", str(out), *extra]
    return train(parse_args(argv), ["intl-train", *argv])


def test_checkpoint_holds_the_original_entries(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--epochs", "1", "--warmup_eps", "0"))
    assert (tmp_path / "ckpt_INTL.pth.tar").is_file() and (tmp_path / "ckpt_INTL_0001.pth.tar").is_file()
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "resnet18" and ckpt["global_step"] == 3
    sd = ckpt["state_dict"]
    assert sd["module.projection.0.weight"].shape == (64, 64) and "module.projection.0.bias" not in sd
    assert sd["module.projection.6.bias"].shape == (64,)
    assert "module.backbone.conv1.weight" in sd and not any("momentum" in k for k in sd)
    group_wd = sorted(g["weight_decay"] for g in ckpt["optimizer"]["param_groups"])
    assert group_wd == [0.0, 1e-5]  # no weight decay on 1-D parameters


def test_ema_update_follows_the_formula():
    model = INTLModel(
        BackboneConfig("resnet18", width=4, cifar_stem=True), projection_size=8, emb=8, ema=True
    )
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum_backbone.parameters()]
    model.momentum_update(0.9)
    for old, new, online in zip(before, model.momentum_backbone.parameters(), model.backbone.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    assert not any(p.requires_grad for p in model.momentum_projection.parameters())


def test_zero_init_residual_except_resnet18():
    r18 = INTLModel(BackboneConfig("resnet18", width=4), projection_size=8, emb=8)
    assert r18.backbone.layer1[0].bn2.weight.abs().sum() > 0
    r34 = INTLModel(BackboneConfig("resnet34", width=4), projection_size=8, emb=8)
    assert r34.backbone.layer1[0].bn2.weight.abs().sum() == 0


def test_learning_rate_is_scaled_and_warmed_up_per_step(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--max_iters", "2", "--lr", "0.4"))
    base = 0.4 * 64 / 256
    for group in ckpt["optimizer"]["param_groups"]:  # step 1 of 3 warm-up steps: base·(s+1)/W
        assert group["lr"] == pytest.approx(base * 2 / 3)


def test_selfsup_eval_reads_both_branches(tmp_path, tiny):
    from selfsup.shared.evaluation import evaluate_checkpoint

    path = run(tmp_path, tiny, "--max_iters", "2", "--method", "intl_m")
    for branch in ("online", "ema"):
        result = evaluate_checkpoint("knn", path, dataset="digits", k=5, resize=16, crop=16, branch=branch)
        assert 0 < result["top1"] <= 100


def test_spectral_power_runs(tmp_path, tiny):
    ckpt = load(run(tmp_path, tiny, "--max_iters", "2", "--spectral_power", "-0.5"))
    assert ckpt["global_step"] == 2 and ckpt["args"]["args"]["spectral_power"] == -0.5


def test_original_flags_parse():
    args = parse_args(
        ["--multi-crop", "-a", "resnet50x2", "--weight-decay", "2.5e-5", "--dist-url", "tcp://h:1"]
    )
    assert args.arch == "resnet50w2" and args.wd == 2.5e-5 and args.nmb_crops == [2, 1, 1, 1, 1]
    assert args.crops_size == [224, 192, 160, 128, 96] and args.gaussian_prob == [0.5] * 5
    assert parse_args(["--dataset", "in100", "--data_path", "/x"]).dataset == "imagefolder"
    assert (
        build_model(parse_args(["-a", "resnet18", "--projection_size", "16", "--emb", "8"]))
        .projection[6]
        .out_features
        == 8
    )


def test_resume_refuses_a_checkpoint_of_other_flags(tmp_path, tiny):
    """The original ``state_dict`` is loaded back through the DDP key mapping; other flags are refused in one
    line naming the flags (a projector of another width, a run without the EMA target)."""
    path = run(tmp_path, tiny, "--max_iters", "1")
    for extra in (["--emb", "32"], ["--method", "intl_m"]):
        with pytest.raises(ValueError, match="does not fit the flags"):
            run(tmp_path, tiny, "--resume", str(path), *extra)
    model = build_model(parse_args([*tiny]))
    model.load_original_state_dict(load(path)["state_dict"])  # the mapping round-trips
    assert model.original_state_dict().keys() == load(path)["state_dict"].keys()


def test_registered_entries():
    assert (INTL.name, INTL_M.name) == ("intl", "intl_m") and INTL.distributed and INTL_M.distributed
    flags = INTL_M.smoke_flags(Path("d.npz"), Path("out"))
    assert (
        parse_args(flags).method == "intl_m"
        and parse_args(INTL.smoke_flags(Path("d.npz"), Path("o"))).method == "intl"
    )
