"""cwrgp-train: the scripts/base.sh command lines, the loss of the trainer's step against a hand-assembled
computation, the learning rate against torch's schedulers driven as base/train.py drives them, the checkpoint's
original entries, bitwise resume across an in-training evaluation, selfsup-eval on a finished checkpoint, and the
refusal of several processes. (Plain bitwise resume: tests/test_trainer_contract.py.)"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from selfsup.intl.cwrgp_cli import parse_args
from selfsup.intl.cwrgp_train import TRAINER, CWRGPTrainer, evaluation_due, train
from selfsup.intl.schedules import cwrgp_lr
from selfsup.shared.runtime.trainer import TrainingRun

#: 192 digits at 32 px, batches of 32 (6 iterations per epoch), width-8 ResNet-18, 64-d embedding in 2 groups.
TINY = [
    "--arch", "resnet18", "--width", "8", "--bs", "32", "--w_size", "16", "--emb", "64", "--group", "2",
    "--head_size", "64", "--epochs", "1", "--warmup_iters", "4", "--num_workers", "0", "--eval_every", "0",
    "--no_progress", "--no_tensorboard", "--log_every", "3", "--device", "cpu",
]  # fmt: skip

#: CW-RGP scripts/base.sh, without "python base/train.py" (tiny_in needs our --data_path).
BASE_SH = {
    "cwrgp4_cifar10": "--dataset cifar10 --epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    "cwrgp4_cifar100": "--dataset cifar100 --epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    "cwrgp4_stl10": "--dataset stl10 --epochs 2000 --lr 2e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
    "cwrgp4_tiny": "--dataset tiny_in --epochs 1000 --lr 2e-3 --num_samples 4 --bs 256 --emb 1024 --w_size 128 "
    "--group 2 --head_size 2048",
    "cwrgp2_cifar10": "--dataset cifar10 --epochs 1000 --lr 3e-3 --bs 256 --w_size 64 --group 4 --w_iter 4",
    "cwrgp2_cifar100": "--dataset cifar100 --epochs 1000 --lr 3e-3 --w_size 64 --group 4",
    "cwrgp2_stl10": "--dataset stl10 --epochs 2000 --lr 2e-3 --w_size 64 --group 4",
    "cwrgp2_tiny": "--dataset tiny_in --epochs 1000 --lr 2e-3 --emb 1024 --w_size 128 --group 2 --head_size 2048",
}


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny networks run fastest on one thread (and the CI machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def run(out: Path, data: Path, *extra: str) -> Path:
    argv = [*TINY, "--dataset", "npz", "--data_path", str(data), "--ckpt_dir", str(out), *extra]
    return train(parse_args(argv), ["cwrgp-train", *argv])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits192) -> Path:
    """One tiny epoch, its numbered checkpoint kept."""
    out = tmp_path_factory.mktemp("cwrgp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(out, digits192, "--save_freq", "1")
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("name", sorted(BASE_SH))
def test_scripts_base_sh_command_lines_parse(name):
    argv = shlex.split(BASE_SH[name]) + (["--data_path", "/data/tiny-imagenet-200"] if "tiny" in name else [])
    args = parse_args(argv)
    assert args.method == "cwrgp" and args.arch == "resnet18" and args.weight_decay == 1e-6
    assert args.warmup_iters == 500 and args.drop == [50, 25] and args.drop_gamma == 0.2
    assert args.num_samples == (4 if name.startswith("cwrgp4") else 2)
    assert args.bs == (512 if name in ("cwrgp2_cifar100", "cwrgp2_stl10", "cwrgp2_tiny") else 256)
    tiny = "tiny" in name
    assert args.emb == (1024 if tiny else 512) and args.head_size == (2048 if tiny else 1024)
    assert args.w_iter == (4 if name == "cwrgp2_cifar10" else 1) and args.rand_group and args.norm
    assert args.dataset == ("imagefolder" if tiny else args.original_dataset)


def test_original_flag_spellings_and_refusals(capsys):
    args = parse_args(["--adam_l2", "1e-5", "--no_lr_warmup", "--no_rg", "--no_norm", "--lr_step", "cos"])
    assert args.weight_decay == 1e-5 and args.warmup_iters == 0 and not args.rand_group and not args.norm
    assert args.dataset == "digits" and args.seed == 1 and args.eval_every == 10 and args.bs == 512
    for argv, flag in (
        (["--dataset", "tiny_in"], "--data_path"),
        (["--no_add_bn"], "--no_add_bn"),
        (["--bs", "100"], "--w_size"),
        (["--cj0", "0.5"], "--cj0"),
    ):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert flag in capsys.readouterr().err


def _hand_group_zca(x: torch.Tensor, groups: int, perm: torch.Tensor | None) -> torch.Tensor:
    """Whitening2dZCA(axis 0, minus 1, eps 0) written out in float64 with an eigendecomposition."""
    x = x.double()
    x = x - x.mean(dim=1, keepdim=True)
    order = perm if perm is not None else torch.arange(x.shape[1])
    size = x.shape[1] // groups
    parts = []
    for g in range(groups):
        xg = x[:, order[g * size : (g + 1) * size]]
        lam, u = torch.linalg.eigh(xg @ xg.T / (size - 1))
        parts.append(u @ torch.diag(lam.rsqrt()) @ u.T @ xg)
    out = torch.empty_like(x)
    out[:, order] = torch.cat(parts, dim=1)
    return out


@pytest.mark.parametrize("rand_group, norm", [(True, True), (False, False)])
def test_one_step_loss_matches_a_hand_assembled_computation(rand_group, norm, tmp_path):
    views_n, bs, w_size, emb, groups, w_iter = 3, 8, 4, 32, 2, 2
    # Group ZCA has eps 0 (as the original), so a sub-batch with two equal rows is singular and gives NaN. A
    # width-4 trunk on 8 px noise often maps two samples to the same all-zero feature; width 16 on 16 px does not.
    flags = f"--width 16 --bs {bs} --w_size {w_size} --emb {emb} --group {groups} --head_size 64 --w_iter {w_iter}"
    flags += f" --num_samples {views_n}" + ("" if rand_group else " --no_rg") + ("" if norm else " --no_norm")
    argv = [
        *flags.split(),
        "--seed",
        "3",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--ckpt_dir",
        str(tmp_path),
    ]
    args = parse_args(argv)
    run = TrainingRun.start(CWRGPTrainer(args), args)  # the trainer's model, optimiser and step
    model = run.method.model
    before = copy.deepcopy(model)
    torch.manual_seed(0)
    views = [torch.randn(bs, 3, 16, 16) for _ in range(views_n)]

    torch.manual_seed(7)
    loss = run.step((views, torch.zeros(bs)))["loss"]
    run.close()

    torch.manual_seed(7)
    with torch.no_grad():  # encoder one view at a time, head on the concatenation
        h = before.head(torch.cat([before.model(x) for x in views])).double()
    want = 0.0
    for _ in range(w_iter):
        z = torch.empty_like(h)
        for idx in torch.randperm(bs).view(-1, w_size):
            for v in range(views_n):
                perm = torch.randperm(emb) if rand_group else None
                z[idx + v * bs] = _hand_group_zca(h[idx + v * bs], groups, perm)
        zs = [z[v * bs : (v + 1) * bs] for v in range(views_n)]
        pairs = [(i, j) for i in range(views_n) for j in range(i + 1, views_n)]
        for i, j in pairs:
            if norm:
                want += (2 - 2 * F.cosine_similarity(zs[i], zs[j], dim=1).mean()).item()
            else:
                want += ((zs[i] - zs[j]) ** 2).mean().item()
    want /= w_iter * len(pairs)
    assert loss.item() == pytest.approx(want, rel=1e-4)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head.parameters())


def _original_rates(args, iters: int, scheduler: str) -> list[float]:
    """The rates base/train.py (W-MSE's warm-up counter for cos) sets, with torch's schedulers."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=args.lr)
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, [args.epochs - d for d in args.drop], args.drop_gamma
        )
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=args.T0 or args.epochs,
                                                                     T_mult=args.Tmult, eta_min=args.eta_min)  # fmt: skip
    rates = []
    for epoch in range(args.epochs):
        for n in range(iters):
            step = epoch * iters + n
            if step < args.warmup_iters:
                for group in opt.param_groups:
                    group["lr"] = args.lr * (step + 1) / args.warmup_iters
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            if scheduler == "cos" and step + 1 >= args.warmup_iters:
                sched.step(epoch + n / iters)
        if scheduler == "step":
            sched.step()
    return rates


@pytest.mark.parametrize(
    "flags",
    [
        "--epochs 10 --drop 4 2 --warmup_iters 5",
        "--epochs 10 --drop 9 3 --warmup_iters 5",  # the drop at epoch 1 falls inside the warm-up: lost
        "--epochs 6 --drop 6 1 --warmup_iters 0",  # a drop at epoch 0 applies without warm-up
        "--epochs 9 --lr_step cos --warmup_iters 4 --T0 2 --Tmult 2 --eta_min 1e-4",
        "--epochs 5 --lr_step cos --warmup_iters 0",
    ],
)
def test_learning_rate_follows_the_original_schedulers(flags):
    import warnings

    args = parse_args([*flags.split(), "--lr", "0.3", "--bs", "128"])
    iters = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of scheduler.step(epoch)
        want = _original_rates(args, iters, args.lr_step)
    got = [cwrgp_lr(s, iters, args) for s in range(args.epochs * iters)]
    assert got == pytest.approx(want, rel=1e-12)


def test_evaluation_period_switches_at_the_first_drop():
    args = parse_args(["--epochs", "100"])  # every 10 epochs, every 5 from epoch 50 on
    due = [e + 1 for e in range(100) if evaluation_due(e, args)]
    assert due == [10, 20, 30, 40, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100]
    assert not any(evaluation_due(e, parse_args(["--eval_every", "0"])) for e in range(200))


def test_checkpoint_holds_the_original_entries(finished):
    assert (finished / "checkpoint_CWRG.pth.tar").is_file()
    ckpt = load(finished / "checkpoint_CWRG_0000.pth.tar")  # the original's 0-based epoch in the name
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "resnet18" and ckpt["global_step"] == 6
    sd = ckpt["state_dict"]
    assert all(k.startswith(("model.module.", "head.")) for k in sd)
    assert sd["model.module.conv1.weight"].shape == (8, 3, 3, 3)  # 3x3 stem
    assert sd["head.0.weight"].shape == (64, 64) and sd["head.0.bias"].shape == (64,)
    assert "head.1.running_var" in sd and sd["head.3.weight"].shape == (64, 64)
    assert (sd["model.module.layer1.0.bn2.weight"] != 0).any()  # trained from the zero init
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 1e-6 and "betas" in group  # Adam
    assert ckpt["export"]["prefix"] == "model.module." and ckpt["input_normalization"] == "npz"
    assert (finished / "CWRG" / "config.json").is_file() and (finished / "CWRG" / "log.csv").is_file()


def test_resume_is_bitwise_across_an_evaluation(tmp_path, digits192):
    flags = ["--epochs", "2", "--eval_every", "1", "--eval_every_drop", "1"]
    whole = load(run(tmp_path / "whole", digits192, *flags))
    # stop exactly at the end of epoch 0: the whole run evaluated there, the resumed one does not
    run(tmp_path / "cut", digits192, *flags, "--max_iters", "6")
    resumed = load(run(tmp_path / "cut", digits192, *flags, "--resume", "auto"))
    assert whole["global_step"] == resumed["global_step"] == 12
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(whole["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    rows = (tmp_path / "whole" / "CWRG" / "eval.csv").read_text().splitlines()
    assert rows[0] == "global_step,epoch,acc_knn,acc,acc_5" and len(rows) == 3


def test_selfsup_eval_reads_a_finished_checkpoint(finished, digits192, tmp_path):
    from selfsup.shared.evaluation.cli import main as selfsup_eval

    ckpt = str(finished / "checkpoint_CWRG_0000.pth.tar")
    data = ["--dataset", "npz", "--dataset_root", str(digits192), "--device", "cpu"]
    knn = ["knn", "--preset", "nn5", "--checkpoint", ckpt, *data, "--output", str(tmp_path / "knn.json")]
    assert selfsup_eval(knn) == 0
    linear = ["linear", "--preset", "intl_cifar", "--checkpoint", ckpt, *data, "--epochs", "3",
              "--cache_dir", str(tmp_path / "cache"), "--output", str(tmp_path / "linear.json")]  # fmt: skip
    assert selfsup_eval(linear) == 0


@pytest.mark.distributed
def test_refuses_several_processes_before_writing(tmp_path, digits192, torchrun):
    proc = torchrun(TRAINER.module, *TRAINER.smoke_flags(digits192, tmp_path))
    assert proc.returncode != 0 and "cwrgp-train runs on one process" in proc.stderr
    assert not (tmp_path / "CWRG" / "config.json").exists() and not TRAINER.distributed
