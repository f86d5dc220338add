"""INTL training step against its bound, and IterNorm's cost alone (``intl-train``).

Both modes run on random inputs already in memory, one torch thread by default, glibc malloc tuned at start-up
(:func:`~selfsup.shared.runtime.cpu.tune_malloc`) as ``intl-train`` does.

``--mode step`` (default): ``intl-train`` itself is started (``TrainingRun.start(INTLTrainer(args), args)`` on
the trainer's own flags, so every default and check is the trainer's; its data, the embedded digits, are unused)
and its step is called as the loop calls it, ``run.step(batch)``, on one fixed batch of random crops. The
schedule is the trainer's for ``--num_samples`` images per epoch (default ImageNet's) over its 100 epochs; the
step counter starts after the 2 warm-up epochs (lr = base). Kinds rotate inside every round (medians reported):

* ``bound`` - the work no INTL step can avoid: each crop's trunk + projector forward (the trainer's autocast and
  per-crop calls) and backward of the sum of the outputs, gradients zeroed; no gather, whitening, INTL loss or
  optimiser. For ``intl_m`` the online network sees crops 1 ... V-1 and the EMA target's no-grad forward runs
  on crop 0, as in the trainer's step.
* ``full`` - ``run.step``: crops moved (channels-last with ``--channels_last``), lr, EMA update (``intl_m``),
  each crop's forward, ``intl_objective`` (IterNorm or ``--spectral_power`` of each output in fp32, the INTL
  loss), ``zero_grad``, scaled backward, SGD. Target: full/bound >= 0.97 in images/s.
* ``parts`` - ``run.step`` with a timer (synchronised on CUDA) at each seam of the step: after the lr (prepare),
  the EMA update, the target forward, the online forward, each whitening call, the loss, the backward and the
  optimiser; with the bound's own (CPU) timers they split the gap. ``parts``/``full`` is an A/A ratio.

Before the timed rounds two fresh runs (same seed) take ``--check_steps`` steps, one as ``full``, one as
``parts``: losses, weights, buffers and momentum buffers are compared bitwise (the timers change nothing).

``--mode iternorm``: :func:`~selfsup.intl.whitening.iter_norm` alone (fp32, ``--iters``), forward + backward
of a fixed output gradient on ``--iternorm_batch`` x ``--iternorm_dim`` (256 x 8192: one crop of the paper's
ImageNet step) at axis 0 (``N x N``) and at axis 1 for each ``--axis1_dims`` D (``D x D``, O(D^3): measured
at D <= 2048 and extrapolated with t = a D^3 + b D^2), the spectral power transform at axis 0, and the INTL
loss of two crops. ``--estimate_arch`` (default ``resnet50`` at 2 x 224 px, projector 8192-8192-8192) also
times, on the trainer started with that network, the bound at ``--estimate_batch`` and the SGD step; the step
at the IterNorm batch is estimated as bound x batch / estimate_batch + SGD + 2 whitening calls + loss, and
IterNorm's share of it reported for both axes.

Usage: ``python benchmarks/bench_intl_step.py`` then ``python benchmarks/bench_intl_step.py --mode
iternorm``; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
from machine import device_description, machine_info, store_runs
from step_timing import (
    Laps,
    kind_summary,
    load_averages,
    load_runs,
    markdown_header,
    markdown_row,
    median,
    milliseconds,
    no_laps,
    paired_ratio,
    resolve_device,
    threads_suffix,
    timed,
)

from selfsup.intl import loss as intl_loss_module
from selfsup.intl import train as intl_train
from selfsup.intl.cli import parse_args
from selfsup.intl.loss import intl_loss, trade_off
from selfsup.intl.train import INTLTrainer
from selfsup.intl.whitening import iter_norm, spectral_power_transform
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.precision import PRECISIONS, autocast, check_precision
from selfsup.shared.runtime.trainer import TrainingRun

BENCHMARK = "intl_step"
STEP_KINDS = ("bound", "full", "parts")
TARGET_RATIO = 0.97
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_KEY = ("mode", "label")
SMALL_WIDTH = 32  # default --width of resnet18 here (the architecture's own is 64)
CIFAR_STEM_MAX_SIDE = 64  # --cifar_stem auto: on when the largest crop is at most this side
IMAGENET_TRAIN = 1_281_167
PART_NAMES = ("prepare", "ema", "target_forward", "forward", "whitening", "loss", "backward", "optimizer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--mode", default="step", choices=("step", "iternorm"), help="step vs bound, or IterNorm alone")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if any")
    add("--threads", type=int, default=1, help="torch CPU threads (default 1, see README)")
    add("--warmup", type=int, default=1, help="untimed rounds")
    add("--repeats", type=int, default=None, help="timed rounds (default: 12 for step, 4 for iternorm)")
    add("--seed", type=int, default=0, help="seed of weights and inputs")
    add("--label", default=None, help="row label (default: derived from the configuration)")
    add("--output", type=Path, default=None, help="results JSON, updated in place (default: "
        "benchmarks/results/intl_step_<device>.json)")  # fmt: skip
    add("--iters", type=int, default=4, help="IterNorm Newton iterations T (both modes)")
    step = parser.add_argument_group("--mode step (the trainer's flags, with small defaults)").add_argument
    step("--method", default="intl", choices=("intl", "intl_m"), help="the trainer's --method")
    step("--arch", default="resnet18", choices=sorted(ARCHITECTURES), help="trunk")
    step("--width", type=int, default=None,
         help=f"trunk base width (default: {SMALL_WIDTH} for resnet18, else the architecture's)")  # fmt: skip
    step("--cifar_stem", default="auto", choices=("auto", "true", "false"),
         help=f"3x3/1 stem without max-pool; auto: on when the largest crop is <= {CIFAR_STEM_MAX_SIDE} px")  # fmt: skip
    step("--nmb_crops", type=int, nargs="+", default=[2], help="crops per entry")
    step("--crops_size", type=int, nargs="+", default=[32], help="side of each entry's crops")
    step("--batch_size", type=int, default=32, help="images per step (the trainer's --bs)")
    step("--projection_layers", type=int, default=3, help="projector layers")
    step("--projection_size", type=int, default=1024, help="projector hidden units")
    step("--emb", type=int, default=1024, help="embedding dimension")
    step("--axis", type=int, default=0, choices=(0, 1), help="the trainer's --axis")
    step("--spectral_power", type=float, default=None, help="the trainer's --spectral_power")
    step("--lr", type=float, default=0.5, help="the trainer's --lr (x batch / 256)")
    step("--wd", type=float, default=1e-5, help="the trainer's --wd")
    step("--m", type=float, default=0.996, help="the trainer's --m (intl_m)")
    step("--cifar", action="store_true", help="the trainer's --cifar (decay on every parameter)")
    step("--num_samples", type=int, default=IMAGENET_TRAIN, help="images per epoch of the lr/EMA schedule")
    step("--precision", default="fp32", choices=PRECISIONS, help="the trainer's --precision")
    step("--channels_last", action="store_true", help="the trainer's --channels_last")
    step("--check_steps", type=int, default=2, help="steps of the bitwise full-vs-parts check (0: skip)")
    it = parser.add_argument_group("--mode iternorm").add_argument
    it("--iternorm_batch", type=int, default=256, help="rows N of the whitened embedding")
    it("--iternorm_dim", type=int, default=8192, help="features D (axis 0, and the D estimated)")
    it("--axis1_dims", type=int, nargs="+", default=[512, 1024, 2048],
       help="D at which axis 1 (D x D) is measured; --iternorm_dim among them measures it directly")  # fmt: skip
    it("--estimate_arch", default="resnet50", help="trunk of the estimated step ('none': skip)")
    it("--estimate_image_size", type=int, default=224, help="its crop side (2 crops)")
    it("--estimate_batch", type=int, default=8, help="batch of its measured bound steps")
    it("--estimate_projection", type=int, default=8192, help="its projector hidden units and --emb")
    return parser


def resolved_width(args: argparse.Namespace) -> int:
    if args.width is not None:
        return args.width
    return SMALL_WIDTH if args.arch == "resnet18" else ARCHITECTURES[args.arch][2]


def resolved_cifar_stem(args: argparse.Namespace) -> bool:
    if args.cifar_stem == "auto":
        return max(args.crops_size) <= CIFAR_STEM_MAX_SIDE
    return args.cifar_stem == "true"


def step_argv(args: argparse.Namespace) -> list[str]:
    """``intl-train``'s flags for this configuration (its defaults for everything else)."""
    n = len(args.nmb_crops)
    if len(args.crops_size) != n:
        raise SystemExit("bench_intl_step: --crops_size needs one value per --nmb_crops entry")
    argv = ["--arch", args.arch, "--width", str(resolved_width(args)), "--method", args.method]
    argv += ["--bs", str(args.batch_size), "--nmb_crops", *map(str, args.nmb_crops)]
    argv += ["--crops_size", *map(str, args.crops_size)]
    # augmentation-only lists: one value per entry, as the trainer's checks require
    argv += ["--min_scale_crops", *["0.2"] * n, "--max_scale_crops", *["1.0"] * n]
    argv += ["--gaussian_prob", *["0.5"] * n, "--solarization_prob", *["0.1"] * n]
    for flag in (
        "projection_layers",
        "projection_size",
        "emb",
        "iters",
        "axis",
        "lr",
        "wd",
        "m",
        "precision",
    ):
        argv += [f"--{flag}", str(getattr(args, flag))]
    if args.spectral_power is not None:
        argv += ["--spectral_power", str(args.spectral_power)]
    argv += ["--cifar_stem"] if resolved_cifar_stem(args) else []
    argv += ["--channels_last"] if args.channels_last else []
    return argv + (["--cifar"] if args.cifar else [])


def start_trainer(argv: list[str], seed: int, device: torch.device, ckpt_dir: str) -> TrainingRun:
    """``intl-train`` started as its console command starts it (malloc already tuned; nothing trains)."""
    argv = [*argv, "--seed", str(seed), "--device", device.type, "--ckpt_dir", ckpt_dir, "-j", "0"]
    argv += ["--no_malloc_tuning", "--no_tensorboard", "--no_progress"]
    targs = parse_args(argv)
    run = TrainingRun.start(INTLTrainer(targs), targs, ["intl-train", *argv])
    run.method.on_epoch_start(0)
    return run


def step_label(args: argparse.Namespace, precision: str, device: torch.device) -> str:
    """E.g. ``intl resnet18 w32 cifar-stem 2x32 b32 proj1024-1024 axis0 T4 fp32 1thr``."""
    crops = "+".join(f"{n}x{s}" for n, s in zip(args.nmb_crops, args.crops_size))
    parts = [args.method, f"{args.arch} w{resolved_width(args)}"] + (
        ["cifar-stem"] if resolved_cifar_stem(args) else []
    )
    parts += [crops, f"b{args.batch_size}", f"proj{args.projection_size}-{args.emb}", f"axis{args.axis}"]
    parts.append(f"T{args.iters}" if args.spectral_power is None else f"spectral{args.spectral_power:g}")
    parts += (["cifar-recipe"] if args.cifar else []) + [precision]
    parts += ["channels-last"] if args.channels_last else []
    return " ".join(parts) + threads_suffix(device)


def iternorm_label(args: argparse.Namespace, device: torch.device) -> str:
    dims = ",".join(map(str, args.axis1_dims))
    est = "" if args.estimate_arch == "none" else f" est {args.estimate_arch} b{args.estimate_batch}"
    return (
        f"iternorm N{args.iternorm_batch} D{args.iternorm_dim} axis1 D{dims} T{args.iters} fp32{est}"
        f"{threads_suffix(device)}"
    )


# ------------------------------------------------------------------------------------------ measurement


def _lapped(
    fn: Callable[..., Any], lap: Callable[[str], None], before: tuple[str, ...], after: tuple[str, ...]
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        for name in before:
            lap(name)
        out = fn(*args, **kwargs)
        for name in after:
            lap(name)
        return out

    return call


class INTLSteps:
    """The started trainer, its schedule set to ``--num_samples`` images per epoch, one fixed batch of crops."""

    def __init__(self, args: argparse.Namespace, device: torch.device, ckpt_dir: str) -> None:
        self.run = run = start_trainer(step_argv(args), args.seed, device, ckpt_dir)
        self.method, self.targs = method, targs = run.method, run.ctx.args
        self.device, self.precision = device, run.ctx.precision
        iters_per_epoch = max(args.num_samples // targs.bs, 1)
        method.total_steps = targs.epochs * iters_per_epoch
        method.warmup_steps = targs.warmup_eps * iters_per_epoch
        run.ctx.global_step = method.warmup_steps  # the first step after the warm-up: lr = base
        self.crops = [
            torch.randn(targs.bs, 3, size, size, device=device)
            for n, size in zip(targs.nmb_crops, targs.crops_size)
            for _ in range(n)
        ]
        self.batch = (self.crops, torch.zeros(targs.bs, dtype=torch.long))
        model = method.model
        self.parameters = sum(p.numel() for p in model.parameters())
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.trunk_parameters = sum(p.numel() for p in model.backbone.parameters())
        group = method.optimizer.param_groups[0]
        self.optimizer_path = (
            "fused" if group.get("fused") else ("foreach" if group.get("foreach") else "for-loop")
        )

    def bound(self, lap: Callable[[str], None] = no_laps) -> None:
        """Each crop's trunk + projector forward (autocast, the trainer's per-crop calls) and backward; loss =
        sum of the outputs; for ``intl_m`` also the target's no-grad forward on crop 0."""
        model, ema = self.method.model, self.targs.method == "intl_m"
        crops = [c.to(self.device, non_blocking=True) for c in self.crops]
        if self.targs.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        with autocast(self.precision, self.device):
            if ema:
                target = model.forward_target(crops[0])
                lap("target_forward")
            outputs = [self.method.runner(x) for x in crops[1 if ema else 0 :]]
        lap("forward")
        loss = sum(o.float().sum() for o in outputs)
        model.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")
        if ema:
            del target

    def full(self) -> dict[str, torch.Tensor]:
        """The trainer's step, as its loop calls it."""
        return self.run.step(self.batch)

    @contextlib.contextmanager
    def _timers(self, lap: Callable[[str], None]) -> Iterator[None]:
        """Laps at the seams of the trainer's step (module docstring), the step itself unchanged: ``(object,
        attribute, laps before the call, laps after it)``."""
        model, ema = self.method.model, self.targs.method == "intl_m"
        seams = [
            (intl_train, "apply_lr", (), ("prepare",) if ema else ("prepare", "ema")),
            (intl_train, "intl_objective", ("forward",), ("loss",)),
            (intl_loss_module, "whiten", (), ("whitening",)),
            (self.run.ctx.scaler, "step", ("backward",), ()),
        ]
        if ema:
            seams += [
                (model, "momentum_update", (), ("ema",)),
                (model, "forward_target", (), ("target_forward",)),
            ]
        with contextlib.ExitStack() as stack:
            for owner, name, before, after in seams:
                wrapped = _lapped(getattr(owner, name), lap, before, after)
                stack.enter_context(mock.patch.object(owner, name, wrapped))
            yield

    def parts(self, lap: Callable[[str], None]) -> dict[str, torch.Tensor]:
        """:meth:`full` with a lap at each seam of the step."""
        with self._timers(lap):
            out = self.run.step(self.batch)
            lap("optimizer")
        return out

    def state(self) -> list[torch.Tensor]:
        """Weights, buffers (BN statistics, EMA copies) and SGD momentum buffers, for the replica check."""
        optimizer = self.method.optimizer
        tensors = [t.detach() for t in self.method.model.state_dict().values()]
        for group in optimizer.param_groups:
            tensors += [
                optimizer.state[p]["momentum_buffer"] for p in group["params"] if p in optimizer.state
            ]
        return tensors


def replica_check(args: argparse.Namespace, device: torch.device, ckpt_dir: str) -> dict[str, Any] | None:
    """Two fresh runs, ``--check_steps`` steps each: one through ``full``, one through ``parts``; losses and
    every state tensor compared bitwise."""
    if args.check_steps < 1:
        return None
    a, b = INTLSteps(args, device, ckpt_dir), INTLSteps(args, device, ckpt_dir)
    losses_a = [float(a.full()["loss"]) for _ in range(args.check_steps)]
    losses_b = [float(b.parts(no_laps)["loss"]) for _ in range(args.check_steps)]
    state_a, state_b = a.state(), b.state()
    diffs = [
        float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(state_a, state_b)
    ]
    return {
        "steps": args.check_steps,
        "losses_full": losses_a,
        "losses_parts": losses_b,
        "losses_bitwise_equal": losses_a == losses_b,
        "state_tensors": len(state_a),
        "state_bitwise_equal": len(state_a) == len(state_b)
        and all(torch.equal(x, y) for x, y in zip(state_a, state_b)),
        "state_max_abs_diff": max(diffs) if diffs else 0.0,
    }


def rounds(
    args: argparse.Namespace, names: list[str], measure: Callable[[str], dict[str, Any] | None]
) -> dict[str, Any]:
    """``measure(name)`` of every name in rotating order inside each round; the records of the timed rounds
    and the load averages."""
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    load_rounds, load_before = [], os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            rec = measure(name)
            if round_index >= args.warmup and rec is not None:
                records[name].append({"round": round_index - args.warmup, **rec})
        load_rounds.append(os.getloadavg()[0])
        print(f"[bench_intl_step] round {round_index + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return {
        "records": records,
        "load_average": [load_before, os.getloadavg()],
        "load_1min_per_round": load_rounds,
    }


def measure_steps(args: argparse.Namespace, device: torch.device, ckpt_dir: str) -> dict[str, Any]:
    check = replica_check(args, device, ckpt_dir)
    steps = INTLSteps(args, device, ckpt_dir)
    cpu, losses = device.type == "cpu", []

    def measure(kind: str) -> dict[str, Any]:
        laps, out = Laps(device, sync=kind == "parts"), {}
        if kind == "bound":
            rec = timed(device, lambda: steps.bound(laps if cpu else no_laps))
        else:
            rec = timed(device, lambda: out.update(steps.parts(laps) if kind == "parts" else steps.full()))
            losses.append(float(out["loss"]))
        return {**rec, **laps.times}

    raw = rounds(args, list(STEP_KINDS), measure)
    steps.run.close()
    return {
        **raw,
        "precision": steps.precision,
        "optimizer_path": steps.optimizer_path,
        "parameters": steps.parameters,
        "trainable_parameters": steps.trainable_parameters,
        "trunk_parameters": steps.trunk_parameters,
        "forward_crops": len(steps.crops),
        "crop_sides": [int(c.shape[-1]) for c in steps.crops],
        "base_lr": steps.method.base_lr,
        "schedule": {"total_steps": steps.method.total_steps, "warmup_steps": steps.method.warmup_steps},
        "losses_finite": bool(np.all(np.isfinite(losses))),
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "replica_check": check,
    }


class EstimateSteps:
    """``intl-train`` started with ``--estimate_arch`` at ``--estimate_batch`` (2 crops): the bound (trunk +
    projector forward and backward) and the trainer's SGD step over its parameters."""

    def __init__(self, args: argparse.Namespace, device: torch.device, ckpt_dir: str) -> None:
        side, proj = str(args.estimate_image_size), str(args.estimate_projection)
        argv = ["--arch", args.estimate_arch, "--bs", str(args.estimate_batch), "--projection_size", proj]
        self.run = start_trainer(
            [*argv, "--emb", proj, "--crops_size", side, side], args.seed, device, ckpt_dir
        )
        self.model = self.run.method.model
        self.crops = [
            torch.randn(args.estimate_batch, 3, int(side), int(side), device=device) for _ in range(2)
        ]
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.trunk_parameters = sum(p.numel() for p in self.model.backbone.parameters())

    def bound(self) -> None:
        outputs = [self.model(x) for x in self.crops]
        self.model.zero_grad(set_to_none=True)
        sum(o.float().sum() for o in outputs).backward()

    def sgd(self) -> None:
        self.run.ctx.scaler.step(self.run.method.optimizer)
        self.run.ctx.scaler.update()


def measure_iternorm(args: argparse.Namespace, device: torch.device, ckpt_dir: str) -> dict[str, Any]:
    """Every case (and the estimate's bound) in rotating order inside each round."""
    n, d = args.iternorm_batch, args.iternorm_dim
    gen = torch.Generator().manual_seed(args.seed)

    def leaf(rows: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(rows, dim, generator=gen).to(device).requires_grad_()
        return x, torch.randn(rows, dim, generator=gen).to(device)

    x0, g0 = leaf(n, d)
    axis0 = {"x": x0, "g": g0, "axis": 0, "rows": n, "dim": d, "matrix": n}
    cases: dict[str, dict[str, Any]] = {
        "iter_norm axis0": {"fn": lambda x: iter_norm(x, iters=args.iters, axis=0), **axis0},
        "spectral_power axis0": {"fn": lambda x: spectral_power_transform(x, power=-0.5, axis=0), **axis0},
    }
    for dim in args.axis1_dims:
        x1, g1 = leaf(n, dim)
        cases[f"iter_norm axis1 D{dim}"] = {
            "fn": lambda x: iter_norm(x, iters=args.iters, axis=1), "x": x1, "g": g1, "axis": 1, "rows": n,
            "dim": dim, "matrix": dim,
        }  # fmt: skip
    za, zb = leaf(n, d)[0], leaf(n, d)[0]
    beta = trade_off(n, d, 0)
    estimate = None
    if args.estimate_arch != "none":
        print(f"[bench_intl_step] building {args.estimate_arch}", file=sys.stderr)
        estimate = EstimateSteps(args, device, ckpt_dir)
    finite: dict[str, bool] = {}

    def measure(name: str) -> dict[str, Any]:
        laps = Laps(device, sync=True)
        if name == "estimate":
            assert estimate is not None
            return {**timed(device, estimate.bound), "sgd_seconds": timed(device, estimate.sgd)["seconds"]}
        if name == "intl_loss 2 crops":
            a, b = za.detach().requires_grad_(), zb.detach().requires_grad_()

            def run_loss() -> None:
                loss = intl_loss([a, b], beta=beta, axis=0)
                laps("forward")
                loss.backward()
                laps("backward")

            return {**timed(device, run_loss), **laps.times}
        case, out = cases[name], {}
        case["x"].grad = None

        def run() -> None:
            z = case["fn"](case["x"])
            laps("forward")
            z.backward(case["g"])
            laps("backward")
            out["z"] = z.detach()

        rec = {**timed(device, run), **laps.times}
        finite[name] = bool(torch.isfinite(out["z"]).all()) and bool(torch.isfinite(case["x"].grad).all())
        return rec

    names = [*cases, "intl_loss 2 crops"] + (["estimate"] if estimate is not None else [])
    raw = rounds(args, names, measure)
    return {
        **raw,
        "cases": {k: {f: c[f] for f in ("axis", "rows", "dim", "matrix")} for k, c in cases.items()},
        "finite": finite,
        "estimate_parameters": None
        if estimate is None
        else {"all": estimate.parameters, "trunk": estimate.trunk_parameters},
    }


# --------------------------------------------------------------------------------------------- summary


def comparison(kinds: dict[str, Any], records: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """full/bound ratios, the A/A ratio and the gap split into the step's parts."""
    b, f, p = kinds["bound"], kinds["full"], kinds["parts"]
    ratio = f["images_per_s"] / b["images_per_s"]
    fp, bp = p["parts_s_median"], b["parts_s_median"]
    cpu = device.type == "cpu"

    def extra(name: str) -> float | None:
        return fp[name] - bp[name] if name in fp and name in bp else None

    return {
        "ratio_full_over_bound": ratio,
        "ratio_paired_median": paired_ratio(records, "bound", "full"),
        "ratio_of_min_steps": b["step_s_min"] / f["step_s_min"],
        "ratio_of_cpu_time_medians": b["step_cpu_s_median"] / f["step_cpu_s_median"],
        "aa_ratio_full_over_full": p["step_s_median"] / f["step_s_median"] if cpu else None,
        "aa_ratio_paired_median": paired_ratio(records, "parts", "full") if cpu else None,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "gap_s": f["step_s_median"] - b["step_s_median"],
        "parts_s_median": {name: fp.get(name, 0.0) for name in PART_NAMES},
        "gap_breakdown_s": {
            "prepare": fp["prepare"],
            "ema_update": fp["ema"],
            "target_forward_extra": extra("target_forward"),
            "forward_extra": extra("forward"),
            "whitening": fp["whitening"],
            "loss": fp["loss"],
            "backward_extra": extra("backward"),
            "optimizer": fp["optimizer"],
        },
    }


def summarize_steps(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    kinds = {kind: kind_summary(recs, args.batch_size) for kind, recs in records.items()}
    skip = ("output", "label", "mode", "device", "cifar_stem", "width", "axis1_dims")
    skip += tuple(k for k in vars(args) if k.startswith(("iternorm_", "estimate_")))
    copied = (
        "trainable_parameters",
        "trunk_parameters",
        "forward_crops",
        "crop_sides",
        "base_lr",
        "schedule",
    )
    copied += ("losses_finite", "loss_first_last", "replica_check")
    return {
        "mode": "step",
        "label": args.label or step_label(args, raw["precision"], device),
        "device": device.type,
        "config": {
            **{k: v for k, v in vars(args).items() if k not in skip},
            "width": resolved_width(args),
            "cifar_stem": resolved_cifar_stem(args),
            "device": device.type,
            "threads": torch.get_num_threads(),
        },
        "precision_resolved": raw["precision"],
        "optimizer": f"sgd ({raw['optimizer_path']}; momentum 0.9, split_param_groups)",
        "parameters": raw["parameters"],
        **{key: raw[key] for key in copied},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kinds": kinds,
        "intl": comparison(kinds, records, device),
        "load_average_1_5_15_min_before_after": raw["load_average"],
        "load_1min_per_round": raw["load_1min_per_round"],
    }


def _fit_cubic(dims: list[int], seconds: list[float], target: int) -> dict[str, Any]:
    """``t = a D^3 + b D^2`` by least squares on relative errors (b >= 0, else pure cubic); t(target)."""
    d, t = np.asarray(dims, dtype=float), np.asarray(seconds, dtype=float)
    out: dict[str, Any] = {"dims": dims, "seconds": seconds, "target_dim": target}
    largest = int(np.argmax(d))
    out["cubic_from_largest_s"] = float(t[largest] * (target / d[largest]) ** 3)
    if len(dims) < 2:
        out["fit_s"] = out["cubic_from_largest_s"]
        return out
    (a, b), *_ = np.linalg.lstsq(np.stack([d**3, d**2], axis=1) / t[:, None], np.ones_like(t), rcond=None)
    if b < 0 or a <= 0:
        a, b = float(np.sum(t * d**3) / np.sum(d**6)), 0.0
    out.update(a=float(a), b=float(b), fit_s=float(a * target**3 + b * target**2))
    out["fit_relative_errors"] = [float(v) for v in (a * d**3 + b * d**2) / t - 1]
    order = np.argsort(d)
    out["log_log_slopes"] = [
        float(np.log(t[j] / t[i]) / np.log(d[j] / d[i])) for i, j in itertools.pairwise(order)
    ]
    return out


def summarize_iternorm(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    cases = []
    for name, info in raw["cases"].items():
        s = kind_summary(records[name], 1)
        ms = {f"ms_{k}": 1e3 * s[f"step_s_{k}"] for k in ("median", "min", "q1", "q3")}
        cases.append({
            "case": name, **info, **ms,
            "forward_ms_median": 1e3 * s["parts_s_median"]["forward"],
            "backward_ms_median": 1e3 * s["parts_s_median"]["backward"],
            "cpu_ms_median": 1e3 * s["step_cpu_s_median"], "runs": s["steps"],
            "ms_all": [1e3 * v for v in s["step_s_all"]], "finite": raw["finite"].get(name),
        })  # fmt: skip
    loss = kind_summary(records["intl_loss 2 crops"], 1)
    loss_ms = 1e3 * loss["step_s_median"]
    n, d = args.iternorm_batch, args.iternorm_dim
    by_name = {c["case"]: c for c in cases}
    axis1 = [c for c in cases if c["case"].startswith("iter_norm axis1")]
    direct = [c for c in axis1 if c["dim"] == d]
    fit = _fit_cubic([c["dim"] for c in axis1], [c["ms_median"] / 1e3 for c in axis1], d)
    whitening = {
        "axis0": {
            "ms_per_call": by_name["iter_norm axis0"]["ms_median"],
            "measured": True,
            "matrix": f"{n} x {n}",
        },
        "axis1": {
            "ms_per_call": direct[0]["ms_median"] if direct else 1e3 * fit["fit_s"],
            "measured": bool(direct),
            "matrix": f"{d} x {d}",
            "extrapolation": fit,
            "ms_per_call_cubic_from_largest": 1e3 * fit["cubic_from_largest_s"],
        },
        "spectral_power_axis0": {"ms_per_call": by_name["spectral_power axis0"]["ms_median"]},
    }
    estimate = None
    if "estimate" in records:
        recs = records["estimate"]
        bound_s, sgd_s = median([r["seconds"] for r in recs]), median([r["sgd_seconds"] for r in recs])
        bound_at = bound_s * n / args.estimate_batch
        p = args.estimate_projection
        estimate = {
            "arch": args.estimate_arch, "image_size": args.estimate_image_size, "crops": 2,
            "projector": f"{p}-{p}-{p}", "parameters": raw["estimate_parameters"],
            "measured_batch": args.estimate_batch, "steps": len(recs), "bound_s_median": bound_s,
            "bound_s_all": [r["seconds"] for r in recs], "sgd_s_median": sgd_s,
            "sgd_s_all": [r["sgd_seconds"] for r in recs], "batch": n, "bound_at_batch_s": bound_at,
            "loss_ms": loss_ms,
            "method": "step(B) = bound(measured batch) x B / measured batch + SGD + 2 x whitening(B) + loss(B)",
        }  # fmt: skip

        def step_with(whiten_s: float) -> float:
            return bound_at + sgd_s + whiten_s + loss_ms / 1e3

        for key in ("axis0", "axis1"):
            w = whitening[key]
            whiten_s = 2 * w["ms_per_call"] / 1e3
            w.update(estimated_step_s=step_with(whiten_s), ms_per_step=1e3 * whiten_s)
            w["share_of_estimated_step"] = whiten_s / step_with(whiten_s)
        w = whitening["axis1"]
        whiten_s = 2 * w["ms_per_call_cubic_from_largest"] / 1e3
        w["share_of_estimated_step_cubic_from_largest"] = whiten_s / step_with(whiten_s)
    config = {k: getattr(args, k) for k in ("iternorm_batch", "iternorm_dim", "axis1_dims", "iters")}
    config |= {"dtype": "fp32", **{k: v for k, v in vars(args).items() if k.startswith("estimate_")}}
    config |= {
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    return {
        "mode": "iternorm",
        "label": args.label or iternorm_label(args, device),
        "device": device.type,
        "config": config,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cases": cases,
        "intl_loss_2_crops_ms_median": loss_ms,
        "intl_loss_2_crops_ms_all": [1e3 * v for v in loss["step_s_all"]],
        "whitening": whitening,
        "estimate": estimate,
        "load_average_1_5_15_min_before_after": raw["load_average"],
        "load_1min_per_round": raw["load_1min_per_round"],
    }


# ---------------------------------------------------------------------------------------------- tables


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else milliseconds(value, digits)


def _checked(check: dict[str, Any] | None) -> str:
    if check is None:
        return "-"
    if check["losses_bitwise_equal"] and check["state_bitwise_equal"]:
        return f"bitwise equal ({check['steps']} step{'s' if check['steps'] > 1 else ''})"
    return f"differs (max {check['state_max_abs_diff']:.1e})"


#: (column, cell of a step run) of the three step tables
RATIO_TABLE = [
    ("configuration", lambda r: r["label"]),
    ("bound ms", lambda r: milliseconds(r["kinds"]["bound"]["step_s_median"])),
    ("full ms", lambda r: milliseconds(r["kinds"]["full"]["step_s_median"])),
    ("bound img/s", lambda r: f"{r['kinds']['bound']['images_per_s']:.1f}"),
    ("full img/s", lambda r: f"{r['kinds']['full']['images_per_s']:.1f}"),
    ("full/bound", lambda r: f"{r['intl']['ratio_full_over_bound']:.3f}"),
    (">= 0.97", lambda r: "yes" if r["intl"]["target_met"] else "no"),
    ("full/bound: fastest steps", lambda r: f"{r['intl']['ratio_of_min_steps']:.3f}"),
    ("full/bound: CPU time", lambda r: f"{r['intl']['ratio_of_cpu_time_medians']:.3f}"),
    ("full/bound: paired", lambda r: f"{r['intl']['ratio_paired_median']:.3f}"),
    (
        "A/A: full/full",
        lambda r: "-" if (aa := r["intl"].get("aa_ratio_full_over_full")) is None else f"{aa:.3f}",
    ),
    ("replica check", lambda r: _checked(r.get("replica_check"))),
    ("preemptions/step", lambda r: f"{r['kinds']['full']['preemptions_per_step']:.0f}"),
    ("load before / after", lambda r: load_averages(r["load_average_1_5_15_min_before_after"])),
]
GAP_TABLE = [
    ("configuration", lambda r: r["label"]),
    ("gap ms", lambda r: _ms(r["intl"]["gap_s"])),
    *[
        (title, lambda r, key=key, digits=digits: _ms(r["intl"]["gap_breakdown_s"][key], digits))
        for title, key, digits in (
            ("prepare ms", "prepare", 2),
            ("EMA update ms", "ema_update", 1),
            ("target forward extra ms", "target_forward_extra", 1),
            ("forward extra ms", "forward_extra", 1),
            ("whitening ms", "whitening", 1),
            ("loss ms", "loss", 1),
            ("backward extra ms", "backward_extra", 1),
            ("SGD ms", "optimizer", 1),
        )
    ],
]
PARTS_COLUMNS = ("configuration", "step", "prepare ms", "EMA update ms", "target forward ms", "forward ms")
PARTS_COLUMNS += ("whitening ms", "loss ms", "backward ms", "SGD ms")
PARTS_DIGITS = {"prepare": 2, "ema": 1, "target_forward": 0, "forward": 0, "whitening": 1, "loss": 1}
PARTS_DIGITS |= {"backward": 0, "optimizer": 1}


def parts_rows(run: dict[str, Any]) -> list[str]:
    """Medians of the parts pass and the bound's own laps, side by side."""
    fp, bp = run["intl"]["parts_s_median"], run["kinds"]["bound"]["parts_s_median"]
    if run["config"]["method"] != "intl_m":
        fp = {**fp, "target_forward": None}
    rows = [[run["label"], "full (parts pass)", *(_ms(fp[k], PARTS_DIGITS[k]) for k in PART_NAMES)]]
    if bp:
        rows.append([run["label"], "bound", *(_ms(bp.get(k), PARTS_DIGITS[k]) for k in PART_NAMES)])
    return [markdown_row(row) for row in rows]


ITERNORM_TABLE = [
    ("case", lambda c, r: c["case"]),
    ("N x D", lambda c, r: f"{c['rows']:,} x {c['dim']:,}"),
    ("matrix", lambda c, r: f"{c['matrix']:,} x {c['matrix']:,}"),
    ("forward ms", lambda c, r: f"{c['forward_ms_median']:.1f}"),
    ("backward ms", lambda c, r: f"{c['backward_ms_median']:.1f}"),
    ("forward + backward ms (median)", lambda c, r: f"{c['ms_median']:.1f}"),
    ("q1 - q3 ms", lambda c, r: f"{c['ms_q1']:.1f} - {c['ms_q3']:.1f}"),
    ("runs", lambda c, r: str(c["runs"])),
    ("load before / after", lambda c, r: load_averages(r["load_average_1_5_15_min_before_after"])),
]
SHARE_COLUMNS = (
    "IterNorm",
    "matrix",
    "ms per call",
    "ms per step (2 crops)",
    "estimated step s",
    "share of step",
)
SHARE_COLUMNS += ("how",)


def share_rows(run: dict[str, Any]) -> list[str]:
    est, rows = run.get("estimate"), []
    for key in ("axis0", "axis1"):
        w, how = run["whitening"][key], "measured"
        if not w["measured"]:
            fit = w["extrapolation"]
            how = f"extrapolated: D^3 from D = {fit['dims'][0]}"
            if "a" in fit:
                how = (
                    f"extrapolated: a D^3 + b D^2 fitted at D = {', '.join(map(str, fit['dims']))} (pure D^3 from "
                    f"D = {max(fit['dims'])}: {w['ms_per_call_cubic_from_largest'] / 1e3:.0f} s per call"
                )
                how += (
                    f", share {100 * w['share_of_estimated_step_cubic_from_largest']:.1f}%)" if est else ")"
                )
        cells = [key.replace("axis", "axis "), w["matrix"], f"{w['ms_per_call']:,.0f}"]
        if est:
            cells += [f"{w['ms_per_step']:,.0f}", f"{w['estimated_step_s']:.1f}"]
            cells.append(f"{100 * w['share_of_estimated_step']:.1f}%")
        rows.append(markdown_row([*cells, *(["-"] * 3 if not est else []), how]))
    return rows


def estimate_line(run: dict[str, Any]) -> str:
    est = run.get("estimate")
    if not est:
        return ""
    return (
        f"{est['arch']} {est['image_size']}px x2 crops, projector {est['projector']} "
        f"({est['parameters']['all'] / 1e6:.1f} M parameters): bound {1e3 * est['bound_s_median']:.0f} ms at "
        f"batch {est['measured_batch']} ({est['steps']} steps) -> {est['bound_at_batch_s']:.1f} s at batch "
        f"{est['batch']}; SGD step {1e3 * est['sgd_s_median']:.0f} ms; INTL loss of 2 crops "
        f"{est['loss_ms']:.1f} ms"
    )


def fit_checks(runs: list[dict[str, Any]]) -> list[str]:
    """Axis-1 times measured in one iternorm run at a D that another run's fit only predicts."""
    lines = []
    for fitted in runs:
        fit = fitted["whitening"]["axis1"]["extrapolation"]
        if "a" not in fit:
            continue
        for other in runs:
            for c in other["cases"]:
                if (
                    c["axis"] != 1
                    or c["dim"] in fit["dims"]
                    or c["rows"] != fitted["config"]["iternorm_batch"]
                ):
                    continue
                predicted = fit["a"] * c["dim"] ** 3 + fit["b"] * c["dim"] ** 2
                lines.append(
                    f"iter_norm axis 1 at D = {c['dim']}: measured {c['ms_median'] / 1e3:.1f} s "
                    f"({other['label']}); predicted {predicted:.1f} s by the fit of {fitted['label']} "
                    f"(measured / predicted {c['ms_median'] / 1e3 / predicted:.3f})"
                )
    return lines


def print_tables(output: Path, device: torch.device) -> None:
    runs = [r for r in load_runs(output) if r.get("device") == device.type]
    steps = [r for r in runs if r["mode"] == "step"]
    if steps:
        for i, table in enumerate((RATIO_TABLE, GAP_TABLE)):
            print(("\n" if i else "") + markdown_header([title for title, _ in table]))
            for run in steps:
                print(markdown_row([cell(run) for _, cell in table]))
        print("\n" + markdown_header(PARTS_COLUMNS))
        for run in steps:
            print("\n".join(parts_rows(run)))
    iternorm = [r for r in runs if r["mode"] == "iternorm"]
    for run in iternorm:
        print(f"\n{run['label']}\n" + markdown_header([title for title, _ in ITERNORM_TABLE]))
        for c in run["cases"]:
            print(markdown_row([cell(c, run) for _, cell in ITERNORM_TABLE]))
        print("\n" + markdown_header(SHARE_COLUMNS) + "\n" + "\n".join(share_rows(run)))
        if line := estimate_line(run):
            print(line)
    if checks := fit_checks(iternorm):
        print("\n" + "\n".join(checks))


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    malloc = tune_malloc()  # as intl-train does at start-up (before the first large allocation)
    device = resolve_device(args.device, "bench_intl_step")
    check_precision(args.precision, device)
    torch.set_num_threads(args.threads)
    if args.repeats is None:
        args.repeats = 12 if args.mode == "step" else 4
    if args.repeats < 1 or args.warmup < 1:
        raise SystemExit("bench_intl_step: --repeats and --warmup must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-intl-") as ckpt_dir:  # the runs' config.json
        if args.mode == "step":
            run = summarize_steps(measure_steps(args, device, ckpt_dir), args, device)
        else:
            run = summarize_iternorm(measure_iternorm(args, device, ckpt_dir), args, device)
    info = machine_info(device)
    run["malloc"] = malloc.detail
    run["machine"] = {**info, "malloc": malloc.detail}
    run["machine_description"] = device_description(info, device.type)
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{device.type}.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads")
    if run["mode"] == "step":
        c, kinds = run["intl"], run["kinds"]
        gap = ", ".join(
            f"{k} {milliseconds(v, 1)} ms" for k, v in c["gap_breakdown_s"].items() if v is not None
        )
        print(
            f"{run['label']}: bound {milliseconds(kinds['bound']['step_s_median'])} ms, full "
            f"{milliseconds(kinds['full']['step_s_median'])} ms per step; gap {milliseconds(c['gap_s'])} ms = "
            f"{gap}; paired ratio {c['ratio_paired_median']:.3f}"
        )
        if (rc := run["replica_check"]) is not None:
            print(
                f"replica check ({rc['steps']} steps, full vs parts): losses equal {rc['losses_bitwise_equal']}, "
                f"state equal {rc['state_bitwise_equal']} (max abs diff {rc['state_max_abs_diff']:.1e})"
            )
        if not run["losses_finite"]:
            print("warning: a loss was not finite during the run", file=sys.stderr)
    print_tables(output, device)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
