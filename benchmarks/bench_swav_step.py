"""SwAV / Un-Mix training step against its bound, and the Sinkhorn-Knopp codes alone (``swav-unmix-train``).

Two modes, both on random inputs already in memory, one torch thread by default and glibc malloc tuned with
:func:`~selfsup.shared.runtime.cpu.tune_malloc` at start-up, as ``swav-unmix-train`` does.

``--mode step`` (default): the training step of ``swav-unmix-train`` against its bound. The step timed is the
trainer's own: :class:`~selfsup.swav_unmix.train.SwAVUnMixTrainer` started on the runtime
(``TrainingRun.start(method, args)``: the trainer's flags, parser, model, LARC optimiser, loss scaler and queue)
and called through ``run.step(batch)``, exactly what the epoch loop calls. The flags are the trainer's own
(``parse_args``) with the sizes below, ``--warmup_epochs 0`` and a placeholder data set of one batch per epoch
over 100,000 epochs (the inputs are random crops in memory; the cosine rate stays within 0.01 % of
``--base_lr`` for the first 450 steps). Step kinds run in rotating order inside every round, so that load from other processes
hits them alike; the report uses medians over rounds:

* ``bound`` - the work no SwAV step can avoid: the trunk's forward (under the trainer's autocast) and
  backward on all crops with the trainer's grouping (one trunk call per run of equal resolutions), loss =
  the sum of the pooled features, gradients zeroed (``set_to_none``); no head, no prototypes, no Sinkhorn,
  no optimiser.
* ``full`` - ``run.step`` with ``--run_swav true`` (plain SwAV): the rate, ``normalize_prototypes``, the crops
  moved (and made channels-last with ``--channels_last``), one forward of all crops, the codes of the
  assignment crops (queue + Sinkhorn), the swapped-prediction loss, ``zero_grad``, scaled backward, prototype
  freezing, ``scaler.step``/``update`` of LARC. Target: full/bound >= 0.97 in images/s (images = the batch;
  median step times).
* ``parts`` - the same ``run.step`` with a timer (synchronised on CUDA) at the boundaries of the pieces it
  calls, wrapped for that step only: prepare (rate, prototypes, crops), mix (Un-Mix only), trunk forward,
  head forward, codes (queue + Sinkhorn), loss, backward, freeze, optimiser. On CPU the bound's own (free)
  timers give its forward and backward, so the gap splits into parts; ``parts``/``full`` is an A/A ratio
  (the same work: the noise floor).
* ``full_per_crop`` - ``full`` with ``--forward_mode per_crop`` (one trunk call per crop; the same model,
  whose ``forward_mode`` is switched for that step only). Compared with ``full`` (grouped) and the bound.
* ``unmix_bound``, ``unmix_full``, ``unmix_parts`` - the same three with ``--run_swav false`` (Un-Mix):
  the ``2 + 4`` crops become ``3 + 6`` forward crops (a mixed crop after each pair), three SwAV losses. The
  bound runs the trunk on a fixed set of those 9 crops (mixed once, at start-up). Un-Mix's extra cost per
  step is ``unmix_full - full`` (ms and % of ``full``).

The SwAV kinds share one started trainer, the Un-Mix kinds another (the same initial weights: the same
seed). The defaults (CIFAR-stem ResNet-18 of width 32, 2 x 32 px + 4 x 16 px crops, batch 32, 3,000
prototypes) take about 0.5 s per SwAV step on a 2-core CPU. The prototypes are not frozen by default
(``--freeze_prototypes_niters 0``: the step of every iteration after the trainer's first 313). With
``--queue_length`` the queue starts at epoch 0 and is marked in use from the first step, so every step
scores it.

``--mode sinkhorn``: :func:`selfsup.swav_unmix.sinkhorn.distributed_sinkhorn` alone (world size 1, fp32,
``--sinkhorn_iterations`` 3, ``--epsilon`` 0.05) on cosine scores of ``--sinkhorn_rows`` samples x
``--nmb_prototypes`` prototypes, the row counts in rotating order inside every round; medians over rounds.

Usage: ``python benchmarks/bench_swav_step.py`` then ``python benchmarks/bench_swav_step.py --mode
sinkhorn``; larger models with e.g. ``--arch resnet50 --size_crops 224 96``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from machine import device_description, machine_info, store_runs
from step_timing import (
    Laps,
    kind_summary,
    load_averages,
    load_runs,
    markdown_header,
    markdown_row,
    milliseconds,
    no_laps,
    paired_ratio,
    resolve_device,
    threads_suffix,
    timed,
)

import selfsup.swav_unmix.loss as swav_loss_module
import selfsup.swav_unmix.train as swav_train_module
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.precision import PRECISIONS, autocast, check_precision
from selfsup.shared.runtime.trainer import TrainingRun
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.model import crop_groups
from selfsup.swav_unmix.sinkhorn import distributed_sinkhorn
from selfsup.swav_unmix.train import SwAVUnMixTrainer
from selfsup.swav_unmix.unmix import mix_crops

BENCHMARK = "swav_step"
STEP_KINDS = ("bound", "full", "parts", "full_per_crop", "unmix_bound", "unmix_full", "unmix_parts")
TARGET_RATIO = 0.97
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_KEY = ("mode", "label")
SMALL_WIDTH = 32  # default --width of resnet18 here (the architecture's own is 64)
CIFAR_STEM_MAX_SIDE = 64  # --cifar_stem auto: on when the largest crop is at most this side
EPOCHS = 100_000  # one placeholder batch per epoch: the schedule outlasts any run of this benchmark


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", default="step", choices=("step", "sinkhorn"), help="step vs bound, or Sinkhorn"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see README)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default: 10 for step, 30 for sinkhorn)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--label", default=None, help="row label (default: derived from the configuration)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, updated in place (default: benchmarks/results/swav_step_<device>.json)",
    )
    parser.add_argument("--nmb_prototypes", type=int, default=3000, help="prototypes K (both modes)")
    parser.add_argument("--epsilon", type=float, default=0.05, help="Sinkhorn ε (both modes)")
    parser.add_argument("--sinkhorn_iterations", type=int, default=3, help="Sinkhorn iterations (both modes)")
    parser.add_argument("--feat_dim", type=int, default=128, help="embedding dimension (both modes)")
    step = parser.add_argument_group("--mode step (the trainer's flags, with small defaults)")
    step.add_argument("--arch", default="resnet18", choices=sorted(ARCHITECTURES), help="trunk")
    step.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"trunk base width (default: {SMALL_WIDTH} for resnet18, else the architecture's)",
    )
    step.add_argument(
        "--cifar_stem",
        default="auto",
        choices=("auto", "true", "false"),
        help=f"3x3/1 stem without max-pool; auto: on when the largest crop is <= {CIFAR_STEM_MAX_SIDE} px",
    )
    step.add_argument("--nmb_crops", type=int, nargs="+", default=[2, 4], help="crops per resolution")
    step.add_argument("--size_crops", type=int, nargs="+", default=[32, 16], help="side of each resolution")
    step.add_argument("--batch_size", type=int, default=32, help="images per step")
    step.add_argument("--hidden_mlp", type=int, default=2048, help="projection head hidden units")
    step.add_argument("--crops_for_assign", type=int, nargs="+", default=[0, 1], help="crops that get codes")
    step.add_argument(
        "--queue_length", type=int, default=0, help="queue rows (world size 1); in use from the first step"
    )
    step.add_argument(
        "--freeze_prototypes_niters",
        type=int,
        default=0,
        help="steps with dropped prototype gradients, counted over all steps of the run (trainer: 313)",
    )
    step.add_argument("--base_lr", type=float, default=4.8, help="LARC learning rate (no warm-up)")
    step.add_argument("--unmix_prob", type=float, default=0.0, help="Un-Mix global-mixture probability")
    step.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the trainer's --precision")
    step.add_argument("--channels_last", action="store_true", help="the trainer's --channels_last")
    step.add_argument(
        "--kinds", nargs="+", default=list(STEP_KINDS), choices=STEP_KINDS, help="step kinds to run"
    )
    sink = parser.add_argument_group("--mode sinkhorn")
    sink.add_argument(
        "--sinkhorn_rows", type=int, nargs="+", default=[64, 256, 1024, 4096], help="samples per call"
    )
    return parser


def resolved_width(args: argparse.Namespace) -> int:
    if args.width is not None:
        return args.width
    return SMALL_WIDTH if args.arch == "resnet18" else ARCHITECTURES[args.arch][2]


def resolved_cifar_stem(args: argparse.Namespace) -> bool:
    if args.cifar_stem == "auto":
        return max(args.size_crops) <= CIFAR_STEM_MAX_SIDE
    return args.cifar_stem == "true"


def trainer_args(
    args: argparse.Namespace, device: torch.device, folder: Path, *, run_swav: bool
) -> argparse.Namespace:
    """``swav-unmix-train``'s own parsed flags for this configuration (its defaults for everything else), its
    run in ``folder`` on a placeholder ``.npz`` of one batch of black images (never read: see the module
    docstring)."""
    data = folder / "placeholder.npz"
    if not data.exists():
        images = np.zeros((args.batch_size, 8, 8, 3), dtype=np.uint8)
        labels = np.zeros(args.batch_size, dtype=np.int64)
        np.savez(data, train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    n = len(args.nmb_crops)
    argv = [
        "--arch", args.arch, "--width", str(resolved_width(args)),
        "--nmb_crops", *map(str, args.nmb_crops), "--size_crops", *map(str, args.size_crops),
        "--min_scale_crops", *["0.14"] * n, "--max_scale_crops", *["1.0"] * n,
        "--batch_size", str(args.batch_size), "--nmb_prototypes", str(args.nmb_prototypes),
        "--feat_dim", str(args.feat_dim), "--hidden_mlp", str(args.hidden_mlp),
        "--crops_for_assign", *map(str, args.crops_for_assign), "--queue_length", str(args.queue_length),
        "--epoch_queue_starts", "0", "--epsilon", str(args.epsilon),
        "--sinkhorn_iterations", str(args.sinkhorn_iterations),
        "--freeze_prototypes_niters", str(args.freeze_prototypes_niters), "--base_lr", str(args.base_lr),
        "--warmup_epochs", "0", "--epochs", str(EPOCHS), "--unmix_prob", str(args.unmix_prob),
        "--precision", args.precision, "--run_swav", "true" if run_swav else "false",
        "--dataset", "npz", "--data_path", str(data), "--dump_path", str(folder / ("swav" if run_swav else "unmix")),
        "--workers", "0", "--seed", str(args.seed), "--device", str(device), "--no_malloc_tuning",
        "--no_progress", "--no_tensorboard",
    ]  # fmt: skip
    if resolved_cifar_stem(args):
        argv.append("--cifar_stem")
    if args.channels_last:
        argv.append("--channels_last")
    return parse_args(argv)


def step_label(args: argparse.Namespace, precision: str, device: torch.device) -> str:
    """E.g. ``resnet18 w32 cifar-stem 2x32+4x16 b64 K3000 fp32 1thr``."""
    crops = "+".join(f"{n}x{s}" for n, s in zip(args.nmb_crops, args.size_crops))
    parts = [f"{args.arch} w{resolved_width(args)}"]
    if resolved_cifar_stem(args):
        parts.append("cifar-stem")
    parts += [crops, f"b{args.batch_size}", f"K{args.nmb_prototypes}"]
    if args.hidden_mlp != 2048:
        parts.append(f"mlp{args.hidden_mlp}")
    if args.queue_length:
        parts.append(f"Q{args.queue_length}")
    if args.freeze_prototypes_niters:
        parts.append("frozen-prototypes")
    parts.append(precision)
    if args.channels_last:
        parts.append("channels-last")
    return " ".join(parts) + threads_suffix(device)


def sinkhorn_label(args: argparse.Namespace, device: torch.device) -> str:
    rows = ",".join(map(str, args.sinkhorn_rows))
    return (
        f"sinkhorn K{args.nmb_prototypes} rows {rows} it{args.sinkhorn_iterations} eps{args.epsilon} fp32"
        f"{threads_suffix(device)}"
    )


# ------------------------------------------------------------------------------------------ measurement


def start_trainer(
    args: argparse.Namespace, device: torch.device, folder: Path, *, run_swav: bool
) -> TrainingRun:
    """The trainer started on the runtime, at its first epoch (the queue, if any, in use from the start)."""
    targs = trainer_args(args, device, folder, run_swav=run_swav)
    run = TrainingRun.start(SwAVUnMixTrainer(targs), targs, ["bench_swav_step"])
    run.method.on_epoch_start(0)
    if run.method.queue is not None:
        run.method.queue.in_use.fill_(True)  # scored from the first step (the trainer: once filled or in use)
    return run


@contextlib.contextmanager
def laps_inside(run: TrainingRun, lap: Callable[[str], None]) -> Iterator[dict[str, bool]]:
    """During one ``run.step``, a lap at the boundary of each piece the step calls: the pieces (Un-Mix's
    ``mix_crops``, the model's ``forward_trunk``/``forward_head``, the loss module's ``assignment_codes`` and
    ``swapped_prediction_loss``, the scaler's ``scale``/``step``, ``named_parameters`` of the freezing) are
    wrapped, unchanged, for the duration of the block."""
    seen = {"mixed": False, "froze": False}

    def wrapped(original: Callable[..., Any], before: Callable[[], str | None], after: str | None):
        def call(*a: Any, **k: Any) -> Any:
            name = before()
            if name:
                lap(name)
            out = original(*a, **k)
            if after:
                lap(after)
            return out

        return call

    def mark(key: str, name: str) -> Callable[[], str]:
        def before() -> str:
            seen[key] = True
            return name

        return before

    model, scaler = run.method.model, run.ctx.scaler
    patches = [
        (swav_train_module, "mix_crops", mark("mixed", "prepare"), "mix"),
        (model, "forward_trunk", lambda: "mix" if seen["mixed"] else "prepare", "trunk_forward"),
        (model, "forward_head", lambda: None, "head_forward"),
        (swav_loss_module, "assignment_codes", lambda: "loss", "codes"),
        (swav_loss_module, "swapped_prediction_loss", lambda: None, "loss"),
        (scaler, "scale", lambda: "loss", None),
        (model, "named_parameters", mark("froze", "backward"), None),
        (scaler, "step", lambda: "freeze" if seen["froze"] else "backward", None),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, before, after in patches:
            stack.enter_context(mock.patch.object(owner, name, wrapped(getattr(owner, name), before, after)))
        yield seen


class SwAVSteps:
    """The started trainers (SwAV and Un-Mix, as needed by ``kinds``) and one fixed batch of random crops."""

    def __init__(self, args: argparse.Namespace, device: torch.device, kinds: tuple[str, ...], folder: Path):
        self.runs: dict[bool, TrainingRun] = {}
        for unmix in (False, True):
            if any(k.startswith("unmix_") == unmix for k in kinds):
                self.runs[unmix] = start_trainer(args, device, folder, run_swav=not unmix)
        first = next(iter(self.runs.values()))
        targs, model = first.ctx.args, first.method.model
        self.device, self.precision = device, first.ctx.precision
        self.crops = [
            torch.randn(targs.batch_size, 3, size, size, device=device)
            for n, size in zip(targs.nmb_crops, targs.size_crops)
            for _ in range(n)
        ]
        self.batch = (self.crops, torch.zeros(targs.batch_size, dtype=torch.long))
        # the bound of Un-Mix: the trunk on one fixed forward list (mixed once here, RNG of its own)
        fixed = mix_crops(
            self.crops, unmix_prob=targs.unmix_prob, beta=targs.unmix_beta, rng=np.random.RandomState(0)
        )
        self.unmix_inputs = self._memory_format(fixed.crops, targs.channels_last)
        self.swav_inputs = self._memory_format(self.crops, targs.channels_last)
        self.parameters = sum(p.numel() for p in model.parameters())
        self.trunk_parameters = sum(p.numel() for p in model.backbone.parameters())
        self.queue_rows = first.method.queue_length

    @staticmethod
    def _memory_format(crops: list[torch.Tensor], channels_last: bool) -> list[torch.Tensor]:
        return [c.contiguous(memory_format=torch.channels_last) for c in crops] if channels_last else crops

    def bound(self, unmix: bool, lap: Callable[[str], None] = no_laps) -> None:
        """The trunk's forward (autocast, one call per resolution group) and backward on all forward crops;
        loss = sum of the pooled features; no head, no Sinkhorn, no optimiser."""
        model = self.runs[unmix].method.model
        crops = self.unmix_inputs if unmix else self.swav_inputs
        with autocast(self.precision, self.device):
            features = [model.backbone(torch.cat(list(crops[a:b]))) for a, b in crop_groups(crops)]
        lap("forward")
        loss = sum(f.float().sum() for f in features)
        model.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")

    def full(self, unmix: bool, forward_mode: str = "grouped") -> dict[str, torch.Tensor]:
        """The trainer's step, ``run.step(batch)`` (``forward_mode`` switched for this step only)."""
        run = self.runs[unmix]
        run.method.model.forward_mode = forward_mode
        try:
            return run.step(self.batch)
        finally:
            run.method.model.forward_mode = "grouped"

    def parts(self, unmix: bool, lap: Callable[[str], None]) -> torch.Tensor:
        """:meth:`full` with a lap after each of its pieces (:func:`laps_inside`)."""
        run = self.runs[unmix]
        with laps_inside(run, lap):
            scalars = run.step(self.batch)
        lap("optimizer")
        return scalars["loss"]

    def close(self) -> None:
        for run in self.runs.values():
            run.close()


def measure_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    kinds = tuple(k for k in STEP_KINDS if k in args.kinds)
    with tempfile.TemporaryDirectory(prefix="bench_swav_step_") as folder:
        steps = SwAVSteps(args, device, kinds, Path(folder))
        try:
            return _measure(steps, args, device, kinds)
        finally:
            steps.close()


def _measure(steps: SwAVSteps, args: argparse.Namespace, device: torch.device, kinds: tuple[str, ...]):
    cpu = device.type == "cpu"
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    losses: list[float] = []
    load_before = os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            laps = Laps(device, sync=kind.endswith("parts"))
            unmix = kind.startswith("unmix_")
            out: dict[str, Any] = {}
            if kind.endswith("bound"):
                rec = timed(device, lambda u=unmix, laps=laps: steps.bound(u, laps if cpu else no_laps))
            elif kind.endswith("parts"):
                rec = timed(device, lambda u=unmix, laps=laps, out=out: out.update(loss=steps.parts(u, laps)))
                laps.times.setdefault("mix", 0.0)  # SwAV mixes nothing
                laps.times.setdefault("freeze", 0.0)  # past --freeze_prototypes_niters: no freezing
            else:
                mode = "per_crop" if kind == "full_per_crop" else "grouped"
                rec = timed(device, lambda u=unmix, m=mode, out=out: out.update(steps.full(u, m)))
            if "loss" in out:
                losses.append(float(out["loss"]))
            if round_index >= args.warmup:
                records[kind].append({"round": round_index - args.warmup, **rec, **laps.times})
        print(f"[bench_swav_step] round {round_index + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return {
        "records": records,
        "precision": steps.precision,
        "parameters": steps.parameters,
        "trunk_parameters": steps.trunk_parameters,
        "queue_rows": steps.queue_rows,
        "forward_crops": {"swav": len(steps.crops), "unmix": len(steps.unmix_inputs)},
        "losses_finite": bool(np.all(np.isfinite(losses))),
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "load_average": [load_before, os.getloadavg()],
    }


def measure_sinkhorn(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """``distributed_sinkhorn`` on cosine scores (unit embeddings x unit prototypes) per row count."""
    torch.manual_seed(args.seed)
    prototypes = F.normalize(torch.randn(args.nmb_prototypes, args.feat_dim, device=device), dim=1)
    scores = {
        rows: F.normalize(torch.randn(rows, args.feat_dim, device=device), dim=1) @ prototypes.t()
        for rows in args.sinkhorn_rows
    }
    names = [f"rows{rows}" for rows in args.sinkhorn_rows]
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    max_err: dict[str, float] = {}
    load_before = os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            s = scores[int(name[4:])]
            out: dict[str, torch.Tensor] = {}

            def run(s: torch.Tensor = s, out: dict[str, torch.Tensor] = out) -> None:
                out["q"] = distributed_sinkhorn(s, epsilon=args.epsilon, iterations=args.sinkhorn_iterations)

            rec = timed(device, run)
            # each sample's codes sum to 1 (a check that the work was done, outside the timed call)
            max_err[name] = float((out["q"].sum(dim=1) - 1).abs().max())
            if round_index >= args.warmup:
                records[name].append({"round": round_index - args.warmup, **rec})
    return {"records": records, "row_sum_max_error": max_err, "load_average": [load_before, os.getloadavg()]}


# --------------------------------------------------------------------------------------------- summary


def comparison(
    kinds: dict[str, Any],
    records: dict[str, Any],
    device: torch.device,
    bound: str,
    full: str,
    parts: str | None,
) -> dict[str, Any]:
    """full/bound ratios and (with ``parts``) the gap split into the step's parts."""
    b, f = kinds[bound], kinds[full]
    ratio = f["images_per_s"] / b["images_per_s"]
    out: dict[str, Any] = {
        "bound": bound,
        "full": full,
        "ratio_full_over_bound": ratio,
        "ratio_paired_median": paired_ratio(records, bound, full),
        "ratio_of_min_steps": b["step_s_min"] / f["step_s_min"],
        "ratio_of_cpu_time_medians": b["step_cpu_s_median"] / f["step_cpu_s_median"],
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "gap_s": f["step_s_median"] - b["step_s_median"],
    }
    if parts is not None and parts in kinds:
        p = kinds[parts]
        fp, bp = p["parts_s_median"], b["parts_s_median"]
        out["aa_ratio_full_over_full"] = (
            p["step_s_median"] / f["step_s_median"] if device.type == "cpu" else None
        )
        out["gap_breakdown_s"] = {
            "prepare": fp["prepare"],
            "mix": fp["mix"],
            "trunk_forward_extra": fp["trunk_forward"] - bp["forward"] if bp else None,
            "head_forward": fp["head_forward"],
            "codes": fp["codes"],
            "loss": fp["loss"],
            "backward_extra": fp["backward"] - bp["backward"] if bp else None,
            "freeze": fp["freeze"],
            "optimizer": fp["optimizer"],
        }
    return out


def summarize_steps(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    kinds = {kind: kind_summary(recs, args.batch_size) for kind, recs in records.items()}
    run: dict[str, Any] = {
        "mode": "step",
        "label": args.label or step_label(args, raw["precision"], device),
        "device": device.type,
        "config": {
            **{
                k: v
                for k, v in vars(args).items()
                if k not in ("output", "label", "sinkhorn_rows", "mode", "device", "cifar_stem", "width")
            },
            "width": resolved_width(args),
            "cifar_stem": resolved_cifar_stem(args),
            "device": device.type,
            "threads": torch.get_num_threads(),
        },
        "precision_resolved": raw["precision"],
        "optimizer": "larc (momentum 0.9, eta 0.001, no clip, every parameter)",
        "parameters": raw["parameters"],
        "trunk_parameters": raw["trunk_parameters"],
        "queue_rows": raw["queue_rows"],
        "forward_crops": raw["forward_crops"],
        "losses_finite": raw["losses_finite"],
        "loss_first_last": raw["loss_first_last"],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kinds": kinds,
    }
    if "bound" in kinds and "full" in kinds:
        run["swav"] = comparison(kinds, records, device, "bound", "full", "parts")
    if "bound" in kinds and "full_per_crop" in kinds:
        run["swav_per_crop"] = comparison(kinds, records, device, "bound", "full_per_crop", None)
    if "full" in kinds and "full_per_crop" in kinds:
        grouped, per_crop = kinds["full"]["step_s_median"], kinds["full_per_crop"]["step_s_median"]
        run["forward_mode"] = {
            "grouped_step_s_median": grouped,
            "per_crop_step_s_median": per_crop,
            "per_crop_over_grouped_time": per_crop / grouped,
            "paired_per_crop_over_grouped_time_median": paired_ratio(records, "full_per_crop", "full"),
            "faster": "grouped" if grouped <= per_crop else "per_crop",
        }
    if "unmix_bound" in kinds and "unmix_full" in kinds:
        run["unmix"] = comparison(kinds, records, device, "unmix_bound", "unmix_full", "unmix_parts")
    if "full" in kinds and "unmix_full" in kinds:
        extra = kinds["unmix_full"]["step_s_median"] - kinds["full"]["step_s_median"]
        run["unmix_extra"] = {
            "step_s": extra,
            "fraction_of_swav_step": extra / kinds["full"]["step_s_median"],
            "paired_unmix_over_swav_time_median": paired_ratio(records, "unmix_full", "full"),
        }
        if "unmix_bound" in kinds and "bound" in kinds:
            bound_extra = kinds["unmix_bound"]["step_s_median"] - kinds["bound"]["step_s_median"]
            run["unmix_extra"]["bound_step_s"] = bound_extra
    run["load_average_1_5_15_min_before_after"] = raw["load_average"]
    return run


def summarize_sinkhorn(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cases = []
    for rows in args.sinkhorn_rows:
        recs = raw["records"][f"rows{rows}"]
        s = kind_summary(recs, rows)
        cases.append(
            {
                "rows": rows,
                "prototypes": args.nmb_prototypes,
                "ms_median": 1e3 * s["step_s_median"],
                "ms_min": 1e3 * s["step_s_min"],
                "ms_q1": 1e3 * s["step_s_q1"],
                "ms_q3": 1e3 * s["step_s_q3"],
                "cpu_ms_median": 1e3 * s["step_cpu_s_median"],
                "ns_per_element": 1e9 * s["step_s_median"] / (rows * args.nmb_prototypes),
                "runs": s["steps"],
                "ms_all": [1e3 * v for v in s["step_s_all"]],
                "code_row_sum_max_error": raw["row_sum_max_error"][f"rows{rows}"],
            }
        )
    return {
        "mode": "sinkhorn",
        "label": args.label or sinkhorn_label(args, device),
        "device": device.type,
        "config": {
            "nmb_prototypes": args.nmb_prototypes,
            "rows": args.sinkhorn_rows,
            "epsilon": args.epsilon,
            "iterations": args.sinkhorn_iterations,
            "feat_dim": args.feat_dim,
            "dtype": "fp32",
            "world_size": 1,
            "threads": torch.get_num_threads(),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cases": cases,
        "load_average_1_5_15_min_before_after": raw["load_average"],
    }


# ---------------------------------------------------------------------------------------------- tables


RATIO_COLUMNS = (
    "configuration", "step", "bound ms", "full ms", "bound img/s", "full img/s", "full/bound", ">= 0.97",
    "full/bound: fastest steps", "full/bound: CPU time", "full/bound: paired", "A/A: full/full",
    "preemptions/step", "load before / after",
)  # fmt: skip


def ratio_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    names = (("swav", "SwAV grouped"), ("swav_per_crop", "SwAV per_crop"), ("unmix", "Un-Mix grouped"))
    for key, name in names:
        if key not in run:
            continue
        c = run[key]
        b, f = run["kinds"][c["bound"]], run["kinds"][c["full"]]
        aa = c.get("aa_ratio_full_over_full")
        cells = [
            run["label"], name, milliseconds(b["step_s_median"]), milliseconds(f["step_s_median"]),
            f"{b['images_per_s']:.1f}", f"{f['images_per_s']:.1f}", f"{c['ratio_full_over_bound']:.3f}",
            "yes" if c["target_met"] else "no", f"{c['ratio_of_min_steps']:.3f}",
            f"{c['ratio_of_cpu_time_medians']:.3f}", f"{c['ratio_paired_median']:.3f}",
            "-" if aa is None else f"{aa:.3f}", f"{f['preemptions_per_step']:.0f}",
            load_averages(run["load_average_1_5_15_min_before_after"]),
        ]  # fmt: skip
        rows.append(markdown_row(cells))
    return rows


GAP_COLUMNS = (
    "configuration", "step", "gap ms", "prepare ms", "mix ms", "trunk forward extra ms", "head forward ms",
    "codes (Sinkhorn) ms", "loss ms", "backward extra ms", "freeze ms", "LARC ms",
)  # fmt: skip
#: the parts of ``gap_breakdown_s`` in the columns' order, with their decimals
GAP_PARTS = (
    ("prepare", 1), ("mix", 1), ("trunk_forward_extra", 1), ("head_forward", 1), ("codes", 1), ("loss", 1),
    ("backward_extra", 1), ("freeze", 2), ("optimizer", 1),
)  # fmt: skip


def gap_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for key, name in (("swav", "SwAV"), ("unmix", "Un-Mix")):
        if key not in run or "gap_breakdown_s" not in run[key]:
            continue
        g = run[key]["gap_breakdown_s"]
        parts = [milliseconds(g[part], digits) for part, digits in GAP_PARTS]
        rows.append(markdown_row([run["label"], name, milliseconds(run[key]["gap_s"], 1), *parts]))
    return rows


def summary_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    if "forward_mode" in run:
        fm = run["forward_mode"]
        lines.append(
            f"{run['label']}: forward_mode grouped {milliseconds(fm['grouped_step_s_median'])} ms, per_crop "
            f"{milliseconds(fm['per_crop_step_s_median'])} ms per step (per_crop/grouped time "
            f"{fm['per_crop_over_grouped_time']:.3f}, "
            f"paired {fm['paired_per_crop_over_grouped_time_median']:.3f}): "
            f"{fm['faster']} is faster"
        )
    if "unmix_extra" in run:
        ue = run["unmix_extra"]
        bound = f", of which the bound {milliseconds(ue['bound_step_s'])} ms" if "bound_step_s" in ue else ""
        lines.append(
            f"{run['label']}: Un-Mix costs {milliseconds(ue['step_s'])} ms more per step than SwAV "
            f"({100 * ue['fraction_of_swav_step']:.0f}%; paired time ratio "
            f"{ue['paired_unmix_over_swav_time_median']:.3f}){bound}"
        )
    return lines


SINKHORN_COLUMNS = (
    "prototypes x rows", "median ms", "q1 - q3 ms", "min ms", "ns per score", "runs", "load before / after",
)  # fmt: skip


def sinkhorn_rows(run: dict[str, Any]) -> list[str]:
    load = load_averages(run["load_average_1_5_15_min_before_after"])
    rows = []
    for c in run["cases"]:
        cells = [
            f"{c['prototypes']:,} x {c['rows']:,}", f"{c['ms_median']:.2f}", f"{c['ms_q1']:.2f} - {c['ms_q3']:.2f}",
            f"{c['ms_min']:.2f}", f"{c['ns_per_element']:.2f}", str(c["runs"]), load,
        ]  # fmt: skip
        rows.append(markdown_row(cells))
    return rows


def print_tables(output: Path, device: torch.device) -> None:
    runs = [r for r in load_runs(output) if r.get("device") == device.type]
    steps = [r for r in runs if r["mode"] == "step"]
    if steps:
        print(markdown_header(RATIO_COLUMNS))
        for run in steps:
            print("\n".join(ratio_rows(run)))
        print("\n" + markdown_header(GAP_COLUMNS))
        for run in steps:
            print("\n".join(gap_rows(run)))
        print()
        for run in steps:
            print("\n".join(summary_lines(run)))
    for run in (r for r in runs if r["mode"] == "sinkhorn"):
        print(f"\n{run['label']}")
        print(markdown_header(SINKHORN_COLUMNS))
        print("\n".join(sinkhorn_rows(run)))


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    malloc = tune_malloc()  # as swav-unmix-train does at start-up (before the first large allocation)
    device = resolve_device(args.device, "bench_swav_step")
    check_precision(args.precision, device)
    torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 10 if args.mode == "step" else 30
    if args.repeats < 1 or args.warmup < 1:
        raise SystemExit("bench_swav_step: --repeats and --warmup must be >= 1")
    if args.mode == "step":
        if not set(args.kinds) & {"full", "unmix_full", "full_per_crop"}:
            raise SystemExit("bench_swav_step: --kinds needs at least one full step")
        run = summarize_steps(measure_steps(args, device), args, device)
    else:
        run = summarize_sinkhorn(measure_sinkhorn(args, device), args, device)
    info = machine_info(device)
    run["malloc"] = malloc.detail
    run["machine"] = {**info, "malloc": malloc.detail}
    run["machine_description"] = device_description(info, device.type)
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{device.type}.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads")
    if run["mode"] == "step":
        for key in ("swav", "unmix"):
            if key in run and "gap_breakdown_s" in run[key]:
                c = run[key]
                gap = ", ".join(f"{k} {milliseconds(v, 1)} ms" for k, v in c["gap_breakdown_s"].items())
                print(
                    f"{key}: bound {milliseconds(run['kinds'][c['bound']]['step_s_median'])} ms, full "
                    f"{milliseconds(run['kinds'][c['full']]['step_s_median'])} ms per step; "
                    f"gap {milliseconds(c['gap_s'])} ms = "
                    f"{gap}; paired ratio {c['ratio_paired_median']:.3f}"
                )
        if not run["losses_finite"]:
            print("warning: a loss was not finite during the run", file=sys.stderr)
    print_tables(output, device)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
