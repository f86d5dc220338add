"""INTL's evaluate.py command lines (and cifar/main.py's evaluation) on the shared harness: the original scripts'
commands map onto the presets of spec intl.md §7, and tiny end-to-end runs on 192 embedded digits."""

import json
import math
import os
import shlex
import signal

import pytest
import torch

from selfsup.intl import evaluate
from selfsup.intl.cli import parse_args as parse_train_args
from selfsup.intl.train import train
from selfsup.shared.evaluation import LINEAR_PRESETS, SEMISUP_PRESETS, resolve_config
from selfsup.shared.evaluation.probe_training import lr_for_epoch

#: the evaluation commands of winci-ai/INTL scripts/*.sh @0aa69af (the semi-supervised one with the flags its
#: broken line continuation drops, spec §10.1)
LINEAR = "--epochs 100 --lr-classifier 0.4 --pretrained INTL_multi-crop_ep400_resnet50.pth.tar --data_path ./data/ImageNet/"
SEMISUP = (
    "--epochs 20 --lr-classifier 0.2 --lr-backbone 0.004 --weights finetune --train-percent 10 "
    "--pretrained INTL_multi-crop_ep400_resnet50.pth.tar --data_path ./data/ImageNet/"
)
IN100 = "--epochs 100 --lr-classifier 0.2 --pretrained INTL_in100_ep400_resnet18.pth.tar --data_path ./data/IN100/"
#: keywords of evaluate_checkpoint that are run options, not preset fields
RUN_OPTIONS = ("preset", "dataset", "root")


def mapped(command: str, world_size: int = 1):
    """``[(protocol, stem, resolved harness config)]`` of a command line."""
    args = evaluate.parse_args(shlex.split(command))
    out = []
    for kind, stem, kwargs in evaluate.protocols(args, world_size):
        overrides = {k: v for k, v in kwargs.items() if k not in RUN_OPTIONS}
        out.append((kind, stem, resolve_config(kind, kwargs["preset"], kwargs["dataset"], **overrides)))
    return out


@pytest.mark.parametrize("lr", ["0.4", "0.2"])  # multi-crop scripts / ep800.sh and in100.sh
def test_linear_command_is_the_intl_preset(lr):
    [(kind, stem, config)] = mapped(LINEAR.replace("0.4", lr), world_size=8)
    assert (kind, stem) == ("linear", "INTL_lincls")
    base = LINEAR_PRESETS["intl"]
    assert config.preset == "intl" and config.lr == float(lr) and config.lr_scale_batch
    assert (config.batch_size, config.epochs, config.schedule) == (256, 100, "step")
    assert (config.milestones, config.gamma, config.weight_decay) == ((60, 80), 0.1, 0.0)
    assert (config.resize, config.crop, config.crop_low) == (256, 224, 0.08)
    assert (config.normalization, config.head_init, config.train_aug) == ("imagenet", "normal", "rrc_flip")
    assert config.test_batch_size == 256 and config.num_workers == 3  # ceil(24 / 8 GPUs), as the original
    assert config.momentum == base.momentum == 0.9 and not config.bn_train_mode  # frozen BN (eval mode)


@pytest.mark.parametrize(("percent", "preset"), [("10", "intl_10pct"), ("1", "intl_1pct")])
@pytest.mark.parametrize("lr_backbone", ["0.004", "0.006"])  # multi-crop scripts / ep800.sh
def test_semisup_command_is_the_intl_preset_with_its_constant_rate(percent, preset, lr_backbone):
    command = SEMISUP.replace("--train-percent 10", f"--train-percent {percent}").replace(
        "0.004", lr_backbone
    )
    [(kind, stem, config)] = mapped(command, world_size=8)
    assert (kind, stem, config.preset) == ("semisup", f"INTL_finetune{percent}", preset)
    assert config.labels_perc == SEMISUP_PRESETS[preset].labels_perc == float(percent)
    assert (config.lr_head, config.lr_backbone, config.lr_scale_batch) == (0.2, float(lr_backbone), True)
    assert (config.batch_size, config.epochs, config.weight_decay) == (256, 20, 0.0)
    assert not config.sync_bn  # evaluate.py has no SyncBN (spec §10.4): kept unless --sync_bn
    assert (config.resize, config.crop, config.normalization) == (256, 224, "imagenet")
    # milestones 60/80 are never reached in 20 epochs: the original's constant rate (spec §10.3), kept
    assert {lr_for_epoch(config, 1.0, epoch) for epoch in range(1, 21)} == {1.0}
    assert mapped(command + " --sync_bn")[0][2].sync_bn


def test_cos_schedule_is_the_originals_per_epoch_cosine():
    [(_, _, config)] = mapped(LINEAR + " --schedule cos --epochs 10")
    for epoch in range(10):  # adjust_learning_rate: lr * 0.5 * (1 + cos(pi * epoch / epochs)), 0-based
        expected = 0.5 * (1 + math.cos(math.pi * epoch / 10))
        assert lr_for_epoch(config, 1.0, epoch + 1) == pytest.approx(expected)


def test_in100_command_works_without_arch_and_asserts_it_when_given():
    args = evaluate.parse_args(shlex.split(IN100))
    assert args.arch is None and args.dataset == "imagefolder"  # the checkpoint names the network (§10.2)
    args = evaluate.parse_args(shlex.split(IN100 + " --arch resnet18 --dataset in100"))
    assert (args.arch, args.dataset, args.original_dataset) == ("resnet18", "imagefolder", "in100")
    assert evaluate.parse_args(shlex.split(IN100 + " -a resnet50x2")).arch == "resnet50w2"


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_evaluation_is_5nn_and_the_adam_probe_with_cifar10_statistics(dataset):
    (knn_kind, knn_stem, knn), (lin_kind, lin_stem, linear) = mapped(
        f"--dataset {dataset} --pretrained ckpt_INTL.pth.tar"
    )
    assert (knn_kind, knn_stem, lin_kind, lin_stem) == ("knn", "INTL_nn5", "linear", "INTL_cifar_linear")
    assert (knn.preset, knn.metric, knn.k, knn.vote) == ("nn5", "euclidean", 5, "majority")
    assert (linear.preset, linear.optimizer, linear.lr, linear.final_lr) == ("intl_cifar", "adam", 1e-2, 1e-6)
    assert (linear.epochs, linear.weight_decay, linear.batch_size, linear.schedule) == (
        500,
        5e-6,
        1000,
        "exponential",
    )
    for config in (knn, linear):  # cifar/eval normalises both datasets with CIFAR-10's mean/std (§10.11)
        assert (config.normalization, config.resize, config.crop, config.use_cache) == (
            "cifar10",
            32,
            32,
            True,
        )
    [_, (_, _, short)] = mapped(f"--dataset {dataset} --pretrained c --epochs 7 --lr-classifier 0.1")
    assert (short.epochs, short.lr) == (7, 0.1)


def test_every_cfg_flag_is_accepted():
    pretrain_flags = (
        "-a resnet50 -j 8 --start-epoch 3 --bs 512 --lr 0.3 --wd 2.5e-5 -p 10 --world-size 1 --rank 0 "
        "--dist-url tcp://localhost:10001 --dist-backend gloo --seed 7 --method intl_m --env_name run "
        "--iters 4 --warmup_eps 2 --multi-crop --projection_layers 3 --projection_size 8192 --emb 8192 "
        "--m 0.996 --dataset imagenet --axis 0 --nmb_crops 1 1 --crops_size 224 224 "
        "--min_scale_crops 0.08 0.08 --max_scale_crops 1 1 --gaussian_prob 1.0 0.1 --solarization_prob 0 0.2"
    )
    [(kind, stem, config)] = mapped(f"{LINEAR} {pretrain_flags} --schedule step --lr-backbone 0.1")
    assert (kind, stem, config.batch_size, config.seed, config.num_workers) == (
        "linear",
        "run_lincls",
        512,
        7,
        8,
    )
    assert config.weight_decay == 0.0  # --wd is inert, as in evaluate.py


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("-e", "-e/--evaluate"),
        ("--train-percent 10", "--weights finetune"),
        ("--dataset cifar10 --weights finetune", "CIFAR protocol"),
        ("--dataset cifar10 --schedule cos", "CIFAR protocol"),
        ("--sync_bn", "--sync_bn applies"),
        ("--bs 0", "--bs must be"),
    ],
)
def test_unhonourable_flags_are_refused(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.parse_args(shlex.split(f"{LINEAR} {extra}"))
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_missing_pretrained_or_data_path_is_refused(capsys):
    for argv in (["--data_path", "d"], ["--pretrained", "c", "--dataset", "imagenet"]):
        with pytest.raises(SystemExit):
            evaluate.parse_args(argv)
    err = capsys.readouterr().err
    assert "--pretrained is required" in err and "--dataset imagenet needs --data_path" in err


def test_slurm_time_limit_signal_requeues_the_job(tmp_path, monkeypatch):
    log = tmp_path / "log"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    before = signal.getsignal(signal.SIGUSR1)
    with evaluate.requeue_on_time_limit(is_main=True):
        os.kill(os.getpid(), signal.SIGUSR1)
    with evaluate.requeue_on_time_limit(is_main=False):
        os.kill(os.getpid(), signal.SIGUSR1)  # other ranks leave the requeue to rank 0
    assert log.read_text() == "requeue 77\n" and signal.getsignal(signal.SIGUSR1) == before


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny):
    """intl-train --method intl_m, 2 epochs of 3 steps: online and EMA networks."""
    out = tmp_path_factory.mktemp("pretrain")
    return train(parse_train_args([*tiny, "--method", "intl_m", "--ckpt_dir", str(out)]))


def eval_argv(ckpt, out, digits192, *extra):
    data = ["--dataset", "npz", "--data_path", str(digits192), "-j", "0", "--crop_size", "16"]
    return ["--pretrained", str(ckpt), *data, "--bs", "64", "--ckpt_dir", str(out), "--epochs", "1", *extra]


@pytest.mark.usefixtures("one_thread")
def test_linear_end_to_end_and_restart(pretrained, digits192, tmp_path, capsys):
    argv = eval_argv(pretrained, tmp_path, digits192, "--lr-classifier", "0.4")
    assert evaluate.main(argv) == 0
    result = json.loads((tmp_path / "INTL_lincls.json").read_text())
    assert result["preset"] == "intl" and result["checkpoint"]["format"] == "selfsup"
    assert result["checkpoint"]["branch"] == "online" and result["dataset"]["name"] == "npz"
    assert result["hyperparameters"]["effective_lr"] == pytest.approx(0.4 * 64 / 256)
    assert result["input"]["mean"] == [0.485, 0.456, 0.406] and result["input"]["crop"] == 16
    assert 0 <= result["top1"] <= 100 and len(result["curve"]) == 1
    assert (tmp_path / "INTL_lincls.state.pth").is_file()
    assert "INTL_lincls: top-1" in capsys.readouterr().out
    assert evaluate.main(argv) == 0  # continues from the state file (all epochs done)
    again = json.loads((tmp_path / "INTL_lincls.json").read_text())
    assert again["top1"] == result["top1"] and len(again["curve"]) == 1

    assert evaluate.main([*argv, "--use_ema"]) == 0  # the EMA target, in its own files
    ema = json.loads((tmp_path / "INTL_ema_lincls.json").read_text())
    assert ema["checkpoint"]["branch"] == "ema"
    assert ema["checkpoint"]["weights_sha256"] != result["checkpoint"]["weights_sha256"]


@pytest.mark.usefixtures("one_thread")
def test_finetune_end_to_end(pretrained, digits192, tmp_path):
    argv = eval_argv(pretrained, tmp_path, digits192, "--weights", "finetune", "--train-percent", "10")
    assert evaluate.main(argv) == 0
    result = json.loads((tmp_path / "INTL_finetune10.json").read_text())
    assert result["preset"] == "intl_10pct" and result["subset"]["kind"] == "balanced"
    assert result["hyperparameters"]["lr_backbone"] == 0.004 and not result["hyperparameters"]["sync_bn"]
    assert (tmp_path / "INTL_finetune10.subset.txt").is_file() and 0 <= result["top1"] <= 100


@pytest.mark.usefixtures("one_thread")
def test_cifar_protocol_end_to_end(pretrained, digits192, tmp_path):
    assert evaluate.main(eval_argv(pretrained, tmp_path, digits192, "--eval_protocol", "cifar")) == 0
    knn = json.loads((tmp_path / "INTL_nn5.json").read_text())
    linear = json.loads((tmp_path / "INTL_cifar_linear.json").read_text())
    assert (knn["preset"], knn["hyperparameters"]["k"], knn["input"]["mean"][0]) == ("nn5", 5, 0.4914)
    assert linear["preset"] == "intl_cifar" and linear["hyperparameters"]["optimizer"] == "adam"


@pytest.mark.usefixtures("one_thread")
def test_original_checkpoint_layout_and_one_line_errors(pretrained, digits192, tmp_path, capsys):
    """An INTL main.py checkpoint (module.backbone.*, no EMA): the network is read from the weights (the
    width-8 test network is no standard resnet18, so --arch is only tested for its refusal); --use_ema and a
    wrong --arch are refused in one line."""
    ours = torch.load(pretrained, map_location="cpu", weights_only=True)
    online = {k: v for k, v in ours["state_dict"].items() if not k.startswith("module.momentum_")}
    original = tmp_path / "ckpt_INTL.pth.tar"
    torch.save({"epoch": 2, "arch": "resnet18", "state_dict": online, "optimizer": {}}, original)
    assert evaluate.main(eval_argv(original, tmp_path, digits192)) == 0
    result = json.loads((tmp_path / "INTL_lincls.json").read_text())
    assert result["checkpoint"]["format"] == "intl" and result["checkpoint"]["epoch"] == 2
    capsys.readouterr()

    assert evaluate.main(eval_argv(original, tmp_path / "ema", digits192, "--use_ema")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m selfsup.intl.evaluate: error:") and "\n" not in err
    assert evaluate.main(eval_argv(original, tmp_path / "wide", digits192, "--arch", "resnet50")) == 2
    assert "--arch resnet50 does not match" in capsys.readouterr().err
    assert evaluate.main(eval_argv(tmp_path / "nope.pth.tar", tmp_path, digits192)) == 2
    assert "nope.pth.tar" in capsys.readouterr().err
