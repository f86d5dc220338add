"""MoCo training-step throughput against its ideal bound, both measured in the same process, interleaved.

Step kinds run on the same fixed batch in rotating order inside every round, so that load from other
processes (and clock or cache drift) hits all of them alike; the report uses medians over rounds:

* ``bound`` - the work no MoCo step can avoid: a forward and backward of the query encoder plus a forward
  of the key encoder (``no_grad``) on the same batch, gradients zeroed (``set_to_none``), no optimiser, no
  queue, no momentum update, no shuffle. Its loss is ``q.sum()``, just enough to run the backward.
* ``full`` - the training step of ``selfsup.moco.train`` verbatim: autocast forward of :class:`MoCo` (queue
  logits, shuffle BN when ``--shuffle_bn``), cross-entropy on ``logits.float()``, ``zero_grad``,
  ``scaler.scale(loss).backward()``, ``scaler.step``/``update`` of SGD (momentum 0.9, weight decay 1e-4),
  ``momentum_update()`` and ``enqueue(keys)``. Its throughput is the headline; the target is
  ``full / bound >= 0.9`` in images/s from the median step times.
* ``parts`` - the same full step with a timer between its parts (synchronised on CUDA), so that a reader
  sees where the gap to the bound goes. Its forward calls :class:`MoCo`'s pieces in ``MoCo.forward``'s order.
  On CUDA a ``bound_parts`` kind times the bound's parts; on CPU the bound's own (free) timers are used.

Robustness checks stored next to the headline ratio: the ratio of the fastest steps, the ratio of median
process CPU times (insensitive to time spent descheduled when ``--threads 1``), the paired per-round ratio,
and on CPU an A/A ratio (``parts`` over ``full``: the same work, so it shows the noise floor). Involuntary
context switches per step (``ru_nivcsw``) show how contended the machine was.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per step kind (reset before each step). On CPU
there is no per-allocation counter for torch, so the process's peak resident set (``ru_maxrss``) is read
right after the first ``bound`` step and again after the first ``full`` step (the first round runs them in
that order); both are process peaks including the model, the batch and the Python runtime (the resident set
before the first step is reported alongside). Minor page faults (``ru_minflt``) and kernel CPU time
(``ru_stime``, mostly spent handling those faults) are recorded per step.

``--malloc_compare`` runs the benchmark in child processes, alternating glibc's default malloc and
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` (docs/benchmarks.md explains why), stores both.

Usage: ``python benchmarks/bench_moco_step.py --arch resnet18 --cifar_stem --image_size 32 --batch_size 128``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from machine import MALLOC_TUNED_ENV, device_description, machine_info, malloc_setting, store_runs

from selfsup.moco.loss import info_nce_logits
from selfsup.moco.model import MoCo
from selfsup.moco.train import train_step
from selfsup.shared.models.backbones import ARCHITECTURES, build_backbone
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.runtime.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    make_grad_scaler,
    prepare_model,
    resolve_precision,
)

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_moco_step: --device cuda but torch sees no CUDA device")
    return torch.device(name)


def default_label(args: argparse.Namespace, device: torch.device) -> str:
    """E.g. ``resnet18 w64 cifar-stem 32px b128 K4096 fp32 2thr`` (thread count on CPU only)."""
    width = args.width or ARCHITECTURES[args.arch][2]
    parts = [f"{args.arch} w{width}", f"{args.image_size}px", f"b{args.batch_size}", f"K{args.num_keys}"]
    parts.append(args.precision)
    if args.cifar_stem:
        parts.insert(1, "cifar-stem")
    if args.mlp:
        parts.append("mlp")
    if args.shuffle_bn:
        parts.append("shuffle-bn")
    if args.bn_splits > 1:
        parts.append(f"bn-splits{args.bn_splits}")
    if args.channels_last:
        parts.append("channels-last")
    if device.type == "cpu":
        parts.append(f"{torch.get_num_threads()}thr")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ measurement


def _rss_bytes() -> int:
    """Current resident set of this process (Linux ``/proc/self/statm``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Laps:
    """Wall-clock laps (and minor page faults) between named points of a step; synchronises CUDA at each
    point when ``sync``. Fault counts are stored under ``faults:<name>``."""

    def __init__(self, device: torch.device, sync: bool) -> None:
        self.cuda = device.type == "cuda"
        self.sync = sync and self.cuda
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()
        self._faults = _minor_faults()

    def __call__(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now, faults = time.perf_counter(), _minor_faults()
        self.times[name] = self.times.get(name, 0.0) + now - self._last
        self.times[f"faults:{name}"] = self.times.get(f"faults:{name}", 0) + faults - self._faults
        self._last, self._faults = now, faults


def _noop(name: str) -> None:
    del name


class MoCoSteps:
    """The three step kinds on one model, optimiser and fixed batch."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(args.seed)
        encoder = build_backbone(args.arch, width=args.width, cifar_stem=args.cifar_stem)
        self.model = MoCo(
            encoder,
            dim=args.feature_dim,
            num_keys=args.num_keys,
            mlp=args.mlp,
            shuffle_bn=args.shuffle_bn,
            bn_splits=args.bn_splits,
        ).to(device)
        self.model.momentum_update(0.0)
        for enc in (self.model.encoder_q, self.model.encoder_k):
            prepare_model(enc, channels_last=args.channels_last, compile_model=False)
        self.model.train()
        self.optimizer = build_optimizer(
            "sgd", self.model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4
        )
        self.scaler = make_grad_scaler(args.precision, device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        shape = (args.batch_size, 3, args.image_size, args.image_size)
        self.x_q = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        self.x_k = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        self.precision = args.precision
        self.device = device

    def _autocast(self):
        return autocast(self.precision, self.device)

    def bound(self, lap: Callable[[str], None] = _noop) -> None:
        """Query forward + backward and key forward (no_grad) on the batch; gradients zeroed, no update."""
        model = self.model
        with self._autocast():
            q = model.encoder_q(self.x_q)
        lap("query_forward")
        with torch.no_grad(), self._autocast():
            model.encoder_k(self.x_k)
        lap("key_forward")
        loss = q.float().sum()
        model.encoder_q.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")

    def full(self) -> None:
        """The step of ``selfsup.moco.train`` itself (:func:`selfsup.moco.train.train_step`)."""
        train_step(
            self.model, self.model, self.optimizer, self.scaler, self.x_q, self.x_k, precision=self.precision
        )

    def parts(self, lap: Callable[[str], None]) -> None:
        """:meth:`full` with ``MoCo.forward`` unrolled into its pieces and a lap after each part."""
        model, optimizer, scaler = self.model, self.optimizer, self.scaler
        with self._autocast():
            q = F.normalize(model.encoder_q(self.x_q), dim=1)
            lap("query_forward")
            keys = model.encode_keys(self.x_k)
            lap("key_forward")
            logits, labels = info_nce_logits(q, keys, model.queue.detach(), model.temperature)
        loss = F.cross_entropy(logits.float(), labels)
        lap("logits_loss")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        lap("backward")
        scaler.step(optimizer)
        scaler.update()
        lap("optimizer")
        model.momentum_update()
        lap("momentum_update")
        model.enqueue(keys)
        lap("enqueue")


def step_kinds(device: torch.device) -> tuple[str, ...]:
    """The step kinds of one round. On CPU the ``bound`` step carries its own (free) part timers; on CUDA
    they need synchronisation, which would slow the bound, so a separate ``bound_parts`` step has them."""
    return (*KINDS, "bound_parts") if device.type == "cuda" else KINDS


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Run warm-up and timed rounds; return the raw per-step records and the memory readings."""
    steps = MoCoSteps(args, device)
    cuda = device.type == "cuda"
    kinds = step_kinds(device)
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    memory: dict[str, Any] = {"kind": "cuda_max_memory_allocated" if cuda else "process_peak_rss"}
    if cuda:
        torch.cuda.synchronize()
    else:
        memory["rss_before_first_step_bytes"] = _rss_bytes()
    peaks = dict.fromkeys(kinds, 0)
    load_before = os.getloadavg()

    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            laps = Laps(device, sync=kind in ("parts", "bound_parts"))
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu_start, start = time.process_time(), time.perf_counter()
            if kind in ("bound", "bound_parts"):
                steps.bound(laps if not cuda or kind == "bound_parts" else _noop)
            elif kind == "full":
                steps.full()
            else:
                steps.parts(laps)
            if cuda:
                torch.cuda.synchronize()
            elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
            after = resource.getrusage(resource.RUSAGE_SELF)
            if cuda:
                peaks[kind] = max(peaks[kind], torch.cuda.max_memory_allocated(device))
            elif round_index == 0:
                peaks[kind] = _max_rss_bytes()  # order bound, full, parts in round 0
            if round_index >= args.warmup:
                records[kind].append(
                    {
                        "round": round_index - args.warmup,
                        "seconds": elapsed,
                        "cpu_seconds": cpu_elapsed,
                        "kernel_seconds": after.ru_stime - usage.ru_stime,
                        "minor_faults": after.ru_minflt - usage.ru_minflt,
                        "preemptions": after.ru_nivcsw - usage.ru_nivcsw,
                        **laps.times,
                    }
                )
    memory["peak_bytes"] = peaks
    return {"records": records, "memory": memory, "load_average": [load_before, os.getloadavg()]}


# --------------------------------------------------------------------------------------------- summary


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def summarize(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Medians, images/s, ratio, part breakdown and memory of one configuration and malloc setting."""
    records = raw["records"]
    kinds: dict[str, Any] = {}
    for kind in records:
        seconds = [r["seconds"] for r in records[kind]]
        lo, hi = _quartiles(seconds)
        part_names = [
            k
            for k in records[kind][0]
            if k
            not in (
                "round",
                "child",
                "seconds",
                "cpu_seconds",
                "kernel_seconds",
                "minor_faults",
                "preemptions",
            )
        ]
        times = [k for k in part_names if not k.startswith("faults:")]
        faults = [k for k in part_names if k.startswith("faults:")]
        kinds[kind] = {
            "steps": len(seconds),
            "step_s_median": _median(seconds),
            "step_s_min": min(seconds),
            "step_cpu_s_median": _median([r["cpu_seconds"] for r in records[kind]]),
            "step_kernel_s_median": _median([r["kernel_seconds"] for r in records[kind]]),
            "step_s_q1": lo,
            "step_s_q3": hi,
            "images_per_s": args.batch_size / _median(seconds),
            "minor_faults_per_step": _median([float(r["minor_faults"]) for r in records[kind]]),
            "preemptions_per_step": _median([float(r["preemptions"]) for r in records[kind]]),
            "step_s_all": seconds,
            "parts_s_median": {name: _median([r[name] for r in records[kind]]) for name in times},
            "parts_minor_faults_median": {
                name.split(":", 1)[1]: _median([float(r[name]) for r in records[kind]]) for name in faults
            },
        }
    # Paired ratio: bound and full steps of the same round ran back to back.
    by_round = {(r["round"], r.get("child", 0)): r["seconds"] for r in records["bound"]}
    paired = [
        by_round[(r["round"], r.get("child", 0))] / r["seconds"]
        for r in records["full"]
        if (r["round"], r.get("child", 0)) in by_round
    ]
    ratio = kinds["full"]["images_per_s"] / kinds["bound"]["images_per_s"]
    bound_parts = kinds["bound_parts" if "bound_parts" in kinds else "bound"]["parts_s_median"]
    full_parts = kinds["parts"]["parts_s_median"]
    gap = {
        "key_forward_extra": full_parts["key_forward"] - bound_parts["key_forward"],
        "query_forward_extra": full_parts["query_forward"] - bound_parts["query_forward"],
        "logits_loss": full_parts["logits_loss"],
        "backward_extra": full_parts["backward"] - bound_parts["backward"],
        "optimizer": full_parts["optimizer"],
        "momentum_update": full_parts["momentum_update"],
        "enqueue": full_parts["enqueue"],
    }
    return {
        "label": args.label or default_label(args, device),
        "malloc": raw.get("malloc", malloc_setting()),
        "device": device.type,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("output", "raw_output", "malloc_compare", "malloc_rounds", "label")
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bound": kinds["bound"],
        "full": kinds["full"],
        "full_with_part_timers": kinds["parts"],
        "ratio_full_over_bound": ratio,
        "ratio_paired_median": _median(paired),
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
    "configuration",
    "malloc",
    "bound img/s",
    "full img/s",
    "full/bound",
    ">= 0.9",
    "full/bound: fastest steps",
    "full/bound: CPU time",
    "A/A: full/full",
    "preemptions/step",
    "peak memory bound / full",
    "page faults/step bound / full",
    "kernel ms/step bound / full",
    "optimizer ms",
    "momentum update ms",
    "enqueue ms",
    "logits+loss ms",
)
TABLE_HEADER = "| " + " | ".join(TABLE_COLUMNS) + " |\n" + "|---" * len(TABLE_COLUMNS) + "|"


def table_row(run: dict[str, Any]) -> str:
    """One Markdown row; img/s from median step times, part times from the step with part timers."""
    parts = run["full_with_part_timers"]["parts_s_median"]
    bound, full = run["bound"], run["full"]
    aa = run.get("aa_ratio_full_over_full")
    cells = [
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
    return "| " + " | ".join(cells) + " |"


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
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name == "--malloc_compare":
            continue
        if name in drop_with_value:
            skip = "=" not in item
            continue
        out.append(item)
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        *out,
        "--raw_output",
        str(raw_path),
        "--repeats",
        str(repeats),
    ]


def malloc_compare(args: argparse.Namespace, argv: list[str], device: torch.device) -> list[dict[str, Any]]:
    """Alternate child processes with the default and the tuned malloc; merge their records per setting."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    settings = {"glibc default": base_env, malloc_setting(MALLOC_TUNED_ENV): {**base_env, **MALLOC_TUNED_ENV}}
    repeats = max(2, -(-args.repeats // args.malloc_rounds))
    merged: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_moco_step_") as tmp:
        for child in range(args.malloc_rounds):
            order = list(settings) if child % 2 == 0 else list(reversed(settings))
            for name in order:
                raw_path = Path(tmp) / f"child{child}_{len(merged)}.json"
                print(f"[malloc_compare] child {child + 1}/{args.malloc_rounds}: {name}", file=sys.stderr)
                subprocess.run(_child_argv(argv, raw_path, repeats), env=settings[name], check=True)
                raw = json.loads(raw_path.read_text())
                into = merged.setdefault(
                    name,
                    {
                        "records": {k: [] for k in raw["records"]},
                        "memory": raw["memory"],
                        "malloc": raw["malloc"],
                        "load_average": raw["load_average"],
                    },
                )
                for kind, recs in raw["records"].items():
                    into["records"][kind].extend({**r, "child": child} for r in recs)
                mem = into["memory"]
                for kind, peak in raw["memory"]["peak_bytes"].items():
                    mem["peak_bytes"][kind] = max(mem["peak_bytes"][kind], peak)
                if "rss_before_first_step_bytes" in mem:
                    mem["rss_before_first_step_bytes"] = min(
                        mem["rss_before_first_step_bytes"], raw["memory"]["rss_before_first_step_bytes"]
                    )
                into["load_average"] = [into["load_average"][0], raw["load_average"][1]]
                raw_path.unlink()
    return [summarize(merged[name], args, device) for name in settings]


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    check_precision(args.precision, device)
    args.precision = resolve_precision(args.precision, device)  # auto -> bf16 or fp32, as the trainers do
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 1:
        raise SystemExit("bench_moco_step: --repeats and --warmup must be >= 1")

    if args.raw_output is not None:  # child of --malloc_compare: raw records only
        raw = measure(args, device)
        raw["malloc"] = malloc_setting()
        args.raw_output.write_text(json.dumps(raw))
        return 0

    if args.malloc_compare:
        runs = malloc_compare(args, argv, device)
    else:
        runs = [summarize(measure(args, device), args, device)]
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
