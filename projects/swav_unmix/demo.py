"""``selfsup-demo --method swav`` and ``selfsup-demo --method unmix``: SwAV, plain or with Un-Mix image
mixtures, pre-trained with ``swav-unmix-train`` on the embedded digits on CPU, sized to the machine, then kNN and
linear evaluation of the pretrained trunk and of the same network at random initialisation, side by side
(:func:`selfsup.shared.evaluation.demo.run_demo`).

One recipe for both methods, which differ only in ``--run_swav`` (and Un-Mix's ``--unmix_prob``): two 8 px crops
(the digits' own resolution: the model step costs less than half of a 16 px one, so the slowest CPU fits twice
the epochs; at 16 px SwAV's kNN stayed below random init for the ~20 epochs such a CPU fits, at 8 px it passed it
in 30) keeping at least 30 % of the image, with the Un-Mix CIFAR code's views (``--cifar_aug true``: colour
strength 0.5, no blur; SwAV's ImageNet views, whose blur of radius up to 2 px is strong on small crops, trained
worse here); a CIFAR-stem ResNet-18 of width 16; 100 prototypes of a 32-d embedding (hidden layer 256), frozen for
the first epoch; Sinkhorn with ε 0.05 on the batch (no queue); LARC with a base learning rate of 2.4 (LARC scales
each step to 0.001·lr of the weight norm, so a run of a few hundred iterations needs a larger rate than SwAV's 0.6
at batch 256: 0.6 trained worse), one warm-up epoch, then a cosine over the chosen length. The departure from
SwAV's defaults that matters is the softmax temperature: at τ 0.1 nearly every short run on these 1347 images
collapsed to uniform predictions (the loss stuck at ln 100); at τ 0.3 they train. Channels-last; the
augmentation costs more than the 8 px step, so it runs in one loader worker beside the model's torch thread.

Writes ``OUTPUT/<method>/results.json``, ``OUTPUT/<method>/loss.png``, the random-initialisation checkpoint
``OUTPUT/<method>/random_init.pth`` and the training run under ``OUTPUT/<method>/run/``; runs offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.shared.evaluation.demo import DemoRecipe, run_demo
from selfsup.swav_unmix.train import SWAV, UNMIX

__all__ = ["RECIPES", "TRAIN_FLAGS", "main", "main_swav", "main_unmix"]

#: The pre-training recipe shared by both methods (everything but --run_swav and the Un-Mix flags).
TRAIN_FLAGS = [
    "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--nmb_crops", "2", "--size_crops", "8", "--min_scale_crops", "0.3", "--max_scale_crops", "1",
    "--cifar_aug", "true", "--crops_for_assign", "0", "1",
    "--temperature", "0.3", "--epsilon", "0.05", "--sinkhorn_iterations", "3",
    "--nmb_prototypes", "100", "--feat_dim", "32", "--hidden_mlp", "256",
    "--batch_size", "64", "--base_lr", "2.4", "--final_lr", "0.0006",
    "--freeze_prototypes_niters", "21", "--wd", "1e-6", "--queue_length", "0",
    "--channels_last", "--workers", "1", "--checkpoint_freq", "1000",
    "--log_every", "21", "--no_tensorboard", "--no_progress",
]  # fmt: skip


def _length(epochs: int) -> list[str]:
    """``--epochs`` and one warm-up epoch (none in a one-epoch run)."""
    return ["--epochs", str(epochs), "--warmup_epochs", "1" if epochs > 1 else "0"]


def _recipe(name: str, title: str, variant: list[str], entry) -> DemoRecipe:
    return DemoRecipe(
        name=name,
        title=f"{title} on the embedded digits (1347 train / 450 test images at 8 px), ResNet-18 width 16",
        entry=entry,
        flags=lambda run_dir: [*TRAIN_FLAGS, *variant, "--dump_path", str(run_dir)],
        length=_length,
        reference_epochs=60,
        description=f"{title} pre-training (swav-unmix-train) on the embedded digits on CPU, sized to the "
        "machine.",
        threads=1,
    )


#: method -> its demo. Un-Mix mixes globally (mixup) or by regions (CutMix) with equal probability, as in the
#: Un-Mix CIFAR code.
RECIPES = {
    "swav": _recipe("swav", "SwAV", ["--run_swav", "true"], SWAV),
    "unmix": _recipe(
        "unmix",
        "SwAV with Un-Mix",
        ["--run_swav", "false", "--unmix_prob", "0.5", "--unmix_beta", "1.0"],
        UNMIX,
    ),
}


def main_swav(argv: list[str] | None = None, prog: str = "selfsup-demo --method swav") -> int:
    """``selfsup-demo --method swav``: plain SwAV (``--run_swav true``)."""
    return run_demo(RECIPES["swav"], argv, prog)


def main_unmix(argv: list[str] | None = None, prog: str = "selfsup-demo --method unmix") -> int:
    """``selfsup-demo --method unmix``: SwAV with Un-Mix (``--run_swav false``)."""
    return run_demo(RECIPES["unmix"], argv, prog)


#: ``python -m selfsup.swav_unmix.demo`` runs the SwAV demo.
main = main_swav


def run_dir(output: str | Path, method: str = "swav") -> Path:
    """Where ``selfsup-demo --method METHOD --output OUTPUT`` trains (the ``--dump_path``)."""
    return Path(output) / method / "run"


if __name__ == "__main__":
    sys.exit(main())
