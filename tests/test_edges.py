"""The edges a newcomer hits on the command line (issue 17), each checked the way a user meets it:

* ``selfsup-eval`` evaluates a selfsup checkpoint at the size it was pre-trained at, says so and records it;
  ``--resize``/``--crop`` and a paper preset that fixes the dataset's sizes still win;
* ``--skip_corrupt`` counts what it skips: per-file warnings with the log's time prefix, a ``skipped_images``
  column with the running total, a final summary line and ``skipped_images`` in the run record;
* a wrong ``--arch`` (or an untrusted pickle) is one line that names what differs and the flag to change, with
  no Python API phrasing;
* an empty image folder is one line naming the data flag of the trainer that was run, and nothing is written.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from selfsup.moco.train import main as moco_main
from selfsup.shared.evaluation.cli import main as eval_main
from selfsup.shared.runtime.entrypoint import run_trainer
from selfsup.shared.runtime.registry import registered_trainers

TRAINERS = registered_trainers()
DATA_FLAGS = {"--dataset_root", "--data_path", "--data_folder"}
#: the time prefix of every log line (``[HH:MM:SS logger-name] message``)
LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d \S+\] ")
#: a tiny moco-train run (add the data and --output_root)
MOCO = [
    "--arch", "resnet18", "--cifar_stem", "--crop", "16", "--num_workers", "0", "--no_progress",
    "--no_tensorboard", "--plot_iter", "0", "--exp_version", "t", "--dataset_name", "D",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def width32(tmp_path_factory) -> Path:
    """A moco-train checkpoint of a ResNet-18 at base width 32, pre-trained (one step) on 16 px crops of digits
    (whose native size is 32 px)."""
    out = tmp_path_factory.mktemp("moco")
    flags = [*MOCO, "--dataset", "digits", "--width", "32", "--batch_size", "32", "--num_keys", "32"]
    assert moco_main([*flags, "--max_iters", "1", "--output_root", str(out)]) == 0
    checkpoint = out / "D" / "t" / "weight" / "ckpt_last.pkl"
    assert torch.load(checkpoint, weights_only=True)["input_size"] == 16
    return checkpoint


def _png(path: Path, value: int, side: int = 20) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), (value % 256, (3 * value) % 256, 90)).save(path)


def _knn(checkpoint: Path, out: Path, *flags: str) -> list[str]:
    return ["knn", "--checkpoint", str(checkpoint), *flags, "--device", "cpu", "--output", str(out),
            "--no_results_table", "--no-use_cache"]  # fmt: skip


# ------------------------------------------------------------------ selfsup-eval: the input size


def test_selfsup_eval_uses_the_checkpoints_input_size_and_prints_and_records_it(width32, tmp_path, capsys):
    out = tmp_path / "knn.json"
    assert eval_main(_knn(width32, out, "--dataset", "digits", "--k", "20")) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads(out.read_text())
    assert (result["hyperparameters"]["resize"], result["hyperparameters"]["crop"]) == (16, 16)
    assert (result["input"]["resize"], result["input"]["crop"]) == (16, 16)
    assert result["checkpoint"]["input_size"] == 16
    assert result["checkpoint"]["evaluated_input"] == {"resize": 16, "crop": 16, "from": "checkpoint"}
    said = [line for line in printed if "input resize 16, crop 16" in line]
    assert len(said) == 1 and LOG_LINE.match(said[0]), printed
    assert "pre-trained on 16 px crops" in said[0] and "--resize/--crop" in said[0]
    assert said[0].split("] ", 1)[1] in result["checkpoint"]["notes"]


def test_explicit_resize_and_crop_win_over_the_checkpoints_size(width32, tmp_path, capsys):
    out = tmp_path / "knn.json"
    flags = ["--dataset", "digits", "--k", "20", "--resize", "12", "--crop", "12"]
    assert eval_main(_knn(width32, out, *flags)) == 0
    result = json.loads(out.read_text())
    assert (result["hyperparameters"]["resize"], result["hyperparameters"]["crop"]) == (12, 12)
    assert result["checkpoint"]["evaluated_input"] == {"resize": 12, "crop": 12, "from": "flags"}
    assert any("input resize 12, crop 12" in line for line in capsys.readouterr().out.splitlines())


def test_a_preset_that_fixes_the_datasets_sizes_wins_over_the_checkpoints_size(width32, tmp_path, capsys):
    """The InsDis kNN preset evaluates an ImageNet-style folder at Resize 256 / crop 224, as the paper did."""
    for split in ("train", "val"):
        for k, name in enumerate(("a", "b")):
            _png(tmp_path / "data" / split / name / "0.png", 60 * k)
    out = tmp_path / "knn.json"
    flags = ["--dataset", "imagefolder", "--dataset_root", str(tmp_path / "data"), "--preset", "instdisc"]
    assert eval_main(_knn(width32, out, *flags, "--k", "1", "--test_batch_size", "2")) == 0
    result = json.loads(out.read_text())
    assert (result["hyperparameters"]["resize"], result["hyperparameters"]["crop"]) == (256, 224)
    assert result["checkpoint"]["evaluated_input"] == {"resize": 256, "crop": 224, "from": "preset"}
    said = [line for line in capsys.readouterr().out.splitlines() if "input resize 256, crop 224" in line]
    assert len(said) == 1 and "instdisc" in said[0] and "pre-trained on 16 px crops" in said[0]


# ------------------------------------------------------------------ one-line errors without API phrasing


def _no_api_phrasing(line: str) -> None:
    assert not re.search(r"\b\w+=(None|True|False)\b", line), f"Python API phrasing in a CLI message: {line}"


def test_a_wrong_arch_is_one_line_naming_what_differs_and_the_flag(width32, tmp_path, capsys):
    out = tmp_path / "knn.json"
    assert eval_main(_knn(width32, out, "--dataset", "digits", "--arch", "resnet18")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("selfsup-eval knn: error: --arch resnet18 does not match the weights")
    assert "base width 32 in the weights, 64 for resnet18" in line and "drop --arch" in line
    assert "arch=None" not in line and "allow_partial=True" not in line
    _no_api_phrasing(line)
    assert not out.exists()


def test_an_untrusted_pickle_is_one_line_naming_the_flag(tmp_path, capsys):
    import numpy as np

    pickled = tmp_path / "numpy.pth"
    torch.save({"acc": np.float64(0.5), "weight": torch.zeros(1)}, pickled)
    assert eval_main(_knn(pickled, tmp_path / "knn.json", "--dataset", "digits")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "numpy.pth" in lines[0] and "--trust" in lines[0], lines
    _no_api_phrasing(lines[0])


# ------------------------------------------------------------------ --skip_corrupt counts what it skips


@pytest.mark.parametrize("workers", ["0", "1"])
def test_skip_corrupt_logs_each_file_and_counts_in_the_log_the_csv_and_the_run_record(
    workers: str, tmp_path: Path, capfd
):
    data = tmp_path / "data"
    for k, name in enumerate(("a", "b")):
        for i in range(8):
            _png(data / name / f"{i}.png", 40 * k + 5 * i)
    broken = data / "b" / "3_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    flags = [
        *MOCO,
        "--dataset",
        "imagefolder",
        "--dataset_root",
        str(data),
        "--width",
        "4",
        "--batch_size",
        "8",
    ]
    flags += ["--num_keys", "16", "--max_epoch", "2", "--log_every", "1", "--num_workers", workers]
    assert moco_main([*flags, "--skip_corrupt", "--output_root", str(tmp_path / "out")]) == 0
    printed = capfd.readouterr().out.splitlines()  # capfd: loader workers write to the same stdout

    per_file = [line for line in printed if "skipping corrupt image" in line]
    assert per_file and all(LOG_LINE.match(line) and str(broken) in line for line in per_file), printed
    run = tmp_path / "out" / "D" / "t"
    with (run / "loss" / "loss.csv").open(newline="") as handle:
        counts = [int(row["skipped_images"]) for row in csv.DictReader(handle)]
    assert len(counts) == 6 and counts == sorted(counts) and counts[-1] >= 2  # a running total, 2 epochs
    total = json.loads((run / "config.json").read_text())["skipped_images"]
    assert total == counts[-1] == len(per_file)
    summary = [line for line in printed if "--skip_corrupt:" in line]
    assert len(summary) == 1 and LOG_LINE.match(summary[0]) and f" {total} unreadable" in summary[0]
    rows = [line for line in printed if " step " in line and "skipped_images" in line]
    assert rows and all(re.search(r"skipped_images \d+ ", line) for line in rows)  # a count, not 2.0000


# ------------------------------------------------------------------ empty image folders, every trainer


@pytest.mark.parametrize("content", ["nothing", "class folders without images"])
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_an_empty_image_folder_is_one_line_naming_the_trainers_data_flag_and_nothing_is_written(
    name: str, content: str, tmp_path: Path, capsys
):
    entry = TRAINERS[name]
    empty = tmp_path / "empty"
    empty.mkdir()
    if content != "nothing":
        (empty / "a").mkdir()
        (empty / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    flags = entry.smoke_flags(tmp_path / "unused.npz", out)
    args = entry.parse_args(flags)
    data_flag = entry.method(args).layout(args).data_flag
    flags[flags.index(data_flag) + 1] = str(empty)
    flags[flags.index("--dataset") + 1] = "imagefolder"
    assert run_trainer(entry, flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"{entry.prog}: error: ") and str(empty) in line, line
    assert data_flag in line, f"{name}: the message should name {data_flag}: {line}"
    for other in DATA_FLAGS - {data_flag}:
        assert other not in line, f"{name} has no {other}: {line}"
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == ["empty"], f"{name} wrote {written} before failing"
