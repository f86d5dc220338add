"""Tests of selfsup.shared.optim.optimizers: LARS/LARC steps worked out by hand, parameter groups, the factory."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from selfsup.shared.optim.optimizers import (
    LARS,
    build_optimizer,
    fused_supported,
    is_bias_or_norm,
    split_param_groups,
)

# A 2x2 weight with ||w|| = sqrt(1 + 4 + 4 + 16) = 5 and a gradient with ||g|| = sqrt(0.09 + 0.16) = 0.5.
W0 = [[1.0, 2.0], [2.0, 4.0]]
G0 = [[0.3, 0.0], [0.0, 0.4]]


def _param(values: list, grad: list) -> nn.Parameter:
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


def _hand_step(w: list, g: list, buf: list | None, lr: float, wd: float, eta: float, mom: float, clip: bool):
    """One apex-LARC step written out element by element with Python floats."""
    flat_w = [v for row in w for v in row]
    flat_g = [v for row in g for v in row]
    w_norm = math.sqrt(sum(v * v for v in flat_w))
    g_norm = math.sqrt(sum(v * v for v in flat_g))
    ratio = eta * w_norm / (g_norm + wd * w_norm + 1e-8)
    if clip:
        ratio = min(ratio / lr, 1.0)
    d = [(gi + wd * wi) * ratio for gi, wi in zip(flat_g, flat_w)]
    new_buf = d if buf is None else [mom * b + di for b, di in zip(buf, d)]
    new_w = [wi - lr * b for wi, b in zip(flat_w, new_buf)]
    return [new_w[:2], new_w[2:]], new_buf


@pytest.mark.parametrize(("clip", "lr"), [(False, 0.5), (True, 0.5), (True, 1e-4)])
def test_lars_two_steps_match_hand_computation(clip: bool, lr: float) -> None:
    wd, eta, mom = 0.1, 0.01, 0.9
    p = _param(W0, G0)
    opt = LARS([p], lr=lr, momentum=mom, weight_decay=wd, eta=eta, clip=clip)
    opt.step()
    w1, buf = _hand_step(W0, G0, None, lr, wd, eta, mom, clip)
    torch.testing.assert_close(p.detach(), torch.tensor(w1, dtype=torch.float64))
    g1 = [[0.1, -0.2], [0.05, 0.3]]
    p.grad = torch.tensor(g1, dtype=torch.float64)
    opt.step()
    w2, _ = _hand_step(w1, g1, buf, lr, wd, eta, mom, clip)
    torch.testing.assert_close(p.detach(), torch.tensor(w2, dtype=torch.float64))


def test_lars_scale_mode_first_step_in_numbers() -> None:
    # ratio = 0.01 * 5 / (0.5 + 0.1 * 5) = 0.05; d = (g + 0.1 w) * 0.05; w1 = w - 0.5 d
    p = _param(W0, G0)
    LARS([p], lr=0.5, weight_decay=0.1, eta=0.01).step()
    expected = torch.tensor(
        [[1 - 0.5 * 0.05 * 0.4, 2 - 0.5 * 0.05 * 0.2], [2 - 0.5 * 0.05 * 0.2, 4 - 0.5 * 0.05 * 0.8]]
    )
    torch.testing.assert_close(p.detach(), expected.double())


def test_lars_clip_mode_caps_the_rate_at_lr() -> None:
    # A tiny lr is below the trust ratio: clip gives min(ratio / lr, 1) = 1, i.e. plain SGD with weight decay.
    p = _param(W0, G0)
    LARS([p], lr=1e-4, weight_decay=0.1, eta=0.01, clip=True).step()
    expected = torch.tensor(W0) - 1e-4 * (torch.tensor(G0) + 0.1 * torch.tensor(W0))
    torch.testing.assert_close(p.detach(), expected.double())


def test_excluded_parameters_get_plain_sgd_without_weight_decay() -> None:
    lr, mom = 0.5, 0.9
    flagged, by_fn, adapted = _param(W0, G0), _param([1.0, -2.0], [0.2, 0.1]), _param(W0, G0)
    opt = LARS(
        [{"params": [flagged], "lars_exclude": True}, {"params": [by_fn, adapted]}],
        lr=lr,
        momentum=mom,
        weight_decay=0.1,
        eta=0.01,
        exclude_from_adaptation=is_bias_or_norm,
    )
    opt.step()
    torch.testing.assert_close(flagged.detach(), (torch.tensor(W0) - lr * torch.tensor(G0)).double())
    torch.testing.assert_close(by_fn.detach(), torch.tensor([1.0 - 0.1, -2.0 - 0.05]).double())
    w1, _ = _hand_step(W0, G0, None, lr, 0.1, 0.01, mom, False)
    torch.testing.assert_close(adapted.detach(), torch.tensor(w1, dtype=torch.float64))
    by_fn.grad = torch.tensor([0.2, 0.1], dtype=torch.float64)
    opt.step()  # momentum buffer: 0.9 * g + g
    torch.testing.assert_close(by_fn.detach(), torch.tensor([0.9 - 0.19, -2.05 - 0.095]).double())


def test_zero_norm_parameter_is_not_adapted_or_decayed_and_missing_grads_are_skipped() -> None:
    zero = _param([[0.0, 0.0], [0.0, 0.0]], G0)
    untouched = nn.Parameter(torch.ones(3, dtype=torch.float64))
    LARS([zero, untouched], lr=0.5, weight_decay=0.1, momentum=0.0).step()
    torch.testing.assert_close(zero.detach(), (-0.5 * torch.tensor(G0)).double())
    assert torch.equal(untouched.detach(), torch.ones(3, dtype=torch.float64))


def test_lars_state_dict_round_trip() -> None:
    p, q = _param(W0, G0), _param(W0, G0)
    opt_p = LARS([p], lr=0.5, weight_decay=0.1)
    opt_p.step()
    opt_q = LARS([q], lr=0.5, weight_decay=0.1)
    q.data.copy_(p.data)
    opt_q.load_state_dict(copy.deepcopy(opt_p.state_dict()))  # as after torch.save / torch.load
    for opt, param in ((opt_p, p), (opt_q, q)):
        param.grad = torch.tensor(G0, dtype=torch.float64)
        opt.step()
    torch.testing.assert_close(p, q)


def test_lars_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="--lr"):
        LARS([nn.Parameter(torch.ones(2))], lr=-1.0)
    with pytest.raises(ValueError, match="eta"):
        LARS([nn.Parameter(torch.ones(2))], lr=0.1, eta=0.0)


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2, bias=False))


def test_split_param_groups() -> None:
    model = _tiny_model()
    groups = split_param_groups(model, weight_decay=1e-4)
    assert [len(g["params"]) for g in groups] == [2, 3]  # conv.w, linear.w | conv.b, bn.w, bn.b
    assert groups[0]["weight_decay"] == 1e-4 and not groups[0]["lars_exclude"]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"]
    assert all(p.ndim <= 1 for p in groups[1]["params"])
    model[1].weight.requires_grad_(False)
    assert len(split_param_groups(model, 1e-4)[1]["params"]) == 2
    single = split_param_groups(model, 1e-4, exclude_bias_and_norm=False)
    assert len(single) == 1 and len(single[0]["params"]) == 4
    only_weights = split_param_groups(nn.Linear(2, 2, bias=False), 0.5)
    assert len(only_weights) == 1 and only_weights[0]["weight_decay"] == 0.5


def test_build_optimizer_variants() -> None:
    model = _tiny_model()
    sgd = build_optimizer("sgd", split_param_groups(model, 1e-4), lr=0.1, weight_decay=5.0, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 0.0]  # group values win
    assert sgd.param_groups[0]["nesterov"] and "lars_exclude" not in sgd.param_groups[0]
    adamw = build_optimizer("AdamW", model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)
    larc = build_optimizer("larc", model.parameters(), lr=0.1, eta=0.02, clip=True)
    assert isinstance(larc, LARS) and larc.exclude_from_adaptation is None
    assert larc.param_groups[0]["eta"] == 0.02 and larc.param_groups[0]["clip"]
    lars = build_optimizer("lars", model.parameters(), lr=0.1)
    assert lars.exclude_from_adaptation is is_bias_or_norm
    with pytest.raises(ValueError, match="--optimizer"):
        build_optimizer("rmsprop", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="sgd takes no extra options"):
        build_optimizer("sgd", model.parameters(), lr=0.1, eta=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        build_optimizer("lars", model.parameters(), lr=0.1, nesterov=True)


def test_lars_and_larc_treat_a_bias_differently() -> None:
    def bias_after(name: str) -> torch.Tensor:
        bias = _param([1.0, -2.0], [0.2, 0.1])
        build_optimizer(name, [bias], lr=0.5, weight_decay=0.1, momentum=0.0).step()
        return bias.detach()

    torch.testing.assert_close(bias_after("lars"), torch.tensor([0.9, -2.05]).double())  # plain SGD
    assert not torch.allclose(bias_after("larc"), torch.tensor([0.9, -2.05]).double())  # adapted


# ----------------------------------------------------------------------------- fused SGD / AdamW, foreach LARS


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # no conv bias: BN cancels its gradient to rounding noise, which Adam would normalise into full steps
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)
    )


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 6) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        optimizer.step()


def _assert_same_parameters(a: nn.Module, b: nn.Module, **tol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name, **tol)


@pytest.mark.parametrize("nesterov", [False, True])
def test_fused_sgd_takes_the_same_steps_as_the_foreach_path(nesterov: bool) -> None:
    fused_net, plain_net = _net(), _net()
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    fused = build_optimizer("sgd", split_param_groups(fused_net, 1e-3), **kw)
    plain = build_optimizer("sgd", split_param_groups(plain_net, 1e-3), fused=False, **kw)
    if fused_supported(torch.optim.SGD, list(fused_net.parameters())):
        assert all(g["fused"] for g in fused.param_groups)  # the default on a device with fused kernels
    assert not any(g.get("fused") for g in plain.param_groups)
    _train(fused_net, fused)
    _train(plain_net, plain)
    _assert_same_parameters(fused_net, plain_net, rtol=1e-6, atol=1e-7)
    for p, q in zip(fused_net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(
            fused.state[p]["momentum_buffer"], plain.state[q]["momentum_buffer"], rtol=1e-6, atol=1e-7
        )


def test_fused_adamw_takes_the_same_steps_as_the_foreach_path() -> None:
    fused_net, plain_net = _net(), _net()
    fused = build_optimizer("adamw", fused_net.parameters(), lr=1e-2, weight_decay=0.05)
    plain = build_optimizer("adamw", plain_net.parameters(), lr=1e-2, weight_decay=0.05, fused=False)
    _train(fused_net, fused)
    _train(plain_net, plain)
    _assert_same_parameters(fused_net, plain_net, rtol=1e-5, atol=1e-6)


def test_fused_is_not_forced_where_torch_has_no_kernel(monkeypatch) -> None:
    from selfsup.shared.optim import optimizers

    monkeypatch.setattr(optimizers, "_fused_devices", lambda: frozenset({"cuda"}))  # as if CPU had none
    params = list(_net().parameters())
    assert not fused_supported(torch.optim.SGD, params)
    sgd = build_optimizer("sgd", params, lr=0.1)
    assert not sgd.param_groups[0]["fused"]
    with pytest.raises(ValueError, match="fused SGD is not available"):
        build_optimizer("sgd", params, lr=0.1, fused=True)
    with pytest.raises(ValueError, match="no fused kernel"):
        build_optimizer("lars", params, lr=0.1, fused=True)


class _ReferenceLARS(LARS):
    """The per-parameter loop LARS.step was before it became foreach passes: the reference for the maths."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not self._excluded(group, p):
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d)
                    ratio = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    if group["clip"]:
                        ratio = torch.clamp(ratio / lr, max=1.0) if lr > 0 else torch.ones_like(ratio)
                    adapt = (w_norm > 0) & (g_norm > 0)
                    d = torch.where(adapt, (d + wd * p) * ratio, d)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(momentum).add_(d)
                    d = buf
                p.add_(d, alpha=-lr)


def _lars_params(seed: int) -> list[nn.Parameter]:
    """Mixed shapes and dtypes (two foreach buckets), a zero tensor, a zero-gradient tensor, a missing grad."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        nn.Parameter(torch.randn(6, 3, 3, 3, generator=gen)),
        nn.Parameter(torch.randn(6, generator=gen)),
        nn.Parameter(torch.randn(4, 5, generator=gen, dtype=torch.float64)),
        nn.Parameter(torch.zeros(5, 2)),  # ||w|| = 0: not adapted, not decayed
        nn.Parameter(torch.randn(3, generator=gen)),  # ||g|| = 0 below
        nn.Parameter(torch.randn(2, 2, generator=gen)),  # no gradient: skipped
    ]
    return params


def _lars_grads(params: list[nn.Parameter], step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        if i == 5:
            p.grad = None
        elif i == 4:
            p.grad = torch.zeros_like(p)
        else:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


@pytest.mark.parametrize(
    ("clip", "lr", "momentum", "exclude"),
    [
        (False, 0.5, 0.9, None),
        (True, 0.5, 0.9, is_bias_or_norm),
        (True, 1e-4, 0.9, None),
        (True, 0.0, 0.9, is_bias_or_norm),
        (False, 0.3, 0.0, is_bias_or_norm),
    ],
)
def test_foreach_lars_step_matches_the_per_parameter_reference(clip, lr, momentum, exclude) -> None:
    fast_params, ref_params = _lars_params(0), _lars_params(0)

    def groups(params):
        return [
            {"params": params[:3], "weight_decay": 0.1},
            {"params": params[3:5], "weight_decay": 0.05},
            {"params": params[5:], "lars_exclude": True},
        ]

    kw = dict(lr=lr, momentum=momentum, eta=0.02, clip=clip, exclude_from_adaptation=exclude)
    fast, ref = LARS(groups(fast_params), **kw), _ReferenceLARS(groups(ref_params), **kw)
    for step in range(4):
        _lars_grads(fast_params, step)
        _lars_grads(ref_params, step)
        fast.step()
        ref.step()
        for i, (p, q) in enumerate(zip(fast_params, ref_params)):
            assert p.dtype == q.dtype
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"step {step} param {i}")
    for p, q in zip(fast_params, ref_params):
        assert ("momentum_buffer" in fast.state[p]) == ("momentum_buffer" in ref.state[q])
        if "momentum_buffer" in ref.state[q]:
            torch.testing.assert_close(fast.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"])
    assert fast_params[5].grad is None and torch.equal(fast_params[5], ref_params[5])


def test_lars_momentum_buffer_is_a_copy_not_the_gradient() -> None:
    p = _param([1.0, -2.0], [0.2, 0.1])
    opt = LARS([{"params": [p], "lars_exclude": True}], lr=0.5)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert buf.data_ptr() != p.grad.data_ptr()
    p.grad.zero_()
    torch.testing.assert_close(buf, torch.tensor([0.2, 0.1], dtype=torch.float64))
