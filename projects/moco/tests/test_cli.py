"""Bad flags, missing data and wrong checkpoint files give clear errors naming the flag or file."""

import pytest
import torch

from selfsup.moco.cli import parse_args
from selfsup.moco.train import main


def test_defaults_match_the_original():
    args = parse_args([])
    assert (args.batch_size, args.lr, args.SGD_momentum, args.weight_decay) == (256, 0.03, 0.9, 1e-4)
    assert (args.temperature, args.momentum, args.feature_dim, args.num_keys) == (0.07, 0.999, 128, 4096)
    assert (args.crop, args.resize, args.max_epoch, args.save_weight_epoch) == (64, 84, 50000, 10)
    assert (args.output_root, args.exp_version) == ("output", "v1")
    assert args.shuffle_bn is False and args.dataset == "digits" and args.arch == "resnet50"
    assert parse_args(["--dataset_root", "/x"]).dataset == "imagefolder"


def test_dataset_name_defaults_to_the_original_for_image_folders_else_to_the_dataset():
    assert parse_args(["--dataset_root", "/x"]).dataset_name == "IMAGENET-64"  # the original's default
    assert parse_args([]).dataset_name == "DIGITS"
    assert parse_args(["--dataset", "cifar10"]).dataset_name == "CIFAR10"
    assert parse_args(["--dataset", "cifar10", "--dataset_name", "mine"]).dataset_name == "mine"


def test_help_names_each_default_once(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: join them
    assert "(default: None)" not in text and "(default: False)" not in text
    for flag_help in ("(default: 256)", "(default: 0.03)", "(default: 4096)"):
        assert flag_help in text
    chunks = text.split("--")
    assert not [chunk for chunk in chunks if chunk.count("default") > 1], "a flag states its default twice"


def test_official_moco_aliases():
    args = parse_args(
        ["--moco-t", "0.2", "--moco-k", "65536", "--moco-m", "0.99", "--mlp", "--aug-plus", "--cos"]
    )
    assert (args.temperature, args.num_keys, args.momentum, args.mlp, args.aug_plus, args.cos) == (
        0.2,
        65536,
        0.99,
        True,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--momentum", "2"], "--momentum"),
        (["--batch_size", "0"], "--batch_size"),
        (["--dataset", "imagefolder"], "--dataset_root"),
        (["--dataset", "mnist"], "--dataset"),
        (["--resume", "x.pkl", "--start_epoch", "3"], "--start_epoch"),
    ],
)
def test_bad_flags_exit_with_a_message_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_root_names_the_path(tmp_path, tiny_args, capsys):
    missing = tmp_path / "no_such_folder"
    argv = [*tiny_args, "--dataset", "imagefolder", "--dataset_root", str(missing)]
    assert main([*argv, "--output_root", str(tmp_path)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_resume_from_a_wrong_file_names_the_file(tmp_path, tiny_args, capsys):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a checkpoint")
    assert main([*tiny_args, "--output_root", str(tmp_path), "--resume", str(garbage)]) == 2
    assert "garbage.pkl" in capsys.readouterr().err
    foreign = tmp_path / "torchvision.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    assert main([*tiny_args, "--output_root", str(tmp_path), "--resume", str(foreign)]) == 2
    assert "not a selfsup training checkpoint" in capsys.readouterr().err
    assert main([*tiny_args, "--output_root", str(tmp_path), "--resume", str(tmp_path / "nope.pkl")]) == 2
    assert "nope.pkl" in capsys.readouterr().err


def test_a_corrupt_image_gives_a_one_line_error_naming_the_file_and_the_flag(tmp_path, tiny_args, capsys):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    broken = tmp_path / "data" / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    data = ["--dataset", "imagefolder", "--dataset_root", str(tmp_path / "data")]
    flags = [*tiny_args, *data, "--output_root", str(tmp_path / "out")]
    for workers in ("0", "1"):  # in the main process, and re-raised from a loader worker
        assert main([*flags, "--num_workers", workers, "--num_keys", "8", "--max_iters", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert str(broken) in err and "--skip_corrupt" in err and "Traceback" not in err
    assert main([*flags, "--num_keys", "8", "--max_iters", "2", "--skip_corrupt"]) == 0


def test_a_finished_run_without_matplotlib_skips_the_plot_and_exits_0(
    tmp_path, tiny_args, monkeypatch, capsys
):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "DIGITS" / "t"
    argv = [*tiny_args, "--plot_iter", "2", "--output_root", str(tmp_path), "--exp_version", "t"]
    assert main([*argv, "--max_iters", "4"]) == 0
    assert (out / "weight" / "ckpt_last.pkl").is_file() and not (out / "loss" / "loss.png").exists()
    warnings = [line for line in capsys.readouterr().out.splitlines() if "matplotlib" in line]
    assert len(warnings) == 1, warnings  # one warning, not one per plot, whatever ran before in this process
    assert warnings[0].startswith("[") and "selfsup[plot]" in warnings[0] and "loss.png" in warnings[0]
