"""Every method's training step against its bound at one setting, in one process (default: fp32 on the CPU).

The steps are the trainers' own: each method's trainer is started on the runtime (``TrainingRun.start(method,
args)`` with the trainer's own parser and flags) and called as the epoch loop calls it, ``run.step(batch)``, on
one fixed batch of random inputs already in memory. The setting is the one of issue 17: ResNet-18 with the CIFAR
stem (width 64), batch 128, 32 px, one process, ``--threads`` torch threads (default 1), fp32 (``--precision``).
The started runs and the bounds are those of the per-method scripts, imported from them, so a method's row here
measures the same thing as its own script:

=========  ===================================================  ======================================================
method     trainer and flags                                    bound (what no step of the method can avoid)
=========  ===================================================  ======================================================
moco       ``moco-train``, K 4096 (``bench_moco_step``)          query encoder forward + backward, key encoder forward
cmc        ``cmc-train --model resnet18v1``, NCE, K 4096,        both streams' forward + backward
           50,000 memory rows (``bench_cmc_step``)
swav       ``swav-unmix-train``, 2 x 32 + 4 x 16 px crops,       the trunk's forward + backward on all crops (one call
           3,000 prototypes (``bench_swav_step``)                per resolution)
unmix      the same with ``--run_swav false`` (3 x 32 + 6 x 16   the trunk on the 9 forward crops
           forward crops, three losses)
intl       ``intl-train``, 2 x 32 px, projector 1024-1024-1024   each crop's trunk + projector forward + backward
           (``bench_intl_step``)
cwrgp      ``cwrgp-train``, 2 views, head 1024 -> 512,           each view's trunk forward + backward (no head)
           ``--w_size 128`` (this script)
=========  ===================================================  ======================================================

Rounds: every round runs every method's ``bound`` and ``full`` step once; the methods rotate inside a round
and the order of ``bound``/``full`` alternates, so that load from other processes hits both kinds alike.
Reported per method: full/bound in images/s from the median wall times, and the checks that hold up on a
shared CPU: the ratio of median process CPU times (``time.process_time``: time spent descheduled does not
count), the per-round paired ratios of wall and of CPU time, and the ratio of the fastest steps.

``--profile N``: after the rounds, N ``bound`` and N ``full`` steps of each method (alternating) under
``torch.profiler`` with input shapes; an (op, input shapes) pair that the bound never runs is work outside the
bound (head, loss, codes, memory bank, optimiser), reported per op as a share of the full step's profiled time:
where the time outside the trunk goes. Ops on shapes the bound also has (e.g. the optimiser's ``add_`` on
gradient-shaped tensors) are counted apart, as the difference of those ops between full and bound, which
also holds the noise of the run.

``--isa avx2``: run on an emulated fp32-only AVX2 CPU: the script re-executes itself with
``ATEN_CPU_CAPABILITY=avx2`` (ATen's vectorised kernels), ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's convolutions
and matrix products) and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL's BLAS), so no AVX-512, bf16 or AMX kernel
runs. The clock, caches and memory stay this machine's, so it is an approximation of an AVX2 CPU, not one.

Usage: ``python benchmarks/bench_steps.py`` (2.5 to 6 min per round on a shared 2-core CPU, one thread);
``--methods swav unmix``, ``--channels_last``, ``--compile``, ``--precision auto``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import device_description, machine_info, store_runs
from step_timing import (
    kind_summary,
    load_averages,
    load_runs,
    markdown_header,
    markdown_row,
    median,
    milliseconds,
    paired_ratio,
    quartiles,
    timed,
)

from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.precision import PRECISIONS, autocast
from selfsup.shared.runtime.trainer import TrainingRun

BENCHMARK = "steps"
METHODS = ("moco", "cmc", "swav", "unmix", "intl", "cwrgp")
KINDS = ("bound", "full")
TARGET_RATIO = 0.97
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_KEY = ("label",)
#: environment of ``--isa avx2``, read by torch, oneDNN and MKL when they load (the script re-executes itself)
ISA_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to measure")
    add("--width", type=int, default=64, help="ResNet-18 base width (CMC: its own resnet18v1)")
    add("--batch_size", type=int, default=128, help="images per step")
    add("--precision", default="fp32", choices=PRECISIONS, help="every trainer's --precision")
    add("--channels_last", action="store_true", help="every trainer's --channels_last")
    add("--compile", action="store_true", help="every trainer's --compile (torch.compile of the encoders)")
    add("--threads", type=int, default=1, help="torch CPU threads (default 1, see benchmarks/README.md)")
    add("--isa", default="native", choices=("native", *ISA_ENV), help="native, or emulate an AVX2-only CPU")
    add("--warmup", type=int, default=1, help="untimed rounds")
    add("--repeats", type=int, default=5, help="timed rounds")
    add("--profile", type=int, default=0, metavar="ROUNDS", help="then profile ROUNDS bound + full steps")
    add("--profile_ops", type=int, default=25, help="ops stored per method from the profile")
    add("--seed", type=int, default=0, help="seed of weights and inputs")
    add("--label", default=None, help="row label (default: derived from the configuration)")
    add("--output", type=Path, default=None, help="results JSON (default: benchmarks/results/steps_cpu.json)")
    return parser


def setting_label(args: argparse.Namespace, precision: str) -> str:
    """E.g. ``resnet18 w64 cifar-stem 32px b128 fp32 1thr`` (``avx2-emulated`` with ``--isa avx2``)."""
    parts = [f"resnet18 w{args.width} cifar-stem 32px b{args.batch_size}", precision]
    parts += ["channels-last"] if args.channels_last else []
    parts += ["compile"] if args.compile else []
    parts += [f"{args.threads}thr"]
    parts += ["avx2-emulated"] if args.isa != "native" else []
    return " ".join(parts)


# ------------------------------------------------------------------------------------- the methods' steps


def _speed_flags(args: argparse.Namespace) -> list[str]:
    return [*(["--channels_last"] if args.channels_last else []), *(["--compile"] if args.compile else [])]


class Steps:
    """One started trainer: ``bound()`` and ``full()`` on a fixed batch, ``close()``; ``precision``."""

    precision: str

    def bound(self) -> None:
        raise NotImplementedError

    def full(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """Untimed work before a ``full`` step (a fresh batch of instance ids for CMC)."""

    def close(self) -> None:
        pass


class MoCoSteps(Steps):
    def __init__(self, args: argparse.Namespace, device: torch.device, folder: Path) -> None:
        import bench_moco_step as bench

        margs = bench.build_parser().parse_args(
            ["--arch", "resnet18", "--width", str(args.width), "--cifar_stem", "--image_size", "32",
             "--batch_size", str(args.batch_size), "--precision", args.precision, "--seed", str(args.seed),
             *(["--channels_last"] if args.channels_last else [])]
        )  # fmt: skip
        flags = bench.trainer_flags(margs, device) + (["--compile"] if args.compile else [])
        self._stack = contextlib.ExitStack()
        self.run = self._stack.enter_context(
            bench.moco_run(flags, num_images=max(margs.num_keys, margs.batch_size), seed=args.seed)
        )
        self.batch = bench.fixed_batch(self.run, 32, args.seed)
        self._bound = bench.bound_step
        self.precision = self.run.ctx.precision

    def bound(self) -> None:
        self._bound(self.run, self.batch[0])

    def full(self) -> None:
        self.run.step(self.batch)

    def close(self) -> None:
        self._stack.close()


class CMCSteps(Steps):
    def __init__(self, args: argparse.Namespace, device: torch.device, folder: Path) -> None:
        import bench_cmc_step as bench

        cargs = bench.build_parser().parse_args(
            ["--model", "resnet18v1", "--cifar_stem", "--image_size", "32", "--batch_size", str(args.batch_size),
             "--precision", args.precision, "--seed", str(args.seed)]
        )  # fmt: skip
        flags = bench.trainer_flags
        extra = _speed_flags(args)
        with _patched(bench, "trainer_flags", lambda *a: [*flags(*a), *extra]):
            self.steps = bench.CMCSteps(cargs, device, folder)
        self.precision = self.steps.precision
        self.batch: Any = None

    def prepare(self) -> None:
        self.batch = self.steps.new_batch()

    def bound(self) -> None:
        self.steps.bound()

    def full(self) -> None:
        self.steps.full(self.batch)

    def close(self) -> None:
        self.steps.close()


class SwAVSteps(Steps):
    unmix = False

    def __init__(self, args: argparse.Namespace, device: torch.device, folder: Path) -> None:
        import bench_swav_step as bench

        sargs = bench.build_parser().parse_args(
            ["--width", str(args.width), "--batch_size", str(args.batch_size), "--precision", args.precision,
             "--seed", str(args.seed), *(["--channels_last"] if args.channels_last else [])]
        )  # fmt: skip
        kinds = ("unmix_bound", "unmix_full") if self.unmix else ("bound", "full")
        trainer_args = bench.trainer_args

        def with_compile(*a: Any, **k: Any) -> argparse.Namespace:
            targs = trainer_args(*a, **k)
            targs.compile = args.compile
            return targs

        with _patched(bench, "trainer_args", with_compile):
            self.steps = bench.SwAVSteps(sargs, device, kinds, folder)
        self.precision = self.steps.precision

    def bound(self) -> None:
        self.steps.bound(self.unmix)

    def full(self) -> None:
        self.steps.full(self.unmix)

    def close(self) -> None:
        self.steps.close()


class UnMixSteps(SwAVSteps):
    unmix = True


class INTLSteps(Steps):
    def __init__(self, args: argparse.Namespace, device: torch.device, folder: Path) -> None:
        import bench_intl_step as bench

        iargs = bench.build_parser().parse_args(
            ["--width", str(args.width), "--batch_size", str(args.batch_size), "--precision", args.precision,
             "--seed", str(args.seed), *(["--channels_last"] if args.channels_last else [])]
        )  # fmt: skip
        step_argv = bench.step_argv
        extra = ["--compile"] if args.compile else []
        with _patched(bench, "step_argv", lambda a: [*step_argv(a), *extra]):
            self.steps = bench.INTLSteps(iargs, device, str(folder))
        self.precision = self.steps.precision

    def bound(self) -> None:
        self.steps.bound()

    def full(self) -> None:
        self.steps.full()

    def close(self) -> None:
        self.steps.run.close()


class CWRGPSteps(Steps):
    """``cwrgp-train`` started on a placeholder ``.npz`` (never read); two views of random 32 px crops."""

    def __init__(self, args: argparse.Namespace, device: torch.device, folder: Path) -> None:
        from selfsup.intl.cwrgp_cli import parse_args
        from selfsup.intl.cwrgp_train import CWRGPTrainer

        data = folder / "placeholder.npz"
        images = np.zeros((args.batch_size, 8, 8, 3), dtype=np.uint8)
        labels = np.zeros(args.batch_size, dtype=np.int64)
        np.savez(data, train_images=images, train_labels=labels, test_images=images, test_labels=labels)
        argv = [
            "--dataset", "npz", "--data_path", str(data), "--ckpt_dir", str(folder / "cwrgp"), "--arch",
            "resnet18", "--width", str(args.width), "--bs", str(args.batch_size), "--w_size",
            str(min(128, args.batch_size)), "--num_workers", "0", "--eval_every", "0", "--precision",
            args.precision, "--seed", str(args.seed), "--device", device.type, "--no_malloc_tuning",
            "--no_progress", "--no_tensorboard", *_speed_flags(args),
        ]  # fmt: skip
        targs = parse_args(argv)
        self.run = TrainingRun.start(CWRGPTrainer(targs), targs, ["cwrgp-train", *argv])
        self.run.method.on_epoch_start(0)
        self.run.ctx.global_step = targs.warmup_iters  # past the warm-up: lr = --lr
        generator = torch.Generator().manual_seed(args.seed)
        views = [
            torch.randn(args.batch_size, 3, 32, 32, generator=generator) for _ in range(targs.num_samples)
        ]
        self.views = [v.to(device) for v in views]
        self.batch = (self.views, torch.zeros(args.batch_size, dtype=torch.long))
        self.precision, self.device, self.channels_last = self.run.ctx.precision, device, targs.channels_last

    def bound(self) -> None:
        """Each view's trunk forward (the trainer's autocast) and backward; loss = sum of the features."""
        model = self.run.method.model
        views = [v.to(self.device, non_blocking=True) for v in self.views]
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with autocast(self.precision, self.device):
            features = [model.model(v) for v in views]
        loss = sum(f.float().sum() for f in features)
        model.zero_grad(set_to_none=True)
        loss.backward()

    def full(self) -> None:
        self.run.step(self.batch)

    def close(self) -> None:
        self.run.close()


STEPS: dict[str, type[Steps]] = {
    "moco": MoCoSteps,
    "cmc": CMCSteps,
    "swav": SwAVSteps,
    "unmix": UnMixSteps,
    "intl": INTLSteps,
    "cwrgp": CWRGPSteps,
}


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


# ------------------------------------------------------------------------------------------ measurement


def measure(
    args: argparse.Namespace, steps: dict[str, Steps], device: torch.device
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``records[method][kind]``: one record per timed round (wall, CPU, kernel time, faults, preemptions)."""
    records = {m: {k: [] for k in KINDS} for m in steps}
    names = list(steps)
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(names)
        for method in names[shift:] + names[:shift]:
            kinds = KINDS if round_index % 2 == 0 else KINDS[::-1]
            for kind in kinds:
                s = steps[method]
                if kind == "full":
                    s.prepare()
                rec = timed(device, s.full if kind == "full" else s.bound)
                if round_index >= args.warmup:
                    records[method][kind].append({"round": round_index - args.warmup, **rec})
        load = os.getloadavg()[0]
        print(
            f"[bench_steps] round {round_index + 1}/{args.warmup + args.repeats} (load {load:.1f})",
            file=sys.stderr,
        )
    return records


def profile_ops(steps: dict[str, Steps], rounds: int, top: int) -> dict[str, Any]:
    """``rounds`` profiled ``bound`` and ``full`` steps per method (alternating): the self time of each op,
    keyed by op and input shapes. An (op, shapes) key the bound never runs is work outside the bound (the
    head, the loss, the optimiser, ...): summed per op name, as a share of the full step's profiled time."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, Any] = {}
    for method, s in steps.items():
        ops: dict[str, collections.Counter] = {kind: collections.Counter() for kind in KINDS}
        cpu = dict.fromkeys(KINDS, 0.0)
        for r in range(rounds):
            for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                if kind == "full":
                    s.prepare()
                start = time.process_time()
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                    s.full() if kind == "full" else s.bound()
                cpu[kind] += (time.process_time() - start) / rounds
                for e in prof.key_averages(group_by_input_shape=True):
                    ops[kind][(e.key, str(e.input_shapes))] += e.self_cpu_time_total / 1e3 / rounds
        total = sum(ops["full"].values())
        outside = collections.Counter()
        for (name, shapes), ms in ops["full"].items():
            if (name, shapes) not in ops["bound"]:
                outside[name] += ms
        shared = sum(ms - ops["bound"][key] for key, ms in ops["full"].items() if key in ops["bound"])
        out[method] = {
            "rounds": rounds,
            "cpu_s": cpu,
            "profiled_ms": {kind: sum(v.values()) for kind, v in ops.items()},
            "outside_bound_ms": sum(outside.values()),
            "outside_bound_share": sum(outside.values()) / total,
            "shared_ops_difference_ms": shared,
            "outside_ops": [
                {"op": name, "ms": ms, "share_of_full": ms / total} for name, ms in outside.most_common(top)
            ],
        }
        print(f"[bench_steps] profiled {method}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------- summary


def paired_cpu_ratios(records: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Per round: bound CPU time / full CPU time (the two steps ran back to back)."""
    full = {r["round"]: r["cpu_seconds"] for r in records["full"]}
    return [r["cpu_seconds"] / full[r["round"]] for r in records["bound"] if r["round"] in full]


def summarize(records: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for method, recs in records.items():
        kinds = {k: kind_summary(recs[k], args.batch_size) for k in KINDS}
        b, f = kinds["bound"], kinds["full"]
        ratio = f["images_per_s"] / b["images_per_s"]
        out[method] = {
            "kinds": kinds,
            "ratio_full_over_bound": ratio,
            "ratio_of_cpu_time_medians": b["step_cpu_s_median"] / f["step_cpu_s_median"],
            "ratio_paired_median": paired_ratio(recs, "bound", "full"),
            "ratio_paired_cpu_median": median(paired_cpu_ratios(recs)),
            "ratio_paired_cpu_q1_q3": quartiles(paired_cpu_ratios(recs)),
            "ratio_of_min_steps": b["step_s_min"] / f["step_s_min"],
            "gap_cpu_s": f["step_cpu_s_median"] - b["step_cpu_s_median"],
            "target_ratio": TARGET_RATIO,
            "target_met": ratio >= TARGET_RATIO,
            "target_met_cpu_time": b["step_cpu_s_median"] / f["step_cpu_s_median"] >= TARGET_RATIO,
        }
    return out


COLUMNS = (
    "method", "setting", "bound ms", "full ms", "full/bound", "CPU: bound ms", "CPU: full ms",
    "full/bound: CPU time", ">= 0.97 (CPU time)", "paired: wall", "paired: CPU (q1 - q3)", "fastest steps",
    "preemptions/step", "load before / after",
)  # fmt: skip


def table_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    load = load_averages(run["load_average_1_5_15_min_before_after"])
    for method, m in run["methods"].items():
        b, f = m["kinds"]["bound"], m["kinds"]["full"]
        q1, q3 = quartiles(paired_cpu_ratios(run["records"][method]))
        cells = [
            method, run["label"], milliseconds(b["step_s_median"]), milliseconds(f["step_s_median"]),
            f"{m['ratio_full_over_bound']:.3f}", milliseconds(b["step_cpu_s_median"]),
            milliseconds(f["step_cpu_s_median"]), f"{m['ratio_of_cpu_time_medians']:.3f}",
            "yes" if m["target_met_cpu_time"] else "no", f"{m['ratio_paired_median']:.3f}",
            f"{m['ratio_paired_cpu_median']:.3f} ({q1:.3f} - {q3:.3f})", f"{m['ratio_of_min_steps']:.3f}",
            f"{f['preemptions_per_step']:.0f}", load,
        ]  # fmt: skip
        rows.append(markdown_row(cells))
    return rows


def profile_lines(run: dict[str, Any], top: int = 10) -> list[str]:
    lines = []
    for method, p in run.get("profile", {}).items():
        ops = ", ".join(
            f"{o['op'].removeprefix('aten::')} {o['ms']:.1f} ms ({100 * o['share_of_full']:.2f}%)"
            for o in p["outside_ops"][:top]
        )
        lines.append(
            f"{method}: {p['outside_bound_ms']:.0f} ms outside the bound ({100 * p['outside_bound_share']:.2f}% of "
            f"the profiled full step; ops the bound also runs: {p['shared_ops_difference_ms']:+.0f} ms): {ops}"
        )
    return lines


def print_tables(output: Path) -> None:
    print(markdown_header(COLUMNS))
    for run in load_runs(output):
        print("\n".join(table_rows(run)))
    for run in load_runs(output):
        lines = profile_lines(run)
        if lines:
            print(
                f"\nwork outside the bound (profiled self time of ops the bound does not run), {run['label']}:"
            )
            print("\n".join(lines))


# ------------------------------------------------------------------------------------------------- main


def _reexec_with_isa(isa: str) -> None:
    env = ISA_ENV[isa]
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.isa != "native":
        if argv is not None:
            raise SystemExit("bench_steps: --isa needs the command line (it re-executes the script)")
        _reexec_with_isa(args.isa)
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("bench_steps: --repeats must be >= 1 and --warmup >= 0")
    malloc = tune_malloc()  # as every trainer does at start-up
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    steps: dict[str, Steps] = {}
    with tempfile.TemporaryDirectory(prefix="bench_steps_") as folder:
        try:
            for method in args.methods:
                (Path(folder) / method).mkdir()
                torch.manual_seed(args.seed)
                steps[method] = STEPS[method](args, device, Path(folder) / method)
            load_before = os.getloadavg()
            records = measure(args, steps, device)
            load_after = os.getloadavg()
            profile = profile_ops(steps, args.profile, args.profile_ops) if args.profile else None
        finally:
            for s in steps.values():
                s.close()
    precision = next(iter(steps.values())).precision
    info = machine_info(device)
    run: dict[str, Any] = {
        "label": args.label or setting_label(args, precision),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "precision_resolved": precision,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_env": ISA_ENV.get(args.isa, {}),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python benchmarks/bench_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "methods": summarize(records, args),
        "records": records,
        "load_average_1_5_15_min_before_after": [load_before, load_after],
        "malloc": malloc.detail,
        "machine": {**info, "malloc": malloc.detail},
        "machine_description": device_description(info, "cpu"),
    }
    if profile is not None:
        run["profile"] = profile
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_cpu.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads, "
          f"CPU capability {run['cpu_capability']}")  # fmt: skip
    print_tables(output)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
