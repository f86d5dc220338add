"""Every flag of the originals parses with its default; bad input is a one-line error naming the flag or file."""

import re
import shlex
from pathlib import Path

import pytest

from selfsup.cmc.cli import parse_cmc_args, parse_moco_ins_args
from selfsup.cmc.train import main as cmc_main
from selfsup.cmc.train import run_name

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_train_cmc_defaults_are_the_image_mixture_forks():
    args = parse_cmc_args(["--data_folder", "/data"])
    assert (args.batch_size, args.num_workers, args.epochs, args.learning_rate) == (128, 18, 600, 0.03)
    assert args.lr_decay_epochs == [360, 480, 540] and args.lr_decay_rate == 0.1
    assert (args.weight_decay, args.momentum, args.model, args.view) == (1e-4, 0.9, "alexnet", "Lab")
    assert (args.nce_k, args.nce_t, args.nce_m, args.feat_dim, args.softmax) == (16384, 0.07, 0.5, 128, False)
    assert (args.crop_low, args.model_path, args.tb_path, args.save_freq) == (
        0.1,
        "./save_models",
        "./save_tb",
        10,
    )
    assert (args.IM, args.IM_type, args.g_alpha, args.g_num, args.g_prob) == (False, "IM", 1.0, 2, 0.1)
    assert (args.r_beta, args.r_prob, args.r_num, args.r_pixel_decay) == (1.0, 0.1, 2, 1.0)
    assert args.dataset == "imagefolder" and args.dataset_flag is None


def test_crop_scale_is_forced_for_resnets_on_full_imagenet():
    assert (
        parse_cmc_args(["--data_folder", "/d", "--dataset", "imagenet", "--model", "resnet50v1"]).crop_low
        == 0.08
    )
    assert (
        parse_cmc_args(["--data_folder", "/d", "--dataset", "imagenet", "--model", "alexnet"]).crop_low == 0.1
    )
    assert (
        parse_cmc_args(["--data_folder", "/d", "--dataset", "imagenet100", "--model", "resnet50v1"]).crop_low
        == 0.1
    )
    assert parse_moco_ins_args(["--data_folder", "/d", "--dataset", "imagenet"]).crop == 0.08


def test_run_names_are_the_originals():
    args = parse_cmc_args(["--data_folder", "/d", "--softmax", "--nce_k", "4096", "--amp", "--view", "YCbCr"])
    assert run_name(args) == "memory_softmax_4096_alexnet_lr_0.03_decay_0.0001_bsz_128_amp_O2_view_YCbCr"


def test_every_readme_command_of_the_scripts_parses():
    text = (SCRIPTS / "readme_commands.sh").read_text()
    for body in re.findall(r"\) ((?:cmc-train|torchrun)[^;]*);;", text.replace("\\\n", " ")):
        argv = [a for a in shlex.split(body.replace('"$data"', "/data").replace('"${CKPT:?set CKPT}"', "x"))]
        module = "train_moco_ins" if "train_moco_ins" in body else "train"
        flags = argv[argv.index(f"selfsup.cmc.{module}") + 1 :] if "torchrun" in argv else argv[1:]
        parse = parse_moco_ins_args if module == "train_moco_ins" else parse_cmc_args
        parse(flags)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "imagenet"], "--data_folder"),
        (["--nce_k", "0"], "--nce_k"),
        (["--crop_low", "1.5"], "--crop_low"),
        (["--lr_decay_epochs", "a,b"], "--lr_decay_epochs"),
        (["--IM_type", "mixup"], "--IM_type"),
        (["--model", "vgg"], "--model"),
    ],
)
def test_bad_flags_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_cmc_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_data_folder_and_a_wrong_resume_file_are_named(tmp_path, tiny_cmc, capsys):
    argv = list(tiny_cmc)
    argv[argv.index("--data_folder") + 1] = str(tmp_path / "nope.npz")
    assert cmc_main([*argv, "--model_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.npz" in err and "--data_folder" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing is written before the flags and the data are checked
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert cmc_main([*tiny_cmc, "--model_path", str(tmp_path), "--resume", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "garbage.pth" in err and len(err.strip().splitlines()) == 1
