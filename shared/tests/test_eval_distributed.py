"""A 2-process gloo run of the linear protocol under torchrun: sharded feature extraction and a DDP head."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from selfsup.shared.evaluation import run_linear
from selfsup.shared.models.backbones import build_backbone

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "selfsup.shared.evaluation.cli",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def test_two_process_linear_matches_one_process(tmp_path):
    torch.manual_seed(0)
    net = build_backbone("resnet18", width=4, cifar_stem=True)
    ckpt = tmp_path / "tv.pth"
    torch.save(net.state_dict(), ckpt)
    common = [
        "--checkpoint",
        str(ckpt),
        "--dataset",
        "digits",
        "--resize",
        "16",
        "--crop",
        "16",
        "--epochs",
        "3",
        "--batch_size",
        "128",
        "--device",
        "cpu",
    ]
    cached = _torchrun(
        ["linear", *common, "--output", str(tmp_path / "ddp.json"), "--cache_dir", str(tmp_path / "cache2")],
        tmp_path,
    )
    assert cached.returncode == 0, cached.stderr[-3000:]
    standard = _torchrun(
        ["linear", *common, "--no-use_cache", "--output", str(tmp_path / "ddp_std.json")], tmp_path
    )
    assert standard.returncode == 0, standard.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    ddp_std = json.loads((tmp_path / "ddp_std.json").read_text())
    assert ddp["world_size"] == 2 and ddp_std["world_size"] == 2 and ddp_std["path"] == "standard"
    table = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(table) == 2  # rank 0 alone writes the result and the table line

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_linear(
            net, dataset="digits", resize=16, crop=16, epochs=3, batch_size=128, cache_dir=tmp_path / "cache1"
        )
    finally:
        torch.set_num_threads(previous)
    # Sharded extraction gathers the features back in dataset order: the cache files are the same.
    files1 = sorted((tmp_path / "cache1").glob("*.pt"))
    files2 = sorted((tmp_path / "cache2").glob("*.pt"))
    assert [f.name for f in files1] == [f.name for f in files2] and len(files1) == 2
    for a, b in zip(files1, files2):
        blob_a, blob_b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        assert torch.equal(blob_a["labels"], blob_b["labels"])
        assert torch.allclose(blob_a["features"], blob_b["features"], atol=1e-5)
    # Two ranks of 64 see the same global batches of 128 as one process (the sampler interleaves ranks);
    # only the wrap-around padding of the odd-sized train set differs.
    assert ddp["top1"] == pytest.approx(single["top1"], abs=1.5)
    assert ddp["curve"][0]["train_loss"] == pytest.approx(single["curve"][0]["train_loss"], rel=2e-2)
    assert ddp_std["top1"] == pytest.approx(single["top1"], abs=1.5)
