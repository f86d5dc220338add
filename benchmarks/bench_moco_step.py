"""MoCo training-step throughput against its ideal bound, both measured in the same process, interleaved.

The step is the trainer's own: ``TrainingRun.start(MoCoTrainer(args), args)`` on ``moco-train`` flags made
from this script's (``selfsup.moco.cli.parse_args``: every default and check is the trainer's; lr 0.03, SGD
momentum 0.9, weight decay 1e-4, m 0.999, tau 0.07), then ``run.step(batch)``. Building the run is the
trainer's start-up: it reads a throw-away ``.npz`` of ``max(--num_keys, --batch_size)`` random 8 px images
(``--num_workers 0``) and fills the queue with their keys (``--num_keys / --batch_size`` key-encoder
forwards at ``--image_size``), untimed. ``--no_malloc_tuning`` is passed, so the malloc setting is the
environment's (``--malloc_compare``). Step kinds run on the same fixed random batch in rotating order inside
every round, so that load from other processes (and clock or cache drift) hits all of them alike; the report
uses medians over rounds:

* ``bound`` - the work no MoCo step can avoid: a forward and backward of the query encoder plus a forward
  of the key encoder (``no_grad``) on the same batch, gradients zeroed (``set_to_none``), no optimiser, no
  queue, no momentum update, no shuffle. Its loss is ``q.sum()``, just enough to run the backward.
* ``full`` - ``run.step(batch)``, the trainer's step (``MoCoTrainer.step``): autocast forward of
  :class:`~selfsup.moco.model.MoCo` (shuffle BN when ``--shuffle_bn``), ``info_nce_loss`` against the queue,
  ``zero_grad``, ``scaler.scale(loss).backward()``, ``scaler.step``/``update`` of SGD, ``momentum_update()``
  and ``enqueue(k)``. Its throughput is the headline; the target is ``full / bound >= 0.9`` in images/s from
  the median step times.
* ``parts`` - the same ``run.step(batch)`` with a timer (synchronised on CUDA) hooked, for that step only,
  at the calls it makes: after the query encoder's forward (``query_forward``), after ``encode_keys``
  (``key_forward``, with the queries' normalisation), before ``zero_grad`` (``logits_loss``), before
  ``scaler.step`` (``backward``), after ``scaler.update`` (``optimizer``), after ``momentum_update`` and
  after ``enqueue``; so a reader sees where the gap to the bound goes. On CUDA a ``bound_parts`` kind times
  the bound's parts; on CPU the bound's own (free) timers are used.

Robustness checks stored next to the headline ratio: the ratio of the fastest steps, the ratio of median
process CPU times (insensitive to time spent descheduled when ``--threads 1``), the paired per-round ratio,
and on CPU an A/A ratio (``parts`` over ``full``: the same work, so it shows the noise floor). Involuntary
context switches per step (``ru_nivcsw``) show how contended the machine was.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per step kind (reset before each step). On CPU
there is no per-allocation counter for torch, so the process's peak resident set (``ru_maxrss``) is read
right after the first ``bound`` step and again after the first ``full`` step (the first round runs them in
that order); both are process peaks including the model, the batch, the start-up and the Python runtime (the
resident set before the first step is reported alongside). Minor page faults (``ru_minflt``) and kernel CPU
time (``ru_stime``, mostly spent handling those faults) are recorded per step.

``--malloc_compare`` runs the benchmark in child processes, alternating glibc's default malloc and
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` (docs/benchmarks.md explains why), stores both.

Usage: ``python benchmarks/bench_moco_step.py --arch resnet18 --cifar_stem --image_size 32 --batch_size 128``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import MALLOC_TUNED_ENV, device_description, machine_info, malloc_setting, store_runs
from step_timing import (
    Laps,
    kind_summary,
    markdown_header,
    markdown_row,
    median,
    no_laps,
    paired_ratio,
    resolve_device,
    timed,
)

from selfsup.moco.cli import parse_args
from selfsup.moco.train import MoCoTrainer
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.precision import PRECISIONS, autocast, check_precision, resolve_precision
from selfsup.shared.runtime.trainer import TrainingRun

BENCHMARK = "moco_step"
KINDS = ("bound", "full", "parts")  # on CUDA also "bound_parts" (see step_kinds)
TARGET_RATIO = 0.9
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_KEY = ("label", "malloc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", choices=sorted(ARCHITECTURES), help="backbone")
    parser.add_argument("--width", type=int, default=None, help="base width (default: the architecture's)")
    parser.add_argument(
        "--cifar_stem", action="store_true", help="3x3/1 stem without max-pool (32 px images)"
    )
    parser.add_argument("--image_size", type=int, default=32, help="side of the (random) input images")
    parser.add_argument("--batch_size", type=int, default=128, help="images per step (one device)")
    parser.add_argument("--num_keys", type=int, default=4096, help="queue size K")
    parser.add_argument("--feature_dim", type=int, default=128, help="projection output dimension")
    parser.add_argument("--mlp", action="store_true", help="MoCo v2 MLP head")
    parser.add_argument("--shuffle_bn", action="store_true", help="shuffle BN on the key encoder")
    parser.add_argument(
        "--bn_splits", type=int, default=1, help="split BN sub-batches (DataParallel emulation)"
    )
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast precision")
    parser.add_argument("--channels_last", action="store_true", help="channels-last encoders and inputs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if any")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds (each runs every step kind)")
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds (each runs every step kind)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batch")
    parser.add_argument("--label", default=None, help="row label (default: derived from the configuration)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, updated in place (default: benchmarks/results/moco_step_<device>.json)",
    )
    parser.add_argument(
        "--malloc_compare",
        action="store_true",
        help="run in child processes with glibc's default malloc and with MALLOC_MMAP_MAX_=0 "
        "MALLOC_TRIM_THRESHOLD_=2147483647, alternating, and store both results",
    )
    parser.add_argument(
        "--malloc_rounds", type=int, default=2, help="--malloc_compare: child processes per malloc setting"
    )
    parser.add_argument("--raw_output", type=Path, default=None, help=argparse.SUPPRESS)  # child -> parent
    return parser


def default_label(args: argparse.Namespace, device: torch.device) -> str:
    """E.g. ``resnet18 w64 cifar-stem 32px b128 K4096 fp32 2thr`` (thread count on CPU only)."""
    width = args.width or ARCHITECTURES[args.arch][2]
    parts = [f"{args.arch} w{width}", f"{args.image_size}px", f"b{args.batch_size}", f"K{args.num_keys}"]
    parts.append(args.precision)
    if args.cifar_stem:
        parts.insert(1, "cifar-stem")
    parts += [name for flag, name in ((args.mlp, "mlp"), (args.shuffle_bn, "shuffle-bn")) if flag]
    if args.bn_splits > 1:
        parts.append(f"bn-splits{args.bn_splits}")
    if args.channels_last:
        parts.append("channels-last")
    if device.type == "cpu":
        parts.append(f"{torch.get_num_threads()}thr")
    return " ".join(parts)


# ----------------------------------------------------------------------- the trainer's run (also bench_cpu_speed)


@contextlib.contextmanager
def moco_run(flags: list[str], *, num_images: int, seed: int) -> Iterator[TrainingRun]:
    """``TrainingRun.start(MoCoTrainer(args), args)`` for ``moco-train`` ``flags`` (model, precision, device,
    seed), on a throw-away ``.npz`` of ``num_images`` random 8 px images, writing into a temporary folder;
    the run is at its first epoch (``on_epoch_start(0)``: lr and train mode, as the loop does)."""
    with tempfile.TemporaryDirectory(prefix="bench_moco_") as tmp:
        images = np.random.default_rng(seed).integers(0, 256, (num_images, 8, 8, 3), dtype=np.uint8)
        np.savez(Path(tmp) / "random.npz", train_images=images, train_labels=np.zeros(num_images, np.int64))
        data = ["--dataset", "npz", "--dataset_root", str(Path(tmp) / "random.npz"), "--output_root", tmp]
        quiet = [
            "--num_workers",
            "0",
            "--max_epoch",
            "1",
            "--plot_iter",
            "0",
            "--no_progress",
            "--no_tensorboard",
        ]
        args = parse_args([*data, *quiet, "--seed", str(seed), *flags])
        run = TrainingRun.start(MoCoTrainer(args), args, ["bench", *flags])
        try:
            run.method.on_epoch_start(0)
            yield run
        finally:
            run.close()


def fixed_batch(run: TrainingRun, image_size: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A random ``([x_q, x_k], labels)`` batch on the run's device, in its memory format."""
    generator = torch.Generator().manual_seed(seed)
    n, device = run.parts.data.per_rank_batch, run.ctx.device
    views = [
        torch.randn(n, 3, image_size, image_size, generator=generator)
        .to(device)
        .contiguous(memory_format=run.method.memory_format)
        for _ in range(2)
    ]
    return views, torch.zeros(n, dtype=torch.long)


def bound_step(run: TrainingRun, views: list[torch.Tensor], lap: Callable[[str], None] = no_laps) -> None:
    """Query forward + backward and key forward (no_grad) on the batch; gradients zeroed, no update."""
    model, precision = run.method.model, run.ctx.precision
    with autocast(precision, run.ctx.device):
        q = model.encoder_q(views[0])
    lap("query_forward")
    with torch.no_grad(), autocast(precision, run.ctx.device):
        model.encoder_k(views[1])
    lap("key_forward")
    model.encoder_q.zero_grad(set_to_none=True)
    q.float().sum().backward()
    lap("backward")


@contextlib.contextmanager
def part_timers(run: TrainingRun, lap: Callable[[str], None]) -> Iterator[None]:
    """Laps at the calls ``MoCoTrainer.step`` makes (instance-level wrappers and a forward hook, removed on
    exit), so that the timed step is the trainer's own."""
    method = run.method
    model, patched = method.model, []

    def wrap(obj: Any, name: str, part: str, *, before: bool) -> None:
        original = getattr(obj, name)

        def timed_call(*a: Any, **k: Any) -> Any:
            if before:
                lap(part)
            out = original(*a, **k)
            if not before:
                lap(part)
            return out

        object.__setattr__(obj, name, timed_call)
        patched.append((obj, name))

    hook = model.encoder_q.register_forward_hook(lambda *_: lap("query_forward"))
    wrap(model, "encode_keys", "key_forward", before=False)
    wrap(method.optimizer, "zero_grad", "logits_loss", before=True)
    wrap(run.ctx.scaler, "step", "backward", before=True)
    wrap(run.ctx.scaler, "update", "optimizer", before=False)
    wrap(model, "momentum_update", "momentum_update", before=False)
    wrap(model, "enqueue", "enqueue", before=False)
    try:
        yield
    finally:
        hook.remove()
        for obj, name in patched:
            object.__delattr__(obj, name)


# ------------------------------------------------------------------------------------------ measurement


def _rss_bytes() -> int:
    """Current resident set of this process (Linux ``/proc/self/statm``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class FaultLaps(Laps):
    """:class:`step_timing.Laps` that also counts minor page faults per part (under ``faults:<name>``)."""

    def __init__(self, device: torch.device, sync: bool) -> None:
        super().__init__(device, sync)
        self._faults = _minor_faults()

    def __call__(self, name: str) -> None:
        super().__call__(name)
        faults = _minor_faults()
        self.times[f"faults:{name}"] = self.times.get(f"faults:{name}", 0) + faults - self._faults
        self._faults = faults


def trainer_flags(args: argparse.Namespace, device: torch.device) -> list[str]:
    """The ``moco-train`` flags of this configuration."""
    flags = ["--arch", args.arch, "--crop", str(args.image_size), "--batch_size", str(args.batch_size),
             "--num_keys", str(args.num_keys), "--feature_dim", str(args.feature_dim),
             "--bn_splits", str(args.bn_splits), "--precision", args.precision, "--device", str(device),
             "--no_malloc_tuning"]  # fmt: skip
    if args.width is not None:
        flags += ["--width", str(args.width)]
    return flags + [
        f"--{name}" for name in ("cifar_stem", "mlp", "shuffle_bn", "channels_last") if vars(args)[name]
    ]


def step_kinds(device: torch.device) -> tuple[str, ...]:
    return (*KINDS, "bound_parts") if device.type == "cuda" else KINDS


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Run warm-up and timed rounds; return the raw per-step records and the memory readings."""
    cuda = device.type == "cuda"
    kinds = step_kinds(device)
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    memory: dict[str, Any] = {"kind": "cuda_max_memory_allocated" if cuda else "process_peak_rss"}
    peaks = dict.fromkeys(kinds, 0)
    with moco_run(
        trainer_flags(args, device), num_images=max(args.num_keys, args.batch_size), seed=args.seed
    ) as run:
        batch = fixed_batch(run, args.image_size, args.seed)
        if not cuda:
            memory["rss_before_first_step_bytes"] = _rss_bytes()
        load_before = os.getloadavg()
        for round_index in range(args.warmup + args.repeats):
            shift = round_index % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                parts: dict[str, float] = {}
                usage = timed(device, lambda: parts.update(run_kind(run, kind, batch)))  # noqa: B023
                if cuda:
                    peaks[kind] = max(peaks[kind], torch.cuda.max_memory_allocated(device))
                elif round_index == 0:  # order bound, full, parts in round 0
                    peaks[kind] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
                if round_index >= args.warmup:
                    records[kind].append({"round": round_index - args.warmup, **usage, **parts})
    memory["peak_bytes"] = peaks
    return {"records": records, "memory": memory, "load_average": [load_before, os.getloadavg()]}


def run_kind(run: TrainingRun, kind: str, batch: Any) -> dict[str, float]:
    """One step of ``kind``; returns its laps (the bound's laps are free on CPU, so only its CUDA variant,
    ``bound_parts``, is a kind of its own)."""
    laps = FaultLaps(run.ctx.device, sync=kind in ("parts", "bound_parts"))
    if kind == "full":
        run.step(batch)
    elif kind == "parts":
        with part_timers(run, laps):
            run.step(batch)
    else:
        bound_step(run, batch[0], laps if run.ctx.device.type != "cuda" or kind == "bound_parts" else no_laps)
    return laps.times


# --------------------------------------------------------------------------------------------- summary


def _kind_summary(records: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """:func:`step_timing.kind_summary` of the times, plus the median page faults of each part."""
    faults = [k for k in records[0] if k.startswith("faults:")]
    summary = kind_summary([{k: v for k, v in r.items() if k not in faults} for r in records], batch_size)
    summary["parts_minor_faults_median"] = {
        name.split(":", 1)[1]: median([float(r[name]) for r in records]) for name in faults
    }
    return summary


def summarize(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Medians, images/s, ratio, part breakdown and memory of one configuration and malloc setting."""
    records = raw["records"]
    kinds = {kind: _kind_summary(recs, args.batch_size) for kind, recs in records.items()}
    ratio = kinds["full"]["images_per_s"] / kinds["bound"]["images_per_s"]
    bound_parts = kinds["bound_parts" if "bound_parts" in kinds else "bound"]["parts_s_median"]
    full_parts = kinds["parts"]["parts_s_median"]
    gap = {
        "key_forward_extra": full_parts["key_forward"] - bound_parts["key_forward"],
        "query_forward_extra": full_parts["query_forward"] - bound_parts["query_forward"],
        "logits_loss": full_parts["logits_loss"],
        "backward_extra": full_parts["backward"] - bound_parts["backward"],
        **{part: full_parts[part] for part in ("optimizer", "momentum_update", "enqueue")},
    }
    skip = ("output", "raw_output", "malloc_compare", "malloc_rounds", "label")
    return {
        "label": args.label or default_label(args, device),
        "malloc": raw.get("malloc", malloc_setting()),
        "device": device.type,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bound": kinds["bound"],
        "full": kinds["full"],
        "full_with_part_timers": kinds["parts"],
        "ratio_full_over_bound": ratio,
        "ratio_paired_median": paired_ratio(
            records, "bound", "full"
        ),  # bound and full of a round ran back to back
        "ratio_of_min_steps": kinds["bound"]["step_s_min"] / kinds["full"]["step_s_min"],
        "ratio_of_cpu_time_medians": kinds["bound"]["step_cpu_s_median"] / kinds["full"]["step_cpu_s_median"],
        # CPU only: "full" and "full_with_part_timers" do the same work (laps cost nothing there), so their
        # ratio is an A/A test that shows the noise floor of the medians on this machine at this time.
        "aa_ratio_full_over_full": (
            kinds["parts"]["step_s_median"] / kinds["full"]["step_s_median"] if device.type == "cpu" else None
        ),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "gap_s": kinds["full"]["step_s_median"] - kinds["bound"]["step_s_median"],
        "gap_breakdown_s": gap,
        **({"bound_with_part_timers": kinds["bound_parts"]} if "bound_parts" in kinds else {}),
        "memory": raw["memory"],
        "load_average_1_5_15_min_before_after": raw["load_average"],
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def memory_cell(run: dict[str, Any]) -> str:
    mem = run["memory"]
    peaks = mem["peak_bytes"]
    if mem["kind"] == "cuda_max_memory_allocated":
        return f"{_mib(peaks['bound'])} / {_mib(peaks['full'])}"
    base = mem.get("rss_before_first_step_bytes", 0)
    return f"{_mib(peaks['bound'])} / {_mib(peaks['full'])} (+{_mib(peaks['full'] - base)})"


TABLE_COLUMNS = (
    "configuration", "malloc", "bound img/s", "full img/s", "full/bound", ">= 0.9", "full/bound: fastest steps",
    "full/bound: CPU time", "A/A: full/full", "preemptions/step", "peak memory bound / full",
    "page faults/step bound / full", "kernel ms/step bound / full", "optimizer ms", "momentum update ms",
    "enqueue ms", "logits+loss ms",
)  # fmt: skip
TABLE_HEADER = markdown_header(TABLE_COLUMNS)


def table_row(run: dict[str, Any]) -> str:
    """One Markdown row; img/s from median step times, part times from the step with part timers."""
    parts = run["full_with_part_timers"]["parts_s_median"]
    bound, full = run["bound"], run["full"]
    aa = run.get("aa_ratio_full_over_full")
    return markdown_row(
        [
            run["label"],
            "default" if run["malloc"] == "glibc default" else "no mmap/trim",
            f"{bound['images_per_s']:.1f}",
            f"{full['images_per_s']:.1f}",
            f"{run['ratio_full_over_bound']:.3f}",
            "yes" if run["target_met"] else "no",
            f"{run['ratio_of_min_steps']:.3f}",
            f"{run['ratio_of_cpu_time_medians']:.3f}",
            "n/a" if aa is None else f"{aa:.3f}",
            f"{full['preemptions_per_step']:.0f}",
            memory_cell(run),
            f"{bound['minor_faults_per_step']:.0f} / {full['minor_faults_per_step']:.0f}",
            f"{1e3 * bound['step_kernel_s_median']:.0f} / {1e3 * full['step_kernel_s_median']:.0f}",
            f"{1e3 * parts['optimizer']:.1f}",
            f"{1e3 * parts['momentum_update']:.1f}",
            f"{1e3 * parts['enqueue']:.2f}",
            f"{1e3 * parts['logits_loss']:.1f}",
        ]
    )


def gap_summary(run: dict[str, Any]) -> str:
    """A sentence on the step times and where the gap between full step and bound goes."""
    bound, full = run["bound"], run["full"]
    gap = ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in run["gap_breakdown_s"].items())
    return (
        f"{run['label']} [{run['malloc']}]: bound {1e3 * bound['step_s_median']:.1f} ms, "
        f"full {1e3 * full['step_s_median']:.1f} ms per step "
        f"(CPU time {1e3 * bound['step_cpu_s_median']:.1f} / {1e3 * full['step_cpu_s_median']:.1f} ms); "
        f"gap {1e3 * run['gap_s']:.1f} ms = {gap}; "
        f"paired ratio {run['ratio_paired_median']:.3f}"
    )


# ------------------------------------------------------------------------------------------- malloc A/B


def _child_argv(argv: list[str], raw_path: Path, repeats: int) -> list[str]:
    """This script's argv without the parent-only flags, plus ``--raw_output`` and ``--repeats``."""
    drop_with_value = {"--output", "--malloc_rounds", "--repeats", "--raw_output"}
    out, skip = [], False
    for item in argv:
        name = item.split("=", 1)[0]
        if skip or name == "--malloc_compare":
            skip = False
            continue
        if name in drop_with_value:
            skip = "=" not in item
            continue
        out.append(item)
    script = str(Path(__file__).resolve())
    return [sys.executable, script, *out, "--raw_output", str(raw_path), "--repeats", str(repeats)]


def malloc_compare(args: argparse.Namespace, argv: list[str], device: torch.device) -> list[dict[str, Any]]:
    """Alternate child processes with the default and the tuned malloc; merge their records per setting
    (a record's round becomes ``(child, round)``, so that paired ratios pair within a child)."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    settings = {"glibc default": base_env, malloc_setting(MALLOC_TUNED_ENV): {**base_env, **MALLOC_TUNED_ENV}}
    repeats = max(2, -(-args.repeats // args.malloc_rounds))
    merged: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_moco_step_") as tmp:
        for child in range(args.malloc_rounds):
            for name in list(settings) if child % 2 == 0 else list(reversed(settings)):
                raw_path = Path(tmp) / f"child{child}_{len(merged)}.json"
                print(f"[malloc_compare] child {child + 1}/{args.malloc_rounds}: {name}", file=sys.stderr)
                subprocess.run(_child_argv(argv, raw_path, repeats), env=settings[name], check=True)
                raw = json.loads(raw_path.read_text())
                into = merged.setdefault(name, {**raw, "records": {k: [] for k in raw["records"]}})
                for kind, recs in raw["records"].items():
                    into["records"][kind].extend({**r, "round": (child, r["round"])} for r in recs)
                mem = into["memory"]
                for kind, peak in raw["memory"]["peak_bytes"].items():
                    mem["peak_bytes"][kind] = max(mem["peak_bytes"][kind], peak)
                if "rss_before_first_step_bytes" in mem:
                    mem["rss_before_first_step_bytes"] = min(
                        mem["rss_before_first_step_bytes"], raw["memory"]["rss_before_first_step_bytes"]
                    )
                into["load_average"] = [into["load_average"][0], raw["load_average"][1]]
    return [summarize(merged[name], args, device) for name in settings]


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device, "bench_moco_step")
    check_precision(args.precision, device)
    args.precision = resolve_precision(args.precision, device)  # auto -> bf16 or fp32, as the trainers do
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 1:
        raise SystemExit("bench_moco_step: --repeats and --warmup must be >= 1")

    if args.raw_output is not None:  # child of --malloc_compare: raw records only
        raw = {**measure(args, device), "malloc": malloc_setting()}
        args.raw_output.write_text(json.dumps(raw))
        return 0

    runs = (
        malloc_compare(args, argv, device)
        if args.malloc_compare
        else [summarize(measure(args, device), args, device)]
    )
    info = machine_info(device)
    for run in runs:
        run["machine"] = {**info, "malloc": run["malloc"]}
        run["machine_description"] = device_description(info, device.type)
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{device.type}.json"
    store_runs(output, BENCHMARK, runs, RUN_KEY)

    print(f"# {runs[0]['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads")
    print(TABLE_HEADER)
    for run in runs:
        print(table_row(run))
    for run in runs:
        print("\n" + gap_summary(run))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
