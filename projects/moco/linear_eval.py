"""Linear evaluation of a MoCo run: the unofficial MoCo's ``test.py`` (a linear classifier on the frozen
2048-d feature, STL-10 at 64 px), run as ``python -m selfsup.moco.test`` (the original's name) or
``python -m selfsup.moco.linear_eval``.

Same flags and defaults as the original (``--load_pretrained_epoch 100`` loads
``ENCODER_OUTPUT_ROOT/ENCODER_DATASET_NAME/ENCODER_EXP_VERSION/weight/ckpt_100.pkl``; lr 10, momentum 0.9,
wd 0, batch 256/100, 100 epochs, lr ×0.2 every 20 epochs, evaluation every 2 epochs, best top-1 reported),
run by the shared harness (preset ``moco_eveningglow``). The trunk's BN is in eval mode unless
``--bn_train_mode`` (the original's behaviour). Results go to ``<run>/eval/result_ckpt_<E>.json``; the
linear head's state to ``<run>/eval/weight/ckpt_<E>.pkl``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from selfsup.shared.data import DATASET_NAMES, CorruptImageError
from selfsup.shared.evaluation import evaluate_checkpoint


def eval_parser() -> argparse.ArgumentParser:
    """The flags of ``test.py`` (this module) and ``visualize.py`` (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset_root", default=None, help="STL-10 root (torchvision layout)")
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="stl10", help="evaluation dataset")
    parser.add_argument("--download", action="store_true", help="download STL-10 when missing")
    parser.add_argument("--encoder_output_root", default="output")
    parser.add_argument("--encoder_dataset_name", default="IMAGENET-64")
    parser.add_argument("--encoder_exp_version", default="v1")
    parser.add_argument("--trn_batch_size", type=int, default=256)
    parser.add_argument("--tst_batch_size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=10.0)
    parser.add_argument("--SGD_momentum", type=float, default=0.9)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--out_dim", type=int, default=128, help="unused (projection output size)")
    parser.add_argument("--in_dim", type=int, default=2048, help="feature size; checked against the encoder")
    parser.add_argument("--cls_num", type=int, default=10, help="number of classes; checked against the data")
    parser.add_argument("--resize", type=int, default=84)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--max_epoch", type=int, default=100)
    parser.add_argument("--eval_epoch", type=int, default=2)
    parser.add_argument(
        "--save_weight_epoch", type=int, default=10, help="unused: the head is saved each epoch"
    )
    parser.add_argument("--num_workers", type=int, default=16)
    parser.add_argument("--bn_train_mode", action="store_true", help="the original's BN-in-train-mode trunk")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def encoder_run(args: argparse.Namespace, version: str | None = None) -> Path:
    return Path(args.encoder_output_root) / args.encoder_dataset_name / (version or args.encoder_exp_version)


def linear_eval(
    args: argparse.Namespace, version: str | None = None, *, seed: int | None = None
) -> dict[str, Any]:
    """One linear evaluation of ``weight/ckpt_<--load_pretrained_epoch>.pkl`` of a run."""
    run = encoder_run(args, version)
    epoch = args.load_pretrained_epoch
    checkpoint = run / "weight" / f"ckpt_{epoch}.pkl"
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"--load_pretrained_epoch {epoch}: {checkpoint} does not exist "
            f"(checkpoints are written every --save_weight_epoch epochs of moco-train)"
        )
    suffix = "" if seed is None else f"_run{seed}"
    result = evaluate_checkpoint(
        "linear",
        checkpoint,
        dataset=args.dataset,
        root=args.dataset_root,
        download=args.download,
        preset="moco_eveningglow",
        device=args.device,
        lr=args.lr,
        momentum=args.SGD_momentum,
        weight_decay=args.weight_decay,
        batch_size=args.trn_batch_size,
        test_batch_size=args.tst_batch_size,
        epochs=args.max_epoch,
        eval_every=args.eval_epoch,
        resize=args.resize,
        crop=args.crop,
        num_workers=args.num_workers,
        bn_train_mode=args.bn_train_mode,
        seed=args.seed if seed is None else seed,
        state_path=run / "eval" / "weight" / f"ckpt_{epoch}{suffix}.pkl",
        output=run / "eval" / f"result_ckpt_{epoch}{suffix}.json",
    )
    if result.get("feature_dim") not in (None, args.in_dim):
        print(f"note: the encoder's feature size is {result['feature_dim']}, not --in_dim {args.in_dim}")
    return result


def main(argv: list[str] | None = None, *, prog: str = "python -m selfsup.moco.linear_eval") -> int:
    """The command line; ``python -m selfsup.moco.test`` runs it with ``prog`` of that name."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], parents=[eval_parser()])
    parser.add_argument("--load_pretrained_epoch", type=int, default=100, help="loads weight/ckpt_<N>.pkl")
    args = parser.parse_args(argv)
    try:
        result = linear_eval(args)
    except CorruptImageError as err:
        print(f"test.py: error: {err.one_line(skip_flag=None)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"test.py: error: {err}", file=sys.stderr)
        return 2
    print(
        f"{encoder_run(args)} ckpt_{args.load_pretrained_epoch}: top-1 {result['top1']:.2f} %, top-5 {result['top5']:.2f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
