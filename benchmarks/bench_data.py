"""Images/s of the MoCo two-crop data pipeline, per loader worker core, for 0, 1 and 2 workers.

The pipeline is the one ``selfsup.moco.train`` builds: ``build_dataset`` -> :class:`SeededTransformDataset`
(per-item seeded RNG) over :class:`TwoCropsTransform` of a MoCo view recipe -> :class:`ResumableSampler`
-> ``build_loader`` (non-persistent workers, default collation). Each "image" below is one dataset item,
i.e. two augmented crops.

Cases (``--cases``, ``source:recipe:crop``):

* ``jpeg`` - a synthetic ImageFolder of JPEG files generated in a temporary folder (``--jpeg_size`` pixels
  square, smooth random colour fields plus noise, so decoding costs what a photo of that size costs);
* ``digits`` - the embedded scikit-learn digits (32x32, decoded arrays: no file decoding).

Recipes (:mod:`selfsup.moco.transforms`): ``eveningglow`` (:func:`moco_eveningglow_transform`) and ``v2``
(:func:`moco_v2_transform`).

Each measurement iterates one epoch with a fresh DataLoader, as training does. Two rates are reported: the
steady rate, timed from the arrival of the W-th batch (when each of the W workers has delivered one) to the
end of the epoch, and the epoch rate including the start-up of the workers. Per-core images/s is the steady
rate divided by ``max(W, 1)``; the main process runs with one torch thread, like a worker. Measurements of
all cases and worker counts are interleaved in rounds (rotating order) and the medians are reported.

``--step_results`` takes the JSON of ``bench_moco_step.py`` and prints, for each model configuration whose
image size equals a case's crop, how many loader cores it takes to feed the model's full MoCo step.

Usage: ``python benchmarks/bench_data.py --step_results benchmarks/results/moco_step_cpu.json``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import device_description, host_slug, machine_info, store_runs
from PIL import Image

from selfsup.moco.transforms import moco_eveningglow_transform, moco_v2_transform
from selfsup.shared.data import (
    ResumableSampler,
    SeededTransformDataset,
    TwoCropsTransform,
    build_dataset,
    build_loader,
)

BENCHMARK = "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RECIPES: dict[str, Callable[..., Any]] = {"eveningglow": moco_eveningglow_transform, "v2": moco_v2_transform}
SOURCES = ("jpeg", "digits")
RUN_KEY = ("case", "num_workers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["jpeg:eveningglow:64", "digits:eveningglow:32"],
        help="source:recipe:crop triples (sources: jpeg, digits; recipes: eveningglow, v2)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds (every case and worker count each)"
    )
    parser.add_argument("--jpeg_images", type=int, default=768, help="synthetic JPEG files to generate")
    parser.add_argument("--jpeg_size", type=int, default=256, help="side of the synthetic JPEGs")
    parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality of the synthetic files")
    parser.add_argument(
        "--jpeg_dir", type=Path, default=None, help="folder for the JPEGs (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and augmentations")
    parser.add_argument(
        "--step_results", type=Path, default=None, help="bench_moco_step.py JSON: print loader cores needed"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON (default: benchmarks/results/data_<host>.json)",
    )
    return parser


def parse_case(text: str) -> tuple[str, str, int]:
    try:
        source, recipe, crop = text.split(":")
        crop_size = int(crop)
    except ValueError:
        raise SystemExit(f"bench_data: --cases entry {text!r} is not source:recipe:crop") from None
    if source not in SOURCES or recipe not in RECIPES or crop_size < 1:
        raise SystemExit(f"bench_data: --cases entry {text!r}: sources {SOURCES}, recipes {sorted(RECIPES)}")
    return source, recipe, crop_size


def write_synthetic_jpegs(root: Path, count: int, size: int, quality: int, seed: int) -> dict[str, Any]:
    """``count`` JPEGs in 4 class folders under ``root``: bicubic-upsampled random colour fields + noise."""
    rng = np.random.default_rng(seed)
    sizes = []
    for index in range(count):
        folder = root / f"class{index % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(rng.integers(4, 17), rng.integers(4, 17), 3), dtype=np.uint8)
        smooth = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32
        )
        pixels = np.clip(smooth + rng.normal(0.0, 6.0, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=quality)
        sizes.append(path.stat().st_size)
    return {"count": count, "side": size, "quality": quality, "mean_file_kib": float(np.mean(sizes)) / 1024}


def make_dataset(
    source: str, recipe: str, crop: int, jpeg_root: Path | None, seed: int
) -> SeededTransformDataset:
    """The training pipeline's dataset: images -> seeded two-crop transform."""
    if source == "jpeg":
        base = build_dataset("imagefolder", root=jpeg_root, split="train")
    else:
        base = build_dataset("digits", split="train")
    return SeededTransformDataset(base, TwoCropsTransform(RECIPES[recipe](crop=crop)), seed=seed)


def time_epoch(dataset: SeededTransformDataset, workers: int, batch_size: int, seed: int) -> dict[str, float]:
    """One epoch through a fresh DataLoader: steady and epoch images/s, start-up latency."""
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=seed)
    loader = build_loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arrivals: list[tuple[float, int]] = []
        start = time.perf_counter()
        for views, _ in loader:
            arrivals.append((time.perf_counter(), views[0].shape[0]))
        end = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    first = max(workers, 1) - 1  # the batch after whose arrival every worker has delivered one
    if len(arrivals) - first - 1 < 3:
        raise SystemExit(
            f"bench_data: an epoch of {len(arrivals)} batches is too short to time {workers} workers; "
            "raise --jpeg_images or lower --batch_size"
        )
    steady_images = sum(n for _, n in arrivals[first + 1 :])
    total_images = sum(n for _, n in arrivals)
    return {
        "steady_images_per_s": steady_images / (end - arrivals[first][0]),
        "epoch_images_per_s": total_images / (end - start),
        "first_batch_s": arrivals[0][0] - start,
        "images": total_images,
    }


def loader_cores_needed(step_results: Path, runs: list[dict[str, Any]]) -> list[str]:
    """Lines comparing the model's full-step images/s with the loader's images/s per core at the same size."""
    lines = []
    steps = json.loads(step_results.read_text())["runs"]
    for step in steps:
        size = step["config"]["image_size"]
        model_ips = step["full"]["images_per_s"]
        for run in runs:
            if run["crop"] != size or run["num_workers"] != 1:
                continue
            per_core = run["per_core_images_per_s"]
            lines.append(
                f"- {step['label']} [{step['malloc']}] at {model_ips:.1f} img/s needs "
                f"{model_ips / per_core:.2f} loader cores of `{run['case']}` ({per_core:.1f} img/s per core)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cases = [parse_case(text) for text in args.cases]
    if args.rounds < 1 or any(w < 0 for w in args.workers):
        raise SystemExit("bench_data: --rounds must be >= 1 and --workers >= 0")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        jpeg_root = args.jpeg_dir or Path(tmp) / "jpegs"
        jpeg_info = None
        if any(source == "jpeg" for source, _, _ in cases):
            existing = sorted(jpeg_root.rglob("*.jpg")) if jpeg_root.is_dir() else []
            if len(existing) >= args.jpeg_images:
                jpeg_info = {"count": len(existing), "reused": str(jpeg_root)}
            else:
                jpeg_info = write_synthetic_jpegs(
                    jpeg_root, args.jpeg_images, args.jpeg_size, args.jpeg_quality, args.seed
                )
        datasets = {case: make_dataset(*case, jpeg_root, args.seed) for case in cases}
        configs = [(case, w) for case in cases for w in args.workers]
        samples: dict[tuple, list[dict[str, float]]] = {config: [] for config in configs}
        for round_index in range(args.rounds + 1):  # round 0 warms caches and is not kept
            shift = round_index % len(configs)
            for case, workers in configs[shift:] + configs[:shift]:
                result = time_epoch(datasets[case], workers, args.batch_size, args.seed + round_index)
                if round_index > 0:
                    samples[(case, workers)].append(result)
    info = machine_info()
    info["load_average_before"] = load_before
    info["load_average_after"] = os.getloadavg()
    runs = []
    for (source, recipe, crop), workers in configs:
        rows = samples[((source, recipe, crop), workers)]
        steady = statistics.median(r["steady_images_per_s"] for r in rows)
        runs.append(
            {
                "case": f"{source}:{recipe}:{crop}",
                "source": source,
                "recipe": recipe,
                "crop": crop,
                "num_workers": workers,
                "batch_size": args.batch_size,
                "dataset_images": rows[0]["images"],
                "rounds": len(rows),
                "steady_images_per_s": steady,
                "per_core_images_per_s": steady / max(workers, 1),
                "epoch_images_per_s": statistics.median(r["epoch_images_per_s"] for r in rows),
                "first_batch_s": statistics.median(r["first_batch_s"] for r in rows),
                "jpeg": jpeg_info if source == "jpeg" else None,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": info,
                "machine_description": device_description(info, "cpu"),
            }
        )
    output = args.output or RESULTS_DIR / f"{BENCHMARK}_{host_slug()}.json"
    store_runs(output, BENCHMARK, runs, RUN_KEY)

    print(f"# {device_description(info, 'cpu')}, torch {info['torch']}; load average {load_before[0]:.1f}")
    if jpeg_info:
        print(f"# synthetic JPEGs: {json.dumps(jpeg_info)}")
    print(
        "| case (source:recipe:crop) | workers | images/s (steady) | images/s per core | images/s (epoch) "
        "| first batch s |"
    )
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['case']} | {run['num_workers']} | {run['steady_images_per_s']:.1f} "
            f"| {run['per_core_images_per_s']:.1f} | {run['epoch_images_per_s']:.1f} "
            f"| {run['first_batch_s']:.2f} |"
        )
    if args.step_results is not None:
        print("\nloader cores needed to feed the full MoCo step (1-worker per-core rate):")
        print("\n".join(loader_cores_needed(args.step_results, runs)) or "- no model run at a matching size")
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
