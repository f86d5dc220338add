"""The contract every registered trainer keeps (``selfsup.trainers`` entry points, see
``shared/runtime/registry.py``), checked the same way for each (the pattern of timm's ``tests/test_models.py``):

* build on the 192-image fixture and train one short epoch;
* stop after one step (``--max_iters 1``), resume with the trainer's own resume request, and end with a
  checkpoint bitwise equal to the uninterrupted run's (every tensor, the optimiser, every RNG state);
* the checkpoint carries the selfsup schema, and ``selfsup-eval knn`` exports and evaluates its backbone;
* under ``torchrun`` with 2 gloo processes the run trains and records the world size.

A new method gets all of this by registering a ``TrainerEntry``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from selfsup.shared.evaluation.cli import main as eval_main
from selfsup.shared.runtime.registry import TrainerEntry, registered_trainers
from selfsup.shared.runtime.trainer import SCHEMA_KEYS, train

TRAINERS = registered_trainers()


def _run(entry: TrainerEntry, flags: list[str]) -> Any:
    args = entry.parse_args(flags)
    return train(entry.method(args), args, [entry.prog, *flags])


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ: tensors bitwise (dtype, shape, values), containers entry by entry."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{where}: keys differ"]
        return [d for key in a for d in _differences(a[key], b[key], f"{where}/{key}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{where}: lengths differ"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}/{i}")]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} != {b!r}"]


def test_every_project_registers_its_trainers():
    assert {"moco", "cmc", "insdis", "cmc-moco", "swav", "unmix", "intl", "intl_m", "cwrgp"} <= set(TRAINERS)
    for name, entry in TRAINERS.items():
        assert entry.module.startswith("selfsup.") and entry.prog, name


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_build_step_resume_bitwise_export_and_evaluate(name: str, digits192: Path, tmp_path: Path):
    entry = TRAINERS[name]
    full = _run(entry, entry.smoke_flags(digits192, tmp_path / "full"))
    assert full.stopped_by == "end" and full.step >= 2, f"{name}: the smoke run must last at least 2 steps"

    flags = entry.smoke_flags(digits192, tmp_path / "resumed")
    stopped = _run(entry, [*flags, "--max_iters", "1"])
    assert stopped.stopped_by == "max_iters" and stopped.step == 1
    resumed = _run(entry, [*flags, *entry.resume_flags])
    assert resumed.stopped_by == "end" and resumed.step == full.step

    expected, got = _load(full.checkpoint), _load(resumed.checkpoint)
    assert resumed.checkpoint.relative_to(tmp_path / "resumed") == full.checkpoint.relative_to(
        tmp_path / "full"
    )
    assert set(SCHEMA_KEYS) - {"method", "backbone", "input_normalization"} <= set(got)
    assert got["format"] == "selfsup" and got["global_step"] == full.step
    for key in entry.run_record_keys:  # the flags differ (--max_iters, the resume request, the folder)
        expected.pop(key, None), got.pop(key, None)
    assert not _differences(expected, got), (
        f"{name}: resumed != uninterrupted at {_differences(expected, got)[:5]}"
    )

    out = tmp_path / "knn.json"
    argv = ["knn", "--checkpoint", str(full.checkpoint), "--dataset", "npz", "--dataset_root", str(digits192)]
    argv += ["--k", "5", "--device", "cpu", "--output", str(out), "--no_results_table", *entry.eval_flags]
    assert eval_main(argv) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["top1"] <= 100.0 and result["checkpoint"]["format"] == "selfsup"


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_bad_input_is_one_line_naming_the_trainers_flag_and_nothing_is_written(
    name: str, tmp_path: Path, capsys
):
    from selfsup.shared.runtime.entrypoint import run_trainer

    entry = TRAINERS[name]
    missing = tmp_path / "missing.npz"
    out = tmp_path / "run"
    assert run_trainer(entry, entry.smoke_flags(missing, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{entry.prog}: error: ") and "missing.npz" in lines[0]
    data_flag = (
        entry.method(entry.parse_args(entry.smoke_flags(missing, out)))
        .layout(entry.parse_args(entry.smoke_flags(missing, out)))
        .data_flag
    )
    assert data_flag in lines[0], f"{name}: the message should name {data_flag}: {lines[0]}"
    assert not out.exists(), f"{name} wrote {sorted(p.name for p in out.rglob('*'))} before failing"


DISTRIBUTED = sorted(name for name, entry in TRAINERS.items() if entry.distributed)


@pytest.mark.distributed
@pytest.mark.parametrize("name", DISTRIBUTED)
def test_two_process_torchrun_run(name: str, digits192: Path, tmp_path: Path, torchrun):
    entry = TRAINERS[name]
    flags = [*entry.smoke_flags(digits192, tmp_path), "--max_iters", "2"]
    proc = torchrun(entry.module, *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    args = entry.parse_args(flags)
    checkpoint = _load(entry.method(args).layout(args).last_checkpoint)
    assert checkpoint["global_step"] == 2 and checkpoint["args"]["world_size"] == 2
