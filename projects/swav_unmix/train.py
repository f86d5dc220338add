"""``swav-unmix-train``: SwAV with Un-Mix (``main_swav_unmix.py``), one process, torchrun or Slurm.

Per iteration (spec ``swav_unmix.md`` §3-5): learning rate from the per-iteration warm-up + cosine array; the
prototypes re-normalised; with Un-Mix (``--run_swav false``) the mixed crops of :mod:`.unmix`; one forward of all
crops (:class:`~.model.SwAVModel`); codes of the assignment crops (queue + Sinkhorn in fp32, :mod:`.codes`); the
swapped-prediction loss (:mod:`.loss`), ``L_ori + λ·L_mix + (1−λ)·L_mix_rev`` with Un-Mix; backward (with loss
scaling for fp16); prototype gradients dropped for the first ``--freeze_prototypes_niters`` iterations; a LARC
step (trust 0.001, no clip, every parameter).

Outputs in ``--dump_path`` (the original's layout): ``checkpoint.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``) with the original's ``epoch``, ``state_dict``
(``module.``-prefixed) and ``optimizer`` next to selfsup's training state (every rank's queue, grad scaler,
iteration, RNGs, run record); ``checkpoints/ckp-<epoch>.pth`` every ``--checkpoint_freq`` epochs and at the end;
``queue<rank>.pth`` (``{"queue": ...}``); ``config.json``, ``log.csv`` and ``tb/``. A run restarts automatically
from ``checkpoint.pth.tar`` when it exists, as the original does.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup.shared.checkpoints.io import atomic_save, load_training_checkpoint
from selfsup.shared.data import (
    MultiCropTransform,
    SeededTransformDataset,
    build_dataset,
    build_training_loader,
)
from selfsup.shared.data.transforms import swav_crop_transform
from selfsup.shared.distributed import DistEnv, cleanup, init_distributed, sync_batchnorm_on
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.optim.schedules import apply_lr, warmup_cosine_schedule
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.entrypoint import run_reporting_errors
from selfsup.shared.runtime.logger import MetricLogger, get_logger
from selfsup.shared.runtime.loop import LoopSpec, run_epochs
from selfsup.shared.runtime.precision import autocast, make_grad_scaler, prepare_model, resolve_precision
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything
from selfsup.swav_unmix.cli import parse_args
from selfsup.swav_unmix.codes import assignment_codes
from selfsup.swav_unmix.loss import swapped_prediction_loss
from selfsup.swav_unmix.model import SwAVModel
from selfsup.swav_unmix.queue import EmbeddingQueue, effective_queue_length
from selfsup.swav_unmix.unmix import mix_crops, split_unmix_rows

__all__ = ["backbone_config", "build_model", "compute_loss", "main", "train"]

LAST_CHECKPOINT = "checkpoint.pth.tar"
LOG_FIELDS = [
    "global_step",
    "epoch",
    "loss",
    "loss_ori",
    "loss_mix",
    "loss_mix_rev",
    "lam",
    "lr",
    "images_per_s",
]


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(
        name=args.arch, width=args.width, cifar_stem=args.cifar_stem, stem_padding=args.stem_padding
    )


def build_model(args: argparse.Namespace) -> SwAVModel:
    return SwAVModel(
        backbone_config(args),
        hidden_mlp=args.hidden_mlp,
        feat_dim=args.feat_dim,
        nmb_prototypes=args.nmb_prototypes,
        forward_mode=args.forward_mode,
    )


def input_normalization(args: argparse.Namespace) -> str:
    return "cifar_swav" if args.cifar_aug else "swav"


def multicrop_transform(args: argparse.Namespace) -> MultiCropTransform:
    """``MultiCropDataset``'s views: per resolution ``i``, ``nmb_crops[i]`` crops of ``size_crops[i]``."""
    strength, blur = (0.5, False) if args.cifar_aug else (1.0, True)
    return MultiCropTransform(
        [
            (
                swav_crop_transform(
                    size, lo, hi, normalization=input_normalization(args), color_strength=strength, blur=blur
                ),
                n,
            )
            for n, size, lo, hi in zip(
                args.nmb_crops, args.size_crops, args.min_scale_crops, args.max_scale_crops
            )
        ]
    )


def run_precision(args: argparse.Namespace, device: torch.device) -> str:
    """``--precision`` when given; else ``--use_fp16 true``: fp16 on CUDA (apex O1 in the original), bf16 on a
    CPU with native bf16, fp32 otherwise; ``--use_fp16 false``: fp32."""
    if args.precision is not None:
        return resolve_precision(args.precision, device)
    if not args.use_fp16:
        return "fp32"
    return "fp16" if device.type == "cuda" else resolve_precision("auto", device)


def compute_loss(
    model: SwAVModel,
    runner: nn.Module,
    crops: list[torch.Tensor],
    args: Any,
    *,
    queue: EmbeddingQueue | None,
    precision: str,
    group: Any = None,
) -> dict[str, torch.Tensor]:
    """Forward and loss of one iteration (the prototypes must be normalised first); ``["loss"]`` has grad."""
    bs = crops[0].shape[0]
    device = crops[0].device
    unmix = None if args.run_swav else mix_crops(crops, unmix_prob=args.unmix_prob, beta=args.unmix_beta)
    inputs = crops if unmix is None else unmix.crops
    with autocast(precision, device):
        embedding, scores = runner(inputs)
    embedding = embedding.detach()

    def swav(scores_: torch.Tensor, embedding_: torch.Tensor, reverse: bool) -> torch.Tensor:
        codes = assignment_codes(
            scores_,
            embedding_,
            batch_size=bs,
            crops_for_assign=args.crops_for_assign,
            prototypes=model.prototypes.weight.detach(),
            queue=queue,
            epsilon=args.epsilon,
            sinkhorn_iterations=args.sinkhorn_iterations,
            reverse_first=reverse,
            group=group,
        )
        return swapped_prediction_loss(scores_, codes, batch_size=bs, temperature=args.temperature)

    if unmix is None:
        loss = swav(scores, embedding, False)
        return {"loss": loss}
    scores_ori, scores_mix = split_unmix_rows(scores, bs)
    emb_ori, emb_mix = split_unmix_rows(embedding, bs)
    loss_ori = swav(scores_ori, emb_ori, False)
    loss_mix = swav(scores_mix, emb_mix, False)
    loss_mix_rev = swav(scores_mix, emb_mix, True)
    lam = unmix.lam
    return {
        "loss": loss_ori + lam * loss_mix + (1.0 - lam) * loss_mix_rev,
        "loss_ori": loss_ori,
        "loss_mix": loss_mix,
        "loss_mix_rev": loss_mix_rev,
        "lam": torch.tensor(lam, dtype=torch.float32, device=device),
    }


def _sync_bn(model: nn.Module, args: argparse.Namespace, env: DistEnv, log: logging.Logger) -> nn.Module:
    """SyncBN over all ranks (``--sync_bn pytorch``) or groups of ``--syncbn_process_group_size``
    (``apex``); not on CPU, where torch has no SyncBN kernel (each rank then normalises its own batch)."""
    if not env.is_distributed or env.device.type == "cpu":
        return sync_batchnorm_on(model, env.device, log)
    group = None
    if args.sync_bn == "apex":
        size = args.syncbn_process_group_size
        if env.world_size % size:
            raise ValueError(
                f"--syncbn_process_group_size {size} does not divide the world size {env.world_size}"
            )
        group, _ = dist.new_subgroups(size)
    return sync_batchnorm_on(model, env.device, log, group)


def _gather_queue(queue: EmbeddingQueue | None, env: DistEnv) -> dict[str, Any]:
    if queue is None:
        return {"queues": None, "queue_in_use": None}
    local = queue.queue.detach()
    in_use = queue.in_use.detach().reshape(1).to(torch.int32)
    if env.is_distributed:
        parts = [torch.empty_like(local) for _ in range(env.world_size)]
        dist.all_gather(parts, local)
        flags = [torch.empty_like(in_use) for _ in range(env.world_size)]
        dist.all_gather(flags, in_use)
    else:
        parts, flags = [local], [in_use]
    return {
        "queues": torch.stack(parts).cpu(),
        "queue_in_use": [bool(f.item()) for f in flags],
    }


def _load_model_state(model: SwAVModel, state_dict: dict[str, torch.Tensor]) -> None:
    own = model.original_state_dict()
    if set(own) != set(state_dict):
        missing, extra = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        raise ValueError(
            f"the checkpoint's state_dict does not fit the flags (missing {missing[:4]}, unexpected {extra[:4]}); "
            "pass the same --arch/--hidden_mlp/--feat_dim/--nmb_prototypes"
        )
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"the checkpoint's {key} has shape {tuple(value.shape)}, the flags give {tuple(own[key].shape)}"
            )
    trunk = {k[len("module.") :]: v for k, v in state_dict.items()}
    head = {k: v for k, v in trunk.items() if k.startswith(("projection_head.", "prototypes."))}
    model.backbone.load_state_dict({k: v for k, v in trunk.items() if k not in head}, strict=False)
    model.projection_head.load_state_dict(
        {k[len("projection_head.") :]: v for k, v in head.items() if k.startswith("projection_head.")}
    )
    model.prototypes.load_state_dict({"weight": head["prototypes.weight"]})


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    malloc = None if args.no_malloc_tuning else tune_malloc()
    env = init_distributed(args.dist_backend, args.device)
    precision = run_precision(args, env.device)
    log = get_logger("swav-unmix-train", env.is_main)
    log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
    log.info("precision %s on %s, world size %d", precision, env.device, env.world_size)
    seed_everything(args.seed)  # the same seed on every rank: the Un-Mix draws agree across ranks
    out = Path(args.dump_path)
    record = run_record(freeze(args, "SwAVUnMixConfig"), list(sys.argv if argv is None else argv))
    record["world_size"] = env.world_size
    record["precision_resolved"] = precision
    if env.is_main:
        save_run_config(record, out / "config.json")
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)

    dataset = SeededTransformDataset(
        build_dataset(
            args.dataset,
            root=args.data_path,
            split="train",
            download=args.download,
            skip_corrupt=args.skip_corrupt,
        ),
        multicrop_transform(args),
        seed=args.seed,
    )
    sampler, loader = build_training_loader(
        dataset,
        batch_size=args.batch_size,
        seed=args.seed,
        num_workers=args.workers,
        num_replicas=env.world_size,
        rank=env.rank,
        drop_last=True,
    )
    spec_args = dict(
        max_epoch=args.epochs,
        log_every=args.log_every,
        num_samples=len(dataset),
        per_rank_batch=args.batch_size,
        world_size=env.world_size,
        is_main=env.is_main,
        drop_last=True,
    )
    iters_per_epoch = LoopSpec.from_flags(args, start=(0, 0, 0), **spec_args).iters_per_epoch
    lr_schedule = warmup_cosine_schedule(
        args.base_lr, args.final_lr, args.epochs, iters_per_epoch, args.warmup_epochs, args.start_warmup
    )

    model = build_model(args)
    model = _sync_bn(model, args, env, log)
    model.to(env.device)
    prepare_model(model, channels_last=args.channels_last, compile_model=args.compile)
    optimizer = build_optimizer(
        "larc", model.parameters(), lr=args.base_lr, momentum=0.9, weight_decay=args.wd, eta=0.001, clip=False
    )
    scaler = make_grad_scaler(precision, env.device)
    queue_length = effective_queue_length(args.queue_length, args.batch_size, env.world_size)
    if args.queue_length and not queue_length:
        log.warning(
            "--queue_length %d is shorter than the global batch %d: no queue (as in the original)",
            args.queue_length,
            args.batch_size * env.world_size,
        )
    holder: dict[str, EmbeddingQueue | None] = {"queue": None}

    def new_queue() -> EmbeddingQueue:
        return EmbeddingQueue(len(args.crops_for_assign), queue_length // env.world_size, args.feat_dim).to(
            env.device
        )

    start = (0, 0, 0)
    resume_path = out / LAST_CHECKPOINT
    if resume_path.is_file():
        ckpt = load_training_checkpoint(resume_path)
        if ckpt.get("project") != "swav_unmix":
            raise ValueError(
                f"{resume_path}: not a swav-unmix-train checkpoint (project {ckpt.get('project')!r})"
            )
        _load_model_state(model, ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        if ckpt.get("queues") is not None:
            queues = ckpt["queues"]
            if queues.shape[0] != env.world_size:
                raise ValueError(
                    f"{resume_path} holds the queues of {queues.shape[0]} ranks; this run has {env.world_size}"
                )
            queue = new_queue()
            if queue.queue.shape != queues[env.rank].shape:
                raise ValueError(
                    f"{resume_path}: queue {tuple(queues[env.rank].shape)} does not fit --queue_length/--feat_dim "
                    f"{tuple(queue.queue.shape)}"
                )
            queue.queue.copy_(queues[env.rank])
            queue.in_use.fill_(bool(ckpt["queue_in_use"][env.rank]))
            holder["queue"] = queue
        start = (ckpt["epoch"], ckpt["iteration"], ckpt["global_step"])
        log.info("restarted from %s at epoch %d, iteration %d (step %d)", resume_path, *start)

    runner: nn.Module = model
    if env.is_distributed:
        runner = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    metrics = MetricLogger(
        out / "log.csv",
        fieldnames=LOG_FIELDS
        if not args.run_swav
        else ["global_step", "epoch", "loss", "lr", "images_per_s"],
        tensorboard_dir=None if args.no_tensorboard else out / "tb",
        enabled=env.is_main,
        resume_step=start[2] if start != (0, 0, 0) else None,
    )
    counter = {"iteration": start[2]}

    def save(path: Path, epoch: int, iteration: int, step: int) -> Path:
        queues = _gather_queue(holder["queue"], env)
        if env.is_main:
            state = {
                "epoch": epoch,
                "state_dict": model.original_state_dict(),
                "optimizer": optimizer.state_dict(),
                "format": "selfsup",
                "format_version": 1,
                "project": "swav_unmix",
                "method": "swav" if args.run_swav else "unmix",
                "backbone": backbone_config(args).to_dict(),
                "export": {
                    "state_dict_location": "state_dict",
                    "prefix": "module.",
                    "drop_prefixes": ["projection_head.", "prototypes."],
                },
                "input_normalization": input_normalization(args),
                **queues,
                "scaler": scaler.state_dict(),
                "iteration": iteration,
                "global_step": step,
                "rng": capture_rng_state(),
                "args": record,
            }
            atomic_save(state, path)
        if holder["queue"] is not None:
            atomic_save({"queue": holder["queue"].queue.detach().cpu()}, out / f"queue{env.rank}.pth")
        return path

    def step_fn(batch: tuple[list[torch.Tensor], torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        crops = batch[0]
        iteration = counter["iteration"]
        apply_lr(optimizer, float(lr_schedule[iteration]))
        model.normalize_prototypes()
        crops = [c.to(env.device, non_blocking=True) for c in crops]
        if args.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        scalars = compute_loss(model, runner, crops, args, queue=holder["queue"], precision=precision)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scalars["loss"]).backward()
        if iteration < args.freeze_prototypes_niters:
            for name, p in model.named_parameters():
                if "prototypes" in name:
                    p.grad = None
        scaler.step(optimizer)
        scaler.update()
        counter["iteration"] = iteration + 1
        return {name: value.detach() for name, value in scalars.items()}, crops[0].shape[0]

    def on_epoch_start(epoch: int) -> None:
        model.train()
        if queue_length > 0 and epoch >= args.epoch_queue_starts and holder["queue"] is None:
            holder["queue"] = new_queue()
            log.info(
                "epoch %d: queue of %d embeddings per rank started", epoch, queue_length // env.world_size
            )
        if holder["queue"] is not None and not (epoch == start[0] and start[1] > 0):
            holder["queue"].reset_use()  # a resumed epoch keeps the flag it was saved with

    def save_epoch(epoch: int, step: int) -> Path:
        last = save(out / LAST_CHECKPOINT, epoch + 1, 0, step)
        if env.is_main and (epoch % args.checkpoint_freq == 0 or epoch == args.epochs - 1):
            shutil.copyfile(last, out / "checkpoints" / f"ckp-{epoch}.pth")
        return last

    spec = LoopSpec.from_flags(args, start=start, **spec_args)
    result = run_epochs(
        spec,
        loader=loader,
        sampler=sampler,
        epoch_aware=[dataset],
        train_step=step_fn,
        on_epoch_start=on_epoch_start,
        save_last=lambda epoch, iteration, step: save(out / LAST_CHECKPOINT, epoch, iteration, step),
        save_epoch=save_epoch,
        optimizer=optimizer,
        metrics=metrics,
        log=log,
    )
    metrics.close()
    cleanup()
    return result.checkpoint or out / LAST_CHECKPOINT


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors("swav-unmix-train", train, args, argv if argv is not None else sys.argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
