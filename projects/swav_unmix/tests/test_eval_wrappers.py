"""SwAV's eval_linear.py / eval_semisup.py command lines (and Un-Mix's CIFAR flags) on the shared harness."""

import dataclasses
import json
import shlex

import pytest
import torch

from selfsup.shared.evaluation import LINEAR_PRESETS, SEMISUP_PRESETS, resolve_config
from selfsup.swav_unmix import eval_linear, eval_semisup
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.train import train

#: spec swav_unmix.md §7 / the SwAV README, flag for flag.
LINEAR_ORIGINAL = shlex.split(
    "--data_path /data/imagenet --pretrained ckpt.pth.tar --dump_path out --arch resnet50 --epochs 100 "
    "--batch_size 32 --lr 0.3 --wd 1e-6 --nesterov false --scheduler_type cosine --decay_epochs 60 80 "
    "--gamma 0.1 --final_lr 0 --global_pooling true --use_bn false --workers 10 --dist_url env:// --seed 31"
)
SEMISUP_ORIGINAL = shlex.split(
    "--data_path /data/imagenet --pretrained ckpt.pth.tar --dump_path out --arch resnet50 --epochs 20 "
    "--batch_size 32 --lr 0.01 --lr_last_layer 0.2 --decay_epochs 12 16 --gamma 0.2 --workers 10 "
    "--dist_url env:// --seed 31"
)
#: Un-Mix UnMix_SwAV/for_CIFAR/script_unmix_c10.sh's evaluation.
UNMIX_CIFAR = shlex.split(
    "--dist_url tcp://localhost:10001 --num_labels 10 --crop_size 32 --workers 2 --arch resnet18 "
    "--data_path cifar10 --pretrained ckpt.pth.tar --dump_path out_linear_eval"
)
#: Keywords of evaluate_checkpoint that are run options, not preset fields.
RUN_OPTIONS = ("preset", "dataset", "root")


def parsed(module, argv):
    parser = module.build_parser()
    args = parser.parse_args(argv)
    eval_linear.resolve_data(parser, args)  # shared by both wrappers
    return args


def resolved(kind, proto):
    overrides = {k: v for k, v in proto.items() if k not in RUN_OPTIONS}
    return resolve_config(kind, proto["preset"], proto["dataset"], **overrides)


def test_linear_original_command_is_the_swav_preset():
    args = parsed(eval_linear, LINEAR_ORIGINAL)
    proto = eval_linear.protocol(args, world_size=8)
    assert (
        proto["preset"] == "swav" and proto["dataset"] == "imagefolder" and proto["root"] == "/data/imagenet"
    )
    assert proto["batch_size"] == 256 and proto["test_batch_size"] == 32  # 32 per GPU x 8
    assert "crop" not in proto and "normalization" not in proto  # the preset's 224 px and 0.228 std
    config = resolved("linear", proto)
    expected = dataclasses.replace(
        LINEAR_PRESETS["swav"], resize=256, crop=224, num_workers=10, seed=31, test_batch_size=32
    )
    assert config == expected


def test_linear_flags_map_onto_the_harness():
    argv = ["--pretrained", "x", "--nesterov", "True", "--use_bn", "on", "--scheduler_type", "step"]
    args = parsed(
        eval_linear, [*argv, "--decay_epochs", "30", "40", "--gamma", "0.5", "--wd", "0", "--lr", "1"]
    )
    config = resolved("linear", eval_linear.protocol(args))
    assert (config.schedule, config.milestones, config.gamma) == ("step", (30, 40), 0.5)
    assert config.nesterov is True and config.weight_decay == 0.0 and config.lr == 1.0
    assert args.dataset == "digits" and args.root is None and config.batch_size == 32
    assert (config.resize, config.crop) == (37, 32)  # the ImageNet border fraction at digits' 32 px
    with pytest.raises(SystemExit):
        eval_linear.build_parser().parse_args(["--pretrained", "x", "--nesterov", "maybe"])


def test_unmix_cifar_command():
    args = parsed(eval_linear, UNMIX_CIFAR)
    proto = eval_linear.protocol(args)
    assert (proto["dataset"], proto["root"], proto["normalization"]) == ("cifar10", None, "cifar10")
    config = resolved("linear", proto)
    assert (config.resize, config.crop, config.train_aug) == (32, 32, "rrc_flip")  # test images unresized
    hundred = parsed(eval_linear, ["--pretrained", "x", "--data_path", "cifar100", "--num_labels", "100"])
    assert eval_linear.protocol(hundred)["normalization"] == "cifar10"  # Un-Mix uses CIFAR-10's for both
    assert eval_linear.protocol(hundred)["crop"] == 32


def test_unhonourable_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        parsed(eval_linear, ["--pretrained", "x", "--data_path", "cifar100", "--num_labels", "10"])
    assert info.value.code == 2 and "cifar100 data has 100 classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_linear.main([*LINEAR_ORIGINAL, "--global_pooling", "false"])
    assert "--global_pooling false" in capsys.readouterr().err


@pytest.mark.parametrize(("perc", "preset"), [("1", "swav_1pct"), ("10", "swav_10pct")])
def test_semisup_original_command(perc, preset):
    args = parsed(eval_semisup, [*SEMISUP_ORIGINAL, "--labels_perc", perc])
    proto = eval_semisup.protocol(args, world_size=8)
    assert proto["preset"] == preset and proto["batch_size"] == 256
    config = resolved("semisup", proto)
    base = SEMISUP_PRESETS[preset]
    assert config.labels_perc == base.labels_perc and (config.lr_backbone, config.lr_head) == (0.01, 0.2)
    assert (config.milestones, config.gamma, config.epochs, config.schedule) == ((12, 16), 0.2, 20, "step")
    assert config.sync_bn and config.weight_decay == 0.0 and config.normalization == "swav"
    assert (config.resize, config.crop, config.seed, config.num_workers) == (256, 224, 31, 10)


def test_semisup_defaults_are_the_originals_for_both_subsets():
    args = parsed(eval_semisup, ["--pretrained", "x", "--labels_perc", "1"])
    config = resolved("semisup", eval_semisup.protocol(args))
    assert config.preset == "swav_1pct" and (config.lr_backbone, config.lr_head) == (0.01, 0.2)
    readme = parsed(
        eval_semisup, ["--pretrained", "x", "--labels_perc", "1", "--lr", "0.02", "--lr_last_layer", "5"]
    )
    config = resolved("semisup", eval_semisup.protocol(readme))
    assert (config.lr_backbone, config.lr_head) == (SEMISUP_PRESETS["swav_1pct"].lr_backbone, 5.0)
    with pytest.raises(SystemExit):
        eval_semisup.build_parser().parse_args(["--pretrained", "x", "--labels_perc", "5"])


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Two iterations of swav-unmix-train: a width-8 CIFAR-stem ResNet-18 checkpoint."""
    run = tmp_path_factory.mktemp("pretrain")
    argv = [
        "--arch", "resnet18", "--width", "8", "--cifar_stem", "--size_crops", "16", "--nmb_crops", "2",
        "--batch_size", "16", "--epochs", "1", "--warmup_epochs", "0", "--nmb_prototypes", "10",
        "--hidden_mlp", "32", "--feat_dim", "16", "--workers", "0", "--no_progress", "--no_tensorboard",
        "--use_fp16", "false", "--run_swav", "true", "--max_iters", "2", "--dump_path", str(run),
    ]  # fmt: skip
    return train(parse_args(argv))


SMALL = ["--epochs", "1", "--workers", "0", "--crop_size", "16", "--batch_size", "64"]


@pytest.mark.usefixtures("one_thread")
def test_eval_linear_end_to_end(pretrained, tmp_path, capsys):
    argv = ["--pretrained", str(pretrained), "--dump_path", str(tmp_path), *SMALL]
    assert eval_linear.main(argv) == 0
    result = json.loads((tmp_path / "eval_linear.json").read_text())
    assert result["preset"] == "swav" and result["checkpoint"]["format"] == "selfsup"
    assert result["dataset"]["name"] == "digits" and result["hyperparameters"]["head_init"] == "normal"
    assert result["input"]["std"] == [0.228, 0.224, 0.225] and result["input"]["crop"] == 16
    assert 0 <= result["top1"] <= 100 and len(result["curve"]) == 1
    assert "eval_linear: best top-1" in capsys.readouterr().out
    assert eval_linear.main(argv) == 0  # restarts from eval_linear.state.pth, as the original does
    again = json.loads((tmp_path / "eval_linear.json").read_text())
    assert again["top1"] == result["top1"] and len(again["curve"]) == 1


@pytest.mark.usefixtures("one_thread")
def test_eval_semisup_end_to_end(pretrained, tmp_path):
    argv = ["--pretrained", str(pretrained), "--dump_path", str(tmp_path), "--labels_perc", "10", *SMALL]
    assert eval_semisup.main(argv) == 0
    result = json.loads((tmp_path / "eval_semisup.json").read_text())
    assert result["preset"] == "swav_10pct" and result["subset"]["kind"] == "balanced"
    assert result["subset"]["labels_perc"] == 10.0 and (tmp_path / "eval_semisup.subset.txt").is_file()
    assert 0 <= result["top1"] <= 100


def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    missing = tmp_path / "nope.pth.tar"
    assert eval_linear.main(["--pretrained", str(missing), "--dump_path", str(tmp_path)]) == 2
    assert "nope.pth.tar" in capsys.readouterr().err
    classifier = tmp_path / "checkpoint.pth.tar"  # what eval_linear.py itself saves: no trunk in it
    linear = torch.nn.Linear(64, 10)
    state = {f"module.linear.{k}": v for k, v in linear.state_dict().items()}
    torch.save(
        {"epoch": 1, "state_dict": state, "optimizer": {}, "scheduler": {}, "best_acc": 10.0}, classifier
    )
    assert eval_semisup.main(["--pretrained", str(classifier), "--dump_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m selfsup.swav_unmix.eval_semisup: error:") and "swav_linear" in err
    assert "only a linear classifier" in err
