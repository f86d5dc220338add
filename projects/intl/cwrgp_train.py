"""``cwrgp-train``: CW-RGP pre-training (``winci-ai/CW-RGP`` ``base/train.py --method cwrgp``, set up as W-MSE),
one process. Weng et al., "An Investigation into Whitening Loss for Self-supervised Learning" (NeurIPS 2022,
arXiv:2210.03586); spec ``intl.md`` App. A. Flags and their defaults: :mod:`.cwrgp_cli`.

Per step (``base/methods/cwrgp.py``): the learning rate of :func:`learning_rate`; the ``--num_samples`` views of
each image through the encoder one view at a time (its BatchNorm sees each view's batch, as the original), the
head once on all views concatenated; then ``--w_iter`` times: a random partition of the batch into sub-batches
of ``--w_size`` (``torch.randperm``), each view's sub-batch whitened by group ZCA
(:func:`~selfsup.intl.whitening.group_zca_whitening`, ``--group`` groups, fp32) after a fresh random permutation
of the ``--emb`` features per sub-batch and view (none with ``--no_rg``; the permutations are drawn from the
CPU generator in the original's order), and :func:`~selfsup.intl.loss.pairwise_mse_loss` over the view pairs on
the whole batch (normalised MSE; ``F.mse_loss`` with ``--no_norm``); the loss is the mean over the ``w_iter``
repetitions (:func:`whitened_pairwise_loss`). Adam (``--lr``, L2 ``--weight_decay``); fp32 unless
``--precision`` (the whitening and the loss always run in fp32).

Network (:class:`~selfsup.intl.model.CWRGPModel`): ResNet (``--arch resnet18``, zero-initialised residual BN) with
a 3×3/1 ``conv1`` and **no max-pool for every dataset** (selfsup's ``cifar_stem``); the original removes the
max-pool for CIFAR only and keeps it for STL-10 and Tiny-ImageNet (3×3 conv then 3×3/2 max-pool: 32×32 maps
at ``layer1`` for 64-px crops, 64×64 here, about 4× the encoder's compute). Head: ``--head_layers`` − 1 ×
[Linear(``--head_size``) → BN1d → ReLU] → Linear(``--emb``).

Data (W-MSE's order, :func:`~selfsup.intl.transforms.wmse_transform`): crops of 32 px for CIFAR-10/100, 64 px
for STL-10 (``train+unlabeled``) and Tiny-ImageNet (``--dataset tiny_in``: the image folder ``--data_path``
with ``train/`` and ``val/`` in class folders; any image folder is treated the same), the native size of the
others (``digits``, ``npz``: 32); normalised with ``dataset_info(name).mean/std`` (W-MSE's constants differ in
the 2nd-3rd digit for CIFAR-100 and STL-10; an image folder uses ImageNet's, W-MSE's Tiny-ImageNet ones are
(0.480, 0.448, 0.398) / (0.277, 0.269, 0.282)). Batches of ``--bs`` (last incomplete batch dropped).

Checkpoints in ``--ckpt_dir``: ``checkpoint_<env_name>_<epoch:04d>.pth.tar`` (0-based epoch, as the original)
every ``--save_freq`` (500) epochs, and ``checkpoint_<env_name>.pth.tar`` after every epoch (and on
``--ckpt_interval``, SIGTERM/SIGUSR1, ``--max_iters``). Each holds the original's ``epoch``, ``arch``,
``state_dict`` (``model.module.*``, ``head.*``) and ``optimizer``, next to selfsup's training state, whose
``export`` lets ``selfsup-eval`` read the encoder. ``config.json``, ``log.csv`` and ``eval.csv`` sit in
``--ckpt_dir/<env_name>/``.

Evaluation (``--eval_every`` 10, from epoch ``--epochs − drop[0]`` on every ``--eval_every_drop`` 5, as the
original; 0: never): the last checkpoint through ``selfsup-eval``'s ``nn5`` kNN preset (``k`` = ``--knn``) and
``intl_cifar`` linear preset (Adam probe on cached features), both with the training normalisation (W-MSE's
evaluation uses each dataset's own constants), logged as ``acc_knn``, ``acc``, ``acc_5`` (the original's names).

Differences from the original besides the stem: ``--lr_step cos`` follows W-MSE (the cosine steps after the
warm-up; CW-RGP's ``train.py`` reads a missing ``cfg.warmup_cnt`` there and stops); ``--start_epoch`` only comes
from a resumed checkpoint; augmentation flags other than ``--crop_s0`` keep their defaults; one process (the
original's ``nn.DataParallel`` splits the encoder's BatchNorm batch over the GPUs).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from selfsup.intl.cwrgp_cli import parse_args
from selfsup.intl.engine import find_resume, restore_training_state, selfsup_entries, training_data
from selfsup.intl.loss import pairwise_mse_loss
from selfsup.intl.model import CWRGPModel
from selfsup.intl.transforms import multi_view, wmse_transform
from selfsup.intl.whitening import group_zca_whitening
from selfsup.shared.checkpoints.io import atomic_save
from selfsup.shared.data import build_dataset, dataset_info
from selfsup.shared.distributed import cleanup, init_distributed
from selfsup.shared.evaluation import evaluate_checkpoint
from selfsup.shared.models.backbones import BackboneConfig
from selfsup.shared.optim.schedules import apply_lr
from selfsup.shared.runtime.config import freeze, run_record, save_run_config
from selfsup.shared.runtime.cpu import tune_malloc
from selfsup.shared.runtime.entrypoint import run_reporting_errors
from selfsup.shared.runtime.logger import MetricLogger, get_logger
from selfsup.shared.runtime.loop import run_epochs
from selfsup.shared.runtime.precision import autocast, make_grad_scaler, prepare_model, resolve_precision
from selfsup.shared.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything

__all__ = [
    "backbone_config",
    "build_model",
    "compute_loss",
    "evaluation_due",
    "image_size",
    "learning_rate",
    "main",
    "train",
    "whitened_pairwise_loss",
]

#: where ``selfsup-eval`` finds the encoder in a checkpoint.
EXPORT = {"state_dict_location": "state_dict", "prefix": "model.module.", "drop_prefixes": []}


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    return BackboneConfig(name=args.arch, width=args.width, cifar_stem=True)


def build_model(args: argparse.Namespace) -> CWRGPModel:
    return CWRGPModel(
        backbone_config(args), head_size=args.head_size, emb=args.emb, head_layers=args.head_layers
    )


def image_size(dataset: str) -> int:
    """W-MSE's crop side: 64 for STL-10 and image folders (Tiny-ImageNet), else the native side (CIFAR: 32)."""
    return 64 if dataset in ("stl10", "imagefolder") else dataset_info(dataset).image_size


def _own_key(key: str) -> str:
    """Original key -> the model's (``model.module.x`` -> ``model.x``; ``head.*`` unchanged)."""
    return "model." + key[len("model.module.") :] if key.startswith("model.module.") else key


def whitened_pairwise_loss(
    h: torch.Tensor,
    num_views: int,
    *,
    w_size: int,
    w_iter: int,
    groups: int,
    random_groups: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """CW-RGP's loss of the head outputs ``h`` ``[num_views · bs, emb]`` (views stacked in order); module
    docstring. Random draws from the CPU generator, in the original's order: per repetition ``randperm(bs)``, then
    per sub-batch and view ``randperm(emb)``."""
    if h.shape[0] % num_views:
        raise ValueError(f"{h.shape[0]} rows do not split into {num_views} views")
    bs, emb = h.shape[0] // num_views, h.shape[1]
    if bs % w_size:
        raise ValueError(f"the batch of {bs} is not a multiple of --w_size {w_size}")
    total = torch.zeros((), device=h.device)
    for _ in range(w_iter):
        z = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        for idx in torch.randperm(bs).view(-1, w_size):
            for view in range(num_views):
                rows = (idx + view * bs).to(h.device)
                perm = torch.randperm(emb).to(h.device) if random_groups else None
                z[rows] = group_zca_whitening(h[rows], groups=groups, permutation=perm)
        total = total + pairwise_mse_loss(z.chunk(num_views), normalize=normalize)
    return total / w_iter


def compute_loss(
    model: CWRGPModel, views: list[torch.Tensor], args: Any, *, precision: str
) -> dict[str, torch.Tensor]:
    """Encoder per view, head on all views, whitened loss; ``["loss"]`` has grad."""
    with autocast(precision, views[0].device):
        h = model.head(torch.cat([model.model(x) for x in views]))
    loss = whitened_pairwise_loss(
        h,
        len(views),
        w_size=args.w_size,
        w_iter=args.w_iter,
        groups=args.group,
        random_groups=args.rand_group,
        normalize=args.norm,
    )
    return {"loss": loss}


def _cosine_restarts(base: float, epoch: float, t0: int, t_mult: int, eta_min: float) -> float:
    """``CosineAnnealingWarmRestarts`` at the (fractional) ``epoch``."""
    if epoch >= t0:
        if t_mult == 1:
            t_cur, t_i = epoch % t0, t0
        else:
            n = int(math.log(epoch / t0 * (t_mult - 1) + 1, t_mult))
            t_cur, t_i = epoch - t0 * (t_mult**n - 1) / (t_mult - 1), t0 * t_mult**n
    else:
        t_cur, t_i = epoch, t0
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def learning_rate(step: int, iters_per_epoch: int, args: Any) -> float:
    """The rate of global step ``step``: ``--lr · (step + 1) / --warmup_iters`` during the warm-up, then
    ``--lr_step``: ``step`` = ``MultiStepLR`` at epochs ``--epochs − d`` for ``d`` in ``--drop`` (×``--drop_gamma``
    each; the original's warm-up overwrites the rate, so a drop that falls inside the warm-up is lost, here too);
    ``cos`` = ``CosineAnnealingWarmRestarts(--T0, --Tmult, --eta_min)`` stepped after every post-warm-up
    iteration at ``epoch + n_iter / iters`` (W-MSE); ``none`` = ``--lr``."""
    base, warmup = args.lr, args.warmup_iters
    if step < warmup:
        return base * (step + 1) / warmup
    if args.lr_step == "step":
        epoch = step // iters_per_epoch
        milestones = [args.epochs - d for d in args.drop]
        drops = sum(1 for m in milestones if m <= epoch and m * iters_per_epoch >= warmup)
        return base * args.drop_gamma**drops
    if args.lr_step == "cos" and step > 0:
        epoch, n = divmod(step - 1, iters_per_epoch)
        return _cosine_restarts(
            base, epoch + n / iters_per_epoch, args.T0 or args.epochs, args.Tmult, args.eta_min
        )
    return base


def evaluation_due(epoch: int, args: Any) -> bool:
    """After 0-based ``epoch``: every ``--eval_every`` epochs, every ``--eval_every_drop`` from epoch
    ``--epochs − drop[0]`` on (the original's switch); never with ``--eval_every 0``."""
    if args.eval_every == 0:
        return False
    dropped = bool(args.drop) and epoch >= args.epochs - args.drop[0]
    every = args.eval_every_drop if dropped else args.eval_every
    return every > 0 and (epoch + 1) % every == 0


def evaluate(path: Path, args: Any, device: torch.device, normalization: str) -> dict[str, float]:
    """5-NN (``nn5``) and linear (``intl_cifar``) accuracy of checkpoint ``path``; every RNG is left as found,
    so a resumed run matches an uninterrupted one."""
    rng = capture_rng_state()
    sizes = {"resize": 64, "crop": 64} if args.dataset == "imagefolder" else {}
    try:
        with tempfile.TemporaryDirectory(prefix="cwrgp-eval-") as cache:
            common = dict(
                dataset=args.dataset,
                root=args.data_path,
                device=device,
                download=args.download,
                cache_dir=cache,
                normalization=normalization,
                **sizes,
            )
            knn = evaluate_checkpoint("knn", path, preset="nn5", k=args.knn, **common)
            linear = evaluate_checkpoint("linear", path, preset="intl_cifar", **common)
    finally:
        restore_rng_state(rng)
    return {"acc_knn": knn["top1"], "acc": linear["top1"], "acc_5": linear["top5"]}


def train(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    """Pre-train; returns the path of the last checkpoint written."""
    malloc = None if args.no_malloc_tuning else tune_malloc()
    env = init_distributed(args.dist_backend, args.device)
    if env.is_distributed:
        cleanup()
        raise ValueError("cwrgp-train runs on one process (the original: one process, nn.DataParallel)")
    precision = resolve_precision(args.precision, env.device)
    log = get_logger("cwrgp-train")
    log.info("%s", malloc.detail if malloc is not None else "malloc tuning off (--no_malloc_tuning)")
    log.info("precision %s on %s", precision, env.device)
    seed_everything(args.seed)
    ckpt_dir = Path(args.ckpt_dir)
    run_dir = ckpt_dir / args.env_name
    last_path = ckpt_dir / f"checkpoint_{args.env_name}.pth.tar"
    resume = find_resume(args.resume, last_path, f"checkpoint_{args.env_name}_*.pth.tar")
    record = run_record(freeze(args, "CWRGPConfig"), list(sys.argv if argv is None else argv))
    record["precision_resolved"] = precision
    save_run_config(record, run_dir / "config.json")

    info = dataset_info(args.dataset)
    view = wmse_transform(image_size(args.dataset), (info.mean, info.std), min_scale=args.crop_s0)
    split = "train+unlabeled" if args.dataset == "stl10" else "train"
    raw = build_dataset(
        args.dataset, root=args.data_path, split=split, download=args.download, skip_corrupt=args.skip_corrupt
    )
    data = training_data(
        raw,
        multi_view([view] * args.num_samples),
        seed=args.seed,
        per_rank_batch=args.bs,
        num_workers=args.num_workers,
        env=env,
        max_epoch=args.epochs,
        log_every=args.log_every,
    )
    iters_per_epoch = data.loop_spec(args, (0, 0, 0)).iters_per_epoch

    model = build_model(args).to(env.device)
    for part in (model.model, model.head):
        prepare_model(part, channels_last=args.channels_last, compile_model=args.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = make_grad_scaler(precision, env.device)

    start = (0, 0, 0)
    if resume is not None:
        start = restore_training_state(
            resume, project="cwrgp", model=model, own_key=_own_key, optimizer=optimizer, scaler=scaler
        )
        log.info("resumed from %s at epoch %d, iteration %d (step %d)", resume, *start)
    resume_step = start[2] if resume is not None else None
    metrics = MetricLogger(
        run_dir / "log.csv",
        fieldnames=["global_step", "epoch", "loss", "lr", "images_per_s"],
        tensorboard_dir=None if args.no_tensorboard else run_dir / "tb",
        resume_step=resume_step,
    )
    eval_log = MetricLogger(
        run_dir / "eval.csv",
        fieldnames=["global_step", "epoch", "acc_knn", "acc", "acc_5"],
        enabled=args.eval_every > 0,
        resume_step=resume_step,
    )
    counter = {"step": start[2]}

    def save(path: Path, epoch: int, iteration: int, step: int) -> Path:
        state = {
            "epoch": epoch,
            "arch": args.arch,
            "state_dict": model.original_state_dict(),
            "optimizer": optimizer.state_dict(),
            **selfsup_entries(
                project="cwrgp",
                method=args.method,
                backbone=backbone_config(args),
                export=EXPORT,
                input_normalization=args.dataset,
                scaler=scaler,
                iteration=iteration,
                global_step=step,
                record=record,
            ),
        }
        return atomic_save(state, path)

    def step_fn(batch) -> tuple[dict[str, torch.Tensor], int]:
        views = [v.to(env.device, non_blocking=True) for v in batch[0]]
        if args.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        step = counter["step"]
        apply_lr(optimizer, learning_rate(step, iters_per_epoch, args))
        scalars = compute_loss(model, views, args, precision=precision)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(scalars["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        counter["step"] = step + 1
        return {k: v.detach() for k, v in scalars.items()}, views[0].shape[0]

    def save_epoch(epoch: int, step: int) -> Path:
        path = save(last_path, epoch + 1, 0, step)
        if (epoch + 1) % args.save_freq == 0:
            path = save(ckpt_dir / f"checkpoint_{args.env_name}_{epoch:04d}.pth.tar", epoch + 1, 0, step)
        if evaluation_due(epoch, args):
            scores = evaluate(path, args, env.device, args.dataset)
            log.info("epoch %d: acc_knn %.2f acc %.2f acc_5 %.2f", epoch, *scores.values())
            eval_log.log(step, epoch=epoch, **scores)
        return path

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
    eval_log.close()
    return result.checkpoint or last_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors("cwrgp-train", train, args, argv if argv is not None else sys.argv)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
