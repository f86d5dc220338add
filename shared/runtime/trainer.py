"""The trainer runtime: one start-up, one checkpoint schema, one resume path and one epoch loop for every method.

A project does not write a training loop. It supplies a **method** (an object with the hooks of
:class:`Method`): where its run lives (:class:`RunLayout`, from the flags alone), how to build its parts
(:class:`Parts`: data, the module to wrap in DDP, the optimiser), one optimisation step, what its checkpoints
hold in the original repository's layout, and how ``selfsup-eval`` finds its backbone (:class:`Export`).
:class:`TrainingRun` does everything around that, identically for every project:

1. start-up: malloc tuning, ``torch.distributed`` from the launcher's environment, precision, logger, seeds;
2. ``method.build(ctx)``; every input is validated there, so a bad flag or data folder fails **before anything
   is written**; then the run record (``config.json``) is written;
3. ``--resume``: :func:`resolve_resume` finds the checkpoint; :func:`restore` checks the schema and the
   project, lets the method load its own entries, then restores optimiser, loss scaler, every RNG and the
   position;
4. DDP around ``parts.model`` (``method.runner`` is what the step calls: the module or its DDP wrapper);
5. the epoch loop of :mod:`.loop` with logging, SIGTERM/SIGUSR1 and ``--max_iters``; every checkpoint goes
   through :func:`checkpoint_state` (one writer) and :func:`~selfsup.shared.checkpoints.io.atomic_save`.

:meth:`TrainingRun.step` is the step the loop runs, so benchmarks and tests time and call exactly what users
run. The checkpoint file is the original's layout (the method's ``checkpoint_entries``) plus selfsup's
schema, :data:`SCHEMA_KEYS`, which ``selfsup-eval`` reads.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from selfsup.shared.checkpoints.io import (
    atomic_save,
    checkpoint_progress,
    find_latest_checkpoint,
    load_training_checkpoint,
)
from selfsup.shared.data import ResumableSampler, build_training_loader
from selfsup.shared.data.flags import data_root_flag_as
from selfsup.shared.distributed import DistEnv, cleanup, init_distributed
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.logger import MetricLogger, get_logger
from selfsup.shared.runtime.loop import LoopResult, LoopSpec, run_epochs
from selfsup.shared.runtime.precision import check_precision, make_grad_scaler, resolve_precision
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "SCHEMA_KEYS",
    "Export",
    "Method",
    "Parts",
    "RunContext",
    "RunLayout",
    "TrainingData",
    "TrainingRun",
    "checkpoint_state",
    "resolve_resume",
    "restore",
    "train",
    "train_to_checkpoint",
    "training_data",
]

#: selfsup's entries in every training checkpoint, next to the original layout's (``selfsup-eval`` reads
#: ``format``, ``format_version``, ``project``, ``method``, ``backbone``, ``export``, ``input_normalization``;
#: ``--resume`` reads the rest, with the method's own entries and ``optimizer``).
SCHEMA_KEYS = (
    "format",
    "format_version",
    "project",
    "method",
    "backbone",
    "export",
    "input_normalization",
    "input_size",
    "optimizer",
    "scaler",
    "epoch",
    "iteration",
    "global_step",
    "rng",
    "args",
)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Export:
    """How ``selfsup-eval`` and ``selfsup-convert`` find the trained backbone in a checkpoint.

    ``export`` is either ``{"state_dict_location", "prefix", "drop_prefixes"[, "ema_location", "ema_prefix"]}``
    (the backbone's torchvision keys under a prefix of an entry) or ``{"original_format": NAME}`` (read the file
    as that original repository's layout). ``backbone`` rebuilds the network (``None`` where the original format
    describes it), ``input_normalization`` names the pre-training normalisation (a name, or ``(name, (mean,
    std))``), ``input_size`` the side of the pre-training crops in pixels (the largest, with multi-crop:
    ``selfsup-eval`` evaluates at that size by default); ``method`` tells variants of one project apart. Absent
    entries are omitted from the file."""

    export: Mapping[str, Any]
    method: str | None = None
    backbone: BackboneConfig | None = None
    input_normalization: Any = None
    input_size: int | None = None

    def entries(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = self.method
        if self.backbone is not None:
            out["backbone"] = self.backbone.to_dict()
        out["export"] = dict(self.export)
        if self.input_normalization is not None:
            out["input_normalization"] = self.input_normalization
        if self.input_size is not None:
            out["input_size"] = int(self.input_size)
        return out


@dataclass(frozen=True)
class RunLayout:
    """Where a run lives, decided from the flags alone (nothing is created until the parts are built).

    ``last_checkpoint`` is written on ``--ckpt_interval``, signals and ``--max_iters``; :meth:`Method.
    epoch_checkpoints` names the files written after an epoch. ``resume`` is the ``--resume`` request
    (``None``/``""``: fresh, ``"auto"``: the checkpoint with the most progress among ``last_checkpoint`` and
    ``resume_patterns`` in its folder, else a file); ``resume_flag`` and ``data_flag`` (the data location) name
    the trainer's own flags in messages."""

    run_dir: Path
    last_checkpoint: Path
    resume: str | None
    resume_patterns: tuple[str, ...] = ()
    resume_flag: str = "--resume"
    config_files: tuple[Path, ...] = ()
    csv_log: Path | None = None
    tensorboard_dir: Path | None = None
    log_fields: tuple[str, ...] = ("loss",)
    record_name: str = "RunConfig"
    data_flag: str = "--dataset_root"


@dataclass(frozen=True)
class TrainingData:
    """The training set (``len`` = samples per epoch), its resumable sampler and loader, and the loop's
    batch geometry. ``epoch_aware`` objects get ``set_epoch`` at every epoch (seeded augmentations)."""

    dataset: Dataset
    sampler: ResumableSampler
    loader: DataLoader
    per_rank_batch: int
    drop_last: bool = False
    epoch_aware: tuple[Any, ...] = ()

    def iters_per_epoch(self, world_size: int) -> int:
        n = len(self.dataset)  # type: ignore[arg-type]
        return LoopSpec.from_flags(
            _NO_FLAGS,
            start=(0, 0, 0),
            max_epoch=1,
            log_every=1,
            num_samples=n,
            per_rank_batch=self.per_rank_batch,
            world_size=world_size,
            is_main=False,
            drop_last=self.drop_last,
        ).iters_per_epoch


_NO_FLAGS = argparse.Namespace(ckpt_interval=0, max_iters=0, no_progress=True)


def training_data(
    dataset: Dataset,
    *,
    env: DistEnv,
    per_rank_batch: int,
    seed: int,
    num_workers: int,
    drop_last: bool = False,
) -> TrainingData:
    """``dataset`` (taking ``(epoch, index)`` keys, e.g. a ``SeededTransformDataset`` or a wrapper of one) with
    this rank's resumable loader (:func:`~selfsup.shared.data.build_training_loader`); the dataset is the
    epoch-aware object."""
    sampler, loader = build_training_loader(
        dataset,
        batch_size=per_rank_batch,
        seed=seed,
        num_workers=num_workers,
        num_replicas=env.world_size,
        rank=env.rank,
        drop_last=drop_last,
    )
    return TrainingData(dataset, sampler, loader, per_rank_batch, drop_last, (dataset,))


@dataclass(frozen=True)
class Parts:
    """What a method builds: its data, the module DDP wraps (``None``: never wrapped), the optimiser, and how
    many epochs the run has. ``log_every`` is the trainer's logging period flag."""

    data: TrainingData
    model: nn.Module | None
    optimizer: torch.optim.Optimizer
    max_epoch: int
    log_every: int
    broadcast_buffers: bool = True


@dataclass
class RunContext:
    """What the runtime resolved before the method builds: flags, process group, precision, logger, the
    loss scaler and the run record (the method may add entries to ``record`` in ``build``)."""

    args: argparse.Namespace
    env: DistEnv
    precision: str
    log: logging.Logger
    scaler: torch.amp.GradScaler
    record: dict[str, Any]
    #: the global step of the next optimisation step (set from a resumed checkpoint; the runtime advances it)
    global_step: int = 0
    #: the checkpoint the run resumed from (``None``: a fresh run); set before ``start_fresh``/``before_loop``
    resumed_from: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.env.device


class Method(Protocol):
    """The hooks a project supplies (the runtime assigns ``runner`` before the first step)."""

    prog: str  #: the console command, for messages (``moco-train``)
    project: str  #: the checkpoint's ``project`` entry
    runner: nn.Module | None

    def layout(self, args: argparse.Namespace) -> RunLayout: ...

    def resolve_precision(self, args: argparse.Namespace, device: torch.device) -> str:
        """Optional: the autocast precision (default: ``--precision``, checked against the device)."""

    def build(self, ctx: RunContext) -> Parts: ...

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Load the method's own entries (model, queues, banks) from a checkpoint of this project."""

    def start_fresh(self) -> None:
        """Before the first epoch of a run that is not resumed (MoCo fills its queue)."""

    def before_loop(self) -> None:
        """After start/resume, before DDP (speed switches that must follow a fresh start's first pass)."""

    def on_epoch_start(self, epoch: int) -> None: ...

    def step(self, batch: Any) -> Mapping[str, torch.Tensor]:
        """One optimisation step; detached 0-d scalars to log (``loss`` first)."""

    def checkpoint_entries(self) -> dict[str, Any]:
        """The original layout's entries (called on every rank: collectives allowed)."""

    def export(self) -> Export: ...

    def epoch_checkpoints(self, epoch: int) -> list[Path]:
        """Files written after 0-based ``epoch`` (the first is written, the others are copies of it)."""

    def after_save(self, path: Path) -> None:
        """On every rank after a checkpoint was written (per-rank side files)."""

    def after_epoch(self, epoch: int, step: int, checkpoint: Path) -> None:
        """After the epoch's checkpoints (evaluation during training)."""

    def after_step(self, step: int) -> None: ...

    def finish(self, result: LoopResult) -> None:
        """After the loop, on every rank (final plots)."""


def _hook(method: Any, name: str) -> Any:
    return getattr(method, name, None)


# --------------------------------------------------------------------------------------- the schema


def checkpoint_state(
    entries: Mapping[str, Any],
    *,
    project: str,
    export: Export,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    position: tuple[int, int, int],
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """The one writer of training checkpoints: the original layout's ``entries`` (a method-supplied ``epoch``
    is replaced by the position to resume from) next to the selfsup schema (:data:`SCHEMA_KEYS`), with the RNG
    states captured now. ``position`` = ``(epoch, iteration, global_step)`` where a resumed run continues."""
    epoch, iteration, step = position
    return {
        **entries,
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "format": "selfsup",
        "format_version": FORMAT_VERSION,
        "project": project,
        **export.entries(),
        "scaler": scaler.state_dict(),
        "iteration": iteration,
        "global_step": step,
        "rng": capture_rng_state(),
        "args": dict(record),
    }


def resolve_resume(layout: RunLayout) -> Path | None:
    """The checkpoint ``--resume`` asks for (see :class:`RunLayout`); a named file must exist."""
    request = layout.resume
    if not request:
        return None
    if request == "auto":
        last = layout.last_checkpoint
        if last.is_file() and _progress(last)[0] < 0:
            raise ValueError(f"{layout.resume_flag}: {last} is not a readable selfsup training checkpoint")
        candidates = [layout.last_checkpoint.name, *layout.resume_patterns]
        best: Path | None = None
        for pattern in candidates:
            found = find_latest_checkpoint(layout.last_checkpoint.parent, pattern)
            if found is not None and (best is None or _progress(found) > _progress(best)):
                best = found
        return best
    path = Path(request)
    if not path.is_file():
        raise FileNotFoundError(
            f"{layout.resume_flag}: {path} does not exist (give a checkpoint file or 'auto')"
        )
    return path


def _progress(path: Path) -> tuple[int, float]:
    return checkpoint_progress(path)


def restore(
    path: Path, method: Any, *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, flag: str
) -> tuple[int, int, int]:
    """The one reader for ``--resume``: schema and project checked, the method's entries, optimiser, scaler,
    every RNG (last, so nothing drawn while loading shifts them); returns ``(epoch, iteration, step)``."""
    ckpt = load_training_checkpoint(path)
    if ckpt.get("project") != method.project:
        raise ValueError(
            f"{flag}: {path} was written by project {ckpt.get('project')!r}, not by {method.prog} "
            f"(project {method.project!r})"
        )
    method.restore(ckpt)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as err:
        raise ValueError(f"{flag}: the optimiser state of {path} does not fit the flags ({err})") from err
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]), int(ckpt["iteration"]), int(ckpt["global_step"])


# --------------------------------------------------------------------------------------- the run


def skipped_images(dataset: Any) -> int:
    """Unreadable images replaced so far (``--skip_corrupt``): the ``num_skipped()`` of the image folder that
    ``dataset`` wraps (through ``.dataset``/``.base`` attributes); 0 for datasets that cannot be corrupt."""
    seen: set[int] = set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        if callable(getattr(dataset, "num_skipped", None)):
            return int(dataset.num_skipped())
        dataset = getattr(dataset, "dataset", None) or getattr(dataset, "base", None)
    return 0


def _leading_size(batch: Any) -> int:
    """Images in a batch: the first dimension of its first tensor (``(views, target)``, ``(x, target, index)``)."""
    while not isinstance(batch, torch.Tensor):
        batch = batch[0]
    return int(batch.shape[0])


@dataclass
class TrainingRun:
    """A started run of ``method``: use :meth:`start`, then :meth:`step` (benchmarks, tests) or :meth:`train`."""

    method: Any
    ctx: RunContext
    layout: RunLayout
    parts: Parts
    start_at: tuple[int, int, int]
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, method: Any, args: argparse.Namespace, argv: Sequence[str] | None = None) -> TrainingRun:
        """Start-up, build, run record, resume and DDP (module docstring, steps 1-4)."""
        malloc = None if getattr(args, "no_malloc_tuning", False) else tune_malloc()
        layout = method.layout(args)
        env = init_distributed(getattr(args, "dist_backend", None), getattr(args, "device", None))
        try:
            if _hook(method, "resolve_precision"):
                precision = method.resolve_precision(args, env.device)
            else:
                check_precision(args.precision, env.device)
                precision = resolve_precision(args.precision, env.device)
            log = get_logger(method.prog, env.is_main)
            log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
            log.info("precision %s on %s, world size %d", precision, env.device, env.world_size)
            seed_everything(args.seed)
            record = run_record(freeze(args, layout.record_name), list(sys.argv if argv is None else argv))
            record["world_size"] = env.world_size
            record["precision_resolved"] = precision
            scaler = make_grad_scaler(precision, env.device)
            ctx = RunContext(args, env, precision, log, scaler, record)
            method.runner = None
            with data_root_flag_as(layout.data_flag):
                parts = method.build(ctx)
            resume_path = resolve_resume(layout)
        except BaseException:
            cleanup()
            raise
        if env.is_main:  # everything was validated: now the run may write
            for path in layout.config_files:
                save_run_config(record, path)
        start_at = (0, 0, 0)
        if resume_path is not None:
            start_at = restore(
                resume_path, method, optimizer=parts.optimizer, scaler=scaler, flag=layout.resume_flag
            )
            log.info("resumed from %s at epoch %d, iteration %d (step %d)", resume_path, *start_at)
            ctx.global_step, ctx.resumed_from = start_at[2], resume_path
        elif _hook(method, "start_fresh"):
            method.start_fresh()
        if _hook(method, "before_loop"):
            method.before_loop()
        runner = parts.model
        if env.is_distributed and parts.model is not None:
            runner = DistributedDataParallel(
                parts.model,
                device_ids=[env.device.index] if env.device.type == "cuda" else None,
                broadcast_buffers=parts.broadcast_buffers,
            )
        method.runner = runner
        return cls(method, ctx, layout, parts, start_at)

    # ------------------------------------------------------------------ what the loop calls
    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step of the method (the loop's step); advances ``ctx.global_step``."""
        scalars = self.method.step(batch)
        self.ctx.global_step += 1
        return {name: value.detach() for name, value in scalars.items()}

    def _loop_step(self, batch: Any) -> tuple[dict[str, torch.Tensor], int]:
        return self.step(batch), _leading_size(batch)

    def save(self, path: Path, epoch: int, iteration: int, step: int) -> Path:
        """Write a checkpoint (collectives of ``checkpoint_entries`` on every rank, the file on rank 0)."""
        entries = self.method.checkpoint_entries()
        if self.ctx.env.is_main:
            state = checkpoint_state(
                entries,
                project=self.method.project,
                export=self.method.export(),
                optimizer=self.parts.optimizer,
                scaler=self.ctx.scaler,
                position=(epoch, iteration, step),
                record=self.ctx.record,
            )
            atomic_save(state, path)
        if _hook(self.method, "after_save"):
            self.method.after_save(path)
        return path

    def _save_epoch(self, epoch: int, step: int) -> Path:
        paths = self.method.epoch_checkpoints(epoch)
        first = self.save(paths[0], epoch + 1, 0, step)
        if self.ctx.env.is_main:
            for copy in paths[1:]:
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(first, copy)
        last = paths[-1]
        if _hook(self.method, "after_epoch"):
            self.method.after_epoch(epoch, step, last)
        return last

    def train(self) -> LoopResult:
        """The epochs (module docstring, step 5); returns the last checkpoint, the step and why it stopped."""
        args, env, parts, layout = self.ctx.args, self.ctx.env, self.parts, self.layout
        data = parts.data
        spec = LoopSpec.from_flags(
            args,
            start=self.start_at,
            max_epoch=parts.max_epoch,
            log_every=parts.log_every,
            num_samples=len(data.dataset),  # type: ignore[arg-type]
            per_rank_batch=data.per_rank_batch,
            world_size=env.world_size,
            is_main=env.is_main,
            drop_last=data.drop_last,
        )
        counted = getattr(
            args, "skip_corrupt", False
        )  # --skip_corrupt: the running total goes in every log row
        extras = ("skipped_images",) if counted else ()
        metrics = MetricLogger(
            layout.csv_log or layout.run_dir / "log.csv",
            fieldnames=["global_step", "epoch", *layout.log_fields, *extras, "lr", "images_per_s"],
            tensorboard_dir=None if getattr(args, "no_tensorboard", False) else layout.tensorboard_dir,
            enabled=env.is_main,
            resume_step=self.start_at[2] if self.ctx.resumed_from is not None else None,
        )
        try:
            with data_root_flag_as(layout.data_flag):
                result = run_epochs(
                    spec,
                    loader=data.loader,
                    sampler=data.sampler,
                    epoch_aware=data.epoch_aware,
                    train_step=self._loop_step,
                    on_epoch_start=self.method.on_epoch_start,
                    save_last=lambda e, i, s: self.save(layout.last_checkpoint, e, i, s),
                    save_epoch=self._save_epoch,
                    optimizer=parts.optimizer,
                    metrics=metrics,
                    log=self.ctx.log,
                    after_step=_hook(self.method, "after_step"),
                    log_extras=(lambda: {"skipped_images": skipped_images(data.dataset)})
                    if counted
                    else None,
                )
        finally:
            metrics.close()
        if counted:
            total = skipped_images(data.dataset)
            report = self.ctx.log.warning if total else self.ctx.log.info
            report("--skip_corrupt: %d unreadable image loads were skipped by this process", total)
            self.ctx.record["skipped_images"] = total
            if env.is_main:
                for path in layout.config_files:
                    save_run_config(self.ctx.record, path)
        if _hook(self.method, "finish"):
            self.method.finish(result)
        return result

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if not self._closed:
            cleanup()
            self._closed = True


def train(method: Any, args: argparse.Namespace, argv: Sequence[str] | None = None) -> LoopResult:
    """Start ``method`` on ``args``, run every epoch, close; returns the :class:`LoopResult` (its
    ``checkpoint`` is the last one written, else the run's ``last_checkpoint`` path)."""
    run = TrainingRun.start(method, args, argv)
    try:
        result = run.train()
    finally:
        run.close()
    if result.checkpoint is None:
        return LoopResult(run.layout.last_checkpoint, result.step, result.stopped_by)
    return result


def train_to_checkpoint(method: Any, args: argparse.Namespace, argv: Sequence[str] | None = None) -> Path:
    """:func:`train`, returning the path of the last checkpoint."""
    checkpoint = train(method, args, argv).checkpoint
    assert checkpoint is not None
    return checkpoint


def epoch_aware(objects: Iterable[Any]) -> tuple[Any, ...]:
    """The objects of ``objects`` that have ``set_epoch``."""
    return tuple(obj for obj in objects if hasattr(obj, "set_epoch"))
