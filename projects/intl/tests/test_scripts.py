"""The scripts of ``projects/intl/scripts``: every command they would run parses, with the values of the script
tables of spec ``intl.md`` (§6 and App. A), the evaluations map onto the harness presets, and the stage logic
(skip what is finished, stop after an incomplete pre-training, Slurm rendezvous) works. Each script prints its
command(s) instead of running them under ``DRY_RUN=1``."""

import itertools
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from selfsup.intl import evaluate
from selfsup.intl.cli import parse_args
from selfsup.intl.transforms import MULTI_CROP
from selfsup.shared.evaluation import resolve_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ALL_SCRIPTS = sorted(p for p in SCRIPTS.iterdir() if p.is_file())
TRAIN, EVALUATE, CWRGP = "selfsup.intl.train", "selfsup.intl.evaluate", "selfsup.intl.cwrgp_train"
#: variables the scripts read; the tests set the ones they need
SCRIPT_ENV = (
    "DRY_RUN",
    "DATASET_PATH",
    "EXPERIMENT_PATH",
    "TORCHRUN_NPROC",
    "PRETRAINED",
    "STAGES",
    "EPOCHS",
    "DOWNLOAD",
    "MASTER_ADDR",
    "MASTER_PORT",
)

TWO_224 = {
    "nmb_crops": [1, 1],
    "crops_size": [224, 224],
    "min_scale_crops": [0.08, 0.08],
    "max_scale_crops": [1.0, 1.0],
    "gaussian_prob": [1.0, 0.1],
    "solarization_prob": [0.0, 0.2],
}
IMAGENET = {
    "arch": "resnet50",
    "bs": 256,
    "wd": 1e-5,
    "projection_size": 8192,
    "emb": 8192,
    "iters": 4,
    "axis": 0,
    "m": 0.996,
    "dataset": "imagefolder",
    "original_dataset": "imagenet",
}
MULTI_CROP_EMA = {**IMAGENET, **MULTI_CROP, "method": "intl_m", "multi_crop": True}
#: recipe -> (pre-training values, linear --lr-classifier, semi-supervised --lr-backbone): spec §6's table
RECIPES = {
    "ep100_multi-crop_ema": ({**MULTI_CROP_EMA, "epochs": 100, "lr": 0.5}, 0.4, 0.004),
    "ep200_multi-crop_ema": ({**MULTI_CROP_EMA, "epochs": 200, "lr": 0.4}, 0.4, 0.004),
    "ep400_multi-crop_ema": ({**MULTI_CROP_EMA, "epochs": 400, "lr": 0.4}, 0.4, 0.004),
    "ep800_multi-crop_ema": ({**MULTI_CROP_EMA, "epochs": 800, "lr": 0.3}, 0.4, 0.004),
    "ep800": (
        {**IMAGENET, **TWO_224, "method": "intl", "multi_crop": False, "epochs": 800, "lr": 0.3},
        0.2,
        0.006,
    ),
}
IN100 = {
    **TWO_224,
    "arch": "resnet18",
    "bs": 128,
    "projection_size": 4096,
    "emb": 8192,
    "epochs": 400,
    "lr": 0.5,
    "wd": 2.5e-5,
    "method": "intl",
    "dataset": "imagefolder",
    "original_dataset": "in100",
}
CIFAR = {
    "arch": "resnet18",
    "cifar_stem": True,
    "stem_padding": 2,
    "cifar": True,
    "projection_size": 2048,
    "emb": 2048,
    "epochs": 1000,
    "lr": 0.3,
    "wd": 1e-4,
    "bs": 256,
    "nmb_crops": [1, 1],
    "crops_size": [32, 32],
    "min_scale_crops": [0.08, 0.08],
    "gaussian_prob": [0.0, 0.0],
    "solarization_prob": [0.0, 0.2],
    "m": 0.999,
    "method": "intl",
}
#: (variant, dataset) -> the flags of CW-RGP scripts/base.sh (spec App. A), in the original's order
CWRGP_TABLE = {
    ("4", "cifar10"): "--epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    ("4", "cifar100"): "--epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    ("4", "stl10"): "--epochs 2000 --lr 2e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    ("4", "tiny_in"): "--epochs 1000 --lr 2e-3 --num_samples 4 --bs 256 --emb 1024 --w_size 128 --group 2 "
    "--head_size 2048",
    ("2", "cifar10"): "--epochs 1000 --lr 3e-3 --bs 256 --w_size 64 --group 4 --w_iter 4",
    ("2", "cifar100"): "--epochs 1000 --lr 3e-3 --w_size 64 --group 4",
    ("2", "stl10"): "--epochs 2000 --lr 2e-3 --w_size 64 --group 4",
    ("2", "tiny_in"): "--epochs 1000 --lr 2e-3 --emb 1024 --w_size 128 --group 2 --head_size 2048",
}


def run_script(
    *argv: str, env: dict[str, str] | None = None, dry: bool = True
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in SCRIPT_ENV}
    environ.update(env or {})
    if dry:
        environ["DRY_RUN"] = "1"
    return subprocess.run(["bash", *map(str, argv)], env=environ, capture_output=True, text=True, timeout=60)


def commands(*argv: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """The commands a script prints under DRY_RUN=1, split as the shell would."""
    done = run_script(*argv, env=env)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def after(command: list[str], module: str) -> list[str]:
    assert module in command, command
    return command[command.index(module) + 1 :]


def check_values(args, expected: dict) -> None:
    for name, value in expected.items():
        assert getattr(args, name) == value, (name, getattr(args, name), value)


def sbatch_options(path: Path) -> dict[str, str]:
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", path.read_text(), flags=re.M)
    return {key: value for key, value in found}


def harness(argv: list[str], world_size: int = 8):
    """The evaluation command through selfsup.intl.evaluate's parser onto resolved harness configs."""
    args = evaluate.parse_args(argv)
    out = []
    for kind, stem, kwargs in evaluate.protocols(args, world_size):
        overrides = {k: v for k, v in kwargs.items() if k not in ("preset", "dataset", "root")}
        out.append((kind, stem, resolve_config(kind, kwargs["preset"], kwargs["dataset"], **overrides)))
    return args, out


def flag_values(argv: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_every_script_is_strict_executable_bash_with_a_header(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert path.stat().st_mode & stat.S_IXUSR
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and lines[1].startswith("# ")
    assert "set -euo pipefail" in lines
    for line in lines:  # spec §10.1: no continuation swallowed by a comment (`\  #...`) outside comments
        assert line.lstrip().startswith("#") or not re.search(r"\\\s+\S", line), line
    if path.suffix == ".sbatch":
        options = sbatch_options(path)
        assert options["signal"] == "USR1@120" and "requeue" in options
        assert options["ntasks-per-node"] == options["gpus-per-node"]  # one task per GPU


def test_there_is_one_sbatch_script_per_original_script():
    found = {p.name for p in SCRIPTS.glob("*.sbatch")}
    assert found == {f"{r}.sbatch" for r in RECIPES} | {"in100.sbatch", "cifar.sbatch", "cwrgp.sbatch"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_imagenet_recipe_is_the_original_script_with_every_evaluation_flag(recipe):
    expected, lr_classifier, lr_backbone = RECIPES[recipe]
    path = SCRIPTS / f"{recipe}.sbatch"
    assert f"Reproduces winci-ai/INTL scripts/{recipe}.sh" in path.read_text()
    options = sbatch_options(path)
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == ("1", "8", "8")
    env = {"EXPERIMENT_PATH": "/runs/r", "DATASET_PATH": "/data/imagenet"}
    pretrain, linear, semisup = commands(path, env=env)
    for command in (pretrain, linear, semisup):
        assert command[:4] == ["srun", "--kill-on-bad-exit=1", "python", "-u"]
        assert "--dist-url" not in command  # the rendezvous comes from the environment
    args = parse_args(after(pretrain, TRAIN))
    check_values(args, {**expected, "data_path": "/data/imagenet", "ckpt_dir": "/runs/r", "env_name": recipe})
    assert args.resume == "auto" and args.bs // 8 == 32  # --bs is global: 8 GPUs x 32
    final = f"/runs/r/ckpt_{recipe}_{expected['epochs']:04d}.pth.tar"

    lin_args, [(kind, stem, config)] = harness(after(linear, EVALUATE))
    assert (lin_args.pretrained, lin_args.data_path, lin_args.ckpt_dir) == (
        final,
        "/data/imagenet",
        "/runs/r",
    )
    assert (kind, stem, config.preset) == ("linear", f"{recipe}_lincls", "intl")
    assert (config.lr, config.epochs, config.batch_size, config.schedule) == (lr_classifier, 100, 256, "step")

    # the original's semi-supervised line loses --pretrained/--data_path (spec §10.1): here they are passed
    semi_args, [(kind, stem, config)] = harness(after(semisup, EVALUATE))
    assert (semi_args.pretrained, semi_args.data_path) == (final, "/data/imagenet")
    assert (kind, stem, config.preset, config.labels_perc) == (
        "semisup",
        f"{recipe}_finetune10",
        "intl_10pct",
        10.0,
    )
    assert (config.lr_head, config.lr_backbone, config.epochs, config.sync_bn) == (
        0.2,
        lr_backbone,
        20,
        False,
    )
    assert semi_args.weights == "finetune" and semi_args.train_percent == 10


def test_in100_evaluates_with_the_arch_and_dataset_the_original_omits():
    path = SCRIPTS / "in100.sbatch"
    assert "Reproduces winci-ai/INTL scripts/in100.sh" in path.read_text()
    pretrain, linear = commands(path, env={"EXPERIMENT_PATH": "/runs/in100"})
    args = parse_args(after(pretrain, TRAIN))
    check_values(args, {**IN100, "data_path": "./data/IN100/", "env_name": "in100"})
    lin_args, [(kind, stem, config)] = harness(after(linear, EVALUATE))
    assert (lin_args.arch, lin_args.original_dataset, lin_args.dataset) == (
        "resnet18",
        "in100",
        "imagefolder",
    )
    assert (
        lin_args.pretrained == "/runs/in100/ckpt_in100_0400.pth.tar" and lin_args.data_path == "./data/IN100/"
    )
    assert (kind, stem, config.lr, config.epochs) == ("linear", "in100_lincls", 0.2, 100)


def test_stage_variables():
    env = {"EXPERIMENT_PATH": "/runs/r", "PRETRAINED": "/ckpt/INTL_ep800_resnet50.pth.tar"}
    linear, semisup = commands(SCRIPTS / "ep800.sbatch", env=env)  # released weights: evaluations only
    assert flag_values(linear)["--pretrained"] == flag_values(semisup)["--pretrained"] == env["PRETRAINED"]
    [one_pct] = commands(SCRIPTS / "ep800.sbatch", env={**env, "STAGES": "semisup1"})
    assert harness(after(one_pct, EVALUATE))[1][0][2].preset == "intl_1pct"
    pretrain, linear, _ = commands(
        SCRIPTS / "ep400_multi-crop_ema.sbatch", "--workers", "3", env={"EPOCHS": "2"}
    )
    args = parse_args(after(pretrain, TRAIN))
    assert (args.epochs, args.workers) == (2, 3)  # extra flags go to pre-training, last
    assert flag_values(linear)["--pretrained"].endswith("ckpt_ep400_multi-crop_ema_0002.pth.tar")
    done = run_script(SCRIPTS / "ep800.sbatch", env={"STAGES": "pretrain knn"})
    assert done.returncode == 2 and "unknown stage knn" in done.stderr


@pytest.mark.parametrize("recipe", [*RECIPES, "in100", "cifar10"])
def test_torchrun_single_node_runs_the_sbatch_stages(recipe):
    single = commands(SCRIPTS / "torchrun_single_node.sh", "4", recipe)
    if recipe == "cifar10":
        slurm = commands(SCRIPTS / "cifar.sbatch", "cifar10", env={"SLURM_JOB_ID": "5"})
    else:
        slurm = commands(SCRIPTS / f"{recipe}.sbatch")
    assert len(single) == len(slurm)
    for mine, theirs in zip(single, slurm, strict=True):
        assert mine[:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
        assert theirs[:2] == ["srun", "--kill-on-bad-exit=1"]
        assert mine[mine.index("-m") :] == theirs[theirs.index("-m") :]
    done = run_script(SCRIPTS / "torchrun_single_node.sh", "8", "ep900")
    assert done.returncode == 2 and "ep900" in done.stderr


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_script_is_the_original_recipe_then_5nn_and_linear(dataset):
    path = SCRIPTS / "cifar.sbatch"
    text = path.read_text()
    assert "scripts/cifar10.sh and scripts/cifar100.sh" in text
    options = sbatch_options(path)
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == ("1", "1", "1")
    pretrain, evaluation = commands(path, dataset, env={"EXPERIMENT_PATH": "/runs/c"})
    assert pretrain[:3] == ["python", "-u", "-m"]  # one process, as cifar/main.py
    args = parse_args(after(pretrain, TRAIN))
    check_values(args, {**CIFAR, "dataset": dataset, "data_path": None, "ckpt_dir": "/runs/c"})
    eval_args, [(knn_kind, _, knn), (lin_kind, stem, linear)] = harness(after(evaluation, EVALUATE), 1)
    assert eval_args.pretrained == "/runs/c/ckpt_" + dataset + "_1000.pth.tar"
    assert (knn_kind, knn.preset, knn.k, knn.metric) == ("knn", "nn5", 5, "euclidean")
    assert (lin_kind, stem, linear.preset, linear.epochs) == (
        "linear",
        f"{dataset}_cifar_linear",
        "intl_cifar",
        500,
    )
    assert (
        knn.normalization == linear.normalization == "cifar10"
    )  # the original's CIFAR-10 statistics (§10.11)

    env = {"DATASET_PATH": "/data/cifar", "DOWNLOAD": "1", "EPOCHS": "5"}
    pretrain, evaluation = commands(path, dataset, env=env)
    args = parse_args(after(pretrain, TRAIN))
    assert (args.data_path, args.download, args.epochs) == ("/data/cifar", True, 5)
    assert flag_values(evaluation)["--data_path"] == "/data/cifar" and "--download" in evaluation
    done = run_script(path, "cifar20")
    assert done.returncode == 2 and "cifar10|cifar100" in done.stderr


@pytest.mark.parametrize(("variant", "dataset"), list(CWRGP_TABLE))
def test_cwrgp_script_passes_exactly_the_base_sh_flags(variant, dataset):
    env = {"EXPERIMENT_PATH": "/runs/w", "DATASET_PATH": "/data/x"}
    [command] = commands(SCRIPTS / "cwrgp.sbatch", variant, dataset, "--num_workers", "2", env=env)
    assert command[:4] == ["python", "-u", "-m", CWRGP]
    argv = after(command, CWRGP)
    table = shlex.split(CWRGP_TABLE[variant, dataset])
    assert argv[:2] == ["--dataset", dataset] and argv[2 : 2 + len(table)] == table
    assert argv[2 + len(table) :] == [
        "--data_path", "/data/x", "--ckpt_dir", "/runs/w", "--env_name", f"cwrgp{variant}_{dataset}",
        "--resume", "auto", "--num_workers", "2",
    ]  # fmt: skip
    cwrgp_cli = pytest.importorskip("selfsup.intl.cwrgp_cli")
    args = cwrgp_cli.parse_args(argv)
    assert (args.num_samples, args.method, args.original_dataset) == (int(variant), "cwrgp", dataset)
    values = flag_values(table)
    assert args.epochs == int(values["--epochs"]) and args.lr == float(values["--lr"])
    assert args.bs == int(values.get("--bs", 512)) and args.w_iter == int(values.get("--w_iter", 1))


def test_cwrgp_needs_a_variant_and_the_tiny_imagenet_folder():
    done = run_script(SCRIPTS / "cwrgp.sbatch", "3", "cifar10")
    assert done.returncode == 2 and "{2|4}" in done.stderr
    done = run_script(SCRIPTS / "cwrgp.sbatch", "4", "tiny_in")
    assert done.returncode == 2 and "DATASET_PATH" in done.stderr
    [command] = commands(SCRIPTS / "cwrgp.sbatch", "2", "stl10", env={"DOWNLOAD": "1", "SLURM_JOB_ID": "9"})
    assert command[:3] == ["srun", "--kill-on-bad-exit=1", "--ntasks=1"] and "--download" in command
    assert "--data_path" not in command  # selfsup's data folder


README_ROWS = [
    *RECIPES,
    "cifar10",
    "cifar100",
    "in100",
    *(f"cwrgp{variant}_{dataset}" for variant, dataset in CWRGP_TABLE),
]


@pytest.mark.parametrize("which", README_ROWS)
def test_every_readme_row_runs_its_script(which):
    env = {"EXPERIMENT_PATH": "/runs/r", "DATASET_PATH": "/elsewhere"}
    printed = commands(SCRIPTS / "readme_commands.sh", which, "/data/in", env=env)
    assert printed
    for command in printed:
        if TRAIN in command:
            args = parse_args(after(command, TRAIN))
            assert args.data_path == "/data/in"  # DATA, not the caller's DATASET_PATH
            if which in RECIPES:
                assert command[:4] == ["torchrun", "--standalone", "--nproc_per_node", "8"]
        elif EVALUATE in command:
            harness(after(command, EVALUATE))
            assert flag_values(command)["--data_path"] == "/data/in"
        else:
            assert flag_values(after(command, CWRGP))["--data_path"] == "/data/in"


def test_readme_commands_list_every_row_and_need_data():
    text = (SCRIPTS / "readme_commands.sh").read_text()
    assert set(re.findall(r"^  ([\w-]+)\) ", text, flags=re.M)) == set(README_ROWS)
    for which in ("ep800", "in100", "cwrgp4_tiny_in"):
        done = run_script(SCRIPTS / "readme_commands.sh", which)
        assert done.returncode != 0 and "needs DATA" in done.stderr
    [command, _] = commands(SCRIPTS / "readme_commands.sh", "cifar10", env={"DATASET_PATH": "/elsewhere"})
    assert "--data_path" not in command  # no DATA: selfsup's data folder


FAKE_SCONTROL = """#!/usr/bin/env bash
[[ "$*" == "show hostnames gpu[03-04]" ]] && printf 'gpu03\\ngpu04\\n'
"""
FAKE_SRUN = """#!/usr/bin/env bash
echo "$MASTER_ADDR $MASTER_PORT $*"
"""


@pytest.fixture
def fake_slurm(tmp_path) -> dict[str, str]:
    """``srun`` and ``scontrol`` stand-ins on PATH, and the variables of a two-node job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu[03-04]",
        "SLURM_JOB_ID": "4242",
        "EXPERIMENT_PATH": str(tmp_path / "run"),
    }


def test_slurm_stages_skip_what_is_done_and_wait_for_pretraining(tmp_path, fake_slurm):
    script = SCRIPTS / "ep100_multi-crop_ema.sbatch"
    done = run_script(script, env=fake_slurm, dry=False)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()  # pre-training only: its final checkpoint is not there
    assert line.startswith("gpu03 24242 --kill-on-bad-exit=1 python -u -m selfsup.intl.train")
    assert "pre-training stopped before epoch 100" in done.stderr

    run = tmp_path / "run"
    (run / "ckpt_ep100_multi-crop_ema_0100.pth.tar").touch()
    (run / "ep100_multi-crop_ema_lincls.json").touch()
    done = run_script(script, env={**fake_slurm, "MASTER_ADDR": "head", "MASTER_PORT": "7"}, dry=False)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()  # only the semi-supervised evaluation is left
    assert line.startswith("head 7 --kill-on-bad-exit=1 python -u -m selfsup.intl.evaluate")
    assert "--train-percent 10" in line and "pretrain:" in done.stderr and "linear:" in done.stderr
