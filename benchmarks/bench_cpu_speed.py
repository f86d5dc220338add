"""CPU speed a user gets without knowing the tricks: the plain loop against the trainer's own settings.

Three settings of the trainer's own MoCo step (``TrainingRun.start(MoCoTrainer(args), args)`` on ``moco-train``
flags, then ``run.step(batch)``: InfoNCE against the queue, SGD with momentum 0.9 and weight decay 1e-4,
momentum update, enqueue; built as in ``bench_moco_step.py``) on the same model, weights and batch, each
measured in its own child processes, the settings alternating child by child so that load from other
processes hits them alike:

* ``plain`` - what a hand-written loop gets: glibc's default malloc (``--no_malloc_tuning``: no ``MALLOC_*``
  variables, no ``mallopt``), fp32, contiguous tensors, and the trainer's optimiser replaced by
  ``torch.optim.SGD(..., foreach=False, fused=False)`` with the same hyper-parameters;
* ``trainer_fp32`` - the trainer's defaults: :func:`~selfsup.shared.runtime.cpu.tune_malloc` at start-up and
  ``build_optimizer("sgd", ...)`` (fused SGD where torch has it), fp32;
* ``auto`` - the same with ``--precision auto`` (:func:`~selfsup.shared.runtime.precision.resolve_precision`:
  bf16 autocast on a CPU with AVX512-BF16 or AMX-BF16) and ``--channels_last``.

The ``auto`` children also time the *bound* with the same settings (query encoder forward and backward plus
key encoder forward without grad, gradients zeroed, nothing else) and the full step a second time (an A/A
pair whose distance from 1 is the noise of the run), in rotating order within each round. Every child starts
with ``MALLOC_*`` removed from its environment; the tuned settings tune malloc at the trainer's start-up.

Reported: images/s from the median step time per setting; speed-ups over ``plain`` (and, as a check, the
ratio of median process CPU times); full/bound of ``auto``; minor page faults and kernel time per step.
Targets (issue 7): trainer fp32 >= 1.15x plain; auto >= 2.5x plain on an AMX CPU; full >= 0.97 of the bound.

Usage: ``python benchmarks/bench_cpu_speed.py --threads 1`` (ResNet-18, CIFAR stem, width 64, 32 px, batch 128).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_moco_step import bound_step, fixed_batch, moco_run
from machine import device_description, host_slug, machine_info, store_runs
from step_timing import kind_summary, timed

from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.cpu import cpu_flags, tune_malloc

BENCHMARK = "cpu_speed"
SETTINGS = ("plain", "trainer_fp32", "auto")
TARGETS = {"trainer_fp32_speedup": 1.15, "auto_speedup": 2.5, "full_over_bound": 0.97}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: every run is kept (not only the newest per configuration): the targets sit near the noise of a shared CPU
RUN_KEY = ("label", "timestamp")
CPU = torch.device("cpu")
#: the fields of a step summary this benchmark stores (``step_timing.kind_summary`` has more)
SUMMARY_FIELDS = ("steps", "step_s_median", "step_s_min", "step_s_all", "step_cpu_s_median",
                  "step_kernel_s_median", "minor_faults_per_step", "preemptions_per_step", "images_per_s")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18", choices=sorted(ARCHITECTURES), help="backbone")
    parser.add_argument("--width", type=int, default=64, help="base width (64: the real ResNet-18)")
    parser.add_argument("--no_cifar_stem", action="store_true", help="ImageNet stem instead of the CIFAR one")
    parser.add_argument("--image_size", type=int, default=32, help="side of the (random) input images")
    parser.add_argument("--batch_size", type=int, default=128, help="images per step")
    parser.add_argument("--num_keys", type=int, default=4096, help="queue size K")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in every child")
    parser.add_argument("--children", type=int, default=3, help="child processes per setting (alternating)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds at the start of each child")
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds per child")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batch")
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default: results/cpu_speed_<host>.json)"
    )
    parser.add_argument("--child", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw_output", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def label(args: argparse.Namespace) -> str:
    stem = "" if args.no_cifar_stem else " cifar-stem"
    return (
        f"{args.arch} w{args.width}{stem} {args.image_size}px b{args.batch_size} K{args.num_keys} "
        f"{args.threads}thr"
    )


# ------------------------------------------------------------------------------------------------ child


def setting_flags(args: argparse.Namespace, setting: str) -> list[str]:
    """The ``moco-train`` flags of a setting."""
    flags = ["--arch", args.arch, "--width", str(args.width), "--crop", str(args.image_size),
             "--batch_size", str(args.batch_size), "--num_keys", str(args.num_keys), "--device", "cpu"]  # fmt: skip
    flags += [] if args.no_cifar_stem else ["--cifar_stem"]
    if setting == "plain":
        return [*flags, "--precision", "fp32", "--no_malloc_tuning"]
    return (
        [*flags, "--precision", "auto", "--channels_last"]
        if setting == "auto"
        else [*flags, "--precision", "fp32"]
    )


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    setting = args.child
    with moco_run(
        setting_flags(args, setting), num_images=max(args.num_keys, args.batch_size), seed=args.seed
    ) as run:
        method = run.method
        if setting == "plain":
            group = method.optimizer.param_groups[0]
            hyper = {key: group[key] for key in ("lr", "momentum", "weight_decay")}
            method.optimizer = torch.optim.SGD(
                method.model.encoder_q.parameters(), foreach=False, fused=False, **hyper
            )
        group = method.optimizer.param_groups[0]
        optimizer_path = (
            "fused" if group.get("fused") else ("foreach" if group.get("foreach") else "for-loop")
        )
        batch = fixed_batch(run, args.image_size, args.seed)
        kinds = ["bound", "full", "full_again"] if setting == "auto" else ["full"]
        records: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        load_before = os.getloadavg()
        for round_index in range(args.warmup + args.repeats):
            shift = round_index % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                step = (lambda: bound_step(run, batch[0])) if kind == "bound" else (lambda: run.step(batch))
                usage = timed(CPU, step)
                if round_index >= args.warmup:
                    records[kind].append(usage)
        return {
            "setting": setting,
            "malloc": "glibc default (not tuned)" if setting == "plain" else tune_malloc().detail,
            "precision": run.ctx.precision,
            "channels_last": setting == "auto",
            "optimizer_path": optimizer_path,
            "records": records,
            "load_average_before_after": [load_before, os.getloadavg()],
        }


# ----------------------------------------------------------------------------------------------- parent


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return {**env, "OMP_NUM_THREADS": str(threads)}


def run_children(args: argparse.Namespace, argv: list[str]) -> dict[str, dict[str, Any]]:
    """Alternate the settings child by child (forward, then reversed order); merge records per setting."""
    merged: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_cpu_speed_") as tmp:
        for child in range(args.children):
            order = SETTINGS if child % 2 == 0 else tuple(reversed(SETTINGS))
            for setting in order:
                raw_path = Path(tmp) / f"{setting}_{child}.json"
                print(f"[bench_cpu_speed] child {child + 1}/{args.children}: {setting}", file=sys.stderr)
                cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", setting]
                subprocess.run([*cmd, "--raw_output", str(raw_path)], env=child_env(args.threads), check=True)
                raw = json.loads(raw_path.read_text())
                into = merged.setdefault(
                    setting, {**raw, "records": {k: [] for k in raw["records"]}, "loads": []}
                )
                for kind, recs in raw["records"].items():
                    into["records"][kind].extend({**r, "child": child} for r in recs)
                into["loads"].append(raw["load_average_before_after"])
    return merged


def _summary(records: list[dict[str, float]], batch_size: int) -> dict[str, Any]:
    summary = kind_summary(records, batch_size)
    return {field: summary[field] for field in SUMMARY_FIELDS}


def summarize(args: argparse.Namespace, merged: dict[str, dict[str, Any]]) -> dict[str, Any]:
    settings = {}
    for name, raw in merged.items():
        settings[name] = {
            "malloc": raw["malloc"],
            "precision": raw["precision"],
            "channels_last": raw["channels_last"],
            "optimizer_path": raw["optimizer_path"],
            "load_average_per_child_before_after": raw["loads"],
            **{kind: _summary(recs, args.batch_size) for kind, recs in raw["records"].items()},
        }
    plain, trainer, auto = (settings[name] for name in SETTINGS)

    def speedup(of: dict[str, Any]) -> dict[str, float]:
        return {
            "median_steps": plain["full"]["step_s_median"] / of["full"]["step_s_median"],
            "fastest_steps": plain["full"]["step_s_min"] / of["full"]["step_s_min"],
            "cpu_time_medians": plain["full"]["step_cpu_s_median"] / of["full"]["step_cpu_s_median"],
        }

    ratios = {
        "trainer_fp32_speedup": speedup(trainer),
        "auto_speedup": speedup(auto),
        "full_over_bound": {
            "median_steps": auto["bound"]["step_s_median"] / auto["full"]["step_s_median"],
            "fastest_steps": auto["bound"]["step_s_min"] / auto["full"]["step_s_min"],
            "cpu_time_medians": auto["bound"]["step_cpu_s_median"] / auto["full"]["step_cpu_s_median"],
        },
        "aa_full_over_full_again": auto["full_again"]["step_s_median"] / auto["full"]["step_s_median"],
    }
    flags = cpu_flags()
    return {
        "label": label(args),
        "config": {k: v for k, v in vars(args).items() if k not in ("output", "child", "raw_output")},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_bf16": {
            "amx_bf16": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "auto_resolved_to": auto["precision"],
        },
        "settings": settings,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": {name: ratios[name]["median_steps"] >= target for name, target in TARGETS.items()},
    }


TABLE_HEADER = (
    "| setting | malloc | precision, format | SGD | img/s (median step) | speed-up vs plain | speed-up: CPU time "
    "| page faults/step | kernel ms/step |\n|---|---|---|---|---|---|---|---|---|"
)


def table(run: dict[str, Any]) -> str:
    rows = [TABLE_HEADER]
    ratios = run["ratios"]
    for name in SETTINGS:
        s = run["settings"][name]
        full = s["full"]
        if name == "plain":
            up, up_cpu = "1.00x", "1.00x"
        else:
            r = ratios["trainer_fp32_speedup" if name == "trainer_fp32" else "auto_speedup"]
            up, up_cpu = f"{r['median_steps']:.2f}x", f"{r['cpu_time_medians']:.2f}x"
        malloc = "glibc default" if name == "plain" else "tuned (mallopt)"
        fmt = f"{s['precision']}, {'channels-last' if s['channels_last'] else 'contiguous'}"
        rows.append(
            f"| {name} | {malloc} | {fmt} | {s['optimizer_path']} | {full['images_per_s']:.1f} | {up} | {up_cpu} "
            f"| {full['minor_faults_per_step']:.0f} | {1e3 * full['step_kernel_s_median']:.0f} |"
        )
    bound = run["settings"]["auto"]["bound"]
    fob = ratios["full_over_bound"]
    rows.append(
        f"\nauto: bound {bound['images_per_s']:.1f} img/s, full/bound {fob['median_steps']:.3f} (fastest steps "
        f"{fob['fastest_steps']:.3f}, CPU time {fob['cpu_time_medians']:.3f}); A/A full/full "
        f"{ratios['aa_full_over_full_again']:.3f}"
    )
    met = ", ".join(f"{k} >= {TARGETS[k]}: {'met' if v else 'missed'}" for k, v in run["targets_met"].items())
    rows.append(f"targets: {met}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.child is not None:
        args.raw_output.write_text(json.dumps(run_child(args)))
        return 0
    if args.repeats < 1 or args.warmup < 1 or args.children < 1:
        raise SystemExit("bench_cpu_speed: --repeats, --warmup and --children must be >= 1")
    run = summarize(args, run_children(args, argv))
    torch.set_num_threads(args.threads)
    info = machine_info(CPU)
    run["machine"] = {**info, "malloc": "per setting (see settings)"}
    run["machine_description"] = device_description(info, "cpu")
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{host_slug()}.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {args.threads} threads, {run['label']}")
    print(table(run))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
