"""``selfsup-eval`` on checkpoint files: selfsup, torchvision and official-MoCo layouts, partial loads."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.shared.evaluation.cli import main
from selfsup.shared.evaluation.features import module_sha256
from selfsup.shared.models.backbones import build_backbone

FAST = ["--dataset", "digits", "--resize", "16", "--crop", "16"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    online = build_backbone("resnet18", width=4, cifar_stem=True)
    ema = build_backbone("resnet18", width=4, cifar_stem=True)
    return online, ema


def _prefixed(state_dict, prefix, fc_dim=None):
    out = {prefix + k: v.clone() for k, v in state_dict.items()}
    if fc_dim is not None:
        width = state_dict["layer4.1.bn2.weight"].shape[0]
        out[prefix + "fc.weight"] = torch.randn(fc_dim, width)
        out[prefix + "fc.bias"] = torch.zeros(fc_dim)
    return out


def selfsup_checkpoint(path, online, ema):
    """The layout our trainers write (module.resnet.* under 'encoder', EMA under 'momentum_encoder')."""
    torch.save(
        {
            "format": "selfsup",
            "format_version": 1,
            "project": "moco",
            "backbone": {"name": "resnet18", "width": 4, "cifar_stem": True, "in_channels": 3},
            "export": {
                "state_dict_location": "encoder",
                "prefix": "module.resnet.",
                "drop_prefixes": ["fc."],
                "ema_location": "momentum_encoder",
            },
            "encoder": _prefixed(online.state_dict(), "module.resnet.", fc_dim=16),
            "momentum_encoder": _prefixed(ema.state_dict(), "module.resnet.", fc_dim=16),
            "args": {"lr": 0.03},
            "epoch": 7,
            "global_step": 70,
        },
        path,
    )
    return path


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_linear_on_a_selfsup_checkpoint_and_its_ema_branch(nets, tmp_path, capsys):
    online, ema = nets
    ckpt = selfsup_checkpoint(tmp_path / "ckpt_7.pkl", online, ema)
    out = tmp_path / "res" / "lin.json"
    argv = [
        "linear",
        "--checkpoint",
        str(ckpt),
        *FAST,
        "--output",
        str(out),
        "--epochs",
        "2",
        "--cache_dir",
        str(tmp_path / "cache"),
    ]
    code, stdout, stderr = _run(argv, capsys)
    assert code == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    result = json.loads(out.read_text())
    assert (
        summary["top1"] == result["top1"] and result["protocol"] == "linear" and result["preset"] == "quick"
    )
    assert result["checkpoint"]["format"] == "selfsup" and result["checkpoint"]["epoch"] == 7
    assert result["checkpoint"]["weights_sha256"] == module_sha256(online)
    assert len(result["checkpoint"]["sha256"]) == 64 and result["hyperparameters"]["epochs"] == 2
    assert (out.parent / "lin.state.pt").is_file()
    ema_out = tmp_path / "res" / "lin_ema.json"
    code, _, stderr = _run([*argv[:-4], "--output", str(ema_out), "--use_ema", *argv[-2:]], capsys)
    assert code == 0, stderr
    ema_result = json.loads(ema_out.read_text())
    assert ema_result["checkpoint"]["branch"] == "ema"
    assert ema_result["checkpoint"]["weights_sha256"] == module_sha256(ema)
    # Same cache folder, other weights: the cache misses (the key holds the weights' hash).
    assert result["cache_hits"] == ema_result["cache_hits"] == {"train": False, "test": False}
    table = [json.loads(line) for line in (out.parent / "results.jsonl").read_text().splitlines()]
    assert [r["checkpoint"]["branch"] for r in table] == ["online", "ema"]


def test_knn_on_a_torchvision_state_dict(nets, tmp_path, capsys):
    online, _ = nets
    path = tmp_path / "tv.pth"
    torch.save(online.state_dict(), path)
    out = tmp_path / "knn.json"
    code, _, stderr = _run(
        ["knn", "--checkpoint", str(path), *FAST, "--output", str(out), "--preset", "nn5"], capsys
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["hyperparameters"]["k"] == 5 and result["top1"] > 30.0
    assert result["checkpoint"]["weights_sha256"] == module_sha256(online)


def official_moco_checkpoint(path, online, drop=()):
    """facebookresearch/moco main_moco.py layout: module.encoder_q / encoder_k / queue under 'state_dict'."""
    state = {
        **_prefixed(online.state_dict(), "module.encoder_q.", fc_dim=128),
        **_prefixed(online.state_dict(), "module.encoder_k.", fc_dim=128),
        "module.queue": torch.randn(128, 64),
        "module.queue_ptr": torch.zeros(1, dtype=torch.long),
    }
    for key in drop:
        del state[key]
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {}}, path)
    return path


def test_semisup_on_an_official_moco_checkpoint(nets, tmp_path, capsys):
    online, _ = nets
    ckpt = official_moco_checkpoint(tmp_path / "checkpoint_0199.pth.tar", online)
    out = tmp_path / "semi.json"
    argv = [
        "semisup",
        "--checkpoint",
        str(ckpt),
        *FAST,
        "--output",
        str(out),
        "--epochs",
        "1",
        "--batch_size",
        "32",
        "--train-percent",
        "1",
        "--lr-backbone",
        "0.004",
        "--no_results_table",
    ]
    code, _, stderr = _run(argv, capsys)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["checkpoint"]["format"].startswith("moco") and result["checkpoint"]["epoch"] == 200
    assert (
        result["hyperparameters"]["labels_perc"] == 1.0 and result["hyperparameters"]["lr_backbone"] == 0.004
    )
    assert result["subset"]["per_class"] == [1] * 10  # round(0.01 * 1347 / 10) = 1 per class
    assert (tmp_path / "semi.subset.txt").is_file() and not (tmp_path / "results.jsonl").exists()


def test_partial_load_fails_unless_allowed(nets, tmp_path, capsys):
    online, _ = nets
    ckpt = official_moco_checkpoint(
        tmp_path / "partial.pth.tar", online, drop=["module.encoder_q.layer4.1.bn2.weight"]
    )
    out = tmp_path / "p.json"
    argv = ["knn", "--checkpoint", str(ckpt), *FAST, "--output", str(out)]
    code, _, stderr = _run(argv, capsys)
    assert code == 2 and "missing keys" in stderr and "layer4.1.bn2.weight" in stderr
    assert "--allow_partial" in stderr and not out.exists()
    code, _, stderr = _run([*argv, "--allow_partial"], capsys)
    assert code == 0, stderr
    assert json.loads(out.read_text())["checkpoint"]["missing_keys"] == ["layer4.1.bn2.weight"]


def test_unknown_checkpoint_lists_its_keys(tmp_path, capsys):
    path = tmp_path / "odd.pth"
    torch.save({"weights": {"a.b": torch.zeros(2)}, "step": 3}, path)
    code, _, stderr = _run(
        ["knn", "--checkpoint", str(path), *FAST, "--output", str(tmp_path / "o.json")], capsys
    )
    assert code == 2 and "weights" in stderr
    code, _, stderr = _run(["knn", "--checkpoint", str(tmp_path / "none.pth"), "--output", "x.json"], capsys)
    assert code == 2 and "does not exist" in stderr


def test_report_command(nets, tmp_path, capsys):
    online, ema = nets
    for epoch in (5, 10):
        ckpt = selfsup_checkpoint(tmp_path / f"ckpt_{epoch}.pkl", online, ema)
        payload = torch.load(ckpt, weights_only=True)
        payload["epoch"] = epoch
        torch.save(payload, ckpt)
        code, _, stderr = _run(
            [
                "linear",
                "--checkpoint",
                str(ckpt),
                *FAST,
                "--epochs",
                "1",
                "--output",
                str(tmp_path / f"r{epoch}.json"),
                "--cache_dir",
                str(tmp_path / "cache"),
            ],
            capsys,
        )
        assert code == 0, stderr
    code, stdout, stderr = _run(
        ["report", "--results", str(tmp_path / "results.jsonl"), "--output_dir", str(tmp_path / "rep")],
        capsys,
    )
    assert code == 0, stderr
    assert "ckpt_5.pkl" in stdout and "ckpt_10.pkl" in stdout
    assert (tmp_path / "rep" / "report.md").is_file()  # the plots: the two tests below
    code, _, stderr = _run(["report", "--output_dir", str(tmp_path / "rep2")], capsys)
    assert code == 2 and "--results" in stderr


REPORT_PLOTS = ("accuracy_vs_epoch.png", "accuracy_vs_checkpoint.png", "loss.png")


def _report_inputs(tmp_path):
    """Two linear results of one run's checkpoints (epochs 5, 10) and a trainer log: all three plots apply."""
    results = tmp_path / "results.jsonl"
    with results.open("w") as handle:
        for epoch, top1 in ((5, 40.0), (10, 50.0)):
            result = {
                "protocol": "linear",
                "preset": "quick",
                "top1": top1,
                "top5": 90.0,
                "dataset": {"name": "digits"},
                "checkpoint": {"path": f"/runs/ckpt_{epoch}.pkl", "epoch": epoch},
                "curve": [{"epoch": 1, "top1": top1 - 5}, {"epoch": 2, "top1": top1}],
            }
            handle.write(json.dumps(result) + "\n")
    log = tmp_path / "log.csv"
    log.write_text("global_step,epoch,loss,lr,images_per_s\n1,0,2.5,0.1,10\n2,0,2.0,0.1,10\n")
    return ["report", "--results", str(results), "--logs", str(log), "--output_dir", str(tmp_path / "rep")]


def test_report_plots_with_the_plot_extra(tmp_path, capsys):
    pytest.importorskip(
        "matplotlib", reason="the report's PNG plots need the plot extra: pip install 'selfsup[plot]'"
    )
    code, stdout, stderr = _run(_report_inputs(tmp_path), capsys)
    assert code == 0, stderr
    for name in REPORT_PLOTS:
        assert (tmp_path / "rep" / name).stat().st_size > 0 and name in stdout


def test_report_without_matplotlib_writes_the_table_and_one_warning_per_plot(tmp_path, monkeypatch, capsys):
    """A missing optional extra never fails a command: the table is written, each PNG is one warning line."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, stdout, stderr = _run(_report_inputs(tmp_path), capsys)
    assert code == 0 and not stderr, stderr
    assert (tmp_path / "rep" / "report.md").is_file() and "ckpt_10.pkl" in stdout
    warnings = [line for line in stdout.splitlines() if "selfsup[plot]" in line]
    assert len(warnings) == len(REPORT_PLOTS) and all(line.startswith("[") for line in warnings), warnings
    for name in REPORT_PLOTS:
        assert not (tmp_path / "rep" / name).exists() and any(name in line for line in warnings)


def test_cmc_checkpoint_single_stream_in_its_recorded_colour_space(tmp_path, capsys):
    """A CMC AlexNet file (layout of the fixtures): --view l reads channel 0 (Y) of the recorded YCbCr view."""
    import argparse

    from selfsup.shared.models.alexnet import build_cmc_alexnet_half

    torch.manual_seed(0)
    model = {}
    for stream, channels in (("l_to_ab", 1), ("ab_to_l", 2)):
        half = build_cmc_alexnet_half(channels)
        model.update(_prefixed(half.state_dict(), f"encoder.module.{stream}."))
        model[f"encoder.module.{stream}.fc8.0.weight"] = torch.randn(128, 2048)
        model[f"encoder.module.{stream}.fc8.0.bias"] = torch.zeros(128)
    opt = argparse.Namespace(view="YCbCr", model="alexnet", nce_k=4096)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"opt": opt, "model": model, "contrast": {}, "optimizer": {}, "epoch": 240}, path)
    out = tmp_path / "cmc.json"
    argv = [
        "knn",
        "--checkpoint",
        str(path),
        "--dataset",
        "digits",
        "--resize",
        "64",
        "--crop",
        "64",
        "--view",
        "l",
        "--k",
        "20",
        "--output",
        str(out),
    ]
    code, _, stderr = _run(argv, capsys)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert result["checkpoint"]["format"] == "cmc" and result["checkpoint"]["view"] == "l"
    assert result["input"]["color_space"] == "ycbcr" and result["input"]["mean"][0] == 116.151
    assert result["probe"]["feature_dim"] == 128  # one stream's conv5 at 64 px: 128 x 1 x 1
    assert result["top1"] > 20.0  # digits are grey: all their information is in Y (CbCr is constant)


def test_a_corrupt_image_is_a_one_line_error_naming_the_file(nets, tmp_path, capsys):
    from PIL import Image

    online, _ = nets
    checkpoint = tmp_path / "tv.pth"
    torch.save(online.state_dict(), checkpoint)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"{i}.png")
    broken = tmp_path / "data" / "val" / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    argv = ["knn", "--checkpoint", str(checkpoint), "--dataset", "imagefolder", "--dataset_root"]
    argv += [
        str(tmp_path / "data"),
        "--resize",
        "16",
        "--crop",
        "16",
        "--k",
        "3",
        "--output",
        str(tmp_path / "r.json"),
    ]
    code, _, stderr = _run(argv, capsys)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and str(broken) in stderr and "Traceback" not in stderr
