"""Tests of selfsup.shared.runtime.cpu: malloc tuning (page faults measured in child processes) and bf16 flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from selfsup.shared.runtime import cpu

# Allocates and frees a 64 MiB tensor (above glibc's 32 MiB mmap-threshold ceiling) 10 times after 10
# untimed rounds, and prints the minor page faults of the measured rounds.
_FAULTS_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from selfsup.shared.runtime.cpu import tune_malloc

    first = second = None
    if sys.argv[1] == "tuned":
        first, second = tune_malloc(), tune_malloc()

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def rounds(n):
        for _ in range(n):
            x = torch.ones(16 * 2**20)  # 64 MiB of fp32, every page written
            del x

    rounds(10)  # warm-up: glibc needs a few rounds before a freed block fits the next aligned request
    before = faults()
    rounds(10)
    print(json.dumps({
        "faults": faults() - before,
        "applied": None if first is None else first.applied,
        "same_object": first is second,
    }))
    """
)


def _child_env() -> dict[str, str]:
    """This environment without MALLOC_* variables (CI sets them) and with one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _faults(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_CHILD, mode],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(cpu._glibc() is None, reason="glibc only")
def test_tuned_malloc_stops_page_faults_of_large_temporaries() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    if default["faults"] < 10 * 16384 // 2:
        pytest.skip(
            f"default malloc took only {default['faults']} faults here (huge pages?): nothing to compare"
        )
    assert tuned["applied"] and tuned["same_object"]  # applied, and once: the second call is the first result
    assert tuned["faults"] * 20 < default["faults"], (tuned, default)


class _Fn:
    """A stand-in for a ctypes function: records calls, accepts ``argtypes``/``restype``."""

    def __init__(self, result) -> None:
        self.result, self.calls = result, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.result


class _FakeGlibc:
    def __init__(self, mallopt_result: int = 1) -> None:
        self.mallopt = _Fn(mallopt_result)
        self.gnu_get_libc_version = _Fn(b"2.99")


def test_tune_malloc_calls_mallopt_with_glibc_constants(monkeypatch) -> None:
    fake = _FakeGlibc()
    monkeypatch.setattr(cpu, "_glibc", lambda: fake)
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    result = cpu.tune_malloc.__wrapped__()
    assert fake.mallopt.calls == [(-4, 0), (-1, 2**31 - 1)]  # M_MMAP_MAX, M_TRIM_THRESHOLD of <malloc.h>
    assert result.applied and bool(result) and "glibc 2.99" in result.detail


def test_tune_malloc_leaves_the_users_environment_alone(monkeypatch) -> None:
    fake = _FakeGlibc()
    monkeypatch.setattr(cpu, "_glibc", lambda: fake)
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    result = cpu.tune_malloc.__wrapped__()
    assert not result and fake.mallopt.calls == [] and "MALLOC_MMAP_MAX_=65536" in result.detail
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")
    result = cpu.tune_malloc.__wrapped__()
    assert result.applied and fake.mallopt.calls == [(-4, 0)]  # only the variable the user did not set
    assert "MALLOC_TRIM_THRESHOLD_=1000" in result.detail


def test_tune_malloc_is_a_no_op_off_glibc_and_reports_refusals(monkeypatch) -> None:
    monkeypatch.setattr(cpu, "_glibc", lambda: None)
    result = cpu.tune_malloc.__wrapped__()
    assert not result.applied and "not glibc" in result.detail
    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setattr(cpu, "_glibc", lambda: _FakeGlibc(mallopt_result=0))
    result = cpu.tune_malloc.__wrapped__()
    assert not result.applied and "refused" in result.detail


def test_tune_malloc_runs_once_per_process() -> None:
    assert cpu.tune_malloc() is cpu.tune_malloc()
    assert cpu.tune_malloc.cache_info().misses == 1


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16", True),
        ("fpu avx512f amx_tile amx_bf16", True),
        ("fpu sse2 avx2 avx512f", False),  # AVX-512 without bf16 dot products: bf16 is emulated
    ],
)
def test_cpu_has_fast_bf16_reads_the_flags(tmp_path, flags: str, fast: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu.cpu_has_fast_bf16(info) is fast
    assert "avx512f" in cpu.cpu_flags(info)


def test_cpu_has_fast_bf16_is_false_when_unknown(tmp_path) -> None:
    assert cpu.cpu_has_fast_bf16(tmp_path / "missing") is False
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu.cpu_has_fast_bf16(tmp_path / "arm") is False


@pytest.mark.parametrize("flag", [False, True])
def test_selfsup_eval_tunes_malloc_at_start_unless_told_not_to(monkeypatch, tmp_path, flag: bool) -> None:
    from selfsup.shared.evaluation import cli

    calls = []

    def fake_tune_malloc() -> cpu.MallocTuning:
        calls.append(1)
        return cpu.MallocTuning(True, "malloc tuning (test)")

    monkeypatch.setattr(cpu, "tune_malloc", fake_tune_malloc)
    monkeypatch.setattr(cli, "_run_protocol", lambda args: {"protocol": args.protocol, "top1": 1.0})
    argv = ["knn", "--checkpoint", str(tmp_path / "c.pkl"), "--output", str(tmp_path / "r.json")]
    assert cli.main([*argv, *(["--no_malloc_tuning"] if flag else []), "--device", "cpu"]) == 0
    assert calls == ([] if flag else [1])
    assert "no_malloc_tuning" not in cli.overrides_from_args(cli.build_parser().parse_args(argv))
