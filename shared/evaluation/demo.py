"""The pretrained-against-random-init demo every method runs (``selfsup-demo --method NAME``), sized to the machine.

A project describes its demo with a :class:`DemoRecipe` (its registered trainer, the flags of the recipe, the
flags that set the length); :func:`run_demo` does the rest the same way for every method:

1. **calibration**: the run is built exactly as it will train, in a scratch folder; its network at
   initialisation is saved as the random-init baseline (the same weights pre-training starts from); then a few
   real steps are timed, data loading included, and the number of epochs that fits ``--budget_s`` seconds of
   pre-training is chosen (``--epochs N`` fixes it instead, so that results on one machine are reproducible);
   the schedules are defined over the chosen length;
2. **pre-training** with the method's own trainer on the runtime, into ``OUTPUT/METHOD/run/``; an interrupted
   run (SIGTERM, SIGUSR1) says so, writes no results and exits with status 1;
3. **evaluation**: kNN (InsDis: cosine, k 200, τ 0.07) and a linear probe on cached features for both
   checkpoints, at the input size and normalisation the checkpoints record;
4. ``OUTPUT/METHOD/results.json`` (numbers, what was measured and chosen, CPU, precision, times),
   ``OUTPUT/METHOD/loss.png`` (skipped with one line without matplotlib) and a table on the console.

Each method writes only under its own folder, and a demo deletes only folders that a demo created (they hold the
marker file :data:`MARKER`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import logging
import math
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfsup.shared.evaluation.api import evaluate_checkpoint
from selfsup.shared.evaluation.comparison import format_comparison, write_comparison
from selfsup.shared.runtime.logger import get_logger
from selfsup.shared.runtime.plotting import plot_log_column
from selfsup.shared.runtime.trainer import TrainingRun, train

__all__ = ["MARKER", "Calibration", "DemoRecipe", "calibrate", "cpu_name", "demo_parser", "run_demo"]

#: A demo's output folder holds this file; only such folders are ever deleted or reused by a demo.
MARKER = ".selfsup-demo"
#: Pre-training takes this much longer than its steps: epoch ends (the loader worker's first batch,
#: checkpoints, logging) and the load of other processes changing (10 %: runs measured up to 6 % over).
OVERHEAD = 1.10


@dataclass(frozen=True)
class DemoRecipe:
    """One method's demo.

    * ``name``/``title``: the ``--method`` name and the table's title; ``entry``: the registered
      ``TrainerEntry`` that trains it;
    * ``flags(run_dir)``: the recipe's trainer flags writing under ``run_dir`` (without the length, seed,
      device and precision); ``length(epochs)``: the flags that set the number of epochs (and anything that
      depends on it, such as a warm-up that needs two epochs);
    * ``reference_epochs``: the length the recipe was tuned for: the budget never chooses more;
    * ``eval_dataset``: the dataset the probes use (the embedded ``digits`` unless the method needs colour);
    * ``threads``: torch threads (``--threads`` overrides); ``description``: one line of what it trains;
    * ``precision``: the default of ``--precision`` (``auto``: bf16 where the processor computes it natively;
      ``fp32`` where the recipe learns too little in bf16 within the budget).
    """

    name: str
    title: str
    entry: Any
    flags: Callable[[Path], list[str]]
    length: Callable[[int], list[str]]
    reference_epochs: int
    description: str
    eval_dataset: str = "digits"
    threads: int = 1
    extra_eval: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"


@dataclass(frozen=True)
class Calibration:
    """What the demo measured and chose: seconds per step (data loading included), steps per epoch, the
    budget, the epochs chosen and whether ``--epochs`` fixed them."""

    step_s: float
    steps_per_epoch: int
    budget_s: float
    epochs: int
    fixed: bool

    def describe(self) -> str:
        if self.fixed:
            return f"{self.epochs} epochs (--epochs); measured {self.step_s:.3f} s per step"
        capped = (
            " (the recipe's reference length)"
            if self.epochs * self.steps_per_epoch * self.step_s * OVERHEAD < self.budget_s * 0.9
            else ""
        )
        planned = self.epochs * self.steps_per_epoch * self.step_s
        return (
            f"measured {self.step_s:.3f} s per step, {self.steps_per_epoch} steps per epoch: {self.epochs} "
            f"epochs{capped} fit --budget_s {self.budget_s:.0f} (about {planned:.0f} s of pre-training)"
        )


def demo_parser(recipe: DemoRecipe, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{recipe.description} Then kNN and linear evaluation of the pretrained encoder and of the "
        "same network at its random initialisation, side by side.",
    )
    parser.add_argument(
        "--output", default="demo_output", help=f"results go to OUTPUT/{recipe.name}/ (default demo_output)"
    )
    parser.add_argument(
        "--budget_s",
        type=float,
        default=150.0,
        help="seconds of pre-training to size the run to, after timing a few steps on this machine (default 150)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"fix the number of epochs instead (reproducible results on one machine; the recipe's "
        f"reference is {recipe.reference_epochs})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of pre-training, evaluation and the random init"
    )
    parser.add_argument("--device", default="cpu", help="device for training and evaluation (default cpu)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=recipe.precision,
        help=f"auto: bf16 where the processor computes it natively, else fp32 (default {recipe.precision})",
    )
    parser.add_argument(
        "--threads", type=int, default=recipe.threads, help=f"torch CPU threads (default {recipe.threads})"
    )
    return parser


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fresh_folder(path: Path) -> Path:
    """``path`` empty and marked as a demo's: a folder a previous demo made is cleared, any other is refused."""
    if path.exists():
        if not (path / MARKER).is_file():
            raise FileExistsError(
                f"--output: {path} exists and was not made by selfsup-demo; choose another --output"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by selfsup-demo; the next demo of this method may delete it\n")
    return path


def _parse(recipe: DemoRecipe, flags: Sequence[str]) -> argparse.Namespace:
    return recipe.entry.parse_args(list(flags))


def calibrate(
    recipe: DemoRecipe, flags: list[str], *, budget_s: float, epochs: int | None, random_init: Path
) -> Calibration:
    """Build the run as it will train (in a scratch folder), save its initial network to ``random_init``, time
    a few steps with their data loading, and choose the epochs (see the module docstring)."""
    warmup, timed = 2, 4
    with tempfile.TemporaryDirectory(prefix="selfsup-demo-") as scratch:
        probe_flags = [*recipe.flags(Path(scratch) / "run"), *flags, *recipe.length(recipe.reference_epochs)]
        args = _parse(recipe, probe_flags)
        run = TrainingRun.start(recipe.entry.method(args), args, [recipe.entry.prog, *probe_flags])
        try:
            run.save(random_init, 0, 0, 0)
            steps_per_epoch = run.parts.data.iters_per_epoch(run.ctx.env.world_size)
            data = run.parts.data
            data.sampler.set_epoch(0)
            data.sampler.set_start(0)
            for aware in data.epoch_aware:
                aware.set_epoch(0)
            run.method.on_epoch_start(0)
            batches = iter(data.loader)
            seconds: list[float] = []
            for i in range(min(warmup + timed, steps_per_epoch)):
                tic = time.perf_counter()
                run.step(next(batches))
                if i >= warmup or steps_per_epoch <= warmup:
                    seconds.append(time.perf_counter() - tic)
        finally:
            run.close()
    step_s = sorted(seconds)[len(seconds) // 2]
    if epochs is not None:
        return Calibration(step_s, steps_per_epoch, budget_s, epochs, True)
    fit = math.floor(budget_s / (step_s * steps_per_epoch * OVERHEAD))
    return Calibration(step_s, steps_per_epoch, budget_s, max(1, min(fit, recipe.reference_epochs)), False)


def _matplotlib_missing() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is None
    except (ImportError, ValueError):
        return True


class _DropPlotWarnings(logging.Filter):
    """Drops the trainer's own missing-matplotlib lines: the demo says it once for the whole demo."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "matplotlib" not in record.getMessage()


@contextlib.contextmanager
def _quiet_plots(logger_name: str, enabled: bool):
    logger, dropper = logging.getLogger(logger_name), _DropPlotWarnings()
    if enabled:
        logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


def _evaluate(recipe: DemoRecipe, checkpoint: Path, opts: argparse.Namespace) -> dict[str, dict]:
    common = {"dataset": recipe.eval_dataset, "device": opts.device, **recipe.extra_eval}
    knn = evaluate_checkpoint("knn", checkpoint, preset="instdisc", **common)
    linear = evaluate_checkpoint("linear", checkpoint, preset="quick", seed=opts.seed, **common)
    return {"knn": knn, "linear": linear}


def run_demo(recipe: DemoRecipe, argv: Sequence[str] | None, prog: str) -> int:
    """``selfsup-demo --method NAME`` (module docstring); returns the exit status."""
    parser = demo_parser(recipe, prog)
    opts = parser.parse_args(None if argv is None else list(argv))
    if opts.epochs is not None and opts.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {opts.epochs}")
    if opts.budget_s <= 0 or opts.threads < 1:
        parser.error(f"--budget_s must be > 0 and --threads >= 1, got {opts.budget_s} and {opts.threads}")
    log = get_logger("selfsup-demo")
    torch.set_num_threads(opts.threads)
    try:
        out = _fresh_folder(Path(opts.output) / recipe.name)
    except FileExistsError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    common = ["--seed", str(opts.seed), "--device", opts.device, "--precision", opts.precision]
    random_path = out / "random_init.pth"
    calibration = calibrate(
        recipe, common, budget_s=opts.budget_s, epochs=opts.epochs, random_init=random_path
    )
    log.info("%s", calibration.describe())
    calibrate_s = time.perf_counter() - started

    flags = [*recipe.flags(out / "run"), *common, *recipe.length(calibration.epochs)]
    args = _parse(recipe, flags)
    method = recipe.entry.method(args)
    no_plots = _matplotlib_missing()
    if no_plots:  # an optional extra never fails a run: one line, then on
        log.warning("matplotlib is not installed (pip install 'selfsup[plot]'): no loss plot is drawn")
    tic = time.perf_counter()
    with _quiet_plots(recipe.entry.prog, no_plots):
        result = train(method, args, [recipe.entry.prog, *flags])
    train_s = time.perf_counter() - tic
    if result.stopped_by != "end":
        print(
            f"{prog}: interrupted ({result.stopped_by}) at step {result.step}: the run is incomplete, no results "
            f"were written; its last checkpoint is {result.checkpoint}",
            file=sys.stderr,
        )
        return 1

    layout = method.layout(args)
    record = json.loads(layout.config_files[0].read_text()) if layout.config_files else {}
    precision = record.get("precision_resolved", opts.precision)
    tic = time.perf_counter()
    results = {"pretrained": _evaluate(recipe, result.checkpoint, opts)}
    results["random_init"] = _evaluate(recipe, random_path, opts)
    eval_s = time.perf_counter() - tic
    seconds = {
        "calibrate": calibrate_s,
        "train": train_s,
        "evaluate": eval_s,
        "total": time.perf_counter() - started,
    }
    if layout.csv_log is not None and not no_plots:
        plot_log_column(layout.csv_log, out / "loss.png", title=recipe.title, logger=log)
    payload = write_comparison(
        out / "results.json",
        results,
        seconds=seconds,
        method=recipe.name,
        cpu=cpu_name(),
        precision=precision,
        calibration={**dataclasses.asdict(calibration), "description": calibration.describe()},
        checkpoint=str(result.checkpoint),
        random_init_checkpoint=str(random_path),
        train_flags=flags,
    )
    title = f"{recipe.title}\n{calibration.describe()}\n{cpu_name()}, {precision}, {opts.threads} torch thread(s):"
    print(format_comparison(title, payload["summary"], seconds))
    print(f"wrote {out / 'results.json'}")
    return 0
