"""Precision and speed switches of the trainer: bf16 autocast with channels-last, ``--precision auto``,
and the start-up malloc tuning (``--no_malloc_tuning``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.moco import train as moco_train
from selfsup.moco.model import MoCo
from selfsup.moco.train import main, train_step
from selfsup.shared.models.backbones import build_backbone
from selfsup.shared.optim.optimizers import build_optimizer
from selfsup.shared.runtime import precision as precision_module
from selfsup.shared.runtime.cpu import MallocTuning
from selfsup.shared.runtime.precision import (
    autocast,
    check_precision,
    make_grad_scaler,
    prepare_model,
    resolve_precision,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared 2-core machine a second OpenMP thread waits on a busy core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run(tmp_path: Path, args: list[str], *extra: str) -> Path:
    argv = [*args, "--output_root", str(tmp_path), "--dataset_name", "DIGITS", "--exp_version", "t", *extra]
    assert main(argv) == 0
    return tmp_path / "DIGITS" / "t"


def losses(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / "loss" / "loss.csv").open() as handle:
        return [(row["global_step"], row["loss"]) for row in csv.DictReader(handle)]


def tiny_moco() -> MoCo:
    torch.manual_seed(0)
    model = MoCo(build_backbone("resnet18", width=4, cifar_stem=True), dim=16, num_keys=32, momentum=0.99)
    model.momentum_update(0.0)
    for encoder in (model.encoder_q, model.encoder_k):
        prepare_model(encoder, channels_last=True, compile_model=False)
    return model.train()


def test_bf16_channels_last_step_keeps_loss_and_queue_fp32_and_reaches_every_parameter() -> None:
    model = tiny_moco()
    optimizer = build_optimizer("sgd", model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    scaler = make_grad_scaler("bf16", CPU)
    gen = torch.Generator().manual_seed(0)
    x_q, x_k = (
        torch.randn(8, 3, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
        for _ in range(2)
    )
    conv = model.encoder_q.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)

    with autocast("bf16", CPU):  # what train_step runs: the encoders in bf16, the logits in fp32
        assert model.encoder_q(x_q).dtype == torch.bfloat16
        logits, labels, keys = model(x_q, x_k)
    assert keys.dtype == torch.bfloat16  # enqueue() stores them as fp32 (checked below)
    assert logits.dtype == torch.float32 and labels.dtype == torch.long
    assert F.cross_entropy(logits.float(), labels).dtype == torch.float32

    queue_before = model.queue.clone()
    loss = train_step(model, model, optimizer, scaler, x_q, x_k, precision="bf16")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert model.queue.dtype == torch.float32 and not torch.equal(model.queue, queue_before)
    assert torch.isfinite(model.queue).all()
    for name, p in model.encoder_q.named_parameters():
        assert p.requires_grad and p.dtype == torch.float32, name
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the optimiser step kept the format
    assert model.encoder_k.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_channels_last_resume_is_bitwise(tmp_path, tiny_args) -> None:
    args = [*tiny_args, "--precision", "bf16", "--channels_last"]
    straight = run(tmp_path / "a", args, "--max_iters", "6")
    run(tmp_path / "b", args, "--max_iters", "3")
    resumed = run(tmp_path / "b", args, "--max_iters", "6", "--resume", "auto")
    a = torch.load(straight / "weight" / "ckpt_last.pkl", weights_only=True)
    b = torch.load(resumed / "weight" / "ckpt_last.pkl", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
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

    monkeypatch.setattr(moco_train, "tune_malloc", fake_tune_malloc)
    run(tmp_path, tiny_args, "--max_iters", "1", *(["--no_malloc_tuning"] if flag else []))
    assert calls == ([] if flag else [1])
