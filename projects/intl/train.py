"""``intl-train``: INTL pre-training (``winci-ai/INTL`` ``main.py``), one process, torchrun or Slurm.

Per step (spec ``intl.md`` §4-5): the learning rate of the linear warm-up + cosine (``base = --lr · --bs / 256``,
2 warm-up epochs, down to 0.001·base); for ``--method intl_m`` the EMA update of the target with the cosine
momentum schedule from ``--m``; each crop through the network separately (under autocast), its projector output
all-gathered with gradient over the ranks and whitened over the global batch (IterNorm, or ``--spectral_power``;
fp32); the loss of :mod:`.loss` (fp32); backward with loss scaling for fp16; SGD with momentum 0.9 and no weight
decay on 1-D parameters.

Checkpoints go to ``--ckpt_dir`` in the original's names: ``ckpt_<env_name>.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``), ``ckpt_<env_name>_<epoch:04d>.pth.tar`` every
``--save_freq`` epochs and at the end; each holds the original's ``epoch``, ``arch``, ``state_dict`` (DDP keys,
EMA networks included) and ``optimizer`` next to selfsup's training state. ``config.json`` and ``log.csv`` sit in
``--ckpt_dir/<env_name>/``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.intl.cli import parse_args
from selfsup.intl.engine import find_resume, restore_training_state, selfsup_entries, training_data
from selfsup.intl.loss import intl_loss, intl_m_loss, trade_off
from selfsup.intl.model import INTLModel, ema_momentum
from selfsup.intl.transforms import crop_plan, intl_crop_transform, multi_view
from selfsup.intl.whitening import iter_norm, spectral_power_transform
from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.data import build_dataset, dataset_info
from selfsup.shared.data.transforms import NORMALIZATION
from selfsup.shared.distributed import (
    all_gather_with_grad,
    cleanup,
    init_distributed,
    sync_batchnorm_on,
)
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.optimizers import build_optimizer, split_param_groups
from selfsup.shared.optim.schedules import apply_lr, linear_warmup_cosine_lr
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.entrypoint import run_reporting_errors
from selfsup.shared.runtime.logger import MetricLogger, get_logger
from selfsup.shared.runtime.loop import run_epochs
from selfsup.shared.runtime.precision import autocast, make_grad_scaler, prepare_model, resolve_precision
from selfsup.shared.runtime.seeding import seed_everything

__all__ = ["backbone_config", "build_model", "compute_loss", "main", "train"]


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(
        name=args.arch, width=args.width, cifar_stem=args.cifar_stem, stem_padding=args.stem_padding
    )


def build_model(args: argparse.Namespace) -> INTLModel:
    return INTLModel(
        backbone_config(args),
        projection_layers=args.projection_layers,
        projection_size=args.projection_size,
        emb=args.emb,
        ema=args.method == "intl_m",
    )


def input_normalization(args: argparse.Namespace) -> tuple[str, tuple]:
    """``(name, (mean, std))``: the dataset's constants with ``--cifar``, ImageNet's otherwise."""
    if args.cifar:
        info = dataset_info(args.dataset)
        return args.dataset, (info.mean, info.std)
    return "imagenet", NORMALIZATION["imagenet"]


def whiten(x: torch.Tensor, args: Any) -> torch.Tensor:
    """All-gather with gradient, then IterNorm (or the exact spectral power) over the global batch, fp32."""
    x = all_gather_with_grad(x.float())
    if args.spectral_power is not None:
        return spectral_power_transform(x, power=args.spectral_power, axis=args.axis)
    return iter_norm(x, iters=args.iters, axis=args.axis)


def compute_loss(
    model: INTLModel, runner: nn.Module, crops: list[torch.Tensor], args: Any, *, precision: str
) -> dict[str, torch.Tensor]:
    """Forward of each crop and the INTL loss; ``["loss"]`` has grad."""
    device = crops[0].device
    beta = trade_off(args.bs, args.emb, args.axis)
    if args.method == "intl_m":
        with autocast(precision, device):
            target = model.forward_target(crops[0])
            online = [runner(x) for x in crops[1:]]
        loss = intl_m_loss([whiten(t, args) for t in online], whiten(target, args), beta=beta, axis=args.axis)
    else:
        with autocast(precision, device):
            outputs = [runner(x) for x in crops]
        loss = intl_loss([whiten(t, args) for t in outputs], beta=beta, axis=args.axis)
    return {"loss": loss}


def run_precision(args: argparse.Namespace, device: torch.device) -> str:
    """The original runs AMP (fp16 autocast + GradScaler) on GPUs; ``--precision`` chooses here (default fp32,
    ``auto``: bf16 where native; ``--cifar`` is fp32 as ``cifar/main.py``)."""
    return resolve_precision(args.precision, device)


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    malloc = None if args.no_malloc_tuning else tune_malloc()
    env = init_distributed(args.dist_backend, args.device)
    precision = run_precision(args, env.device)
    log = get_logger("intl-train", env.is_main)
    log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
    log.info("precision %s on %s, world size %d", precision, env.device, env.world_size)
    if args.bs % env.world_size:
        raise ValueError(f"--bs {args.bs} is not divisible by the {env.world_size} ranks")
    per_rank_batch = args.bs // env.world_size
    seed_everything(args.seed)
    ckpt_dir = Path(args.ckpt_dir)
    run_dir = ckpt_dir / args.env_name
    record = run_record(freeze(args, "INTLConfig"), list(sys.argv if argv is None else argv))
    record["world_size"] = env.world_size
    record["precision_resolved"] = precision
    if env.is_main:
        save_run_config(record, run_dir / "config.json")

    norm_name, mean_std = input_normalization(args)
    views = [
        intl_crop_transform(size, lo, hi, blur=blur, solarize=sol, mean_std=mean_std)
        for size, lo, hi, blur, sol in crop_plan(args)
    ]
    data = training_data(
        build_dataset(args.dataset, root=args.data_path, split="train", download=args.download,
                      skip_corrupt=args.skip_corrupt),
        multi_view(views),
        seed=args.seed,
        per_rank_batch=per_rank_batch,
        num_workers=-(-args.workers // env.world_size),
        env=env,
        max_epoch=args.epochs,
        log_every=args.print_freq,
    )  # fmt: skip
    iters_per_epoch = data.loop_spec(args, (0, 0, 0)).iters_per_epoch
    total_steps = args.epochs * iters_per_epoch
    warmup_steps = args.warmup_eps * iters_per_epoch
    if warmup_steps >= total_steps:
        raise ValueError(f"--warmup_eps {args.warmup_eps} must be smaller than --epochs {args.epochs}")
    base_lr = args.lr * args.bs / 256

    model = sync_batchnorm_on(build_model(args), env.device, log).to(env.device)
    prepare_model(model, channels_last=args.channels_last, compile_model=args.compile)
    groups = split_param_groups(model, args.wd, exclude_bias_and_norm=not args.cifar)
    optimizer = build_optimizer("sgd", groups, lr=base_lr, momentum=0.9, weight_decay=args.wd)
    scaler = make_grad_scaler(precision, env.device)

    start = (0, 0, 0)
    last_path = ckpt_dir / f"ckpt_{args.env_name}.pth.tar"
    resume = find_resume(args.resume, last_path, f"ckpt_{args.env_name}_*.pth.tar")
    if resume is not None:
        start = restore_training_state(
            resume,
            project="intl",
            model=model,
            own_key=lambda key: key[len("module.") :],
            optimizer=optimizer,
            scaler=scaler,
        )
        log.info("resumed from %s at epoch %d, iteration %d (step %d)", resume, *start)

    runner: nn.Module = model
    if env.is_distributed:
        runner = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    metrics = MetricLogger(
        run_dir / "log.csv",
        fieldnames=["global_step", "epoch", "loss", "lr", "images_per_s"],
        tensorboard_dir=None if args.no_tensorboard else run_dir / "tb",
        enabled=env.is_main,
        resume_step=start[2] if resume is not None else None,
    )
    counter = {"step": start[2]}

    def save(path: Path, epoch: int, iteration: int, step: int) -> Path:
        if env.is_main:
            atomic_save(
                {
                    "epoch": epoch,
                    "arch": args.arch,
                    "state_dict": model.original_state_dict(),
                    "optimizer": optimizer.state_dict(),
                    **selfsup_entries(
                        project="intl",
                        method=args.method,
                        backbone=backbone_config(args),
                        export={
                            "state_dict_location": "state_dict",
                            "prefix": "module.backbone.",
                            "ema_location": "state_dict" if args.method == "intl_m" else None,
                            "ema_prefix": "module.momentum_backbone.",
                            "drop_prefixes": [],
                        },
                        input_normalization=norm_name,
                        scaler=scaler,
                        iteration=iteration,
                        global_step=step,
                        record=record,
                    ),
                },
                path,
            )
        return path

    def step_fn(batch) -> tuple[dict[str, torch.Tensor], int]:
        crops = [c.to(env.device, non_blocking=True) for c in batch[0]]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        step = counter["step"]
        apply_lr(optimizer, linear_warmup_cosine_lr(base_lr, step, total_steps, warmup_steps))
        if args.method == "intl_m":
            model.momentum_update(ema_momentum(step, total_steps, args.m))
        scalars = compute_loss(model, runner, crops, args, precision=precision)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scalars["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        counter["step"] = step + 1
        return {k: v.detach() for k, v in scalars.items()}, crops[0].shape[0]

    def save_epoch(epoch: int, step: int) -> Path:
        last = save(last_path, epoch + 1, 0, step)
        if (epoch + 1) % args.save_freq == 0 or epoch + 1 == args.epochs:
            return save(ckpt_dir / f"ckpt_{args.env_name}_{epoch + 1:04d}.pth.tar", epoch + 1, 0, step)
        return last

    result = run_epochs(
        data.loop_spec(args, start),
        loader=data.loader,
        sampler=data.sampler,
        epoch_aware=[data.dataset],
        train_step=step_fn,
        on_epoch_start=lambda epoch: model.train(),
        save_last=lambda epoch, iteration, step: save(last_path, epoch, iteration, step),
        save_epoch=save_epoch,
        optimizer=optimizer,
        metrics=metrics,
        log=log,
    )
    metrics.close()
    cleanup()
    return result.checkpoint or last_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors("intl-train", train, args, argv if argv is not None else sys.argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
