"""``benchmarks/bench_steps.py`` at a tiny size: every trainer it starts takes its bound and full steps, the results
file holds a ratio per method and the profile of the work outside the bound."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_steps(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import machine, step_timing, bench_*_step
    module = importlib.import_module("bench_steps")
    yield module
    for name in [n for n in sys.modules if n.startswith("bench_") or n in ("machine", "step_timing")]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_tiny_run_writes_ratios_and_profile(bench_steps, tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    argv = ["--methods", "swav", "cwrgp", "--width", "4", "--batch_size", "16", "--warmup", "0"]
    argv += ["--repeats", "1", "--profile", "1", "--output", str(out)]
    assert bench_steps.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["label"] == "resnet18 w4 cifar-stem 32px b16 fp32 1thr"
    assert set(run["methods"]) == {"swav", "cwrgp"}
    for method in run["methods"].values():
        assert math.isfinite(method["ratio_full_over_bound"]) and method["ratio_of_cpu_time_medians"] > 0
    swav = run["profile"]["swav"]
    assert swav["outside_bound_ms"] > 0
    ops = {o["op"] for o in swav["outside_ops"]}
    assert "aten::mm" in ops  # the head and the prototypes: work the trunk-only bound does not do


@pytest.mark.slow
def test_every_method_starts_and_steps(bench_steps, tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    argv = ["--width", "4", "--batch_size", "16", "--warmup", "0", "--repeats", "1", "--output", str(out)]
    assert bench_steps.main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert list(run["methods"]) == list(bench_steps.METHODS)


def test_isa_needs_the_command_line(bench_steps) -> None:
    with pytest.raises(SystemExit, match="--isa"):
        bench_steps.main(["--isa", "avx2"])
