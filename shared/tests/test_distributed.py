"""Tests of selfsup.shared.distributed: world-size-1 identities, launch detection, a 2-process gloo run."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from selfsup.shared import distributed as D

WORKER = Path(__file__).with_name("dist_worker.py")
LAUNCH_VARS = (*D.TORCHRUN_VARS, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODELIST")
LAUNCH_VARS = (*LAUNCH_VARS, "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


def _load_worker():
    spec = importlib.util.spec_from_file_location("selfsup_dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------------------------------ world size 1


def test_dist_env_properties() -> None:
    env = D.DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    assert env.is_main and not env.is_distributed
    other = D.DistEnv(rank=3, local_rank=1, world_size=4, device=torch.device("cpu"), backend="gloo")
    assert other.is_distributed and not other.is_main
    with pytest.raises(AttributeError):
        other.rank = 0  # frozen


def test_init_distributed_single_process(clean_env: pytest.MonkeyPatch) -> None:
    env = D.init_distributed(device="cpu")
    assert env == D.DistEnv(0, 0, 1, torch.device("cpu"), None)
    assert not torch.distributed.is_initialized()
    clean_env.setenv("SLURM_NTASKS", "1")  # a one-task Slurm job is a single process
    clean_env.setenv("SLURM_PROCID", "0")
    assert D.init_distributed(device="cpu").world_size == 1


def test_init_distributed_partial_torchrun_env_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        D.init_distributed(device="cpu")


def test_world_one_queries_are_trivial() -> None:
    assert D.get_rank() == 0 and D.get_world_size() == 1 and D.is_main_process()
    D.barrier()
    D.cleanup()
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    bn = nn.Sequential(nn.BatchNorm2d(3))
    assert D.convert_sync_batchnorm(bn) is bn and type(bn[0]) is nn.BatchNorm2d
    log = logging.getLogger("test")
    assert D.sync_batchnorm_on(bn, torch.device("cpu"), log) is bn and type(bn[0]) is nn.BatchNorm2d


def test_world_one_gathers_are_identities() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    no_grad = D.all_gather_no_grad(x)
    assert torch.equal(no_grad, x) and not no_grad.requires_grad
    with_grad = D.all_gather_with_grad(x)
    assert with_grad is x
    (with_grad * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(D.all_reduce_mean(t), t)


def test_world_one_shuffle_is_a_local_permutation() -> None:
    torch.manual_seed(0)
    x = torch.arange(64.0).view(32, 2)
    shuffled, idx_unshuffle = D.batch_shuffle_ddp(x)
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled[:, 0].sort().values, x[:, 0])  # same rows, new order
    assert torch.equal(D.batch_unshuffle_ddp(shuffled, idx_unshuffle), x)
    with pytest.raises(ValueError, match="idx_unshuffle"):
        D.batch_unshuffle_ddp(shuffled[:4], idx_unshuffle)


# ------------------------------------------------------------------------------------- launch detection


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
        ("gpu7", ["gpu7"]),
        ("login,cn[9-11]", ["login", "cn9", "cn10", "cn11"]),
        ("r[1-2]-n[08-09]", ["r1-n08", "r1-n09", "r2-n08", "r2-n09"]),
        ("a[3],b-[001-002],c", ["a3", "b-001", "b-002", "c"]),
    ],
)
def test_parse_slurm_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert D.parse_slurm_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[1-", "node1]", "node[4-2]", "node[a-b]", ""])
def test_parse_slurm_nodelist_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        D.parse_slurm_nodelist(bad)


def test_detect_launch_torchrun() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234"}
    assert D.detect_launch(env) == D.LaunchInfo("torchrun", 3, 1, 4, "h0", 1234)
    assert D.detect_launch({}) == D.LaunchInfo("single")
    assert D.detect_launch({"MASTER_ADDR": "h0", "MASTER_PORT": "1"}).source == "single"
    with pytest.raises(ValueError, match="RANK must be an integer"):
        D.detect_launch({**env, "RANK": "x"})
    with pytest.raises(ValueError, match="inconsistent torchrun"):
        D.detect_launch({**env, "RANK": "4"})


def test_detect_launch_slurm() -> None:
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NODELIST": "gpu[12-15]",
        "SLURM_JOB_ID": "4242",
    }
    info = D.detect_launch(env)
    assert info == D.LaunchInfo("slurm", 5, 1, 8, "gpu12", 20000 + 4242)
    assert D.detect_launch({k: v for k, v in env.items() if k != "SLURM_JOB_ID"}).master_port == 29500
    override = D.detect_launch({**env, "MASTER_ADDR": "head", "MASTER_PORT": "777"})
    assert (override.master_addr, override.master_port) == ("head", 777)
    with pytest.raises(ValueError, match="SLURM_NODELIST"):
        D.detect_launch({k: v for k, v in env.items() if k != "SLURM_NODELIST"})
    with pytest.raises(ValueError, match="SLURM_LOCALID"):
        D.detect_launch({k: v for k, v in env.items() if k != "SLURM_LOCALID"})
    assert D.detect_launch({**env, "SLURM_NTASKS": "1"}).source == "single"


# ------------------------------------------------------------------------------------ 2-process gloo run


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(launcher: str, rank: int, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "1"
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    if launcher == "torchrun":
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    else:
        env.update(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank))
        env["SLURM_NODELIST"] = "127.0.0.1,unreachable-node"  # the master is the first host
    env["MASTER_PORT"] = str(port)
    return env


def _launch(launcher: str, out_dir: Path, timeout_s: float = 90.0) -> list[dict]:
    errors = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding: retry with a new one
        port = _free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out_dir)],
                env=_rank_env(launcher, rank, port),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in range(2)
        ]
        outputs = []
        try:
            for proc in procs:
                outputs.append(proc.communicate(timeout=timeout_s)[0])
        except subprocess.TimeoutExpired:
            for proc in procs:
                proc.kill()
                proc.communicate()
            pytest.fail(f"2-process gloo run ({launcher}) timed out after {timeout_s}s")
        if all(proc.returncode == 0 for proc in procs):
            return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
        errors = "\n".join(outputs)
        if "address already in use" not in errors.lower():
            break
    pytest.fail(f"2-process gloo run ({launcher}) failed:\n{errors[-4000:]}")


@pytest.fixture(scope="module", params=["torchrun", "slurm"])
def two_ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _launch(request.param, tmp_path_factory.mktemp(f"gloo_{request.param}"))


@pytest.mark.distributed
def test_two_ranks_environment(two_ranks: list[dict]) -> None:
    for rank, res in enumerate(two_ranks):
        assert res["env"] == (rank, rank, 2, "cpu", "gloo")
        assert res["is_distributed"] and res["is_main"] == (rank == 0)
        assert (res["get_rank"], res["get_world_size"], res["is_main_process"]) == (rank, 2, rank == 0)
        assert res["broadcast"] == {"sender": 0, "payload": [1, 2, 3]}
        assert res["sync_bn_type"] == "SyncBatchNorm"
        assert torch.allclose(res["mean"], torch.tensor([1.5, 5.0]))
        assert torch.allclose(res["group_mean"], torch.tensor([0.5]))


@pytest.mark.distributed
def test_two_ranks_all_gather_values_and_gradients(two_ranks: list[dict]) -> None:
    worker = _load_worker()
    big_x, weights = worker.shared_inputs()
    # Single-process reference: every rank's loss on the concatenated batch, summed.
    ref_x = big_x.clone().requires_grad_(True)
    sum(worker.rank_loss(ref_x, weights, r) for r in range(2)).backward()
    n = worker.ROWS_PER_RANK
    for rank, res in enumerate(two_ranks):
        assert torch.equal(res["with_grad"], big_x) and res["with_grad_requires_grad"]
        assert torch.equal(res["no_grad"], big_x) and not res["no_grad_requires_grad"]
        assert torch.equal(res["group_no_grad"], big_x)
        torch.testing.assert_close(res["grad"], ref_x.grad[rank * n : (rank + 1) * n])


@pytest.mark.distributed
def test_two_ranks_shuffle_is_one_global_permutation(two_ranks: list[dict]) -> None:
    full = torch.cat([res["batch"] for res in two_ranks])
    shuffled = torch.cat([res["shuffled"] for res in two_ranks])
    # Every sample of the global batch appears exactly once across the ranks' shuffled slices.
    assert torch.equal(shuffled[:, 0].sort().values, full[:, 0])
    assert not torch.equal(shuffled, full)
    assert torch.equal(two_ranks[0]["idx_unshuffle"], two_ranks[1]["idx_unshuffle"])
    assert torch.equal(full[torch.argsort(two_ranks[0]["idx_unshuffle"])], shuffled)
    for res in two_ranks:
        assert torch.equal(res["restored"], 2.0 * res["batch"])
        assert torch.equal(res["group_restored"], res["batch"])


@pytest.mark.distributed
def test_two_ranks_shuffle_changes_bn_statistics(two_ranks: list[dict]) -> None:
    assert two_ranks[0]["bn_mean_plain"].item() == 0.0
    assert two_ranks[1]["bn_mean_plain"].item() == 10.0
    for res in two_ranks:
        # 64 samples, 32 per rank: a slice drawn from a single half has probability ~1e-18.
        assert 0.0 < res["bn_mean_shuffled"].item() < 10.0
    total = sum(res["bn_mean_shuffled"].item() for res in two_ranks)
    assert total == pytest.approx(10.0)  # the two slices together still hold 32 zeros and 32 tens
