"""CMC training step against its bound, and the cost of the memory bank per step (issue 8).

Two modes, both on random inputs already in memory, one torch thread by default and glibc malloc tuned with
:func:`~selfsup.shared.runtime.cpu.tune_malloc` at start-up, as ``cmc-train`` does.

``--mode step`` (default): the CMC training step against its bound, step kinds interleaved in rotating order
inside every round so that load from other processes hits them alike; medians over rounds:

* ``bound`` - the work no CMC step can avoid: both streams' forward (the trainer's ``runner`` under its
  autocast) and backward on the same batch, loss ``feat_l.sum() + feat_ab.sum()``, gradients zeroed
  (``set_to_none``); no contrast, no memory bank, no optimiser.
* ``full`` - the step ``cmc-train`` runs, itself: ``TrainingRun.step`` of a run started with
  ``TrainingRun.start(CMCTrainer(args), args)`` from ``cmc-train``'s own parsed flags (the model, the
  :class:`~selfsup.cmc.contrast.CMCContrast`, the fused SGD with momentum 0.9 and weight decay 1e-4 and the
  grad scaler all come from the trainer). The run's data is a stand-in ``.npz`` of ``--num_data`` 1-pixel
  images, so the memory banks have ``--num_data`` rows; its loader is never used. Target: full/bound >= 0.97
  in images/s from the median step times.
* ``parts`` - the same ``TrainingRun.step`` with a timer after each of its parts (synchronised on CUDA):
  forward (the runner), contrast (the ``CMCContrast`` call), loss (``cmc_objective``), backward, optimiser
  (:func:`part_timers` wraps the method's runner, contrast and SGD for that call). On CPU the bound's own
  (free) timers give its forward and backward, so the gap to the bound splits into parts; ``parts``/``full``
  is an A/A ratio (the same work) that shows the noise floor.

``--mode bank``: the memory bank alone, per step, on a :class:`CMCContrast` of ``--bank_entries`` rows of
``--feat_dim`` (default 1 281 167 x 128, ImageNet's training set: two banks of 1.3 GB fp32), for every
``--bank_k`` x ``--bank_batch`` that fits in ``--memory_fraction`` of the free memory. Each configuration runs
in its own child process (the heap of a process that runs only that configuration, as a training run has),
its three passes in rotating order within every round, on fresh unit-norm leaf features and fresh distinct
instance ids (NCE mode, the trainer's default):

* ``pieces`` - ``CMCContrast.forward`` unrolled into timed pieces in its own order: ``sample`` (B x (K+1)
  indices, alias method), ``gather_score`` (rows of both memories gathered and scored against the other view),
  ``probs`` (exp(s/T)/Z of both views), ``update`` (both memories); then ``loss`` (the two NCE losses) and
  ``backward`` (the scores' backward into the features: what the bank adds to the step's backward);
* ``whole`` - the same through ``CMCContrast.forward`` itself (timed as ``contrast``), then loss and backward;
* ``variants`` - where the scores' backward goes, for one view: the rows are gathered, scored with
  ``_scores`` (the contrast's bmm) and autograd's backward gives the features' gradient (torch computes it as a
  bmm of the transposed rows); then the same gradient as one row-vector bmm ``grad[b] @ rows[b]``, timed
  apart and compared (largest absolute difference). Measured only: the contrast is not changed here.

Per step the bank costs ``contrast + loss + backward`` of the ``whole`` pass (the headline), reported in ms
and as a share of the measured full step of ``--mode step`` runs stored in the same results file (for another
K: that step with its contrast, loss and score backward swapped, marked est.). ``--estimate_model`` (default
``resnet50v1``, 224 px) also times a few bound steps of that model at ``--estimate_batch`` and its SGD step;
the step at the bank's batch is then estimated as bound x batch / estimate_batch + SGD + bank.

Usage: ``python benchmarks/bench_cmc_step.py --model resnet18v1 --cifar_stem --image_size 32`` then
``python benchmarks/bench_cmc_step.py --mode bank``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    median,
    milliseconds,
    no_laps,
    paired_ratio,
    resolve_device,
    threads_suffix,
    timed,
)

from selfsup.cmc.cli import parse_cmc_args
from selfsup.cmc.contrast import CMCContrast, _nce_probs, _scores
from selfsup.cmc.loss import nce_loss
from selfsup.cmc.model import CMC_MODELS, build_cmc_model
from selfsup.cmc.train import CMCTrainer
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.precision import (
    PRECISIONS,
    autocast,
    check_precision,
    fp32_region,
    make_grad_scaler,
    resolve_precision,
)
from selfsup.shared.runtime.trainer import TrainingRun

BENCHMARK = "cmc_step"
STEP_KINDS = ("bound", "full", "parts")
BANK_PASSES = ("pieces", "whole", "variants")
TARGET_RATIO = 0.97
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_KEY = ("mode", "label")
STEP_CONFIG = (
    "model",
    "cifar_stem",
    "image_size",
    "batch_size",
    "nce_k",
    "num_data",
    "softmax",
    "bn_splits",
    "precision",
    "feat_dim",
    "threads",
    "warmup",
    "repeats",
    "seed",
    "device",
)
IMAGENET_TRAIN = 1_281_167
CIFAR_TRAIN = 50_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="step", choices=("step", "bank"), help="step vs bound, or the bank")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if any")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see README)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the trainer's --precision")
    parser.add_argument("--feat_dim", type=int, default=128, help="feature / memory-row dimension")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, memories and inputs")
    parser.add_argument("--label", default=None, help="row label (default: derived from the configuration)")
    parser.add_argument("--raw_output", type=Path, default=None, help=argparse.SUPPRESS)  # bank child
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, updated in place (default: benchmarks/results/cmc_step_<device>.json)",
    )
    step = parser.add_argument_group("--mode step")
    step.add_argument("--model", default="resnet18v1", choices=CMC_MODELS, help="two-stream encoder")
    step.add_argument("--cifar_stem", action="store_true", help="3x3/1 stem without max-pool (ResNets)")
    step.add_argument("--image_size", type=int, default=32, help="side of the (random) input images")
    step.add_argument("--batch_size", type=int, default=128, help="images per step")
    step.add_argument("--nce_k", type=int, default=4096, help="negatives K")
    step.add_argument(
        "--num_data", type=int, default=CIFAR_TRAIN, help="memory rows = training-set size (default: CIFAR)"
    )
    step.add_argument("--softmax", action="store_true", help="softmax loss instead of NCE")
    step.add_argument(
        "--bn_splits", type=int, default=1, help="the trainer's --bn_splits (split BN sub-batches)"
    )
    bank = parser.add_argument_group("--mode bank")
    bank.add_argument("--bank_entries", type=int, default=IMAGENET_TRAIN, help="rows per memory bank")
    bank.add_argument("--bank_k", type=int, nargs="+", default=[4096, 16384], help="negatives K")
    bank.add_argument("--bank_batch", type=int, nargs="+", default=[128, 256], help="batch sizes")
    bank.add_argument(
        "--memory_fraction",
        type=float,
        default=0.6,
        help="skip a configuration needing more than this share of the memory available at start",
    )
    bank.add_argument(
        "--estimate_model", default="resnet50v1", help="model whose step is estimated ('none': skip)"
    )
    bank.add_argument("--estimate_image_size", type=int, default=224, help="its image side")
    bank.add_argument("--estimate_batch", type=int, default=32, help="batch of its measured bound steps")
    return parser


def step_label(args: argparse.Namespace, precision: str, device: torch.device) -> str:
    """E.g. ``resnet18v1 cifar-stem 32px b128 K4096 N50000 fp32 1thr``."""
    stem = " cifar-stem" if args.cifar_stem else ""
    loss = " softmax" if args.softmax else ""
    loss += f" bn-splits{args.bn_splits}" if args.bn_splits > 1 else ""
    return (
        f"{args.model}{stem} {args.image_size}px b{args.batch_size} K{args.nce_k} N{args.num_data}{loss} "
        f"{precision}{threads_suffix(device)}"
    )


def bank_label(args: argparse.Namespace, device: torch.device) -> str:
    ks = ",".join(map(str, args.bank_k))
    bs = ",".join(map(str, args.bank_batch))
    return f"bank N{args.bank_entries} D{args.feat_dim} K{ks} B{bs}{threads_suffix(device)}"


# ------------------------------------------------------------------------------------------ the step


def trainer_flags(args: argparse.Namespace, device: torch.device, data: Path, out: Path) -> list[str]:
    """``cmc-train``'s command line for this configuration (its defaults for everything else), on the stand-in
    data; malloc was tuned by this script already."""
    argv = [
        "--model", args.model, "--image_size", str(args.image_size), "--batch_size", str(args.batch_size),
        "--nce_k", str(args.nce_k), "--feat_dim", str(args.feat_dim), "--precision", args.precision,
        "--bn_splits", str(args.bn_splits), "--seed", str(args.seed), "--device", str(device),
        "--dataset", "npz", "--data_folder", str(data), "--model_path", str(out), "--tb_path", str(out),
        "--num_workers", "0", "--no_progress", "--no_tensorboard", "--no_malloc_tuning",
    ]  # fmt: skip
    return [*argv, *(["--cifar_stem"] if args.cifar_stem else []), *(["--softmax"] if args.softmax else [])]


def stand_in_data(path: Path, num_data: int) -> Path:
    """An ``.npz`` of ``num_data`` black 1-pixel images: the run's memory banks get ``num_data`` rows."""
    labels = np.zeros(num_data, dtype=np.int64)
    np.savez(path, train_images=np.zeros((num_data, 1, 1), np.uint8), train_labels=labels,
             test_images=np.zeros((1, 1, 1), np.uint8), test_labels=labels[:1])  # fmt: skip
    return path


class _After:
    """``fn``, then a lap called ``name``."""

    def __init__(self, fn: Callable[..., Any], lap: Callable[[str], None], name: str) -> None:
        self.fn, self.lap, self.name = fn, lap, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.fn(*args, **kwargs)
        self.lap(self.name)
        return out


class _LappedSGD:
    """The method's :class:`~selfsup.cmc.common.ScaledSGD` with laps: ``loss`` when the loss is handed to the
    backward (the objective ran since the contrast's lap), ``backward``, ``optimizer``."""

    def __init__(self, sgd: Any, lap: Callable[[str], None]) -> None:
        self.sgd, self.lap, self.optimizer = sgd, lap, sgd.optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.lap("loss")
        self.sgd.backward(loss)
        self.lap("backward")

    def step(self) -> None:
        self.sgd.step()
        self.lap("optimizer")


@contextmanager
def part_timers(method: CMCTrainer, lap: Callable[[str], None]) -> Iterator[None]:
    """Within the block, ``method.step`` laps after its forward, contrast, loss, backward and optimiser step."""
    saved = method.runner, method.contrast, method.sgd
    method.runner = _After(saved[0], lap, "forward")  # type: ignore[assignment]
    method.contrast = _After(saved[1], lap, "contrast")  # type: ignore[assignment]
    method.sgd = _LappedSGD(saved[2], lap)  # type: ignore[assignment]
    try:
        yield
    finally:
        method.runner, method.contrast, method.sgd = saved


class CMCSteps:
    """A started ``cmc-train`` run (:class:`TrainingRun`) and one random batch in the loader's form."""

    def __init__(self, args: argparse.Namespace, device: torch.device, workdir: Path) -> None:
        data = stand_in_data(workdir / "stand_in.npz", args.num_data)
        flags = trainer_flags(args, device, data, workdir / "run")
        targs = parse_cmc_args(flags)
        self.method = CMCTrainer(targs)
        self.run = TrainingRun.start(self.method, targs, ["cmc-train", *flags])
        self.method.on_epoch_start(0)  # the epoch's learning rate and train mode, as the loop sets them
        optimizer = self.run.parts.optimizer
        group = optimizer.param_groups[0]
        self.optimizer_path = (
            "fused" if group.get("fused") else ("foreach" if group.get("foreach") else "for-loop")
        )
        self.device, self.precision = device, self.run.ctx.precision
        self.x = torch.randn((args.batch_size, 3, args.image_size, args.image_size), device=device)
        self.target = torch.zeros(args.batch_size, dtype=torch.long)
        self.batch_size, self.num_data = args.batch_size, args.num_data
        self.parameters = sum(p.numel() for p in self.method.model.parameters())

    def new_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, target, index)`` with distinct instance ids, as the trainer's sampler gives them (CPU)."""
        return self.x, self.target, torch.randperm(self.num_data)[: self.batch_size]

    def bound(self, lap: Callable[[str], None] = no_laps) -> None:
        """Both streams' forward (the trainer's runner and autocast) and backward; loss = sum of both outputs."""
        with autocast(self.precision, self.device):
            feat_l, feat_ab = self.method.runner(self.x)
        lap("forward")
        loss = feat_l.float().sum() + feat_ab.float().sum()
        self.method.model.zero_grad(set_to_none=True)
        loss.backward()
        lap("backward")

    def full(self, batch: Any) -> None:
        self.run.step(batch)

    def parts(self, batch: Any, lap: Callable[[str], None]) -> None:
        with part_timers(self.method, lap):
            self.run.step(batch)

    def close(self) -> None:
        self.run.close()


def measure_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_cmc_step_") as tmp:
        steps = CMCSteps(args, device, Path(tmp))
        try:
            records = _step_rounds(steps, args, device)
        finally:
            steps.close()
    return {
        **records,
        "precision": steps.precision,
        "optimizer_path": steps.optimizer_path,
        "parameters": steps.parameters,
    }


def _step_rounds(steps: CMCSteps, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cpu = device.type == "cpu"
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in STEP_KINDS}
    load_before = os.getloadavg()
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(STEP_KINDS)
        for kind in STEP_KINDS[shift:] + STEP_KINDS[:shift]:
            laps = Laps(device, sync=kind == "parts")
            batch = steps.new_batch()
            if kind == "bound":
                rec = timed(device, lambda laps=laps: steps.bound(laps if cpu else no_laps))
            elif kind == "full":
                rec = timed(device, lambda batch=batch: steps.full(batch))
            else:
                rec = timed(device, lambda batch=batch, laps=laps: steps.parts(batch, laps))
            if round_index >= args.warmup:
                records[kind].append({"round": round_index - args.warmup, **rec, **laps.times})
        print(f"[bench_cmc_step] round {round_index + 1}/{args.warmup + args.repeats}", file=sys.stderr)
    return {"records": records, "load_average": [load_before, os.getloadavg()]}


# ---------------------------------------------------------------------------------------------- bank


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def bank_bytes(entries: int, dim: int) -> int:
    """Two fp32 memories plus the alias tables (fp32 prob, int64 alias) of the one sampler."""
    return 2 * entries * dim * 4 + entries * 12


def step_bytes(batch: int, k: int, dim: int) -> int:
    """Gathered rows of both views (kept for the backward) plus the index draws (several int64 temporaries)."""
    return 2 * batch * (k + 1) * dim * 4 + 5 * batch * (k + 1) * 8


class BankSteps:
    """One :class:`CMCContrast` of ``entries`` rows; per-step passes for any batch and K."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(args.seed)
        self.contrast = CMCContrast(
            num_data=args.bank_entries, dim=args.feat_dim, num_negatives=max(args.bank_k)
        ).to(device)
        self.device, self.dim, self.entries = device, args.feat_dim, args.bank_entries

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fresh unit-norm leaf features of both views and distinct instance ids."""
        feat_l = F.normalize(torch.randn(batch, self.dim, device=self.device), dim=1).requires_grad_()
        feat_ab = F.normalize(torch.randn(batch, self.dim, device=self.device), dim=1).requires_grad_()
        index = torch.randperm(self.entries)[:batch].to(self.device)
        return feat_l, feat_ab, index

    def _loss(self, out_l: torch.Tensor, out_ab: torch.Tensor) -> torch.Tensor:
        return nce_loss(out_l, self.entries) + nce_loss(out_ab, self.entries)

    def pieces(
        self,
        l: torch.Tensor,  # noqa: E741
        ab: torch.Tensor,
        index: torch.Tensor,
        k: int,
        lap: Callable[[str], None],
    ) -> None:
        """``CMCContrast.forward`` (NCE mode) in its own order, with a lap after each piece."""
        c = self.contrast
        l, ab = l.float(), ab.float()  # noqa: E741
        with fp32_region(self.device):
            idx = c.memory_l.sample_indices(index, k)
            lap("sample")
            s_ab = _scores(c.memory_l.gather_rows(idx), ab)
            s_l = _scores(c.memory_ab.gather_rows(idx), l)
            lap("gather_score")
            out_l = _nce_probs(s_l, c.temperature, c.z_l, c.num_data, "Z_l")
            out_ab = _nce_probs(s_ab, c.temperature, c.z_ab, c.num_data, "Z_ab")
            lap("probs")
            c.memory_l.update(l, index, c.momentum)
            c.memory_ab.update(ab, index, c.momentum)
            lap("update")
        loss = self._loss(out_l, out_ab)
        lap("loss")
        loss.backward()
        lap("backward")

    def whole(
        self,
        l: torch.Tensor,  # noqa: E741
        ab: torch.Tensor,
        index: torch.Tensor,
        k: int,
        lap: Callable[[str], None],
    ) -> None:
        """``CMCContrast.forward`` itself, then the two NCE losses and their backward into the features."""
        self.contrast.num_negatives = k
        out_l, out_ab = self.contrast(l, ab, index)
        lap("contrast")
        loss = self._loss(out_l, out_ab)
        lap("loss")
        loss.backward()
        lap("backward")

    def variants(
        self,
        feat_l: torch.Tensor,
        feat_ab: torch.Tensor,
        index: torch.Tensor,
        k: int,
        lap: Callable[[str], None],
    ) -> float:
        """One view's scores as a plain ``torch.bmm`` with autograd's backward into the features (what
        ``_scores`` did before it got its own backward), and the same gradient as one row-vector bmm
        (``grad[b] @ rows[b]``, ``_scores``' backward now); returns their largest absolute difference."""
        del feat_ab
        grad = torch.randn(index.shape[0], k + 1, device=self.device)
        lap("setup")
        rows = self.contrast.memory_ab.gather_rows(self.contrast.memory_l.sample_indices(index, k))
        lap("sample_gather")
        batch, dim = feat_l.shape
        scores = torch.bmm(rows, feat_l.view(batch, dim, 1)).view(batch, -1)
        lap("score_forward")
        scores.backward(grad)
        lap("score_backward_autograd")
        alternative = torch.bmm(grad.unsqueeze(1), rows).squeeze(1)
        lap("score_backward_rowvector")
        return float((alternative - feat_l.grad).abs().max())


class EstimateSteps:
    """Bound steps (both streams' forward + backward) of ``--estimate_model`` and its SGD step, apart."""

    def __init__(self, args: argparse.Namespace, device: torch.device, precision: str) -> None:
        torch.manual_seed(args.seed)
        self.model = build_cmc_model(args.estimate_model, feat_dim=args.feat_dim).to(device).train()
        self.optimizer = build_optimizer(
            "sgd", self.model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4
        )
        self.scaler = make_grad_scaler(precision, device)
        size = args.estimate_image_size
        self.x = torch.randn(args.estimate_batch, 3, size, size, device=device)
        self.precision, self.device = precision, device

    def bound(self) -> None:
        with autocast(self.precision, self.device):
            feat_l, feat_ab = self.model(self.x)
        self.model.zero_grad(set_to_none=True)
        (feat_l.float().sum() + feat_ab.float().sum()).backward()

    def sgd(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()


def bank_rounds(args: argparse.Namespace, device: torch.device) -> dict[str, list[dict[str, Any]]]:
    """Child of ``--mode bank``: the passes of one (K, batch) configuration, rotating within each round."""
    (k,), (batch,) = args.bank_k, args.bank_batch
    bank = BankSteps(args, device)
    runs = {"pieces": bank.pieces, "whole": bank.whole, "variants": bank.variants}
    records: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(args.warmup + args.repeats):
        shift = round_index % len(BANK_PASSES)
        for kind in BANK_PASSES[shift:] + BANK_PASSES[:shift]:
            feat_l, feat_ab, index = bank.inputs(batch)
            laps = Laps(device, sync=True)
            result: list[Any] = []
            rec = timed(
                device,
                lambda run=runs[kind], f=(feat_l, feat_ab, index), laps=laps, out=result: out.append(
                    run(*f, k, laps)
                ),
            )
            rec.update(laps.times)
            if kind == "variants":
                rec["max_abs_diff"] = result[0]
            if round_index >= args.warmup:
                records.setdefault(f"K{k} B{batch} {kind}", []).append(
                    {"round": round_index - args.warmup, **rec}
                )
    return records


def child_argv(args: argparse.Namespace, k: int, batch: int, raw_path: Path) -> list[str]:
    flags = ("device", "threads", "precision", "feat_dim", "warmup", "repeats", "seed", "bank_entries")
    argv = [sys.executable, str(Path(__file__).resolve()), "--mode", "bank"]
    for name in flags:
        argv += [f"--{name}", str(getattr(args, name))]
    return [*argv, "--bank_k", str(k), "--bank_batch", str(batch), "--raw_output", str(raw_path)]


def measure_bank(args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, Any]:
    """Every (K, batch) that fits in its own child process (the heap of a process that runs only that
    configuration, as a training run has), one after the other; then the ``--estimate_model`` steps here."""
    available = available_memory_bytes(device)
    budget = args.memory_fraction * available - bank_bytes(args.bank_entries, args.feat_dim)
    configs, skipped = [], []
    for k in args.bank_k:
        for batch in args.bank_batch:
            need = step_bytes(batch, k, args.feat_dim)
            (configs if need <= budget else skipped).append((k, batch, need))
    if not configs:
        raise SystemExit(f"bench_cmc_step: no bank configuration fits in {available / 2**30:.1f} GiB")
    records: dict[str, list[dict[str, Any]]] = {}
    loads: dict[str, Any] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="bench_cmc_step_") as tmp:
        for k, batch, _ in configs:
            raw_path = Path(tmp) / f"K{k}_B{batch}.json"
            print(f"[bench_cmc_step] bank K{k} B{batch} (child process)", file=sys.stderr)
            load_before = os.getloadavg()
            subprocess.run(child_argv(args, k, batch, raw_path), env=env, check=True)
            records.update(json.loads(raw_path.read_text()))
            loads[f"K{k} B{batch}"] = [load_before, os.getloadavg()]
    if args.estimate_model != "none":
        print(f"[bench_cmc_step] {args.estimate_model} bound steps", file=sys.stderr)
        load_before = os.getloadavg()
        estimate = EstimateSteps(args, device, precision)
        for round_index in range(args.warmup + args.repeats):
            rec = timed(device, estimate.bound)
            rec["sgd_seconds"] = timed(device, estimate.sgd)["seconds"]
            if round_index >= args.warmup:
                records.setdefault("estimate", []).append({"round": round_index - args.warmup, **rec})
        loads["estimate"] = [load_before, os.getloadavg()]
    return {
        "records": records,
        "configs": [(k, b) for k, b, _ in configs],
        "skipped": [{"K": k, "batch": b, "bytes_needed": n} for k, b, n in skipped],
        "available_memory_bytes_at_start": available,
        "bank_bytes": bank_bytes(args.bank_entries, args.feat_dim),
        "load_average": loads,
    }


# --------------------------------------------------------------------------------------------- summary


def summarize_steps(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    kinds = {kind: kind_summary(records[kind], args.batch_size) for kind in STEP_KINDS}
    bound, full, parts = kinds["bound"], kinds["full"], kinds["parts"]
    ratio = full["images_per_s"] / bound["images_per_s"]
    fp, bp = parts["parts_s_median"], bound["parts_s_median"]
    gap = {
        "forward_extra": fp["forward"] - bp["forward"] if bp else None,
        "contrast": fp["contrast"],
        "loss": fp["loss"],
        "backward_extra": fp["backward"] - bp["backward"] if bp else None,
        "optimizer": fp["optimizer"],
    }
    config = {name: getattr(args, name) for name in STEP_CONFIG}
    return {
        "mode": "step",
        "label": args.label or step_label(args, raw["precision"], device),
        "device": device.type,
        "config": config,
        "precision_resolved": raw["precision"],
        "optimizer_path": raw["optimizer_path"],
        "parameters": raw["parameters"],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bound": bound,
        "full": full,
        "full_with_part_timers": parts,
        "ratio_full_over_bound": ratio,
        "ratio_paired_median": paired_ratio(records, "bound", "full"),
        "ratio_of_min_steps": bound["step_s_min"] / full["step_s_min"],
        "ratio_of_cpu_time_medians": bound["step_cpu_s_median"] / full["step_cpu_s_median"],
        "aa_ratio_full_over_full": parts["step_s_median"] / full["step_s_median"]
        if device.type == "cpu"
        else None,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "gap_s": full["step_s_median"] - bound["step_s_median"],
        "gap_breakdown_s": gap,
        "load_average_1_5_15_min_before_after": raw["load_average"],
    }


def _timings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without the variants' ``max_abs_diff`` (not a timed part)."""
    return [{k: v for k, v in r.items() if k != "max_abs_diff"} for r in records]


def summarize_bank(raw: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    records = raw["records"]
    configs = []
    for k, batch in raw["configs"]:
        pieces = kind_summary(records[f"K{k} B{batch} pieces"], batch)
        whole = kind_summary(records[f"K{k} B{batch} whole"], batch)
        variant_recs = records[f"K{k} B{batch} variants"]
        variants = kind_summary(_timings(variant_recs), batch)
        configs.append(
            {
                "K": k,
                "batch": batch,
                "pieces": pieces,
                "whole": whole,
                # headline: CMCContrast.forward + the two losses + their backward into the features
                "bank_ms_per_step": 1e3 * whole["step_s_median"],
                "pieces_ms_median": {n: 1e3 * v for n, v in pieces["parts_s_median"].items()},
                "whole_ms_median": {n: 1e3 * v for n, v in whole["parts_s_median"].items()},
                "aa_pieces_over_whole": pieces["step_s_median"] / whole["step_s_median"],
                # one view: the scores' bmm, autograd's backward into the features, the row-vector bmm
                "score_variants_one_view": variants,
                "score_variants_ms_median": {n: 1e3 * v for n, v in variants["parts_s_median"].items()},
                "score_variants_max_abs_diff": max(r["max_abs_diff"] for r in variant_recs),
                "gathered_bytes_per_view": batch * (k + 1) * args.feat_dim * 4,
            }
        )
    estimate = None
    if "estimate" in records:
        recs = records["estimate"]
        bound_s = median([r["seconds"] for r in recs])
        sgd_s = median([r["sgd_seconds"] for r in recs])
        estimate = {
            "model": args.estimate_model,
            "image_size": args.estimate_image_size,
            "measured_batch": args.estimate_batch,
            "steps": len(recs),
            "bound_s_median": bound_s,
            "bound_s_all": [r["seconds"] for r in recs],
            "sgd_s_median": sgd_s,
            "sgd_s_all": [r["sgd_seconds"] for r in recs],
            "method": "step(B) = bound(measured batch) * B / measured batch + SGD step + bank(K, B)",
        }
        for cfg in configs:
            step_s = bound_s * cfg["batch"] / args.estimate_batch + sgd_s + cfg["bank_ms_per_step"] / 1e3
            cfg["estimated_step_s"] = {args.estimate_model: step_s}
            cfg["share_of_estimated_step"] = {args.estimate_model: cfg["bank_ms_per_step"] / 1e3 / step_s}
    return {
        "mode": "bank",
        "label": args.label or bank_label(args, device),
        "device": device.type,
        "config": {
            "bank_entries": args.bank_entries,
            "feat_dim": args.feat_dim,
            "bank_k": args.bank_k,
            "bank_batch": args.bank_batch,
            "threads": torch.get_num_threads(),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
            "loss": "nce",
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bank_bytes": raw["bank_bytes"],
        "available_memory_bytes_at_start": raw["available_memory_bytes_at_start"],
        "skipped": raw["skipped"],
        "configs": configs,
        "estimate": estimate,
        "load_average_1_5_15_min_before_after": raw["load_average"],
    }


# ---------------------------------------------------------------------------------------------- tables


STEP_COLUMNS = (
    "configuration",
    "bound img/s",
    "full img/s",
    "full/bound",
    ">= 0.97",
    "full/bound: fastest steps",
    "full/bound: CPU time",
    "A/A: full/full",
    "gap ms",
    "forward extra ms",
    "contrast ms",
    "loss ms",
    "backward extra ms",
    "SGD ms",
    "load before / after",
)


def step_row(run: dict[str, Any]) -> str:
    gap = run["gap_breakdown_s"]
    aa = run.get("aa_ratio_full_over_full")
    return markdown_row(
        [
            run["label"],
            f"{run['bound']['images_per_s']:.1f}",
            f"{run['full']['images_per_s']:.1f}",
            f"{run['ratio_full_over_bound']:.3f}",
            "yes" if run["target_met"] else "no",
            f"{run['ratio_of_min_steps']:.3f}",
            f"{run['ratio_of_cpu_time_medians']:.3f}",
            "n/a" if aa is None else f"{aa:.3f}",
            milliseconds(run["gap_s"]),
            milliseconds(gap["forward_extra"]),
            milliseconds(gap["contrast"]),
            milliseconds(gap["loss"], 1),
            milliseconds(gap["backward_extra"]),
            milliseconds(gap["optimizer"], 1),
            load_averages(run["load_average_1_5_15_min_before_after"]),
        ]
    )


def _bank_share(cfg: dict[str, Any], bank_run: dict[str, Any], step: dict[str, Any]) -> str:
    """Share of the bank in ``step``'s full step; for another K that step with its bank swapped (est.)."""
    if cfg["batch"] != step["config"]["batch_size"]:
        return "-"
    full_ms = 1e3 * step["full"]["step_s_median"]
    if cfg["K"] == step["config"]["nce_k"]:
        return f"{100 * cfg['bank_ms_per_step'] / full_ms:.0f}%"
    same = [
        c for c in bank_run["configs"] if c["K"] == step["config"]["nce_k"] and c["batch"] == cfg["batch"]
    ]
    if not same:
        return "-"
    swapped = full_ms - same[0]["bank_ms_per_step"] + cfg["bank_ms_per_step"]
    return f"{100 * cfg['bank_ms_per_step'] / swapped:.0f}% (est.)"


def bank_table(bank_run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    est = bank_run.get("estimate")
    columns = [
        "K",
        "batch",
        "sample ms",
        "gather + score ms",
        "exp/Z ms",
        "update ms",
        "loss ms",
        "score backward ms",
        "bank ms/step (whole)",
        "A/A pieces/whole",
        "kernel ms (whole)",
        "load before / after",
        *(f"share of {s['label']} full step" for s in steps),
    ]
    if est:
        columns.append(f"share of {est['model']} {est['image_size']}px step (est.)")
    rows = [markdown_header(columns)]
    for cfg in bank_run["configs"]:
        p = cfg["pieces_ms_median"]
        cells = [
            str(cfg["K"]),
            str(cfg["batch"]),
            f"{p['sample']:.1f}",
            f"{p['gather_score']:.0f}",
            f"{p['probs']:.1f}",
            f"{p['update']:.2f}",
            f"{p['loss']:.1f}",
            f"{p['backward']:.0f}",
            f"{cfg['bank_ms_per_step']:.0f}",
            f"{cfg['aa_pieces_over_whole']:.3f}",
            f"{1e3 * cfg['whole']['step_kernel_s_median']:.0f}",
            load_averages(bank_run["load_average_1_5_15_min_before_after"][f"K{cfg['K']} B{cfg['batch']}"]),
            *(_bank_share(cfg, bank_run, s) for s in steps),
        ]
        if est:
            cells.append(f"{100 * cfg['share_of_estimated_step'][est['model']]:.1f}%")
        rows.append(markdown_row(cells))
    return "\n".join(rows)


VARIANT_COLUMNS = (
    "K",
    "batch",
    "gathered rows MiB (one view)",
    "score forward ms",
    "score backward ms: autograd",
    "score backward ms: row-vector bmm",
    "max abs difference",
)


def variants_table(bank_run: dict[str, Any]) -> str:
    """One view: the scores' bmm, autograd's backward into the features, and the row-vector bmm."""
    rows = [markdown_header(VARIANT_COLUMNS)]
    for cfg in bank_run["configs"]:
        v = cfg["score_variants_ms_median"]
        rows.append(
            markdown_row(
                [
                    str(cfg["K"]),
                    str(cfg["batch"]),
                    f"{cfg['gathered_bytes_per_view'] / 2**20:.0f}",
                    f"{v['score_forward']:.0f}",
                    f"{v['score_backward_autograd']:.0f}",
                    f"{v['score_backward_rowvector']:.0f}",
                    f"{cfg['score_variants_max_abs_diff']:.1e}",
                ]
            )
        )
    return "\n".join(rows)


def print_tables(output: Path, device: torch.device) -> None:
    runs = [r for r in load_runs(output) if r.get("device") == device.type]
    steps = [r for r in runs if r["mode"] == "step"]
    if steps:
        print(markdown_header(STEP_COLUMNS))
        for run in steps:
            print(step_row(run))
    for run in (r for r in runs if r["mode"] == "bank"):
        print(f"\n{run['label']}")
        print(bank_table(run, steps))
        est = run.get("estimate")
        if est:
            print(
                f"{est['model']} {est['image_size']}px: bound {1e3 * est['bound_s_median']:.0f} ms at batch "
                f"{est['measured_batch']} ({est['steps']} steps), SGD step {1e3 * est['sgd_s_median']:.0f} ms "
                f"(load before / after {load_averages(run['load_average_1_5_15_min_before_after']['estimate'])})"
            )
        print("\n" + variants_table(run))
        for s in run["skipped"]:
            print(f"skipped K{s['K']} B{s['batch']}: needs {s['bytes_needed'] / 2**30:.1f} GiB")


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    malloc = tune_malloc()  # as cmc-train does at start-up (before the first large allocation)
    device = resolve_device(args.device, "bench_cmc_step")
    check_precision(args.precision, device)
    torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 1:
        raise SystemExit("bench_cmc_step: --repeats and --warmup must be >= 1")
    if args.mode == "step":
        run = summarize_steps(measure_steps(args, device), args, device)
    elif args.raw_output is not None:  # child of --mode bank: one configuration, raw records only
        args.raw_output.write_text(json.dumps(bank_rounds(args, device)))
        return 0
    else:
        precision = resolve_precision(args.precision, device)  # cmc-train's, without --amp
        run = summarize_bank(measure_bank(args, device, precision), args, device)
    info = machine_info(device)
    run["malloc"] = malloc.detail
    run["machine"] = {**info, "malloc": malloc.detail}
    run["machine_description"] = device_description(info, device.type)
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{device.type}.json"
    store_runs(output, BENCHMARK, [run], RUN_KEY)
    print(f"# {run['machine_description']}, torch {info['torch']}, {info['torch_threads']} threads")
    if run["mode"] == "step":
        gap = ", ".join(f"{k} {milliseconds(v, 1)} ms" for k, v in run["gap_breakdown_s"].items())
        print(
            f"{run['label']}: bound {milliseconds(run['bound']['step_s_median'])} ms, full "
            f"{milliseconds(run['full']['step_s_median'])} ms per step; gap {milliseconds(run['gap_s'])} ms = "
            f"{gap}; paired ratio {run['ratio_paired_median']:.3f}"
        )
    print_tables(output, device)
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
