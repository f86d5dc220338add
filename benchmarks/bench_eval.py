"""Evaluation harness speed: the cached-feature path against the standard path, and chunked kNN at scale.

Part 1, linear protocol (``selfsup.shared.evaluation.run_linear``), same data, same checkpoint, same preset:

* ``standard`` - every epoch encodes the train images with the frozen trunk, and the test images after every
  evaluated epoch (the default path of the paper presets);
* ``cached (cold)`` - train and test features are extracted once into an empty cache folder, then the head is
  trained on them;
* ``cached (warm)`` - the same call again: the features come from the cache.

The preset is ``quick`` (no train-time augmentation, so both paths train on the same features in the same
order and must give the same accuracy; the table shows the difference). The three paths are measured
``--rounds`` times in alternating order (each round with a fresh cache folder) and the medians are reported.
Data: the embedded digits (1347 train / 450 test, 32 px). Trunk: ``--checkpoint`` (any format ``selfsup-eval``
reads) or a seeded random ResNet-18 of width ``--width`` with the CIFAR stem.

Part 2, kNN (``knn_accuracy``) on synthetic features: ``--knn_train`` x ``--knn_dim`` train features (Gaussian
clusters of ``--knn_classes`` classes) against ``--knn_queries`` queries, for the InsDis weighted vote
(cosine, k 200, τ 0.07) and the Euclidean 5-NN majority vote. Queries are processed ``chunk_size`` at a time
against train blocks of ``train_chunk_size``; the temporaries are bounded by ``4 B x train_chunk_size x
(chunk_size + dim)`` (one score block, one float32 normalised train block), whatever the dataset size. The
table reports that bound and the peak growth of the resident set during the kNN call (sampled every 5 ms),
next to the size of the features themselves and of the ``queries x train`` score matrix an unchunked
implementation would hold.

Results go to ``benchmarks/results/eval.json`` (one run per host and configuration) and a Markdown table is
printed. Usage: ``python benchmarks/bench_eval.py [--epochs 30] [--threads 2] [--checkpoint PATH]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from machine import device_description, host_slug, machine_info, store_runs

from selfsup.shared.evaluation import knn_accuracy, load_for_evaluation, run_linear
from selfsup.shared.models.backbones import build_backbone

RESULTS = Path(__file__).resolve().parent / "results" / "eval.json"
PATHS = ("standard", "cached (cold)", "cached (warm)")


def _current_rss_mib() -> float:
    """Resident set size now (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


class PeakRss:
    """Highest resident set size seen by a 5 ms sampling thread while the block runs, minus the start."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _current_rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss_mib())

    @property
    def growth_mib(self) -> float:
        return self.peak - self.start


def bench_knn(args: argparse.Namespace) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(args.knn_classes, args.knn_dim, generator=gen)
    train_y = torch.randint(0, args.knn_classes, (args.knn_train,), generator=gen)
    test_y = torch.randint(0, args.knn_classes, (args.knn_queries,), generator=gen)
    train = centres[train_y] + 4.0 * torch.randn(args.knn_train, args.knn_dim, generator=gen)
    test = centres[test_y] + 4.0 * torch.randn(args.knn_queries, args.knn_dim, generator=gen)
    rows = []
    for name, kwargs in (
        ("weighted (InsDis, k 200, τ 0.07)", dict(k=200, temperature=0.07, metric="cosine", vote="weighted")),
        ("5-NN majority (Euclidean)", dict(k=5, metric="euclidean", vote="majority")),
    ):
        with PeakRss() as rss:
            tic = time.perf_counter()
            out = knn_accuracy(
                train,
                train_y,
                test,
                test_y,
                chunk_size=args.chunk_size,
                train_chunk_size=args.train_chunk_size,
                **kwargs,
            )
            seconds = time.perf_counter() - tic
        bound = 4 * args.train_chunk_size * (args.chunk_size + args.knn_dim) / 2**20
        rows.append(
            {
                "vote": name,
                "train": args.knn_train,
                "queries": args.knn_queries,
                "dim": args.knn_dim,
                "seconds": round(seconds, 2),
                "queries_per_s": round(args.knn_queries / seconds, 1),
                "top1": round(out["top1"], 2),
                "temp_bound_mib": round(bound, 1),
                "peak_rss_growth_mib": round(rss.growth_mib, 1),
                "features_mib": round(4 * (args.knn_train + args.knn_queries) * args.knn_dim / 2**20, 1),
                "unchunked_scores_mib": round(4 * args.knn_queries * args.knn_train / 2**20, 1),
            }
        )
    return rows


def bench_linear(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.checkpoint:
        backbone, _ = load_for_evaluation(args.checkpoint)
        trunk = Path(args.checkpoint).name
    else:
        torch.manual_seed(0)
        backbone = build_backbone("resnet18", width=args.width, cifar_stem=True)
        trunk = f"random resnet18 width {args.width} CIFAR stem"
    common = dict(dataset="digits", preset="quick", epochs=args.epochs)
    seconds: dict[str, list[float]] = {name: [] for name in PATHS}
    accuracy: dict[str, tuple[float, float]] = {}
    for round_index in range(args.rounds):
        # Alternate the order so that load from other processes does not always hit the same path; the warm
        # run always follows the cold run of its round (same, freshly filled cache folder).
        order = PATHS if round_index % 2 == 0 else (PATHS[1], PATHS[2], PATHS[0])
        with tempfile.TemporaryDirectory() as cache:
            for name in order:
                extra = dict(use_cache=False) if name == "standard" else dict(use_cache=True, cache_dir=cache)
                tic = time.perf_counter()
                result = run_linear(backbone, **common, **extra)
                seconds[name].append(time.perf_counter() - tic)
                accuracy[name] = (result["top1"], result["top5"])
    rows = []
    for name in PATHS:
        rows.append(
            {
                "path": name,
                "trunk": trunk,
                "epochs": args.epochs,
                "rounds": args.rounds,
                "seconds": round(statistics.median(seconds[name]), 2),
                "seconds_all": [round(t, 2) for t in seconds[name]],
                "top1": round(accuracy[name][0], 2),
                "top5": round(accuracy[name][1], 2),
            }
        )
    base = rows[0]
    for row in rows:
        row["speedup"] = round(base["seconds"] / row["seconds"], 1)
        row["top1_diff"] = round(row["top1"] - base["top1"], 2)
    return rows


def markdown(run: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in run["load_average"])
    lines = [f"Machine: {run['device']}, torch threads {run['machine']['torch_threads']}, load {load}.", ""]
    lines += [
        "| linear path (digits, preset quick) | epochs | seconds | speed-up | top-1 | top-5 | Δ top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in run["linear"]:
        lines.append(
            f"| {row['path']} | {row['epochs']} | {row['seconds']} | {row['speedup']}x | {row['top1']} | "
            f"{row['top5']} | {row['top1_diff']:+} |"
        )
    lines += [
        "",
        "| kNN vote | train x dim | queries | seconds | queries/s | features (MiB) | temp. bound (MiB) "
        "| peak RSS growth (MiB) | unchunked scores (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in run["knn"]:
        lines.append(
            f"| {row['vote']} | {row['train']:,} x {row['dim']:,} | {row['queries']:,} | {row['seconds']} | "
            f"{row['queries_per_s']} | {row['features_mib']} | {row['temp_bound_mib']} | "
            f"{row['peak_rss_growth_mib']} | {row['unchunked_scores_mib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="trunk to evaluate (default: random ResNet-18)")
    parser.add_argument("--width", type=int, default=16, help="width of the random ResNet-18")
    parser.add_argument("--epochs", type=int, default=30, help="linear epochs (preset quick: 30)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3, help="linear measurements per path (median)")
    parser.add_argument("--knn_train", type=int, default=50_000)
    parser.add_argument("--knn_queries", type=int, default=10_000)
    parser.add_argument("--knn_dim", type=int, default=2048)
    parser.add_argument("--knn_classes", type=int, default=100)
    parser.add_argument("--chunk_size", type=int, default=1024)
    parser.add_argument("--train_chunk_size", type=int, default=16384)
    parser.add_argument("--skip_linear", action="store_true")
    parser.add_argument("--skip_knn", action="store_true")
    parser.add_argument("--output", default=str(RESULTS), help="results JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    run: dict[str, Any] = {
        "host": host_slug(),
        "device": device_description(info, "cpu"),
        "machine": info,
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "knn": [] if args.skip_knn else bench_knn(args),
        "linear": [] if args.skip_linear else bench_linear(args),
    }
    parts = [f"threads={info['torch_threads']}"]
    parts += [] if args.skip_linear else [f"width={args.width}", f"epochs={args.epochs}"]
    parts += [] if args.skip_knn else [f"knn={args.knn_train}x{args.knn_dim}/{args.knn_queries}"]
    run["config_key"] = " ".join(parts)
    run["load_average"] = list(os.getloadavg())
    store_runs(Path(args.output), "eval", [run], key=("host", "config_key"))
    print(markdown(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
