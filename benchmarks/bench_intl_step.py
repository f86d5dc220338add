"""INTL training step against its bound, and IterNorm's cost alone (``intl-train``).

Two modes, both on random inputs already in memory, one torch thread by default and glibc malloc tuned with
:func:`~selfsup.shared.runtime.cpu.tune_malloc` at start-up, as ``intl-train`` does.

``--mode step`` (default): the training step of ``intl-train`` against its bound. The trainer's step is
``step_fn``, a closure inside :func:`selfsup.intl.train.train` that cannot be called on its own; ``train.py``
is not changed for this benchmark. The script rebuilds the step instead, statement for statement, from the
pieces ``train.py`` exports and uses: ``parse_args`` (the trainer's own flags, so every default and check is
the trainer's), ``build_model``, ``run_precision``, ``compute_loss``, ``prepare_model``, the SGD optimiser
(``build_optimizer("sgd", split_param_groups(model, args.wd, exclude_bias_and_norm=not args.cifar), lr=...,
momentum=0.9, weight_decay=args.wd)``), ``make_grad_scaler``, ``apply_lr`` with ``linear_warmup_cosine_lr``
and, for ``--method intl_m``, ``model.momentum_update(ema_momentum(...))`` before the forward. The schedule is
the trainer's for ``--num_samples`` images per epoch (default ImageNet's) over its 100 epochs and 2 warm-up
epochs; the step counter starts at the end of the warm-up (learning rate = base). Step kinds run in rotating
order inside every round, so that load from other processes hits them alike; the report uses medians:

* ``bound`` - the work no INTL step can avoid: each crop's trunk + projector forward (under the trainer's
  autocast) and backward with the trainer's per-crop calls, loss = the sum of the projector outputs,
  gradients zeroed (``set_to_none``); no gather, no whitening, no INTL loss, no optimiser. For ``intl_m``
  the online network sees crops 1 ... V-1 and the bound also runs the EMA target's (no-grad) forward on crop
  0, as ``compute_loss`` does (as MoCo's bound includes its key encoder).
* ``full`` - ``step_fn``: crops moved (channels-last with ``--channels_last``), ``apply_lr``, the EMA update
  (``intl_m``), ``compute_loss`` (forward of each crop, IterNorm or ``--spectral_power`` of each output in
  fp32, the INTL loss), ``zero_grad``, scaled backward, ``scaler.step``/``update`` of SGD. Target:
  full/bound >= 0.97 in images/s (images = the batch; median step times).
* ``parts`` - the same step with ``compute_loss`` unrolled into its pieces and a timer between them
  (synchronised on CUDA): prepare (crops, lr), EMA update, target forward, online forward, whitening, loss,
  backward, optimiser. On CPU the bound's own (free) timers give its forward and backward, so the gap splits
  into parts; ``parts``/``full`` is an A/A ratio (the same work: the noise floor).

Before the timed rounds two fresh replicas (same seed) run ``--check_steps`` steps, one as ``full`` and one as
``parts``; their losses, weights, buffers and momentum buffers are compared bitwise (the unrolled step does the
trainer's work). The defaults (CIFAR-stem ResNet-18 of width 32, 2 crops of 32 px, batch 32, projector
1024-1024-1024) take about 0.35 s of CPU time per step on the 2-core CPU (0.5 s wall under load); the paper's
multi-crop set scaled down is ``--method intl_m --nmb_crops 2 1 1 1 1 --crops_size 32 28 24 20 16``.

``--mode iternorm``: :func:`selfsup.intl.whitening.iter_norm` alone (fp32, ``--iters`` 4), forward + backward
(a fixed random output gradient) on ``--iternorm_batch`` x ``--iternorm_dim`` (default 256 x 8192, one crop
of the paper's ImageNet step): axis 0 (the ``N x N`` covariance), axis 1 at the ``D`` of ``--axis1_dims`` (its
``D x D`` Newton iterations are O(D^3): at D = 8192 about 8 minutes per call on one core here, so by default
it is measured at D <= 2048 and extrapolated with t = a D^3 + b D^2 fitted to the measured sizes),
:func:`~selfsup.intl.whitening.spectral_power_transform` at axis 0 for comparison, and the INTL loss of two
whitened crops. ``--estimate_arch`` (default ``resnet50``, 2 x 224 px, projector 8192-8192-8192) also times
the bound (trunk + projector forward and backward of both crops) at ``--estimate_batch`` and the trainer's SGD
step; its step at the IterNorm batch is estimated as bound x batch / estimate_batch + SGD + 2 whitening calls
+ loss, and IterNorm's share of it reported for both axes. All cases rotate inside every round.

Usage: ``python benchmarks/bench_intl_step.py`` then ``python benchmarks/bench_intl_step.py --mode
iternorm``; larger models with e.g. ``--arch resnet50 --crops_size 224 --projection_size 8192 --emb 8192``;
see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from selfsup.intl.cli import parse_args
from selfsup.intl.loss import intl_loss, intl_m_loss, trade_off
from selfsup.intl.model import ema_momentum
from selfsup.intl.train import build_model, compute_loss, run_precision, whiten
from selfsup.intl.whitening import iter_norm, spectral_power_transform
from selfsup.shared.models.backbones import ARCHITECTURES
from selfsup.shared.optim.optimizers import build_optimizer, split_param_groups
from selfsup.shared.optim.schedules import apply_lr, linear_warmup_cosine_lr
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    make_grad_scaler,
    prepare_model,
)

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
    parser.add_argument(
        "--mode", default="step", choices=("step", "iternorm"), help="step vs bound, or IterNorm alone"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see README)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default: 12 for step, 4 for iternorm)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--label", default=None, help="row label (default: derived from the configuration)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, updated in place (default: benchmarks/results/intl_step_<device>.json)",
    )
    parser.add_argument("--iters", type=int, default=4, help="IterNorm Newton iterations T (both modes)")
    step = parser.add_argument_group("--mode step (the trainer's flags, with small defaults)")
    step.add_argument("--method", default="intl", choices=("intl", "intl_m"), help="the trainer's --method")
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
    step.add_argument("--nmb_crops", type=int, nargs="+", default=[2], help="crops per entry")
    step.add_argument("--crops_size", type=int, nargs="+", default=[32], help="side of each entry's crops")
    step.add_argument("--batch_size", type=int, default=32, help="images per step (the trainer's --bs)")
    step.add_argument("--projection_layers", type=int, default=3, help="projector layers")
    step.add_argument("--projection_size", type=int, default=1024, help="projector hidden units")
    step.add_argument("--emb", type=int, default=1024, help="embedding dimension")
    step.add_argument("--axis", type=int, default=0, choices=(0, 1), help="the trainer's --axis")
    step.add_argument("--spectral_power", type=float, default=None, help="the trainer's --spectral_power")
    step.add_argument("--lr", type=float, default=0.5, help="the trainer's --lr (x batch / 256)")
    step.add_argument("--wd", type=float, default=1e-5, help="the trainer's --wd")
    step.add_argument("--m", type=float, default=0.996, help="the trainer's --m (intl_m)")
    step.add_argument("--cifar", action="store_true", help="the trainer's --cifar (decay on every parameter)")
    step.add_argument(
        "--num_samples", type=int, default=IMAGENET_TRAIN, help="images per epoch of the lr/EMA schedule"
    )
    step.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the trainer's --precision")
    step.add_argument("--channels_last", action="store_true", help="the trainer's --channels_last")
    step.add_argument(
        "--check_steps",
        type=int,
        default=2,
        help="steps of the bitwise full-vs-parts replica check (0: skip)",
    )
    it = parser.add_argument_group("--mode iternorm")
    it.add_argument("--iternorm_batch", type=int, default=256, help="rows N of the whitened embedding")
    it.add_argument("--iternorm_dim", type=int, default=8192, help="features D (axis 0, and the D estimated)")
    it.add_argument(
        "--axis1_dims",
        type=int,
        nargs="+",
        default=[512, 1024, 2048],
        help="D at which axis 1 (D x D) is measured; --iternorm_dim among them measures it directly",
    )
    it.add_argument("--estimate_arch", default="resnet50", help="trunk of the estimated step ('none': skip)")
    it.add_argument("--estimate_image_size", type=int, default=224, help="its crop side (2 crops)")
    it.add_argument("--estimate_batch", type=int, default=8, help="batch of its measured bound steps")
    it.add_argument(
        "--estimate_projection", type=int, default=8192, help="its projector hidden units and --emb"
    )
    return parser


def resolved_width(args: argparse.Namespace) -> int:
    if args.width is not None:
        return args.width
    return SMALL_WIDTH if args.arch == "resnet18" else ARCHITECTURES[args.arch][2]


def resolved_cifar_stem(args: argparse.Namespace) -> bool:
    if args.cifar_stem == "auto":
        return max(args.crops_size) <= CIFAR_STEM_MAX_SIDE
    return args.cifar_stem == "true"


def trainer_args(args: argparse.Namespace) -> argparse.Namespace:
    """``intl-train``'s own parsed flags for this configuration (its defaults for everything else)."""
    n = len(args.nmb_crops)
    if len(args.crops_size) != n:
        raise SystemExit("bench_intl_step: --crops_size needs one value per --nmb_crops entry")

    def strs(values: list[Any]) -> list[str]:
        return [str(v) for v in values]

    argv = [
        "--arch",
        args.arch,
        "--width",
        str(resolved_width(args)),
        "--method",
        args.method,
        "--bs",
        str(args.batch_size),
        "--nmb_crops",
        *strs(args.nmb_crops),
        "--crops_size",
        *strs(args.crops_size),
        # augmentation-only lists: one value per entry, as the trainer's checks require
        "--min_scale_crops",
        *["0.2"] * n,
        "--max_scale_crops",
        *["1.0"] * n,
        "--gaussian_prob",
        *["0.5"] * n,
        "--solarization_prob",
        *["0.1"] * n,
        "--projection_layers",
        str(args.projection_layers),
        "--projection_size",
        str(args.projection_size),
        "--emb",
        str(args.emb),
        "--iters",
        str(args.iters),
        "--axis",
        str(args.axis),
        "--lr",
        str(args.lr),
        "--wd",
        str(args.wd),
        "--m",
        str(args.m),
        "--precision",
        args.precision,
        "--seed",
        str(args.seed),
    ]
    if args.spectral_power is not None:
        argv += ["--spectral_power", str(args.spectral_power)]
    if resolved_cifar_stem(args):
        argv.append("--cifar_stem")
    if args.channels_last:
        argv.append("--channels_last")
    if args.cifar:
        argv.append("--cifar")
    return parse_args(argv)


def step_label(args: argparse.Namespace, precision: str, device: torch.device) -> str:
    """E.g. ``intl resnet18 w32 cifar-stem 2x32 b32 proj1024-1024 axis0 T4 fp32 1thr``."""
    crops = "+".join(f"{n}x{s}" for n, s in zip(args.nmb_crops, args.crops_size))
    parts = [args.method, f"{args.arch} w{resolved_width(args)}"]
    if resolved_cifar_stem(args):
        parts.append("cifar-stem")
    parts += [crops, f"b{args.batch_size}", f"proj{args.projection_size}-{args.emb}", f"axis{args.axis}"]
    parts.append(f"T{args.iters}" if args.spectral_power is None else f"spectral{args.spectral_power:g}")
    if args.cifar:
        parts.append("cifar-recipe")
    parts.append(precision)
    if args.channels_last:
        parts.append("channels-last")
    return " ".join(parts) + threads_suffix(device)


def iternorm_label(args: argparse.Namespace, device: torch.device) -> str:
    dims = ",".join(map(str, args.axis1_dims))
    est = "" if args.estimate_arch == "none" else f" est {args.estimate_arch} b{args.estimate_batch}"
    return (
        f"iternorm N{args.iternorm_batch} D{args.iternorm_dim} axis1 D{dims} T{args.iters} fp32{est}"
        f"{threads_suffix(device)}"
    )


# ------------------------------------------------------------------------------------------ measurement


class INTLSteps:
    """The trainer's model, SGD optimiser and scaler (as ``train()`` builds them), one fixed batch of crops."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        targs = trainer_args(args)
        self.targs = targs
        torch.manual_seed(args.seed)
        self.precision = run_precision(targs, device)
        model = build_model(targs).to(device)
        prepare_model(model, channels_last=targs.channels_last, compile_model=False)
        model.train()  # on_epoch_start
        groups = split_param_groups(model, targs.wd, exclude_bias_and_norm=not targs.cifar)
        self.base_lr = targs.lr * targs.bs / 256
        self.optimizer = build_optimizer("sgd", groups, lr=self.base_lr, momentum=0.9, weight_decay=targs.wd)
        self.scaler = make_grad_scaler(self.precision, device)
        # the trainer's schedule: iterations per epoch of --num_samples images (drop_last), its epochs
        iters_per_epoch = max(args.num_samples // targs.bs, 1)
        self.total_steps = targs.epochs * iters_per_epoch
        self.warmup_steps = targs.warmup_eps * iters_per_epoch
        self.step = self.warmup_steps  # the first step after the warm-up: lr = base
        self.model, self.device = model, device
        self.crops = [
            torch.randn(targs.bs, 3, size, size, device=device)
            for n, size in zip(targs.nmb_crops, targs.crops_size)
            for _ in range(n)
        ]
        self.parameters = sum(p.numel() for p in model.parameters())
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.trunk_parameters = sum(p.numel() for p in model.backbone.parameters())
        group = self.optimizer.param_groups[0]
        self.optimizer_path = (
            "fused" if group.get("fused") else ("foreach" if group.get("foreach") else "for-loop")
        )

    def _moved(self) -> list[torch.Tensor]:
        crops = [c.to(self.device, non_blocking=True) for c in self.crops]
        if self.targs.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        return crops

    def bound(self, lap: Callable[[str], None] = no_laps) -> None:
        """Each crop's trunk + projector forward (autocast, the trainer's per-crop calls) and backward; loss =
        sum of the outputs; for ``intl_m`` also the target's no-grad forward on crop 0."""
        model, crops = self.model, self._moved()
        with autocast(self.precision, self.device):
            if self.targs.method == "intl_m":
                target = model.forward_target(crops[0])
                lap("target_forward")
                outputs = [model(x) for x in crops[1:]]
            else:
                outputs = [model(x) for x in crops]
        lap("forward")
        loss = sum(o.float().sum() for o in outputs)
        model.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")
        if self.targs.method == "intl_m":
            del target

    def full(self) -> dict[str, torch.Tensor]:
        """``step_fn`` of ``train()`` (selfsup/intl/train.py), statement for statement (runner = model)."""
        args, model, optimizer, scaler = self.targs, self.model, self.optimizer, self.scaler
        crops = [c.to(self.device, non_blocking=True) for c in self.crops]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        step = self.step
        apply_lr(optimizer, linear_warmup_cosine_lr(self.base_lr, step, self.total_steps, self.warmup_steps))
        if args.method == "intl_m":
            model.momentum_update(ema_momentum(step, self.total_steps, args.m))
        scalars = compute_loss(model, model, crops, args, precision=self.precision)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scalars["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        self.step = step + 1
        return {k: v.detach() for k, v in scalars.items()}

    def parts(self, lap: Callable[[str], None]) -> dict[str, torch.Tensor]:
        """:meth:`full` with ``compute_loss`` unrolled in its own order and a lap after each part."""
        args, model, optimizer, scaler = self.targs, self.model, self.optimizer, self.scaler
        crops = [c.to(self.device, non_blocking=True) for c in self.crops]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        step = self.step
        apply_lr(optimizer, linear_warmup_cosine_lr(self.base_lr, step, self.total_steps, self.warmup_steps))
        lap("prepare")
        if args.method == "intl_m":
            model.momentum_update(ema_momentum(step, self.total_steps, args.m))
        lap("ema")
        # compute_loss, unrolled (runner = model)
        beta = trade_off(args.bs, args.emb, args.axis)
        if args.method == "intl_m":
            with autocast(self.precision, self.device):
                target = model.forward_target(crops[0])
                lap("target_forward")
                online = [model(x) for x in crops[1:]]
            lap("forward")
            whitened = [whiten(t, args) for t in online]
            whitened_target = whiten(target, args)
            lap("whitening")
            loss = intl_m_loss(whitened, whitened_target, beta=beta, axis=args.axis)
        else:
            with autocast(self.precision, self.device):
                outputs = [model(x) for x in crops]
            lap("forward")
            whitened = [whiten(t, args) for t in outputs]
            lap("whitening")
            loss = intl_loss(whitened, beta=beta, axis=args.axis)
        lap("loss")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        lap("backward")
        scaler.step(optimizer)
        scaler.update()
        self.step = step + 1
        lap("optimizer")
        return {"loss": loss.detach()}

    def state(self) -> list[torch.Tensor]:
        """Weights, buffers (BN statistics, EMA copies) and SGD momentum buffers, for the replica check."""
        tensors = [t.detach() for t in self.model.state_dict().values()]
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    tensors.append(buf)
        return tensors


def replica_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any] | None:
    """Two fresh replicas, ``--check_steps`` steps each: one through ``full`` (the trainer's ``compute_loss``),
    one through ``parts`` (unrolled); losses and every state tensor compared bitwise."""
    if args.check_steps < 1:
        return None
    a, b = INTLSteps(args, device), INTLSteps(args, device)
    losses_a, losses_b = [], []
    for _ in range(args.check_steps):
        losses_a.append(float(a.full()["loss"]))
        losses_b.append(float(b.parts(no_laps)["loss"]))
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


def measure_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    check = replica_check(args, device)
    steps = INTLSteps(args, device)
    cpu = device.type == "cpu"
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in STEP_KINDS}
    losses: list[float] = []
    load_rounds: list[float] = []
    load_before = os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(STEP_KINDS)
        for kind in STEP_KINDS[shift:] + STEP_KINDS[:shift]:
            laps = Laps(device, sync=kind == "parts")
            out: dict[str, Any] = {}
            if kind == "bound":
                rec = timed(device, lambda laps=laps: steps.bound(laps if cpu else no_laps))
            elif kind == "parts":
                rec = timed(device, lambda laps=laps, out=out: out.update(steps.parts(laps)))
            else:
                rec = timed(device, lambda out=out: out.update(steps.full()))
            if "loss" in out:
                losses.append(float(out["loss"]))
            if round_index >= args.warmup:
                records[kind].append({"round": round_index - args.warmup, **rec, **laps.times})
        load_rounds.append(os.getloadavg()[0])
        print(f"[bench_intl_step] round {round_index + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return {
        "records": records,
        "precision": steps.precision,
        "optimizer_path": steps.optimizer_path,
        "parameters": steps.parameters,
        "trainable_parameters": steps.trainable_parameters,
        "trunk_parameters": steps.trunk_parameters,
        "forward_crops": len(steps.crops),
        "crop_sides": [int(c.shape[-1]) for c in steps.crops],
        "base_lr": steps.base_lr,
        "schedule": {"total_steps": steps.total_steps, "warmup_steps": steps.warmup_steps},
        "losses_finite": bool(np.all(np.isfinite(losses))),
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "replica_check": check,
        "load_average": [load_before, os.getloadavg()],
        "load_1min_per_round": load_rounds,
    }


# -------------------------------------------------------------------------------------------- iternorm


class EstimateSteps:
    """The bound (trunk + projector forward and backward of 2 crops) of ``--estimate_arch`` at
    ``--estimate_batch``, and the trainer's SGD step over its parameters."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        side = args.estimate_image_size
        targs = parse_args(
            [
                "--arch",
                args.estimate_arch,
                "--bs",
                str(args.estimate_batch),
                "--projection_size",
                str(args.estimate_projection),
                "--emb",
                str(args.estimate_projection),
                "--crops_size",
                str(side),
                str(side),
            ]
        )
        torch.manual_seed(args.seed)
        self.model = build_model(targs).to(device).train()
        groups = split_param_groups(self.model, targs.wd, exclude_bias_and_norm=not targs.cifar)
        self.optimizer = build_optimizer(
            "sgd", groups, lr=targs.lr * targs.bs / 256, momentum=0.9, weight_decay=targs.wd
        )
        self.scaler = make_grad_scaler("fp32", device)
        self.crops = [torch.randn(targs.bs, 3, side, side, device=device) for _ in range(2)]
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.trunk_parameters = sum(p.numel() for p in self.model.backbone.parameters())

    def bound(self) -> None:
        outputs = [self.model(x) for x in self.crops]
        self.model.zero_grad(set_to_none=True)
        sum(o.float().sum() for o in outputs).backward()

    def sgd(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()


def measure_iternorm(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every case (and the estimate's bound) in rotating order inside each round."""
    n, d = args.iternorm_batch, args.iternorm_dim
    gen = torch.Generator().manual_seed(args.seed)

    def leaf(rows: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(rows, dim, generator=gen).to(device).requires_grad_()
        return x, torch.randn(rows, dim, generator=gen).to(device)

    cases: dict[str, dict[str, Any]] = {}
    x0, g0 = leaf(n, d)
    cases["iter_norm axis0"] = {
        "fn": lambda x: iter_norm(x, iters=args.iters, axis=0),
        "x": x0,
        "g": g0,
        "axis": 0,
        "rows": n,
        "dim": d,
        "matrix": n,
    }
    cases["spectral_power axis0"] = {
        "fn": lambda x: spectral_power_transform(x, power=-0.5, axis=0),
        "x": x0,
        "g": g0,
        "axis": 0,
        "rows": n,
        "dim": d,
        "matrix": n,
    }
    for dim in args.axis1_dims:
        x1, g1 = leaf(n, dim)
        cases[f"iter_norm axis1 D{dim}"] = {
            "fn": lambda x: iter_norm(x, iters=args.iters, axis=1),
            "x": x1,
            "g": g1,
            "axis": 1,
            "rows": n,
            "dim": dim,
            "matrix": dim,
        }
    za, zb = leaf(n, d)[0], leaf(n, d)[0]
    beta = trade_off(n, d, 0)
    estimate = None
    if args.estimate_arch != "none":
        print(f"[bench_intl_step] building {args.estimate_arch}", file=sys.stderr)
        estimate = EstimateSteps(args, device)
    names = [*cases, "intl_loss 2 crops"] + (["estimate"] if estimate is not None else [])
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    finite: dict[str, bool] = {}
    load_rounds: list[float] = []
    load_before = os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            laps = Laps(device, sync=True)
            if name == "estimate":
                assert estimate is not None
                rec = timed(device, estimate.bound)
                rec["sgd_seconds"] = timed(device, estimate.sgd)["seconds"]
            elif name == "intl_loss 2 crops":
                a, b = za.detach().requires_grad_(), zb.detach().requires_grad_()

                def run_loss(a: torch.Tensor = a, b: torch.Tensor = b, laps: Laps = laps) -> None:
                    loss = intl_loss([a, b], beta=beta, axis=0)
                    laps("forward")
                    loss.backward()
                    laps("backward")

                rec = {**timed(device, run_loss), **laps.times}
            else:
                case = cases[name]
                case["x"].grad = None
                out: dict[str, torch.Tensor] = {}

                def run(case: dict[str, Any] = case, laps: Laps = laps, out: dict = out) -> None:
                    z = case["fn"](case["x"])
                    laps("forward")
                    z.backward(case["g"])
                    laps("backward")
                    out["z"] = z.detach()

                rec = {**timed(device, run), **laps.times}
                finite[name] = bool(torch.isfinite(out["z"]).all()) and bool(
                    torch.isfinite(case["x"].grad).all()
                )
            if round_index >= args.warmup:
                records[name].append({"round": round_index - args.warmup, **rec})
        load_rounds.append(os.getloadavg()[0])
        print(f"[bench_intl_step] round {round_index + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return {
        "records": records,
        "cases": {
            k: {f: v for f, v in c.items() if f in ("axis", "rows", "dim", "matrix")}
            for k, c in cases.items()
        },
        "finite": finite,
        "estimate_parameters": None
        if estimate is None
        else {"all": estimate.parameters, "trunk": estimate.trunk_parameters},
        "load_average": [load_before, os.getloadavg()],
        "load_1min_per_round": load_rounds,
    }


# --------------------------------------------------------------------------------------------- summary


def comparison(kinds: dict[str, Any], records: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """full/bound ratios, the A/A ratio and the gap split into the step's parts."""
    b, f, p = kinds["bound"], kinds["full"], kinds["parts"]
    ratio = f["images_per_s"] / b["images_per_s"]
    fp, bp = p["parts_s_median"], b["parts_s_median"]
    cpu = device.type == "cpu"
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
            "target_forward_extra": fp["target_forward"] - bp["target_forward"]
            if "target_forward" in fp and bp
            else None,
            "forward_extra": fp["forward"] - bp["forward"] if bp else None,
            "whitening": fp["whitening"],
            "loss": fp["loss"],
            "backward_extra": fp["backward"] - bp["backward"] if bp else None,
            "optimizer": fp["optimizer"],
        },
    }


def summarize_steps(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    kinds = {kind: kind_summary(recs, args.batch_size) for kind, recs in records.items()}
    skip = ("output", "label", "mode", "device", "cifar_stem", "width", "axis1_dims")
    skip += tuple(k for k in vars(args) if k.startswith(("iternorm_", "estimate_")))
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
        "trainable_parameters": raw["trainable_parameters"],
        "trunk_parameters": raw["trunk_parameters"],
        "forward_crops": raw["forward_crops"],
        "crop_sides": raw["crop_sides"],
        "base_lr": raw["base_lr"],
        "schedule": raw["schedule"],
        "losses_finite": raw["losses_finite"],
        "loss_first_last": raw["loss_first_last"],
        "replica_check": raw["replica_check"],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kinds": kinds,
        "intl": comparison(kinds, records, device),
        "load_average_1_5_15_min_before_after": raw["load_average"],
        "load_1min_per_round": raw["load_1min_per_round"],
    }


def _fit_cubic(dims: list[int], seconds: list[float], target: int) -> dict[str, Any]:
    """``t = a D^3 + b D^2`` by least squares on relative errors (b >= 0, else pure cubic); t(target)."""
    d = np.asarray(dims, dtype=float)
    t = np.asarray(seconds, dtype=float)
    out: dict[str, Any] = {"dims": dims, "seconds": seconds, "target_dim": target}
    largest = int(np.argmax(d))
    out["cubic_from_largest_s"] = float(t[largest] * (target / d[largest]) ** 3)
    if len(dims) >= 2:
        a_mat = np.stack([d**3, d**2], axis=1) / t[:, None]
        (a, b), *_ = np.linalg.lstsq(a_mat, np.ones_like(t), rcond=None)
        if b < 0 or a <= 0:
            a, b = float(np.sum(t * d**3) / np.sum(d**6)), 0.0
        out.update(a=float(a), b=float(b), fit_s=float(a * target**3 + b * target**2))
        out["fit_relative_errors"] = [float(v) for v in (a * d**3 + b * d**2) / t - 1]
        order = np.argsort(d)
        out["log_log_slopes"] = [
            float(np.log(t[j] / t[i]) / np.log(d[j] / d[i])) for i, j in itertools.pairwise(order)
        ]
    else:
        out["fit_s"] = out["cubic_from_largest_s"]
    return out


def summarize_iternorm(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    cases = []
    for name, info in raw["cases"].items():
        s = kind_summary(records[name], 1)
        cases.append(
            {
                "case": name,
                **info,
                "ms_median": 1e3 * s["step_s_median"],
                "ms_min": 1e3 * s["step_s_min"],
                "ms_q1": 1e3 * s["step_s_q1"],
                "ms_q3": 1e3 * s["step_s_q3"],
                "forward_ms_median": 1e3 * s["parts_s_median"]["forward"],
                "backward_ms_median": 1e3 * s["parts_s_median"]["backward"],
                "cpu_ms_median": 1e3 * s["step_cpu_s_median"],
                "runs": s["steps"],
                "ms_all": [1e3 * v for v in s["step_s_all"]],
                "finite": raw["finite"].get(name),
            }
        )
    loss = kind_summary(records["intl_loss 2 crops"], 1)
    loss_ms = 1e3 * loss["step_s_median"]
    n, d = args.iternorm_batch, args.iternorm_dim
    by_name = {c["case"]: c for c in cases}
    axis0_ms = by_name["iter_norm axis0"]["ms_median"]
    axis1 = [c for c in cases if c["case"].startswith("iter_norm axis1")]
    direct = [c for c in axis1 if c["dim"] == d]
    fit = _fit_cubic([c["dim"] for c in axis1], [c["ms_median"] / 1e3 for c in axis1], d)
    axis1_ms = direct[0]["ms_median"] if direct else 1e3 * fit["fit_s"]
    whitening = {
        "axis0": {"ms_per_call": axis0_ms, "measured": True, "matrix": f"{n} x {n}"},
        "axis1": {
            "ms_per_call": axis1_ms,
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
        bound_s = median([r["seconds"] for r in recs])
        sgd_s = median([r["sgd_seconds"] for r in recs])
        bound_at = bound_s * n / args.estimate_batch
        estimate = {
            "arch": args.estimate_arch,
            "image_size": args.estimate_image_size,
            "crops": 2,
            "projector": f"{args.estimate_projection}-{args.estimate_projection}-{args.estimate_projection}",
            "parameters": raw["estimate_parameters"],
            "measured_batch": args.estimate_batch,
            "steps": len(recs),
            "bound_s_median": bound_s,
            "bound_s_all": [r["seconds"] for r in recs],
            "sgd_s_median": sgd_s,
            "sgd_s_all": [r["sgd_seconds"] for r in recs],
            "batch": n,
            "bound_at_batch_s": bound_at,
            "loss_ms": loss_ms,
            "method": "step(B) = bound(measured batch) x B / measured batch + SGD + 2 x whitening(B) + loss(B)",
        }
        for key in ("axis0", "axis1"):
            w = whitening[key]
            whiten_s = 2 * w["ms_per_call"] / 1e3
            step_s = bound_at + sgd_s + whiten_s + loss_ms / 1e3
            w["estimated_step_s"] = step_s
            w["ms_per_step"] = 1e3 * whiten_s
            w["share_of_estimated_step"] = whiten_s / step_s
        w = whitening["axis1"]
        whiten_s = 2 * w["ms_per_call_cubic_from_largest"] / 1e3
        w["share_of_estimated_step_cubic_from_largest"] = whiten_s / (
            bound_at + sgd_s + whiten_s + loss_ms / 1e3
        )
    return {
        "mode": "iternorm",
        "label": args.label or iternorm_label(args, device),
        "device": device.type,
        "config": {
            "iternorm_batch": n,
            "iternorm_dim": d,
            "axis1_dims": args.axis1_dims,
            "iters": args.iters,
            "dtype": "fp32",
            "estimate_arch": args.estimate_arch,
            "estimate_image_size": args.estimate_image_size,
            "estimate_batch": args.estimate_batch,
            "estimate_projection": args.estimate_projection,
            "threads": torch.get_num_threads(),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
        },
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


RATIO_COLUMNS = (
    "configuration",
    "bound ms",
    "full ms",
    "bound img/s",
    "full img/s",
    "full/bound",
    ">= 0.97",
    "full/bound: fastest steps",
    "full/bound: CPU time",
    "full/bound: paired",
    "A/A: full/full",
    "replica check",
    "preemptions/step",
    "load before / after",
)


def ratio_row(run: dict[str, Any]) -> str:
    c = run["intl"]
    b, f = run["kinds"]["bound"], run["kinds"]["full"]
    aa = c.get("aa_ratio_full_over_full")
    check = run.get("replica_check")
    if check is None:
        checked = "-"
    elif check["losses_bitwise_equal"] and check["state_bitwise_equal"]:
        checked = f"bitwise equal ({check['steps']} step{'s' if check['steps'] > 1 else ''})"
    else:
        checked = f"differs (max {check['state_max_abs_diff']:.1e})"
    return markdown_row(
        [
            run["label"],
            milliseconds(b["step_s_median"]),
            milliseconds(f["step_s_median"]),
            f"{b['images_per_s']:.1f}",
            f"{f['images_per_s']:.1f}",
            f"{c['ratio_full_over_bound']:.3f}",
            "yes" if c["target_met"] else "no",
            f"{c['ratio_of_min_steps']:.3f}",
            f"{c['ratio_of_cpu_time_medians']:.3f}",
            f"{c['ratio_paired_median']:.3f}",
            "-" if aa is None else f"{aa:.3f}",
            checked,
            f"{f['preemptions_per_step']:.0f}",
            load_averages(run["load_average_1_5_15_min_before_after"]),
        ]
    )


GAP_COLUMNS = (
    "configuration",
    "gap ms",
    "prepare ms",
    "EMA update ms",
    "target forward extra ms",
    "forward extra ms",
    "whitening ms",
    "loss ms",
    "backward extra ms",
    "SGD ms",
)


def gap_row(run: dict[str, Any]) -> str:
    g = run["intl"]["gap_breakdown_s"]
    return markdown_row(
        [
            run["label"],
            milliseconds(run["intl"]["gap_s"], 1),
            milliseconds(g["prepare"], 2),
            milliseconds(g["ema_update"], 1),
            "-" if g["target_forward_extra"] is None else milliseconds(g["target_forward_extra"], 1),
            milliseconds(g["forward_extra"], 1),
            milliseconds(g["whitening"], 1),
            milliseconds(g["loss"], 1),
            milliseconds(g["backward_extra"], 1),
            milliseconds(g["optimizer"], 1),
        ]
    )


PARTS_COLUMNS = (
    "configuration",
    "step",
    "prepare ms",
    "EMA update ms",
    "target forward ms",
    "forward ms",
    "whitening ms",
    "loss ms",
    "backward ms",
    "SGD ms",
)


def parts_rows(run: dict[str, Any]) -> list[str]:
    """Medians of the parts pass and the bound's own laps, side by side."""
    fp = run["intl"]["parts_s_median"]
    bp = run["kinds"]["bound"]["parts_s_median"]
    rows = [
        markdown_row(
            [
                run["label"],
                "full (parts pass)",
                milliseconds(fp["prepare"], 2),
                milliseconds(fp["ema"], 1),
                milliseconds(fp["target_forward"], 0) if run["config"]["method"] == "intl_m" else "-",
                milliseconds(fp["forward"]),
                milliseconds(fp["whitening"], 1),
                milliseconds(fp["loss"], 1),
                milliseconds(fp["backward"]),
                milliseconds(fp["optimizer"], 1),
            ]
        )
    ]
    if bp:
        rows.append(
            markdown_row(
                [
                    run["label"],
                    "bound",
                    "-",
                    "-",
                    milliseconds(bp["target_forward"], 0) if "target_forward" in bp else "-",
                    milliseconds(bp["forward"]),
                    "-",
                    "-",
                    milliseconds(bp["backward"]),
                    "-",
                ]
            )
        )
    return rows


ITERNORM_COLUMNS = (
    "case",
    "N x D",
    "matrix",
    "forward ms",
    "backward ms",
    "forward + backward ms (median)",
    "q1 - q3 ms",
    "runs",
    "load before / after",
)


def iternorm_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for c in run["cases"]:
        rows.append(
            markdown_row(
                [
                    c["case"],
                    f"{c['rows']:,} x {c['dim']:,}",
                    f"{c['matrix']:,} x {c['matrix']:,}",
                    f"{c['forward_ms_median']:.1f}",
                    f"{c['backward_ms_median']:.1f}",
                    f"{c['ms_median']:.1f}",
                    f"{c['ms_q1']:.1f} - {c['ms_q3']:.1f}",
                    str(c["runs"]),
                    load_averages(run["load_average_1_5_15_min_before_after"]),
                ]
            )
        )
    return rows


SHARE_COLUMNS = (
    "IterNorm",
    "matrix",
    "ms per call",
    "ms per step (2 crops)",
    "estimated step s",
    "share of step",
    "how",
)


def share_rows(run: dict[str, Any]) -> list[str]:
    est = run.get("estimate")
    rows = []
    for key in ("axis0", "axis1"):
        w = run["whitening"][key]
        if w["measured"]:
            how = "measured"
        else:
            fit = w["extrapolation"]
            if "a" in fit:
                sizes = ", ".join(str(v) for v in fit["dims"])
                how = (
                    f"extrapolated: a D^3 + b D^2 fitted at D = {sizes} (pure D^3 from D = {max(fit['dims'])}: "
                    f"{w['ms_per_call_cubic_from_largest'] / 1e3:.0f} s per call"
                )
                if est:
                    how += f", share {100 * w['share_of_estimated_step_cubic_from_largest']:.1f}%"
                how += ")"
            else:
                how = f"extrapolated: D^3 from D = {fit['dims'][0]}"
        rows.append(
            markdown_row(
                [
                    f"{key.replace('axis', 'axis ')}",
                    w["matrix"],
                    f"{w['ms_per_call']:,.0f}",
                    f"{w['ms_per_step']:,.0f}" if est else "-",
                    f"{w['estimated_step_s']:.1f}" if est else "-",
                    f"{100 * w['share_of_estimated_step']:.1f}%" if est else "-",
                    how,
                ]
            )
        )
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
        print(markdown_header(RATIO_COLUMNS))
        for run in steps:
            print(ratio_row(run))
        print("\n" + markdown_header(GAP_COLUMNS))
        for run in steps:
            print(gap_row(run))
        print("\n" + markdown_header(PARTS_COLUMNS))
        for run in steps:
            print("\n".join(parts_rows(run)))
    for run in (r for r in runs if r["mode"] == "iternorm"):
        print(f"\n{run['label']}")
        print(markdown_header(ITERNORM_COLUMNS))
        print("\n".join(iternorm_rows(run)))
        print("\n" + markdown_header(SHARE_COLUMNS))
        print("\n".join(share_rows(run)))
        line = estimate_line(run)
        if line:
            print(line)
    checks = fit_checks([r for r in runs if r["mode"] == "iternorm"])
    if checks:
        print()
        print("\n".join(checks))


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
    if args.mode == "step":
        run = summarize_steps(measure_steps(args, device), args, device)
    else:
        run = summarize_iternorm(measure_iternorm(args, device), args, device)
    info = machine_info(device)
    run["malloc"] = malloc.detail
    run["machine"] = {**info, "malloc": malloc.detail}
    run["machine_description"] = device_description(info, device.type)
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{device.type}.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads")
    if run["mode"] == "step":
        c = run["intl"]
        gap = ", ".join(
            f"{k} {milliseconds(v, 1)} ms" for k, v in c["gap_breakdown_s"].items() if v is not None
        )
        print(
            f"{run['label']}: bound {milliseconds(run['kinds']['bound']['step_s_median'])} ms, full "
            f"{milliseconds(run['kinds']['full']['step_s_median'])} ms per step; gap {milliseconds(c['gap_s'])} ms = {gap}; "
            f"paired ratio {c['ratio_paired_median']:.3f}"
        )
        if run["replica_check"] is not None:
            rc = run["replica_check"]
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
