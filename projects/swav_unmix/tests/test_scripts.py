"""The scripts of ``projects/swav_unmix/scripts``: every command they would run parses, and the pre-training ones
carry the values of the Slurm-script table of the spec (``swav_unmix.md`` §6), the Un-Mix README command and the
CIFAR scripts. Each script prints its command(s) instead of running them under ``DRY_RUN=1``."""

import contextlib
import importlib
import itertools
import os
import re
import shlex
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.queue import effective_queue_length

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ALL_SCRIPTS = sorted(p for p in SCRIPTS.iterdir() if p.is_file())
TRAIN = "selfsup.swav_unmix.train"
#: variables the scripts read; the tests set the ones they need
SCRIPT_ENV = (
    "DRY_RUN",
    "DATASET_PATH",
    "EXPERIMENT_PATH",
    "TORCHRUN_NPROC",
    "PRETRAINED",
    "EVAL_PATH",
    "ARCH",
    "EPOCHS",
    "QUEUE",
    "RUN_SWAV",
    "DOWNLOAD",
    "MASTER_ADDR",
    "MASTER_PORT",
)

CROPS_2X224_6X96 = {
    "nmb_crops": [2, 6],
    "size_crops": [224, 96],
    "min_scale_crops": [0.14, 0.05],
    "max_scale_crops": [1.0, 0.14],
}
CROPS_2X224 = {"nmb_crops": [2], "size_crops": [224], "min_scale_crops": [0.08], "max_scale_crops": [1.0]}
CROPS_2X224_4X96 = {**CROPS_2X224_6X96, "nmb_crops": [2, 4]}
CROPS_W4 = {**CROPS_2X224_4X96, "min_scale_crops": [0.08, 0.08]}
#: the bs-4096 schedule (LARC lr 4.8, warm-up from 0.3) and the bs-256 one (lr 0.6, queue from epoch 15)
BS4096 = {
    "base_lr": 4.8,
    "final_lr": 0.0048,
    "warmup_epochs": 10,
    "start_warmup": 0.3,
    "freeze_prototypes_niters": 313,
    "sync_bn": "apex",
    "queue_length": 0,
}
BS256 = {
    "base_lr": 0.6,
    "final_lr": 0.0006,
    "warmup_epochs": 0,
    "start_warmup": 0.0,
    "freeze_prototypes_niters": 5005,
    "sync_bn": "pytorch",
    "queue_length": 3840,
    "epoch_queue_starts": 15,
}
R50 = {"batch_size": 64, "arch": "resnet50", "hidden_mlp": 2048}
W2 = {"batch_size": 32, "arch": "resnet50w2", "hidden_mlp": 8192}
W4 = {
    "batch_size": 40,
    "arch": "resnet50w4",
    "hidden_mlp": 8192,
    "queue_length": 2560,
    "epoch_queue_starts": 0,
}
#: recipe -> (nodes, GPUs per node, values): the table of spec §6
RECIPES = {
    "100ep": (8, 8, {**CROPS_2X224_6X96, **BS4096, **R50, "epochs": 100}),
    "200ep": (8, 8, {**CROPS_2X224_6X96, **BS4096, **R50, "epochs": 200}),
    "400ep": (8, 8, {**CROPS_2X224_6X96, **BS4096, **R50, "epochs": 400}),
    "800ep": (8, 8, {**CROPS_2X224_6X96, **BS4096, **R50, "epochs": 800}),
    "200ep_bs256": (1, 4, {**CROPS_2X224_6X96, **BS256, **R50, "epochs": 200}),
    "400ep_bs256": (1, 4, {**CROPS_2X224_6X96, **BS256, **R50, "epochs": 400}),
    "400ep_2x224": (8, 8, {**CROPS_2X224, **BS4096, **R50, "epochs": 400}),
    "RN50w2_400ep": (16, 8, {**CROPS_2X224_4X96, **BS4096, **W2, "epochs": 400}),
    "RN50w4_400ep": (8, 8, {**CROPS_W4, **BS4096, **W4, "epochs": 400}),
}
#: GPUs x batch of the table
GLOBAL_BATCH = {recipe: 4096 for recipe in RECIPES} | {
    "200ep_bs256": 256,
    "400ep_bs256": 256,
    "RN50w4_400ep": 2560,
}
#: every original script: crops 0 and 1 get codes, τ 0.1, ε 0.05, 3 Sinkhorn iterations, 128-d, 3000 prototypes,
#: wd 1e-6, fp16; none sets --unmix_prob or --run_swav (Un-Mix, region mixing only)
COMMON = {
    "crops_for_assign": [0, 1],
    "temperature": 0.1,
    "epsilon": 0.05,
    "sinkhorn_iterations": 3,
    "feat_dim": 128,
    "nmb_prototypes": 3000,
    "wd": 1e-6,
    "use_fp16": True,
    "run_swav": False,
    "unmix_prob": 0.0,
    "unmix_beta": 1.0,
    "dataset": "imagefolder",
}
#: the Un-Mix README's single-node command, flags as printed there
README_COMMAND = (
    "--epochs 400 --base_lr 0.6 --final_lr 0.0006 --warmup_epochs 0 --batch_size 32 --size_crops 224 96 "
    "--nmb_crops 2 6 --min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14 --use_fp16 true "
    "--freeze_prototypes_niters 5005 --queue_length 3840 --epoch_queue_starts 15"
)


def run_script(
    *argv: str, env: dict[str, str] | None = None, dry: bool = True
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in SCRIPT_ENV}
    environ.update({"DATASET_PATH": "/data/imagenet", **(env or {})})
    if dry:
        environ["DRY_RUN"] = "1"
    return subprocess.run(["bash", *map(str, argv)], env=environ, capture_output=True, text=True, timeout=60)


def commands(*argv: str, env: dict[str, str] | None = None) -> list[list[str]]:
    """The commands a script prints under DRY_RUN=1, split as the shell would."""
    done = run_script(*argv, env=env)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def trainer_argv(command: list[str]) -> list[str]:
    assert TRAIN in command, command
    return command[command.index(TRAIN) + 1 :]


def check_values(args, expected: dict) -> None:
    for name, value in expected.items():
        assert getattr(args, name) == value, (name, getattr(args, name), value)


def sbatch_options(path: Path) -> dict[str, str]:
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", path.read_text(), flags=re.M)
    return {key: value for key, value in found}


def recipe_script(recipe: str) -> Path:
    return SCRIPTS / f"unmix_swav_{recipe}_pretrain.sbatch"


def parse_with_wrapper(module: str, argv: list[str]) -> None:
    """The evaluation wrappers keep the original flags: their parser accepts the command."""
    wrapper = importlib.import_module(module)
    parser = wrapper.build_parser()
    args = parser.parse_args(argv)
    if hasattr(wrapper, "resolve_data"):
        wrapper.resolve_data(parser, args)


def flag_values(argv: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(argv) if flag.startswith("--")}


@pytest.mark.parametrize("path", ALL_SCRIPTS, ids=lambda p: p.name)
def test_every_script_is_strict_executable_bash_with_a_header(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert path.stat().st_mode & stat.S_IXUSR
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and lines[1].startswith("# ")
    assert "set -euo pipefail" in lines


def test_there_is_one_sbatch_script_per_original_slurm_script():
    found = {p.name for p in SCRIPTS.glob("unmix_swav_*_pretrain.sbatch")}
    assert found == {recipe_script(r).name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES)
def test_sbatch_recipe_matches_the_spec_table(recipe):
    nodes, per_node, expected = RECIPES[recipe]
    path = recipe_script(recipe)
    options = sbatch_options(path)
    assert int(options["nodes"]) == nodes
    assert int(options["ntasks-per-node"]) == int(options["gpus-per-node"]) == per_node  # one task per GPU
    assert options["signal"] == "USR1@120" and "requeue" in options
    assert (
        f"Reproduces Un-Mix's UnMix_SwAV/for_ImageNet/scripts/unmix_swav_{recipe}_pretrain.sh"
        in path.read_text()
    )
    assert re.search(rf"^gpus={nodes * per_node}\b", path.read_text(), flags=re.M)

    [command] = commands(path, env={"EXPERIMENT_PATH": "/runs/r"})
    assert command[:4] == ["srun", "--kill-on-bad-exit=1", "python", "-u"]
    args = parse_args(trainer_argv(command))
    check_values(args, {**COMMON, **expected})
    assert (args.data_path, args.dump_path) == ("/data/imagenet", "/runs/r")
    assert "--dist_url" not in command  # the rendezvous comes from the environment
    world = nodes * per_node
    assert world * args.batch_size == GLOBAL_BATCH[recipe]
    # the queue survives the modulo rule of the original (a multiple of the global batch)
    assert effective_queue_length(args.queue_length, args.batch_size, world) == args.queue_length


def test_sbatch_default_paths_and_extra_flags():
    [command] = commands(recipe_script("800ep"))
    args = parse_args(trainer_argv(command))
    assert args.dump_path == "./experiments/unmix_swav_800ep_pretrain"
    [command] = commands(recipe_script("800ep"), "--epochs", "2", "--workers", "3")
    args = parse_args(trainer_argv(command))
    assert (args.epochs, args.workers) == (2, 3)  # extra flags come last and win


FAKE_SCONTROL = """#!/usr/bin/env bash
case $1 in
  show) [[ "$*" == "show hostnames gpu[03-04]" ]] && printf 'gpu03\\ngpu04\\n' ;;
  requeue) echo "requeue $2" >> "$FAKE_LOG" ;;
esac
"""
FAKE_SRUN = """#!/usr/bin/env bash
echo "$MASTER_ADDR $MASTER_PORT"
printf '%s\\n' "$@"
if [[ -n ${FAKE_SLEEP:-} ]]; then
  touch "$FAKE_LOG.started"
  sleep "$FAKE_SLEEP"
fi
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
        "FAKE_LOG": str(tmp_path / "log"),
    }


def test_slurm_launch_exports_the_first_host_and_a_job_port(tmp_path, fake_slurm):
    done = run_script(recipe_script("400ep_bs256"), env=fake_slurm, dry=False)
    assert done.returncode == 0, done.stderr
    first, *argv = done.stdout.splitlines()
    assert first == "gpu03 24242"
    assert argv[:3] == ["--kill-on-bad-exit=1", "python", "-u"]
    assert parse_args(trainer_argv(argv)).epochs == 400
    assert (tmp_path / "run").is_dir()

    env = {**fake_slurm, "MASTER_ADDR": "head", "MASTER_PORT": "7"}
    done = run_script(recipe_script("400ep_bs256"), env=env, dry=False)
    assert done.stdout.splitlines()[0] == "head 7"


def test_slurm_evaluation_requeues_itself_on_the_time_limit_signal(tmp_path, fake_slurm):
    done = run_script(SCRIPTS / "eval.sbatch", "linear", env=fake_slurm, dry=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "gpu03 24242"
    assert (tmp_path / "run_linear_eval").is_dir()

    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in SCRIPT_ENV}
    environ.update({**fake_slurm, "FAKE_SLEEP": "30", "DATASET_PATH": "/data/imagenet"})
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        job = subprocess.Popen(
            ["bash", str(SCRIPTS / "eval.sbatch"), "linear"],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        started = Path(fake_slurm["FAKE_LOG"] + ".started")
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        job.send_signal(signal.SIGUSR1)  # Slurm's B:USR1 goes to the batch shell only
        job.wait(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # the srun stand-in (a real requeue ends the job)
    assert Path(fake_slurm["FAKE_LOG"]).read_text() == "requeue 4242\n"
    assert "requeueing job 4242" in err.read_text()


@pytest.mark.parametrize("recipe", RECIPES)
def test_torchrun_pretrain_runs_the_sbatch_flags_on_one_node(recipe):
    [single] = commands(SCRIPTS / "torchrun_pretrain.sh", "4", recipe)
    [slurm] = commands(recipe_script(recipe))
    assert single[: single.index(TRAIN) - 1] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
    assert trainer_argv(single) == trainer_argv(slurm)


def test_torchrun_pretrain_names_a_smaller_global_batch_and_an_unknown_recipe():
    done = run_script(SCRIPTS / "torchrun_pretrain.sh", "8", "800ep")
    assert done.returncode == 0 and "64 GPUs" in done.stderr
    assert run_script(SCRIPTS / "torchrun_pretrain.sh", "4", "200ep_bs256").stderr == ""
    done = run_script(SCRIPTS / "torchrun_pretrain.sh", "8", "900ep")
    assert done.returncode == 2 and "900ep" in done.stderr


def test_readme_command_is_the_un_mix_readme_unchanged():
    [command] = commands(
        SCRIPTS / "torchrun_pretrain.sh", "8", "readme", env={"EXPERIMENT_PATH": "/runs/readme"}
    )
    assert command[: command.index(TRAIN)] == ["torchrun", "--standalone", "--nproc_per_node", "8", "-m"]
    argv = trainer_argv(command)
    assert argv[:2] == ["--data_path", "/data/imagenet"] and argv[-2:] == ["--dump_path", "/runs/readme"]
    assert argv[2:-2] == shlex.split(README_COMMAND)
    args = parse_args(argv)
    check_values(
        args,
        {
            **COMMON,
            **CROPS_2X224_6X96,
            "epochs": 400,
            "base_lr": 0.6,
            "final_lr": 0.0006,
            "warmup_epochs": 0,
            "batch_size": 32,
            "freeze_prototypes_niters": 5005,
            "queue_length": 3840,
            "epoch_queue_starts": 15,
            "sync_bn": "pytorch",
            "arch": "resnet50",
            "hidden_mlp": 2048,
        },
    )
    assert effective_queue_length(args.queue_length, args.batch_size, 8) // 8 == 480  # per-GPU queue


CIFAR = {
    "arch": "resnet18_bottleneck",
    "cifar_stem": True,
    "stem_padding": 2,
    "hidden_mlp": 512,
    "epochs": 400,
    "batch_size": 128,
    "base_lr": 0.6,
    "final_lr": 0.0006,
    "warmup_epochs": 5,
    "size_crops": [32],
    "nmb_crops": [2],
    "min_scale_crops": [0.14],
    "max_scale_crops": [1.0],
    "nmb_prototypes": 100,
    "queue_length": 120,
    "epoch_queue_starts": 15,
    "use_fp16": True,
    "freeze_prototypes_niters": 5005,
    "run_swav": False,
    "workers": 2,
    "temperature": 0.1,
    "epsilon": 0.05,
    "cifar_aug": True,
    "data_path": None,
}


@pytest.mark.parametrize(("dataset", "labels"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_script_is_the_original_recipe_then_its_linear_evaluation(dataset, labels):
    train, evaluate = commands(SCRIPTS / "cifar.sh", dataset, env={"EXPERIMENT_PATH": "/runs/c"})
    assert train[:3] == ["python", "-u", "-m"]
    args = parse_args(trainer_argv(train))
    check_values(args, {**CIFAR, "dataset": dataset, "dump_path": "/runs/c"})
    assert effective_queue_length(args.queue_length, args.batch_size, 1) == 0  # 120 < 128: no queue at all
    assert evaluate[:4] == ["python", "-u", "-m", "selfsup.swav_unmix.eval_linear"]
    flags = evaluate[4:]
    for pair in (
        ["--num_labels", str(labels)],
        ["--crop_size", "32"],
        ["--data_path", dataset],
        ["--pretrained", "/runs/c/checkpoint.pth.tar"],
        ["--dump_path", "/runs/c_linear_eval"],
        ["--arch", "resnet18_bottleneck"],  # the network comes from the checkpoint; --arch is asserted
        ["--workers", "2"],
    ):
        assert " ".join(pair) in " ".join(flags), pair
    parse_with_wrapper("selfsup.swav_unmix.eval_linear", flags)


def test_cifar_variables_and_default_run_folder():
    env = {"QUEUE": "3840", "RUN_SWAV": "True", "EPOCHS": "200", "DOWNLOAD": "1"}
    train, _ = commands(SCRIPTS / "cifar.sh", "cifar10", env=env)
    args = parse_args(trainer_argv(train))
    assert (args.queue_length, args.run_swav, args.epochs, args.download) == (3840, True, 200, True)
    assert args.dump_path == "./experiments/unmix_swav_cifar_128_resnet18_200ep_100prot_cifar10"
    assert effective_queue_length(args.queue_length, args.batch_size, 1) == 3840
    done = run_script(SCRIPTS / "cifar.sh", "cifar20")
    assert done.returncode == 2 and "cifar10|cifar100" in done.stderr


SEMISUP = {"--epochs": "20", "--batch_size": "32", "--gamma": "0.2"}
EVALUATIONS = {
    "linear": (
        "selfsup.swav_unmix.eval_linear",
        {
            "--epochs": "100",
            "--batch_size": "32",
            "--lr": "0.3",
            "--wd": "0.000001",
            "--scheduler_type": "cosine",
            "--final_lr": "0",
        },
    ),
    "semisup10": (
        "selfsup.swav_unmix.eval_semisup",
        {**SEMISUP, "--labels_perc": "10", "--lr": "0.01", "--lr_last_layer": "0.2"},
    ),
    "semisup1": (
        "selfsup.swav_unmix.eval_semisup",
        {**SEMISUP, "--labels_perc": "1", "--lr": "0.02", "--lr_last_layer": "5"},
    ),
}


@pytest.mark.parametrize("protocol", EVALUATIONS)
def test_evaluation_scripts_carry_the_original_protocols(protocol):
    module, expected = EVALUATIONS[protocol]
    env = {"EXPERIMENT_PATH": "/runs/r", "ARCH": "resnet50w2"}
    [slurm] = commands(SCRIPTS / "eval.sbatch", protocol, env=env)
    [single] = commands(SCRIPTS / "torchrun_eval.sh", "8", protocol, env=env)
    assert slurm[: slurm.index(module)] == ["srun", "--kill-on-bad-exit=1", "python", "-u", "-m"]
    assert single[: single.index(module)] == ["torchrun", "--standalone", "--nproc_per_node", "8", "-m"]
    argv = slurm[slurm.index(module) + 1 :]
    assert argv == single[single.index(module) + 1 :]
    values = flag_values(argv)
    assert (
        values.items()
        >= {
            **expected,
            "--data_path": "/data/imagenet",
            "--arch": "resnet50w2",
            "--pretrained": "/runs/r/checkpoint.pth.tar",
            "--dump_path": f"/runs/r_{protocol}_eval",
        }.items()
    )
    if protocol != "linear":
        assert argv[argv.index("--decay_epochs") + 1 : argv.index("--decay_epochs") + 3] == ["12", "16"]
    options = sbatch_options(SCRIPTS / "eval.sbatch")
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == ("1", "8", "8")
    assert options["signal"] == "B:USR1@120" and "requeue" in options
    [default] = commands(SCRIPTS / "eval.sbatch", protocol, env={"EXPERIMENT_PATH": "/runs/r"})
    assert "--arch" not in default  # the architecture the checkpoint describes
    parse_with_wrapper(module, argv)


def test_evaluation_needs_a_checkpoint_and_a_known_protocol():
    done = run_script(SCRIPTS / "eval.sbatch", "linear")
    assert done.returncode == 2 and "EXPERIMENT_PATH" in done.stderr
    [command] = commands(
        SCRIPTS / "eval.sbatch", "linear", env={"PRETRAINED": "/ckpt/swav_800ep_pretrain.pth.tar"}
    )
    assert flag_values(command)["--dump_path"] == "/ckpt/swav_800ep_pretrain_linear_eval"
    done = run_script(SCRIPTS / "eval.sbatch", "knn", env={"PRETRAINED": "/c.pth"})
    assert done.returncode == 2 and "knn" in done.stderr


README_ROWS = [*RECIPES, "readme", "cifar10", "cifar100", "linear", "semisup1", "semisup10"]


@pytest.mark.parametrize("which", README_ROWS)
def test_every_readme_command_runs_the_scripts(which):
    env = {"EXPERIMENT_PATH": "/runs/r", "DATASET_PATH": "/elsewhere"}
    printed = commands(SCRIPTS / "readme_commands.sh", which, "/data/in", env=env)
    assert printed
    for command in printed:
        if TRAIN in command:
            args = parse_args(trainer_argv(command))
            if which not in ("cifar10", "cifar100"):
                assert args.data_path == "/data/in"  # DATA, not the caller's DATASET_PATH
        else:
            assert flag_values(command)["--pretrained"] == "/runs/r/checkpoint.pth.tar"
    if which in RECIPES:
        [command] = printed
        [direct] = commands(recipe_script(which), env={**env, "DATASET_PATH": "/data/in"})
        assert command == direct


def test_readme_commands_list_every_row_and_need_data():
    text = (SCRIPTS / "readme_commands.sh").read_text()
    assert set(re.findall(r"^  (\w+)\) ", text, flags=re.M)) == set(README_ROWS)
    done = run_script(SCRIPTS / "readme_commands.sh", "800ep")
    assert done.returncode != 0 and "DATA" in done.stderr
