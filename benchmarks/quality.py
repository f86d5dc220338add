"""The quality benchmark: every method pre-trained on natural images (CIFAR-10) with its own trainer, at one
budget, then the shared kNN and linear probes, next to the same network at random initialisation.

    python benchmarks/quality.py --data PATH --budget_s 180 --out DIR [--methods moco,swav,...] [--jobs 2]
        [--lightly_python /path/to/lightly-venv/bin/python]

``--data`` is the CIFAR-10 subset ``.npz`` (``train_images``/``train_labels``/``test_images``/``test_labels``,
the layout of ``shared/data/cifar10-subset/cifar10_prefix_subset.npz``) or a torchvision CIFAR-10 root
(``cifar-10-batches-py/``; ``--download`` fetches it). For each method (:data:`RECIPES`; the rows
``lightly-moco`` and ``lightly-swav`` run lightly's models through ``quality_lightly.py`` in lightly's own
environment):

1. **calibration**: the run is built exactly as it will train (through the runtime, ``TrainingRun.start``), its
   network at initialisation is saved as the random-init baseline (``TrainingRun.save``: the weights
   pre-training starts from), a few real steps are timed, and the number of epochs nearest to ``--budget_s``
   seconds of pre-training is chosen (``--epochs N`` fixes it); the recipe's schedules are set over that length
   (where even one epoch would overrun the budget by half, the run stops at the steps that fit it);
2. **pre-training** with the method's registered trainer (``selfsup.shared.runtime.trainer.train``), the
   checkpoints of a few intermediate epochs kept for the curve;
3. **evaluation** with the shared harness (``evaluate_checkpoint``): kNN (the ``instdisc`` preset: cosine,
   k 200, τ 0.07) of the random init, the intermediate checkpoints and the final one; the linear probe
   (``quick``: Adam on cached features) of the random init and the final checkpoint;
4. ``DIR/<method>.json`` per run, ``DIR/table.md`` (every row), ``DIR/knn_vs_time.png`` (kNN top-1 against
   seconds of pre-training; skipped with one line without matplotlib); the runs themselves under ``DIR/runs/``.

Every method trains the same network: a ResNet-18 (BasicBlock, width 64) with the CIFAR stem (3×3 stride-1
conv, no max-pool), 32-px crops, the same batch (``--batch_size``, default 128), ``--precision auto`` (bf16 on
CPUs that compute it natively), channels-last, data loaded in the training process. The recipes are the CIFAR
recipes of the originals where they have one (Un-Mix's for SwAV and Un-Mix, INTL's, CW-RGP's, InsDis' CIFAR
script), and the MoCo CIFAR-10 demo's settings for MoCo, the CMC repository's MoCo and CMC; where a recipe's
network or length differs, :data:`RECIPES` says so (``docs/benchmarks.md`` lists every departure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A folder made by this benchmark holds this file; only such folders are ever cleared.
MARKER = ".selfsup-quality"
#: rows that run lightly's models (``quality_lightly.py`` in lightly's environment)
LIGHTLY_ROWS = ("lightly-moco", "lightly-swav")
HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Data:
    """The data every run reads: ``dataset`` (``npz`` or ``cifar10``) at ``root``; ``num_train`` images."""

    dataset: str
    root: str
    num_train: int
    download: bool = False

    def trainer_flags(self, data_flag: str) -> list[str]:
        return ["--dataset", self.dataset, data_flag, self.root, *(["--download"] if self.download else [])]


@dataclass(frozen=True)
class Recipe:
    """One row: the registered ``trainer``, the flag naming its data, the recipe's flags (``flags(run_dir,
    batch)``, without data, length, seed, device and precision), the flags that set its length
    (``length(epochs, iters_per_epoch)``: the schedules scaled to the run), the recipe's full length on a GPU
    and where the settings come from."""

    name: str
    trainer: str
    data_flag: str
    flags: Callable[[Path, int], list[str]]
    length: Callable[[int, int], list[str]]
    full_epochs: int
    source: str
    workers_flag: str = "--num_workers"


#: the network of every row (see the module docstring)
NET = ["--arch", "resnet18", "--cifar_stem"]
QUIET = ["--no_progress", "--no_tensorboard", "--channels_last"]
NEVER = "1000000"  # a period no run reaches (periodic checkpoint copies, lr decays)


def warmup(recipe_value: int, run_length: int) -> int:
    """A warm-up-like length (lr warm-up, frozen prototypes): the recipe's, at most a tenth of the run."""
    return max(0, min(recipe_value, run_length // 10))


def step_decays(epochs: int, fractions: Sequence[float]) -> str:
    """Step-decay epochs at the recipe's fractions of the run (none in runs under 10 epochs)."""
    if epochs < 10:
        return NEVER
    return ",".join(str(max(1, round(epochs * f))) for f in fractions)


def _moco_flags(run: Path, batch: int) -> list[str]:
    return [
        *NET, "--crop", "32", "--batch_size", str(batch), "--lr", "0.06", "--weight_decay", "5e-4",
        "--temperature", "0.1", "--momentum", "0.99", "--num_keys", "4096", "--feature_dim", "128",
        "--mlp", "--aug-plus", "--cos", "--bn_splits", "8", "--shuffle_bn",
        "--save_weight_epoch", NEVER, "--plot_iter", "0", "--log_every", "10",
        "--output_root", str(run), "--dataset_name", "CIFAR10", "--exp_version", "quality", *QUIET,
    ]  # fmt: skip


def _cmc_common(run: Path, batch: int) -> list[str]:
    return [
        "--cifar_stem", "--image_size", "32", "--batch_size", str(batch),
        "--print_freq", "10", "--save_freq", NEVER, "--model_path", str(run), "--tb_path", str(run / "tb"),
        *QUIET,
    ]  # fmt: skip


_CMC_FLAGS = [
    "--model", "resnet18v1", "--view", "Lab", "--softmax", "--nce_k", "4096", "--nce_t", "0.07", "--nce_m",
    "0.5", "--learning_rate", "0.03", "--weight_decay", "1e-4",
]  # fmt: skip
_INSDIS_FLAGS = [
    "--model", "resnet18", "--nce_k", "4096", "--nce_t", "0.1", "--nce_m", "0.5", "--crop", "0.2",
    "--learning_rate", "0.1", "--weight_decay", "5e-4",
]  # fmt: skip
_CMC_MOCO_FLAGS = [
    "--moco", "--model", "resnet18", "--softmax", "--nce_k", "4096", "--nce_t", "0.1", "--alpha", "0.99",
    "--bn_splits", "8", "--learning_rate", "0.06", "--weight_decay", "5e-4",
]  # fmt: skip


def _cmc_length(epochs: int, _ipe: int) -> list[str]:
    return ["--epochs", str(epochs), "--lr_decay_epochs", step_decays(epochs, (0.6, 0.8))]


def _swav_flags(variant: list[str]) -> Callable[[Path, int], list[str]]:
    def flags(run: Path, batch: int) -> list[str]:
        return [
            *NET, "--size_crops", "32", "--nmb_crops", "2", "--min_scale_crops", "0.14", "--max_scale_crops", "1.0",
            "--cifar_aug", "true", "--crops_for_assign", "0", "1", "--batch_size", str(batch),
            "--base_lr", "0.6", "--final_lr", "0.0006", "--wd", "1e-6", "--nmb_prototypes", "100",
            "--hidden_mlp", "512", "--feat_dim", "128", "--queue_length", "0", "--temperature", "0.1",
            "--epsilon", "0.05", "--sinkhorn_iterations", "3", "--checkpoint_freq", NEVER,
            "--log_every", "10", "--dump_path", str(run), *variant, *QUIET,
        ]  # fmt: skip

    return flags


def _swav_length(epochs: int, ipe: int) -> list[str]:
    return [
        "--epochs", str(epochs), "--warmup_epochs", str(warmup(5, epochs)),
        "--freeze_prototypes_niters", str(warmup(5005, epochs * ipe)),
    ]  # fmt: skip


def _intl_flags(method: str, extra: list[str]) -> Callable[[Path, int], list[str]]:
    def flags(run: Path, batch: int) -> list[str]:
        return [
            *NET, "--cifar", "--method", method, "--projection_size", "2048", "--emb", "2048",
            "--lr", "0.3", "--wd", "1e-4", "--bs", str(batch), "--crops_size", "32", "32",
            "--gaussian_prob", "0", "0", "--solarization_prob", "0", "0.2", *extra,
            "-p", "10", "--save_freq", NEVER, "--ckpt_dir", str(run), "--env_name", "quality", *QUIET,
        ]  # fmt: skip

    return flags


def _cwrgp_flags(run: Path, batch: int) -> list[str]:
    return [
        "--method", "cwrgp", "--arch", "resnet18", "--lr", "3e-3", "--bs", str(batch), "--w_size", "64",
        "--group", "4", "--w_iter", "4", "--num_samples", "2", "--emb", "512", "--head_size", "1024",
        "--eval_every", "0", "--log_every", "10", "--save_freq", NEVER,
        "--ckpt_dir", str(run), "--env_name", "quality", *QUIET,
    ]  # fmt: skip


def _cwrgp_length(epochs: int, ipe: int) -> list[str]:
    drops = [round(epochs * 50 / 1000), round(epochs * 25 / 1000)]  # base.sh: the last 50 and 25 of 1000
    schedule = ["--drop", *map(str, drops)] if min(drops) >= 1 else ["--lr_step", "none"]
    return ["--epochs", str(epochs), "--warmup_iters", str(warmup(500, epochs * ipe)), *schedule]


RECIPES: dict[str, Recipe] = {
    "moco": Recipe(
        "moco",
        "moco",
        "--dataset_root",
        _moco_flags,
        lambda e, _: ["--max_epoch", str(e)],
        200,
        "the MoCo CIFAR-10 demo (facebookresearch/moco colab): lr 0.06, wd 5e-4, K 4096, m 0.99, τ 0.1, "
        "split BN 8 (+ shuffle BN), cosine; MoCo v2 head and augmentation (--mlp --aug-plus: its blur is kept, "
        "moco-train has no flag to drop it; the demo has no blur), asymmetric loss (moco-train has no symmetric "
        "loss); batch 128 at lr 0.06 as lightly's MoCo",
    ),
    "cmc": Recipe(
        "cmc",
        "cmc",
        "--data_folder",
        lambda run, b: [*_CMC_FLAGS, *_cmc_common(run, b)],
        _cmc_length,
        200,
        "CMC README (L | ab, softmax, τ 0.07, lr 0.03, batch 128) with 4096 negatives (the subset has 5,438 "
        "images) and two ResNet-18 halves (resnet18v1) with the CIFAR stem; lr decays at 60 % and 80 % of "
        "the run (none under 10 epochs)",
    ),
    "insdis": Recipe(
        "insdis",
        "insdis",
        "--data_folder",
        lambda run, b: [*_INSDIS_FLAGS, *_cmc_common(run, b)],
        lambda e, _: ["--epochs", str(e), "--lr_decay_epochs", NEVER],
        200,
        "InsDis' CIFAR script (zhirongw/lemniscate.pytorch cifar.py): NCE with 4096 noise samples, τ 0.1, "
        "memory momentum 0.5, lr 0.1 constant (its decay is commented out), wd 5e-4, batch 128, crops of at "
        "least 20 %, 200 epochs; through cmc-moco-ins-train (--aug CJ: with a flip, which cifar.py omits)",
    ),
    "cmc-moco": Recipe(
        "cmc-moco",
        "cmc-moco",
        "--data_folder",
        lambda run, b: [*_CMC_MOCO_FLAGS, *_cmc_common(run, b)],
        _cmc_length,
        200,
        "the CMC repository's MoCo (train_moco_ins.py --moco, --aug CJ) at the MoCo CIFAR-10 demo's values: "
        "K 4096, m 0.99, τ 0.1, lr 0.06, wd 5e-4, split BN 8; step decays at 60 %/80 % (none under 10 epochs)",
    ),
    "swav": Recipe(
        "swav",
        "swav",
        "--data_path",
        _swav_flags(["--run_swav", "true"]),
        _swav_length,
        200,
        "Un-Mix's for_CIFAR script with --run_swav True (projects/swav_unmix/scripts/cifar.sh): 2×32 px "
        "(min scale 0.14), colour 0.5 / no blur, 100 prototypes, hidden 512, lr 0.6→0.0006 LARC, wd 1e-6, "
        "τ 0.1, ε 0.05, no queue (its 120 rounds to 0), batch 128; ResNet-18 BasicBlock with padding 1 instead "
        "of its Bottleneck CIFAR-18 with padding 2; warm-up 5 epochs and 5005 frozen-prototype iterations, "
        "each at most a tenth of the run",
        "--workers",
    ),
    "unmix": Recipe(
        "unmix",
        "unmix",
        "--data_path",
        _swav_flags(["--run_swav", "false", "--unmix_prob", "0.5", "--unmix_beta", "1.0"]),
        _swav_length,
        200,
        "Un-Mix's for_CIFAR script (projects/swav_unmix/scripts/cifar.sh), as the swav row with Un-Mix's "
        "mixtures (--run_swav False)",
        "--workers",
    ),
    "intl": Recipe(
        "intl",
        "intl",
        "--data_path",
        _intl_flags("intl", []),
        lambda e, _: ["--epochs", str(e), "--warmup_eps", str(warmup(2, e))],
        200,
        "INTL's CIFAR recipe (projects/intl/scripts/cifar.sbatch, cifar/main.py): --cifar, projector 3×2048, "
        "emb 2048, lr 0.3 (× batch/256), wd 1e-4, no blur, solarisation 0/0.2, batch 128 instead of 256; "
        "stem padding 1 instead of 2; 2 warm-up epochs, at most a tenth of the run; 1000 epochs in the paper",
        "-j",
    ),
    "intl_m": Recipe(
        "intl_m",
        "intl_m",
        "--data_path",
        _intl_flags("intl_m", ["--m", "0.996"]),
        lambda e, _: ["--epochs", str(e), "--warmup_eps", str(warmup(2, e))],
        200,
        "the intl row with an EMA target (--method intl_m, m 0.996 → 1 cosine: INTL's ImageNet value; its "
        "CIFAR recipe trains plain INTL)",
        "-j",
    ),
    "cwrgp": Recipe(
        "cwrgp",
        "cwrgp",
        "--data_path",
        _cwrgp_flags,
        _cwrgp_length,
        200,
        "CW-RGP 2 on CIFAR-10 (projects/intl/scripts/cwrgp.sbatch, base.sh): Adam lr 3e-3, w_size 64, 4 "
        "groups, w_iter 4, emb 512, head 1024, batch 128 instead of 256, 500 warm-up iterations (at most a "
        "tenth of the run), LR drops at the last 5 % and 2.5 % (none in short runs); 1000 epochs in the paper",
    ),
}
DEFAULT_METHODS = (*RECIPES, *LIGHTLY_ROWS)


# ------------------------------------------------------------------------------------------- helpers


def load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def fresh_folder(path: Path) -> Path:
    """``path`` empty and marked: a folder this benchmark made is cleared, any other non-empty one refused."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).is_file():
            raise FileExistsError(
                f"{path} exists and was not made by benchmarks/quality.py; choose another --out"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by benchmarks/quality.py; its next run may delete it\n")
    return path


def resolve_data(path: str, download: bool) -> Data:
    """``--data``: an ``.npz`` file in the subset's layout, or a torchvision CIFAR-10 root."""
    import numpy as np

    p = Path(path)
    if p.suffix == ".npz":
        if not p.is_file():
            raise FileNotFoundError(f"--data {p} does not exist")
        with np.load(p, allow_pickle=False) as archive:
            missing = {"train_images", "train_labels", "test_images", "test_labels"} - set(archive.files)
            if missing:
                raise KeyError(f"--data {p} lacks {sorted(missing)} (the layout of shared/data/arrays.py)")
            return Data("npz", str(p.resolve()), len(archive["train_labels"]))
    if not download and not (p / "cifar-10-batches-py").is_dir():
        raise FileNotFoundError(
            f"--data {p}: no cifar-10-batches-py/ there (add --download to fetch CIFAR-10)"
        )
    return Data("cifar10", str(p.resolve()), 50000, download)


def evaluate(checkpoint: Path, data: Data, *, device: str, seed: int, cache: Path, linear: bool) -> dict:
    """kNN (instdisc) and, with ``linear``, the quick linear probe of ``checkpoint`` (features cached)."""
    from selfsup.shared.evaluation.api import evaluate_checkpoint

    common = {"dataset": data.dataset, "root": data.root, "device": device, "cache_dir": str(cache)}
    tic = time.perf_counter()
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", use_cache=True, **common)
    out: dict[str, Any] = {"knn_top1": knn["top1"], "knn_top5": knn.get("top5"), "input": knn.get("input")}
    if linear:
        lin = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=seed, **common)
        out |= {"linear_top1": lin["top1"], "linear_top5": lin.get("top5")}
    out["seconds"] = round(time.perf_counter() - tic, 1)
    return out


def load_trainer(name: str) -> Any:
    """The registered ``TrainerEntry`` ``name`` (only its entry point is imported: one project that fails to
    import costs its own rows, not every row)."""
    from importlib.metadata import entry_points

    from selfsup.shared.runtime.registry import ENTRY_POINT_GROUP

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            return point.load()
    raise ValueError(f"no trainer {name!r} is registered in {ENTRY_POINT_GROUP}")


def choose_epochs(step_s: float, iters_per_epoch: int, budget_s: float, full_epochs: int) -> int:
    """The number of epochs whose pre-training time is nearest to ``budget_s`` (≥ 1, ≤ the recipe's)."""
    epoch_s = step_s * iters_per_epoch * 1.03  # epoch ends, checkpoints, logging
    return max(1, min(full_epochs, round(budget_s / epoch_s)))


def budget_iters(step_s: float, iters_per_epoch: int, budget_s: float) -> int:
    """Where even one epoch overruns the budget by half (a slow or busy machine), the steps that fit it (the run
    stops there, through the runtime's ``--max_iters``); else 0 (whole epochs)."""
    if step_s * iters_per_epoch * 1.03 <= 1.5 * budget_s:
        return 0
    return max(1, round(budget_s / (step_s * 1.03)))


def curve_epochs(epochs: int, points: int) -> list[int]:
    """``points`` intermediate epochs (1-based, evenly spaced, excluding the last)."""
    chosen = {round(epochs * (i + 1) / (points + 1)) for i in range(points)}
    return sorted(e for e in chosen if 1 <= e < epochs)


# ------------------------------------------------------------------------------------------- one selfsup run


def run_selfsup(recipe: Recipe, data: Data, opts: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch

    from selfsup.shared.runtime.trainer import TrainingRun, train

    torch.set_num_threads(opts.threads)
    entry = load_trainer(recipe.trainer)
    ipe = math.ceil(data.num_train / opts.batch_size)
    common = [
        *data.trainer_flags(recipe.data_flag),
        "--seed", str(opts.seed), "--device", opts.device, "--precision", opts.precision,
        recipe.workers_flag, str(opts.workers),
    ]  # fmt: skip
    started = time.perf_counter()
    random_init = folder / "random_init.pth"

    # 1. calibration: built as it will train; the initial network saved; a few steps timed
    with tempfile.TemporaryDirectory(prefix="calib-", dir=folder) as scratch:
        probe = [
            *recipe.flags(Path(scratch), opts.batch_size),
            *common,
            *recipe.length(recipe.full_epochs, ipe),
        ]
        args = entry.parse_args(probe)
        run = TrainingRun.start(entry.method(args), args, [entry.prog, *probe])
        try:
            run.save(random_init, 0, 0, 0)
            steps_per_epoch = run.parts.data.iters_per_epoch(run.ctx.env.world_size)
            loader = run.parts.data
            loader.sampler.set_epoch(0)
            loader.sampler.set_start(0)
            for aware in loader.epoch_aware:
                aware.set_epoch(0)
            run.method.on_epoch_start(0)
            batches = iter(loader.loader)
            seconds = []
            for i in range(min(opts.calib_steps + 2, steps_per_epoch)):
                tic = time.perf_counter()
                run.step(next(batches))
                if i >= 2 or steps_per_epoch <= 2:
                    seconds.append(time.perf_counter() - tic)
        finally:
            run.close()
    step_s = sorted(seconds)[len(seconds) // 2]
    epochs = opts.epochs or choose_epochs(step_s, steps_per_epoch, opts.budget_s, recipe.full_epochs)
    max_iters = 0 if opts.epochs else budget_iters(step_s, steps_per_epoch, opts.budget_s)
    calibration = {
        "step_s": round(step_s, 4),
        "iters_per_epoch": steps_per_epoch,
        "budget_s": opts.budget_s,
        "epochs": epochs,
        "fixed": opts.epochs is not None,
        "max_iters": max_iters,
        "seconds": round(time.perf_counter() - started, 1),
    }

    # 2. pre-training with the registered trainer; intermediate checkpoints kept for the curve
    flags = [*recipe.flags(folder / "run", opts.batch_size), *common, *recipe.length(epochs, steps_per_epoch)]
    flags += ["--max_iters", str(max_iters)] if max_iters else []
    args = entry.parse_args(flags)
    method = entry.method(args)
    keep = set(curve_epochs(epochs, opts.curve))
    curve: list[dict[str, Any]] = []
    inner_after_epoch = getattr(method, "after_epoch", None)
    clock = {"t0": 0.0}

    def after_epoch(epoch: int, step: int, checkpoint: Path) -> None:  # the runtime's hook, wrapped
        if inner_after_epoch is not None:
            inner_after_epoch(epoch, step, checkpoint)
        if epoch + 1 in keep:
            copy = folder / "curve" / f"epoch_{epoch + 1}.pth"
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(checkpoint, copy)
            at = round(time.perf_counter() - clock["t0"], 1)
            curve.append({"epoch": epoch + 1, "step": step, "seconds": at, "checkpoint": str(copy)})

    method.after_epoch = after_epoch
    load_start = load1()
    clock["t0"] = time.perf_counter()
    result = train(method, args, [entry.prog, *flags])
    train_s = time.perf_counter() - clock["t0"]
    load_end = load1()
    if result.stopped_by != "end" and not (max_iters and result.stopped_by == "max_iters"):
        raise RuntimeError(
            f"{recipe.name}: pre-training stopped by {result.stopped_by} at step {result.step}"
        )
    layout = method.layout(args)
    record = json.loads(layout.config_files[0].read_text()) if layout.config_files else {}

    # 3. evaluation
    cache = folder / "features"
    ev = {"device": opts.device, "seed": opts.seed, "cache": cache}
    results = {
        "random_init": evaluate(random_init, data, linear=True, **ev),
        "pretrained": evaluate(Path(result.checkpoint), data, linear=True, **ev),
    }
    for point in curve:
        point["knn_top1"] = evaluate(Path(point["checkpoint"]), data, linear=False, **ev)["knn_top1"]
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "library": "selfsup",
        "trainer": entry.prog,
        "precision": record.get("precision_resolved", opts.precision),
        "calibration": calibration,
        "epochs": epochs,
        "steps": result.step,
        "images": result.step * opts.batch_size,
        "train_s": round(train_s, 1),
        "images_per_s": round(result.step * opts.batch_size / train_s, 1),
        "load1": {"start": load_start, "end": load_end},
        "curve": curve,
        "results": results,
        "checkpoint": str(result.checkpoint),
        "random_init_checkpoint": str(random_init),
        "train_flags": flags,
        "recipe": recipe.source,
        "full_epochs": recipe.full_epochs,
    }


# ------------------------------------------------------------------------------------------- one lightly run


def run_lightly(name: str, data: Data, opts: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``quality_lightly.py`` in lightly's environment trains and writes selfsup-readable backbones; they are
    evaluated here with the same harness."""
    command = [
        opts.lightly_python, str(HERE / "quality_lightly.py"), "--method", name.removeprefix("lightly-"),
        "--data", data.root, "--out", str(folder / "run"), "--batch_size", str(opts.batch_size),
        "--budget_s", str(opts.budget_s), "--seed", str(opts.seed), "--threads", str(opts.threads),
        "--curve", str(opts.curve), "--calib_steps", str(opts.calib_steps), "--precision", opts.lightly_precision,
        "--device", opts.device, "--workers", str(opts.workers), *(["--download"] if data.download else []),
    ]  # fmt: skip
    if opts.epochs:
        command += ["--epochs", str(opts.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads)}
    env.pop("PYTHONPATH", None)
    log = folder / "lightly.log"
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{name}: quality_lightly.py exited {done.returncode}: " + " | ".join(tail))
    record = json.loads((folder / "run" / "run.json").read_text())
    cache = folder / "features"
    ev = {"device": opts.device, "seed": opts.seed, "cache": cache}
    results = {
        "random_init": evaluate(Path(record["random_init_checkpoint"]), data, linear=True, **ev),
        "pretrained": evaluate(Path(record["checkpoint"]), data, linear=True, **ev),
    }
    for point in record["curve"]:
        point["knn_top1"] = evaluate(Path(point["checkpoint"]), data, linear=False, **ev)["knn_top1"]
    shutil.rmtree(cache, ignore_errors=True)
    return {**record, "library": f"lightly {record.get('lightly_version', '?')}", "results": results}


# ------------------------------------------------------------------------------------------- driver


def run_one(name: str, data: Data, opts: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = fresh_folder(out / "runs" / name)
    started = time.perf_counter()
    if name in LIGHTLY_ROWS:
        payload = run_lightly(name, data, opts, folder)
    else:
        payload = run_selfsup(RECIPES[name], data, opts, folder)
    res = payload["results"]
    payload = {
        "method": name,
        **payload,
        "beats_random": {
            probe: res["pretrained"][f"{probe}_top1"] > res["random_init"][f"{probe}_top1"]
            for probe in ("knn", "linear")
        },
        "data": {"dataset": data.dataset, "root": data.root, "num_train": data.num_train},
        "batch_size": opts.batch_size,
        "threads": opts.threads,
        "jobs": opts.jobs,
        "cpu": cpu_name(),
        "total_s": round(time.perf_counter() - started, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| method | library / trainer | precision | epochs | pre-training s | images/s | kNN top-1 | kNN random "
        "| linear top-1 | linear random | beats random (kNN, linear) | load (1 min) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |  |  |  |  |  |  |  |  |  |  |")
            continue
        p, z = r["results"]["pretrained"], r["results"]["random_init"]
        who = r.get("trainer") if r["library"] == "selfsup" else r["library"]
        beats = ", ".join("yes" if r["beats_random"][k] else "**no**" for k in ("knn", "linear"))
        load = r.get("load1", {})
        lines.append(
            f"| {r['method']} | {who} | {r['precision']} | {r['epochs']} | {r['train_s']:.0f} | "
            f"{r['images_per_s']:.0f} | {p['knn_top1']:.2f} | {z['knn_top1']:.2f} | {p['linear_top1']:.2f} | "
            f"{z['linear_top1']:.2f} | {beats} | {load.get('start')} → {load.get('end')} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: {path.name} skipped")
        return
    if not any("error" not in r for r in rows):
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if "error" in r:
            continue
        points = [(0.0, r["results"]["random_init"]["knn_top1"])]
        points += [(c["seconds"], c["knn_top1"]) for c in r["curve"]]
        points.append((r["train_s"], r["results"]["pretrained"]["knn_top1"]))
        xs, ys = zip(*points, strict=True)
        style = "--" if r["method"] in LIGHTLY_ROWS else "-"
        ax.plot(xs, ys, style, marker="o", label=r["method"])
    ax.set_xlabel("seconds of pre-training (0: random init)")
    ax.set_ylabel("kNN top-1 (%)  [instdisc: cosine, k 200, τ 0.07]")
    ax.set_title("kNN accuracy against pre-training time, CIFAR-10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/quality.py",
        description="Every method pre-trained on CIFAR-10 with its own trainer at one budget, then kNN and "
        "linear probes next to the same network at random initialisation (module docstring).",
    )
    parser.add_argument(
        "--data", required=True, help="CIFAR-10 .npz (the subset's layout) or torchvision root"
    )
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 into the --data root")
    parser.add_argument("--out", required=True, help="folder for <method>.json, table.md, knn_vs_time.png")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated (default: {','.join(DEFAULT_METHODS)})",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--budget_s", type=float, default=180.0, help="seconds of pre-training per method")
    length.add_argument("--epochs", type=int, default=None, help="fix the epochs instead of a time budget")
    parser.add_argument(
        "--batch_size", type=int, default=128, help="images per step, every row (default 128)"
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument(
        "--workers", type=int, default=0, help="data-loading worker processes per run (default 0: in the run)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)"
    )
    parser.add_argument(
        "--curve", type=int, default=1, help="intermediate checkpoints evaluated (kNN) per run"
    )
    parser.add_argument("--calib_steps", type=int, default=4, help="steps timed after 2 warm-up steps")
    parser.add_argument("--lightly_python", default=None, help="python of an environment with lightly")
    parser.add_argument(
        "--lightly_precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="lightly rows (default: its fp32)",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="only rebuild OUT/table.md and OUT/knn_vs_time.png from the OUT/<method>.json of --methods",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in RECIPES and m not in LIGHTLY_ROWS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {', '.join(DEFAULT_METHODS)}")
    if opts.epochs is not None and opts.epochs < 1:
        parser.error("--epochs must be >= 1")
    try:
        data = resolve_data(opts.data, opts.download)
    except (OSError, KeyError) as err:
        parser.error(str(err))
    out = Path(opts.out)
    if opts.worker:  # one run, in a process of its own (--jobs)
        run_one(opts.worker, data, opts, out)
        return 0
    if opts.summarize:
        rows = [json.loads((out / f"{m}.json").read_text()) for m in methods if (out / f"{m}.json").is_file()]
        return write_summary(rows, opts, data, out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = [m for m in methods if m in LIGHTLY_ROWS and not opts.lightly_python]
    if skipped:
        print(f"skipped {', '.join(skipped)}: --lightly_python (an environment with lightly) not given")
        methods = [m for m in methods if m not in skipped]

    def one(name: str) -> dict[str, Any]:
        try:
            if opts.jobs <= 1:
                return run_one(name, data, opts, out)
            raw = list(sys.argv[1:] if argv is None else argv)
            log = out / "runs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads)}
            with log.open("w") as stream:
                done = subprocess.run(
                    [sys.executable, __file__, *raw, "--worker", name],
                    stdout=stream, stderr=subprocess.STDOUT, env=env, check=False,
                )  # fmt: skip
            if done.returncode != 0:
                tail = log.read_text().strip().splitlines()[-3:]
                raise RuntimeError(f"exit {done.returncode}: {' | '.join(tail)}")
            return json.loads((out / f"{name}.json").read_text())
        except Exception as err:  # one failed row must not lose the others
            traceback.print_exc()
            print(f"{name}: failed: {err}", file=sys.stderr)
            return {"method": name, "error": str(err).replace("|", "/")[:300]}

    if opts.jobs <= 1:  # in this process: the runtime's signal handlers need the main thread
        rows = [one(name) for name in methods]
    else:
        with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
            rows = list(pool.map(one, methods))
    return write_summary(rows, opts, data, out)


def write_summary(rows: Sequence[dict[str, Any]], opts: argparse.Namespace, data: Data, out: Path) -> int:
    """``OUT/table.md`` and ``OUT/knn_vs_time.png`` for ``rows``; 1 when a row failed. The settings line is
    the first measured row's (``--summarize`` may run with other flags than the runs)."""
    text = table(rows)
    first = next((r for r in rows if "error" not in r), None)
    threads, jobs, batch = opts.threads, opts.jobs, opts.batch_size
    length = f"{opts.epochs} epochs" if opts.epochs else f"budget {opts.budget_s:.0f} s"
    if first is not None:
        threads, jobs, batch = first["threads"], first.get("jobs", jobs), first["batch_size"]
        cal = first["calibration"]
        length = f"{cal['epochs']} epochs" if cal["fixed"] else f"budget {cal['budget_s']:.0f} s"
    settings = (
        f"CPU: {cpu_name()}; {threads} torch thread(s) per run, {jobs} run(s) at once; batch {batch}; "
        f"{length} of pre-training per method; data {data.dataset} ({data.num_train} training images)\n\n"
    )
    (out / "table.md").write_text(settings + text)
    plot(rows, out / "knn_vs_time.png")
    print(settings + text)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
