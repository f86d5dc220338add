"""``selfsup-demo --method intl`` and ``selfsup-demo --method cwrgp``: INTL (``intl-train``) or CW-RGP
(``cwrgp-train``) pre-trained on the embedded digits on CPU, sized to the machine, then kNN and linear evaluation
of the pretrained trunk and of the same network at random initialisation, side by side
(:func:`selfsup.shared.evaluation.demo.run_demo`).

Each trainer runs with its own flags (:data:`INTL_FLAGS`, :data:`CWRGP_FLAGS`) on the 1347 training digits.
Writes ``OUTPUT/<method>/results.json``, ``OUTPUT/<method>/loss.png``, the random-initialisation checkpoint
``OUTPUT/<method>/random_init.pth`` and the run (checkpoints, ``config.json``, ``log.csv``) under
``OUTPUT/<method>/run/``; runs offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selfsup.intl.cwrgp_train import TRAINER as CWRGP
from selfsup.intl.train import INTL
from selfsup.shared.evaluation.demo import DemoRecipe, run_demo

__all__ = ["CWRGP_FLAGS", "INTL_FLAGS", "RECIPES", "main", "main_cwrgp", "main_intl"]

#: ``intl-train --method intl``: two 16 px crops (scale 0.2-1, blur 0.5, no solarisation: digits are 8x8 images
#: upscaled, so 16 px loses nothing and trains 4x faster than 32 px), a CIFAR-stem ResNet-18 of width 16, a
#: 256-256-256 projector, IterNorm with 4 iterations over the per-sample axis (β from the batch of 64: 0.03), SGD
#: at 0.5 x 64/256 with up to 2 warm-up epochs and the cosine over the chosen length, channels-last. Batches of
#: 64 gave a better kNN than 128 in the same time. The augmentation costs about as much as the fp32 step, so it
#: runs in one loader worker beside the model's torch thread (both demos).
INTL_FLAGS = [
    "--method", "intl", "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--cifar_stem",
    "--nmb_crops", "2", "--crops_size", "16", "--min_scale_crops", "0.2", "--max_scale_crops", "1.0",
    "--gaussian_prob", "0.5", "--solarization_prob", "0.0",
    "--projection_layers", "3", "--projection_size", "256", "--emb", "256", "--iters", "4", "--axis", "0",
    "--bs", "64", "--lr", "0.5", "-j", "1", "-p", "21", "--save_freq", "1000",
    "--channels_last", "--no_tensorboard", "--no_progress", "--env_name", "INTL",
]  # fmt: skip
#: ``cwrgp-train --method cwrgp`` (CW-RGP 2): W-MSE's views at the digits' 32 px (``cwrgp-train`` crops at the
#: dataset's side), the W-MSE ResNet-18 (zero-initialised residual BN) of width 16, the original's head
#: (1024 hidden, 512-d embedding) and whitening (4 groups of 128 channels over sub-batches of 64), Adam at a
#: constant 2e-3 after 20 warm-up iterations (the step drops and the cosine did worse in 25 epochs).
CWRGP_FLAGS = [
    "--method", "cwrgp", "--dataset", "digits", "--arch", "resnet18", "--width", "16", "--num_samples", "2",
    "--bs", "128", "--w_size", "64", "--emb", "512", "--group", "4", "--head_size", "1024",
    "--lr", "2e-3", "--warmup_iters", "20", "--lr_step", "none", "--eval_every", "0",
    "--num_workers", "1", "--log_every", "10", "--save_freq", "1000",
    "--channels_last", "--no_tensorboard", "--no_progress", "--env_name", "CWRG",
]  # fmt: skip

RECIPES = {
    "intl": DemoRecipe(
        name="intl",
        title="INTL on the embedded digits (1347 train / 450 test images at 16 px), ResNet-18 width 16",
        entry=INTL,
        flags=lambda run_dir: [*INTL_FLAGS, "--ckpt_dir", str(run_dir)],
        # INTL warms up for fewer epochs than it trains
        length=lambda epochs: ["--epochs", str(epochs), "--warmup_eps", str(min(2, epochs - 1))],
        reference_epochs=40,
        description="INTL pre-training (intl-train --method intl) on the embedded digits on CPU, sized to the "
        "machine.",
        threads=1,
    ),
    "cwrgp": DemoRecipe(
        name="cwrgp",
        title="CW-RGP on the embedded digits (1347 train / 450 test images at 32 px), ResNet-18 width 16",
        entry=CWRGP,
        flags=lambda run_dir: [*CWRGP_FLAGS, "--ckpt_dir", str(run_dir)],
        length=lambda epochs: ["--epochs", str(epochs)],
        reference_epochs=25,
        description="CW-RGP pre-training (cwrgp-train) on the embedded digits on CPU, sized to the machine.",
        threads=1,
    ),
}


def main_intl(argv: list[str] | None = None, prog: str = "selfsup-demo --method intl") -> int:
    """``selfsup-demo --method intl``."""
    return run_demo(RECIPES["intl"], argv, prog)


def main_cwrgp(argv: list[str] | None = None, prog: str = "selfsup-demo --method cwrgp") -> int:
    """``selfsup-demo --method cwrgp``."""
    return run_demo(RECIPES["cwrgp"], argv, prog)


#: ``python -m selfsup.intl.demo`` runs the INTL demo.
main = main_intl


def run_dir(output: str | Path, method: str = "intl") -> Path:
    """Where ``selfsup-demo --method METHOD --output OUTPUT`` writes the run's ``config.json`` and ``log.csv``."""
    return Path(output) / method / "run" / {"intl": "INTL", "cwrgp": "CWRG"}[method]


if __name__ == "__main__":
    sys.exit(main())
