"""lightly's MoCo and SwAV on the same data, backbone, batch and budget as ``benchmarks/quality.py``.

Runs in an environment with lightly (never a dependency of selfsup; it does not import selfsup):

    python3 -m venv lightly-venv && lightly-venv/bin/pip install torch torchvision lightly
    lightly-venv/bin/python benchmarks/quality_lightly.py --method moco --data cifar10.npz --out DIR

``benchmarks/quality.py --lightly_python lightly-venv/bin/python`` calls it for the rows ``lightly-moco`` and
``lightly-swav`` and evaluates what it writes with selfsup's kNN and linear probes.

The models and settings are those of lightly's CIFAR-10 benchmark
(``docs/source/getting_started/benchmarks/cifar10_benchmark.py``: ``MocoModel``, ``SwaVModel``):

* MoCo: ``MoCoProjectionHead(512, 512, 128)``, momentum encoder (m 0.99) with batch shuffle, ``NTXentLoss``
  (τ 0.1, memory bank 4096), symmetric loss, SGD lr 0.06 × batch/128, momentum 0.9, wd 5e-4, cosine over the
  epochs, split BN (8 splits); views ``SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0)``;
* SwAV: ``SwaVProjectionHead(512, 512, 128)``, ``SwaVPrototypes(128, 512)``, ``SwaVLoss()`` (τ 0.1, ε 0.05, 3
  Sinkhorn iterations), Adam lr 1e-3 × batch/128, wd 1e-6, cosine; views ``SwaVTransform`` with 2 crops of 32
  px (min scale 0.14), ``cj_strength=0.5``, no blur.

The backbone is torchvision's ResNet-18 with the CIFAR stem (3×3 stride-1 conv, no max-pool, no fc): the
network of every selfsup row, and what lightly's ``ResNetGenerator("resnet-18")`` is (its benchmark's
``nn.Sequential`` of the generator's children drops the ReLU after the stem; torchvision's keeps it). fp32 as
lightly's benchmark runs (``--precision bf16`` autocasts the step), data loaded in the training process (as
the selfsup rows; lightly's benchmark uses 8 workers on a GPU machine).

Like the selfsup rows: a few steps are timed, the number of epochs nearest to ``--budget_s`` is chosen (or
``--epochs``), the network at initialisation is saved, then trained from that same initialisation. Writes
``OUT/random_init.pth``, ``OUT/curve/epoch_E.pth``, ``OUT/final.pth`` (selfsup checkpoint schema: the backbone
as a torchvision-keyed state dict, split-BN running statistics averaged over the splits as lightly does in eval
mode) and ``OUT/run.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

RECIPES = {
    "moco": "lightly's MocoModel (CIFAR-10 benchmark): MoCoProjectionHead(512, 512, 128), m 0.99 with batch "
    "shuffle, NTXentLoss τ 0.1 with a 4096 memory bank, symmetric loss, SGD lr 0.06 × batch/128, wd 5e-4, "
    "cosine, split BN 8; SimCLRTransform(32, cj_strength 0.5, no blur)",
    "swav": "lightly's SwaVModel (CIFAR-10 benchmark): SwaVProjectionHead(512, 512, 128), 512 prototypes, "
    "SwaVLoss (τ 0.1, ε 0.05, 3 iterations), Adam lr 1e-3 × batch/128, wd 1e-6, cosine; SwaVTransform 2×32 px "
    "(min scale 0.14), cj_strength 0.5, no blur",
}


def load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class TrainImages(torch.utils.data.Dataset):
    """The training images of an .npz in selfsup's layout (``train_images``) or of a torchvision CIFAR-10 root,
    each served as lightly's list of views."""

    def __init__(self, path: str, transform, download: bool = False) -> None:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                self.images = archive["train_images"]
        else:
            self.images = torchvision.datasets.CIFAR10(path, train=True, download=download).data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index]).convert("RGB")), 0


def cifar_resnet18(num_splits: int) -> nn.Module:
    from lightly.models.batchnorm import SplitBatchNorm

    norm = partial(SplitBatchNorm, num_splits=num_splits) if num_splits > 1 else nn.BatchNorm2d
    net = torchvision.models.resnet18(norm_layer=norm)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class Moco(nn.Module):
    """lightly's ``MocoModel`` of its CIFAR-10 benchmark."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models import utils
        from lightly.models.modules import heads

        self.utils = utils
        self.backbone = cifar_resnet18(num_splits=8)
        self.projection_head = heads.MoCoProjectionHead(512, 512, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        utils.deactivate_requires_grad(self.backbone_momentum)
        utils.deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        self.lr = 6e-2 * batch_size / 128

    def optimizer(self) -> torch.optim.Optimizer:
        params = list(self.backbone.parameters()) + list(self.projection_head.parameters())
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=5e-4)

    def loss(self, views) -> torch.Tensor:
        x0, x1 = views
        u = self.utils
        u.update_momentum(self.backbone, self.backbone_momentum, 0.99)
        u.update_momentum(self.projection_head, self.projection_head_momentum, 0.99)

        def step(a, b):
            b, shuffle = u.batch_shuffle(b)
            a = self.projection_head(self.backbone(a).flatten(start_dim=1))
            b = self.projection_head_momentum(self.backbone_momentum(b).flatten(start_dim=1))
            return a, u.batch_unshuffle(b, shuffle)

        return 0.5 * (self.criterion(*step(x0, x1)) + self.criterion(*step(x1, x0)))


class Swav(nn.Module):
    """lightly's ``SwaVModel`` of its CIFAR-10 benchmark."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        from lightly.loss import SwaVLoss
        from lightly.models.modules import heads

        self.backbone = cifar_resnet18(num_splits=1)
        self.projection_head = heads.SwaVProjectionHead(512, 512, 128)
        self.prototypes = heads.SwaVPrototypes(128, 512)
        self.criterion = SwaVLoss()
        self.lr = 1e-3 * batch_size / 128

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=1e-6)

    def loss(self, views) -> torch.Tensor:
        self.prototypes.normalize()
        outputs = []
        for x in views:
            z = nn.functional.normalize(
                self.projection_head(self.backbone(x).flatten(start_dim=1)), dim=1, p=2
            )
            outputs.append(self.prototypes(z))
        return self.criterion(outputs[:2], outputs[2:])


def transform(method: str):
    from lightly.transforms import SimCLRTransform, SwaVTransform

    if method == "moco":
        return SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    return SwaVTransform(
        crop_sizes=(32,), crop_counts=(2,), crop_min_scales=(0.14,), crop_max_scales=(1.0,),
        cj_strength=0.5, gaussian_blur=0.0,
    )  # fmt: skip


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's torchvision-keyed state dict, split-BN running statistics averaged over the splits."""
    state = {}
    modules = dict(model.backbone.named_modules())
    for key, value in model.backbone.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        splits = getattr(modules.get(owner), "num_splits", 1)
        if leaf in ("running_mean", "running_var") and splits > 1:
            value = value.view(splits, -1).mean(0)
        state[key] = value.detach().cpu().clone()
    return state


def export(model: nn.Module, path: Path, method: str, epoch: int, step: int) -> Path:
    """The backbone in selfsup's checkpoint schema (:func:`backbone_state`)."""
    state = backbone_state(model)
    ckpt = {
        "format": "selfsup",
        "format_version": 1,
        "project": "lightly",
        "method": f"lightly-{method}",
        "backbone": {"name": "resnet18", "width": None, "cifar_stem": True, "in_channels": 3},
        "export": {"state_dict_location": "state_dict", "prefix": "", "drop_prefixes": []},
        "input_normalization": "imagenet",
        "input_size": 32,
        "epoch": epoch,
        "global_step": step,
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def build(method: str, batch_size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = Moco(batch_size) if method == "moco" else Swav(batch_size)
    return model.train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=("moco", "swav"), required=True)
    parser.add_argument(
        "--data", required=True, help=".npz with train_images (selfsup's layout) or CIFAR-10 root"
    )
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 into the --data root")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--budget_s", type=float, default=180.0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--curve", type=int, default=1)
    parser.add_argument("--calib_steps", type=int, default=4)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    opts = parser.parse_args(argv)
    import lightly

    torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def autocast():
        if opts.precision == "bf16":
            return torch.autocast(torch.device(opts.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    device = torch.device(opts.device)
    images = TrainImages(opts.data, transform(opts.method), opts.download)

    def loader(seed: int):
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            images,
            batch_size=opts.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=opts.workers,
            generator=g,
        )

    def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, views) -> torch.Tensor:
        views = [v.to(device, non_blocking=True) for v in views]
        with autocast():
            loss = model.loss(views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    # calibration: the initial network saved, a few steps timed (on a throw-away copy of the run)
    model = build(opts.method, opts.batch_size, opts.seed)
    random_init = export(model, out / "random_init.pth", opts.method, 0, 0)
    model.to(device)
    optimizer = model.optimizer()
    batches = iter(loader(opts.seed))
    iters_per_epoch = len(loader(opts.seed))
    seconds = []
    for i in range(min(opts.calib_steps + 2, iters_per_epoch)):
        tic = time.perf_counter()
        train_step(model, optimizer, next(batches)[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            seconds.append(time.perf_counter() - tic)
    step_s = sorted(seconds)[len(seconds) // 2]
    epochs = opts.epochs or max(1, min(200, round(opts.budget_s / (step_s * iters_per_epoch * 1.03))))
    # as quality.py: where one epoch overruns the budget by half, stop at the steps that fit it
    overrun = not opts.epochs and step_s * iters_per_epoch * 1.03 > 1.5 * opts.budget_s
    max_steps = max(1, round(opts.budget_s / (step_s * 1.03))) if overrun else 0
    calibration = {
        "step_s": round(step_s, 4),
        "iters_per_epoch": iters_per_epoch,
        "budget_s": opts.budget_s,
        "epochs": epochs,
        "fixed": opts.epochs is not None,
        "max_iters": max_steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    keep = sorted({round(epochs * (i + 1) / (opts.curve + 1)) for i in range(opts.curve)} - {0, epochs})

    # pre-training from the same initialisation
    load_start = load1()
    t0 = time.perf_counter()
    model = build(opts.method, opts.batch_size, opts.seed)
    reference = torch.load(random_init, weights_only=True)["state_dict"]
    assert all(torch.equal(reference[k], v) for k, v in backbone_state(model).items()), "not the saved init"
    model.to(device)
    optimizer = model.optimizer()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    data = loader(opts.seed)
    step, curve, losses = 0, [], []
    for epoch in range(epochs):
        for views, _ in data:
            if max_steps and step >= max_steps:
                break
            loss = train_step(model, optimizer, views)
            step += 1
            if step % 10 == 0:
                losses.append((step, round(float(loss.detach()), 4)))
                print(f"epoch {epoch} step {step} loss {float(loss.detach()):.4f}", flush=True)
        scheduler.step()
        if epoch + 1 in keep:
            path = export(model, out / "curve" / f"epoch_{epoch + 1}.pth", opts.method, epoch + 1, step)
            curve.append({"epoch": epoch + 1, "step": step, "seconds": round(time.perf_counter() - t0, 1),
                          "checkpoint": str(path)})  # fmt: skip
    final = export(model, out / "final.pth", opts.method, epochs, step)
    train_s = time.perf_counter() - t0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    record = {
        "trainer": f"lightly {opts.method} (its CIFAR-10 benchmark model)",
        "lightly_version": lightly.__version__,
        "torch_version": torch.__version__,
        "precision": opts.precision,
        "device": device_name,
        "calibration": calibration,
        "epochs": epochs,
        "steps": step,
        "images": step * opts.batch_size,
        "train_s": round(train_s, 1),
        "images_per_s": round(step * opts.batch_size / train_s, 1),
        "load1": {"start": load_start, "end": load1()},
        "curve": curve,
        "losses": losses,
        "checkpoint": str(final),
        "random_init_checkpoint": str(random_init),
        "recipe": RECIPES[opts.method],
        "full_epochs": 200,
    }
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
