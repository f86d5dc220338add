"""The unofficial MoCo's ``visualize.py``: linear-evaluation accuracy curves of several encoder versions
(``--test_num`` runs each, the best reported in the legend) and their pre-training loss curves.

Differences from the original: curves are labelled by version name (the original labelled them M1..M3 by
position) and plotted at the epochs actually evaluated (the original assumed every epoch). Without matplotlib (the
``plot`` extra) the PNGs are skipped with one warning each and ``summary.json`` is still written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfsup.moco.linear_eval import encoder_run, eval_parser, linear_eval
from selfsup.shared.runtime.logger import get_logger, read_csv_log
from selfsup.shared.runtime.plotting import plot_curves_if_available


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup.moco.visualize", description=__doc__.splitlines()[0], parents=[eval_parser()]
    )
    parser.add_argument("--load_pretrained_epoch", type=int, default=50, help="loads weight/ckpt_<N>.pkl")
    parser.add_argument("--result_path", default="img", help="folder for the PNG plots and summary.json")
    parser.add_argument(
        "--multiple_encoder_exp_version",
        "--names-list",
        dest="versions",
        nargs="+",
        default=["M1", "M2", "M3"],
    )
    parser.add_argument("--test_num", type=int, default=3, help="linear runs per encoder version")
    args = parser.parse_args(argv)
    out = Path(args.result_path)
    accuracy_curves, loss_curves, summary = {}, {}, {}
    try:
        for version in args.versions:
            best, best_curve = -1.0, None
            for run_index in range(args.test_num):
                result = linear_eval(args, version, seed=args.seed + run_index)
                if result["top1"] > best:
                    best, best_curve = result["top1"], result["curve"]
            points = [(e["epoch"], e["top1"]) for e in best_curve if e.get("top1") is not None]
            accuracy_curves[f"{version} (best {best:.2f} %)"] = (
                [p[0] for p in points],
                [p[1] for p in points],
            )
            summary[version] = best
            log = encoder_run(args, version) / "loss" / "loss.csv"
            if log.is_file():
                rows = read_csv_log(log)
                loss_curves[version] = ([r["global_step"] for r in rows], [r["loss"] for r in rows])
    except (FileNotFoundError, ValueError) as err:
        print(f"visualize.py: error: {err}", file=sys.stderr)
        return 2
    ep = args.load_pretrained_epoch
    log = get_logger("visualize")
    plot_curves_if_available(
        accuracy_curves,
        out / f"accr_ckpt_{ep}.png",
        logger=log,
        xlabel="epoch",
        ylabel="top-1 (%)",
        title=f"linear evaluation, encoders after ckpt_{ep}",
    )
    if loss_curves:
        plot_curves_if_available(
            loss_curves,
            out / "loss.png",
            logger=log,
            xlabel="iteration",
            ylabel="InfoNCE loss",
            title="pre-training",
        )
    (out / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"best_top1": summary, "epoch": ep}, indent=2) + "\n")
    for version, top1 in summary.items():
        print(f"{version}: best top-1 {top1:.2f} % over {args.test_num} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
