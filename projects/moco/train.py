"""MoCo pre-training: ``moco-train``, ``python -m selfsup.moco.train`` or under ``torchrun``.

Outputs keep the unofficial MoCo's layout: ``OUTPUT_ROOT/DATASET_NAME/EXP_VERSION/`` with
``weight/ckpt_<epoch>.pkl`` every ``--save_weight_epoch`` epochs (``ckpt_E`` = weights after 0-based epoch E,
as in the original), ``loss/loss.csv`` and ``loss/loss.png``, ``tb/`` (TensorBoard) and ``config.json``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from selfsup.moco.cli import parse_args
from selfsup.moco.model import MoCo
from selfsup.shared.checkpoints.io import atomic_save, load_training_checkpoint, resolve_resume
from selfsup.shared.data import (
    SeededTransformDataset,
    TwoCropsTransform,
    build_dataset,
    build_training_loader,
    moco_eveningglow_transform,
    moco_v2_transform,
)
from selfsup.shared.distributed import (
    DistEnv,
    all_gather_no_grad,
    cleanup,
    convert_sync_batchnorm,
    init_distributed,
)
from selfsup.shared.models.backbones import BackboneConfig, build_backbone_from_config
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import LRSchedule, apply_lr
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.entrypoint import run_reporting_errors
from selfsup.shared.runtime.logger import MetricLogger, get_logger, read_csv_log
from selfsup.shared.runtime.loop import LoopSpec, run_epochs
from selfsup.shared.runtime.plotting import plot_curves_if_available
from selfsup.shared.runtime.precision import (
    autocast,
    check_precision,
    make_grad_scaler,
    prepare_model,
    resolve_precision,
)
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything

EXPORT = {
    "state_dict_location": "encoder",
    "prefix": "module.resnet.",
    "drop_prefixes": ["fc."],
    "ema_location": "momentum_encoder",
}
LOG_FIELDS = ["global_step", "epoch", "loss", "lr", "images_per_s"]


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.output_root) / args.dataset_name / args.exp_version


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(name=args.arch, width=args.width, cifar_stem=args.cifar_stem)


def input_normalization(aug_plus: bool) -> str:
    """The ``NORMALIZATION`` name the pre-training views use: MoCo v2's ImageNet constants, else the original's 0.5."""
    return "imagenet" if aug_plus else "half"


def build_model(args: argparse.Namespace) -> MoCo:
    return MoCo(
        build_backbone_from_config(backbone_config(args)),
        dim=args.feature_dim,
        num_keys=args.num_keys,
        momentum=args.momentum,
        temperature=args.temperature,
        mlp=args.mlp,
        shuffle_bn=args.shuffle_bn,
        bn_splits=args.bn_splits,
    )


def build_schedule(args: argparse.Namespace, iters_per_epoch: int) -> LRSchedule:
    """Per-epoch step decay ×0.1 at ``--schedule`` (120, 160: the original's intended schedule) or ``--cos``."""
    if args.cos:
        return LRSchedule("cosine", args.lr, args.max_epoch, iters_per_epoch)
    return LRSchedule("step", args.lr, args.max_epoch, iters_per_epoch, milestones=tuple(args.schedule))


def _prefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original's ``nn.DataParallel(Resnet50)`` key layout: ``module.resnet.<torchvision key>``."""
    return {EXPORT["prefix"] + k: v.detach().cpu() for k, v in state.items()}


def _unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(EXPORT["prefix"])
    return {k[n:]: v for k, v in state.items()}


def checkpoint_state(
    model: MoCo, optimizer, scaler, *, epoch: int, iteration: int, step: int, record: dict
) -> dict:
    return {
        "format": "selfsup",
        "format_version": 1,
        "project": "moco",
        "backbone": BackboneConfig(**record["args"]["backbone"]).to_dict(),
        "export": dict(EXPORT),
        "input_normalization": input_normalization(record["args"]["aug_plus"]),
        "encoder": _prefixed(model.encoder_q.state_dict()),
        "momentum_encoder": _prefixed(model.encoder_k.state_dict()),
        "queue": model.queue.detach().cpu(),
        "queue_ptr": int(model.queue_ptr),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "iteration": iteration,
        "global_step": step,
        "rng": capture_rng_state(),
        "args": record,
    }


def restore(model: MoCo, optimizer, scaler, ckpt: dict, args: argparse.Namespace) -> tuple[int, int, int]:
    saved = BackboneConfig(**ckpt["backbone"])
    if saved != backbone_config(args):
        raise ValueError(
            f"--resume: the checkpoint's backbone {saved} differs from the flags' {backbone_config(args)}; "
            "pass the same --arch/--width/--cifar_stem"
        )
    if ckpt["queue"].shape != model.queue.shape:
        raise ValueError(
            f"--resume: checkpoint queue {tuple(ckpt['queue'].shape)} != --num_keys/--feature_dim "
            f"{tuple(model.queue.shape)}"
        )
    model.encoder_q.load_state_dict(_unprefixed(ckpt["encoder"]))
    model.encoder_k.load_state_dict(_unprefixed(ckpt["momentum_encoder"]))
    model.queue.copy_(ckpt["queue"])
    model.queue_ptr.fill_(ckpt["queue_ptr"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt["iteration"], ckpt["global_step"]


def train_step(
    runner: torch.nn.Module,
    model: MoCo,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x_q: torch.Tensor,
    x_k: torch.Tensor,
    *,
    precision: str,
) -> torch.Tensor:
    """One MoCo iteration in the original's order: InfoNCE, optimiser step on the query encoder, then the
    momentum update of the key encoder and the queue update. ``runner`` is ``model`` or its DDP wrapper."""
    with autocast(precision, x_q.device):
        logits, labels, keys = runner(x_q, x_k)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    model.momentum_update()
    model.enqueue(keys)
    return loss.detach()


@torch.no_grad()
def fill_queue(model: MoCo, loader, env: DistEnv) -> None:
    """The original's start-up pass: key features of the second view until the queue is full."""
    keys, have = [], 0
    for views, _ in loader:
        k = F.normalize(model.encoder_k(views[1].to(env.device, non_blocking=True)), dim=1)
        k = all_gather_no_grad(k)
        keys.append(k)
        have += k.shape[0]
        if have >= model.num_keys:
            break
    if have < model.num_keys:
        raise ValueError(
            f"--num_keys {model.num_keys} exceeds the {have} images of the training set; lower --num_keys"
        )
    model.init_queue(torch.cat(keys))


def make_data(args: argparse.Namespace, env: DistEnv, per_rank_batch: int):
    dataset = build_dataset(
        args.dataset,
        root=args.dataset_root,
        split="train",
        download=args.download,
        skip_corrupt=args.skip_corrupt,
    )
    recipe = moco_v2_transform if args.aug_plus else moco_eveningglow_transform
    scale = {} if args.crop_min is None else {"min_scale": args.crop_min}
    view = recipe(crop=args.crop, **scale)
    seeded = SeededTransformDataset(dataset, TwoCropsTransform(view), seed=args.seed)
    sampler, loader = build_training_loader(
        seeded,
        batch_size=per_rank_batch,
        seed=args.seed,
        num_workers=args.num_workers,
        num_replicas=env.world_size,
        rank=env.rank,
    )
    return seeded, sampler, loader


def plot_loss(csv_path: Path, png_path: Path, title: str) -> None:
    """Redraw ``loss.png`` from the CSV log (skipped with a warning when matplotlib is missing)."""
    rows = read_csv_log(csv_path)
    if rows:
        curve = ([r["global_step"] for r in rows], [r["loss"] for r in rows])
        plot_curves_if_available(
            {"loss": curve},
            png_path,
            logger=logging.getLogger("moco"),
            xlabel="iteration",
            ylabel="InfoNCE loss",
            title=title,
        )


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Run pre-training; returns the path of the last checkpoint written."""
    malloc = None if args.no_malloc_tuning else tune_malloc()  # before the first large allocation
    env = init_distributed(args.dist_backend, args.device)
    check_precision(args.precision, env.device)
    precision = resolve_precision(args.precision, env.device)
    log = get_logger("moco", env.is_main)
    log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
    if precision != args.precision:
        log.info("--precision %s resolved to %s on %s", args.precision, precision, env.device)
    if args.batch_size % env.world_size:
        raise ValueError(f"--batch_size {args.batch_size} is not divisible by the {env.world_size} ranks")
    per_rank_batch = args.batch_size // env.world_size
    seed_everything(args.seed)
    out = run_dir(args)
    weight_dir, loss_dir = out / "weight", out / "loss"
    record = run_record(freeze(args, "MoCoConfig"), argv)
    record["args"]["backbone"] = backbone_config(args).to_dict()
    record["world_size"] = env.world_size
    record["precision_resolved"] = precision
    if env.is_main:
        save_run_config(record, out / "config.json")
        if args.save_config:
            save_run_config(record, out / "config.yml")  # JSON is valid YAML

    seeded, sampler, loader = make_data(args, env, per_rank_batch)
    model = build_model(args).to(env.device)
    if args.sync_bn:
        model.encoder_q = convert_sync_batchnorm(model.encoder_q)
        model.encoder_k = convert_sync_batchnorm(model.encoder_k)
    optimizer = build_optimizer(
        "sgd",
        model.encoder_q.parameters(),
        lr=args.lr,
        momentum=args.SGD_momentum,
        weight_decay=args.weight_decay,
    )
    scaler = make_grad_scaler(precision, env.device)

    start_epoch, start_iter, step = 0, 0, 0
    resume_arg = args.resume
    if resume_arg == "auto" and args.start_epoch is not None:
        resume_arg = str(weight_dir / f"ckpt_{args.start_epoch}.pkl")
    resume_path = resolve_resume(resume_arg, weight_dir)
    if resume_path is not None:
        start_epoch, start_iter, step = restore(
            model, optimizer, scaler, load_training_checkpoint(resume_path), args
        )
        log.info(
            "resumed from %s at epoch %d, iteration %d (step %d)", resume_path, start_epoch, start_iter, step
        )
    else:
        model.momentum_update(0.0)
        sampler.set_epoch(-1)
        seeded.set_epoch(-1)
        fill_queue(model, loader, env)
        log.info("queue filled with %d real keys", model.num_keys)

    for encoder in (model.encoder_q, model.encoder_k):
        prepare_model(encoder, channels_last=args.channels_last, compile_model=args.compile)
    runner: torch.nn.Module = model
    if env.is_distributed:
        runner = DistributedDataParallel(
            model,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    spec = LoopSpec.from_flags(
        args,
        start=(start_epoch, start_iter, step),
        max_epoch=args.max_epoch,
        log_every=args.log_every,
        num_samples=len(seeded),
        per_rank_batch=per_rank_batch,
        world_size=env.world_size,
        is_main=env.is_main,
    )
    schedule = build_schedule(args, spec.iters_per_epoch)
    metrics = MetricLogger(
        loss_dir / "loss.csv",
        fieldnames=LOG_FIELDS,
        tensorboard_dir=None if args.no_tensorboard else out / "tb",
        enabled=env.is_main,
        resume_step=step if resume_path is not None else None,
    )
    last_path = weight_dir / "ckpt_last.pkl"

    def save(path: Path, epoch: int, iteration: int, step: int) -> Path:
        if env.is_main:
            state = checkpoint_state(
                model, optimizer, scaler, epoch=epoch, iteration=iteration, step=step, record=record
            )
            atomic_save(state, path)
        return path

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    def step_fn(batch) -> tuple[dict[str, torch.Tensor], int]:
        views, _ = batch
        x_q = views[0].to(env.device, non_blocking=True, memory_format=memory_format)
        x_k = views[1].to(env.device, non_blocking=True, memory_format=memory_format)
        return {
            "loss": train_step(runner, model, optimizer, scaler, x_q, x_k, precision=precision)
        }, x_q.shape[0]

    def on_epoch_start(epoch: int) -> None:
        apply_lr(optimizer, schedule.lr_at(epoch, 0))
        model.train()

    def save_epoch(epoch: int, step: int) -> Path:
        if epoch % args.save_weight_epoch == 0 or epoch + 1 == args.max_epoch:
            return save(weight_dir / f"ckpt_{epoch}.pkl", epoch + 1, 0, step)
        return save(last_path, epoch + 1, 0, step)

    def after_step(step: int) -> None:
        if env.is_main and args.plot_iter and step % args.plot_iter == 0:
            plot_loss(loss_dir / "loss.csv", loss_dir / "loss.png", f"{args.exp_version}")

    result = run_epochs(
        spec,
        loader=loader,
        sampler=sampler,
        epoch_aware=[seeded],
        train_step=step_fn,
        on_epoch_start=on_epoch_start,
        save_last=lambda epoch, iteration, step: save(last_path, epoch, iteration, step),
        save_epoch=save_epoch,
        optimizer=optimizer,
        metrics=metrics,
        log=log,
        after_step=after_step,
    )
    metrics.close()
    if env.is_main and result.stopped_by != "signal":
        plot_loss(loss_dir / "loss.csv", loss_dir / "loss.png", f"{args.exp_version}")
    cleanup()
    return result.checkpoint or last_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors("moco-train", train, args, argv if argv is not None else sys.argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
