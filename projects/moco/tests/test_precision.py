"""Precision and speed switches of the trainer: bf16 autocast with channels-last, ``--precision auto``,
and the start-up malloc tuning (``--no_malloc_tuning``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from selfsup.moco.cli import parse_args
from selfsup.moco.loss import info_nce_loss
from selfsup.moco.train import MoCoTrainer, main
from selfsup.shared.runtime import precision as precision_module
from selfsup.shared.runtime import trainer as runtime
from selfsup.shared.runtime.cpu import MallocTuning
from selfsup.shared.runtime.precision import autocast, check_precision, resolve_precision
from selfsup.shared.runtime.trainer import TrainingRun

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared 2-core machine a second OpenMP thread waits on a busy core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run(tmp_path: Path, args: list[str], *extra: str) -> Path:
    argv = [*args, "--output_root", str(tmp_path), "--exp_version", "t", *extra]
    assert main(argv) == 0
    return tmp_path / "DIGITS" / "t"


def losses(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "loss" / "loss.csv").open() as handle:
        return [(row["global_step"], row["loss"]) for row in csv.DictReader(handle)]


def test_bf16_channels_last_step_keeps_loss_and_queue_fp32_and_reaches_every_parameter(
    tmp_path, tiny_args
) -> None:
    """The trainer's own step (``TrainingRun.step``) under ``--precision bf16 --channels_last``."""
    flags = ["--output_root", str(tmp_path), "--precision", "bf16", "--channels_last", "--device", "cpu"]
    args = parse_args([*tiny_args, *flags])
    run = TrainingRun.start(MoCoTrainer(args), args)
    try:
        model = run.method.model
        run.method.on_epoch_start(0)
        views, labels = next(iter(run.parts.data.loader))
        x_q, x_k = (v.contiguous(memory_format=torch.channels_last) for v in views)
        conv = model.encoder_q.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
        with autocast("bf16", CPU):  # what the step runs: the encoders in bf16, the logits in fp32
            assert model.encoder_q(x_q).dtype == torch.bfloat16
            q, k = model(x_q, x_k)
            assert k.dtype == torch.bfloat16  # enqueue() stores the keys as fp32 (checked below)
            assert info_nce_loss(q, k, model.queue, model.temperature).dtype == torch.float32

        queue_before = model.queue.clone()
        loss = run.step(([x_q, x_k], labels))["loss"]
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert model.queue.dtype == torch.float32 and not torch.equal(model.queue, queue_before)
        assert torch.isfinite(model.queue).all()
        for name, p in model.encoder_q.named_parameters():
            assert p.requires_grad and p.dtype == torch.float32, name
            assert p.grad is not None and p.grad.dtype == torch.float32, name
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        assert conv.is_contiguous(memory_format=torch.channels_last)  # the optimiser step kept the format
        assert model.encoder_k.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        run.close()


def test_bf16_channels_last_resume_is_bitwise(tmp_path, tiny_args) -> None:
    args = [*tiny_args, "--precision", "bf16", "--channels_last"]
    straight = run(tmp_path / "a", args, "--max_iters", "4")
    run(tmp_path / "b", args, "--max_iters", "2")
    resumed = run(tmp_path / "b", args, "--max_iters", "4", "--resume", "auto")
    a = torch.load(straight / "weight" / "ckpt_last.pkl", weights_only=True)
    b = torch.load(resumed / "weight" / "ckpt_last.pkl", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    for part in ("encoder", "momentum_encoder"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert a["queue"].dtype == torch.float32
    assert torch.equal(a["queue"], b["queue"]) and a["queue_ptr"] == b["queue_ptr"]
    assert a["args"]["precision_resolved"] == "bf16"
    assert losses(straight) == losses(resumed)


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_auto_on_cpu_follows_the_bf16_flags(monkeypatch, tmp_path, tiny_args, fast_bf16, expected):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_precision("auto", CPU) == expected
    out = run(tmp_path, tiny_args, "--precision", "auto", "--max_iters", "1")
    record = json.loads((out / "config.json").read_text())
    assert record["args"]["precision"] == "auto" and record["precision_resolved"] == expected
    ckpt = torch.load(out / "weight" / "ckpt_last.pkl", weights_only=True)
    assert ckpt["args"]["precision_resolved"] == expected


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_auto_on_cuda_asks_for_native_bf16(monkeypatch, native, expected):
    import contextlib

    monkeypatch.setattr(precision_module, "_cuda_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected


def test_resolve_precision_keeps_explicit_values_and_checks_them() -> None:
    for name in ("fp32", "bf16"):
        assert resolve_precision(name, CPU) == name
    check_precision("auto", CPU)
    assert resolve_precision("auto", torch.device("meta")) == "fp32"  # unknown device: no guess
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="resolved precision"):
        autocast("auto", CPU)


@pytest.mark.parametrize("flag", [False, True])
def test_trainer_tunes_malloc_once_at_start_unless_told_not_to(monkeypatch, tmp_path, tiny_args, flag):
    calls = []

    def fake_tune_malloc() -> MallocTuning:
        calls.append(1)
        return MallocTuning(True, "malloc tuning (test)")

    monkeypatch.setattr(runtime, "tune_malloc", fake_tune_malloc)
    run(tmp_path, tiny_args, "--max_iters", "1", *(["--no_malloc_tuning"] if flag else []))
    assert calls == ([] if flag else [1])
