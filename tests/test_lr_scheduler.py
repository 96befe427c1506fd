"""ember.optim.lr_scheduler: learning-rate sequences against closed-form formulas written here
(and against torch.optim.lr_scheduler, step by step, when PyTorch is installed)."""

from __future__ import annotations

import math
import pickle

import pytest

import ember
import ember.nn as nn
from ember.optim import lr_scheduler as S

N = 40


def make_opt(lr=0.1, kind="SGD", groups=1):
    ps = [nn.Parameter(ember.randn(2)) for _ in range(groups)]
    pg = [{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)]
    if kind == "SGD":
        return ember.optim.SGD(pg, lr=lr, momentum=0.9)
    return ember.optim.Adam(pg, lr=lr)


def run(sched, n=N, metrics=None):
    lrs = [sched.get_last_lr()[0]]
    for i in range(n):
        sched.optimizer.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
        lrs.append(sched.get_last_lr()[0])
        assert sched.optimizer.param_groups[0]["lr"] == lrs[-1]
    return lrs


def close(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == pytest.approx(y, rel=1e-10, abs=1e-14), (i, x, y)


# name, constructor kwargs, formula f(epoch, base_lr)
CASES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}, lambda e, b: b * 0.5 ** (e // 7)),
    (
        "MultiStepLR",
        {"milestones": [5, 12, 12, 30], "gamma": 0.3},
        lambda e, b: b * 0.3 ** sum(m <= e for m in [5, 12, 12, 30]),
    ),
    ("ExponentialLR", {"gamma": 0.93}, lambda e, b: b * 0.93**e),
    (
        "CosineAnnealingLR",
        {"T_max": 15, "eta_min": 0.01},
        lambda e, b: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * e / 15)) / 2,
    ),
    (
        "LinearLR",
        {"start_factor": 0.25, "end_factor": 0.9, "total_iters": 8},
        lambda e, b: b * (0.25 + 0.65 * min(e, 8) / 8),
    ),
    ("LambdaLR", {"lr_lambda": lambda e: 1 / (1 + e)}, lambda e, b: b / (1 + e)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_formula(case):
    name, kw, f = case
    opt = make_opt(0.1, groups=2)
    sched = getattr(S, name)(opt, **kw)
    lrs = run(sched)
    close(lrs, [f(e, 0.1) for e in range(N + 1)])
    close([sched.get_last_lr()[1]], [f(N, 0.2)])  # second group from its own base lr


def onecycle_ref(step, total, max_lr, pct=0.3, div=25.0, fdiv=1e4, three=False, strat="cos"):
    lo, init = max_lr / div / fdiv, max_lr / div

    def ann(a, b, p):
        return b + (a - b) / 2 * (math.cos(math.pi * p) + 1) if strat == "cos" else a + (b - a) * p

    if three:
        e1, e2, e3 = pct * total - 1, 2 * pct * total - 2, total - 1
        if step <= e1:
            return ann(init, max_lr, step / e1)
        if step <= e2:
            return ann(max_lr, init, (step - e1) / (e2 - e1))
        return ann(init, lo, (step - e2) / (e3 - e2))
    e1, e2 = pct * total - 1, total - 1
    if step <= e1:
        return ann(init, max_lr, step / e1)
    return ann(max_lr, lo, (step - e1) / (e2 - e1))


@pytest.mark.parametrize("kw", [{}, {"three_phase": True}, {"anneal_strategy": "linear"}])
def test_onecycle(kw):
    opt = make_opt(kind="Adam")
    sched = S.OneCycleLR(opt, max_lr=0.5, total_steps=N + 1, **kw)
    lrs = run(sched)
    three, strat = kw.get("three_phase", False), kw.get("anneal_strategy", "cos")
    close(lrs, [onecycle_ref(e, N + 1, 0.5, three=three, strat=strat) for e in range(N + 1)])
    assert 0.85 <= opt.param_groups[0]["betas"][0] <= 0.95
    sched.step()  # step 41 == total_steps is still allowed, as PyTorch
    with pytest.raises(ValueError, match="tried to step 42 times"):
        sched.step()


def test_sequential_warmup_then_cosine():
    opt = make_opt(0.1)
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=5)
    cos = S.CosineAnnealingLR(opt, T_max=20)
    sched = S.SequentialLR(opt, [warm, cos], milestones=[5])
    lrs = run(sched, 25)
    ref = [0.1 * (0.1 + 0.9 * e / 5) for e in range(5)]
    ref += [0.1 * (1 + math.cos(math.pi * e / 20)) / 2 for e in range(21)]
    close(lrs, ref)


def test_reduce_on_plateau():
    opt = make_opt(1.0)
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    metrics = [5, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 3]
    lrs = run(sched, len(metrics), metrics)
    # 3 non-improving steps (> patience 2) halve the lr; the next epoch is cooldown (not
    # counted); min_lr clamps the last reduction (0.125 -> 0.2).
    assert lrs == [1.0, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2]
    with pytest.raises(ValueError, match="factor should be < 1.0"):
        S.ReduceLROnPlateau(opt, factor=1.0)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "OneCycleLR", "Plateau", "Seq"])
def test_state_dict_resume(name):
    def build(opt):
        if name == "StepLR":
            return S.StepLR(opt, 3, 0.5)
        if name == "CosineAnnealingLR":
            return S.CosineAnnealingLR(opt, 7)
        if name == "OneCycleLR":
            return S.OneCycleLR(opt, 1.0, total_steps=30)
        if name == "Plateau":
            return S.ReduceLROnPlateau(opt, patience=1)
        return S.SequentialLR(opt, [S.LinearLR(opt), S.ExponentialLR(opt, 0.9)], [4])

    metrics = [3.0, 2, 2, 2, 2, 1, 1, 1, 1, 1] * 2
    o1, o2 = make_opt(), make_opt()
    s1 = build(o1)
    lrs1 = run(s1, 10, metrics if name == "Plateau" else None)
    s2 = build(o2)  # PyTorch's resume order: build both, then load the optimizer, then this
    o2.load_state_dict(o1.state_dict())
    s2.load_state_dict(pickle.loads(pickle.dumps(s1.state_dict())))
    assert s2.get_last_lr() == s1.get_last_lr() and "optimizer" not in s1.state_dict()
    m = metrics[10:] if name == "Plateau" else None
    assert lrs1[-1] == s2.get_last_lr()[0]
    assert run(s1, 10, m) == run(s2, 10, m)


def test_errors():
    opt = make_opt()
    with pytest.raises(ValueError, match="starting multiplicative factor"):
        S.LinearLR(opt, start_factor=0)
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(make_opt(), 3, last_epoch=5)
    with pytest.raises(ValueError, match="total_steps OR"):
        S.OneCycleLR(opt, 0.1)
    with pytest.raises(ValueError, match="one more than the number of milestone"):
        S.SequentialLR(opt, [S.StepLR(opt, 2)], [3])
    with pytest.raises(ValueError, match="momentum or beta1"):
        S.OneCycleLR(ember.optim.Adagrad([nn.Parameter(ember.randn(2))]), 0.1, 10)


TORCH_CASES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [5, 12, 12, 30], "gamma": 0.3}),
    ("ExponentialLR", {"gamma": 0.93}),
    ("CosineAnnealingLR", {"T_max": 15, "eta_min": 0.01}),
    ("LinearLR", {"start_factor": 0.25, "end_factor": 0.9, "total_iters": 8}),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": N + 1, "three_phase": True}),
    ("Seq", {}),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_against_torch_if_available(case):
    torch = pytest.importorskip("torch")
    name, kw = case

    def build(mod, opt):
        if name == "Seq":
            return mod.SequentialLR(
                opt, [mod.LinearLR(opt, 0.1, total_iters=5), mod.CosineAnnealingLR(opt, 12)], [5]
            )
        return getattr(mod, name)(opt, **kw)

    ours = build(S, make_opt(0.1))
    tp = torch.nn.Parameter(torch.zeros(2))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    theirs = build(torch.optim.lr_scheduler, topt)
    ref = [theirs.get_last_lr()[0]]
    for _ in range(N):
        topt.step()
        theirs.step()
        ref.append(theirs.get_last_lr()[0])
    close(run(ours), ref)


def test_plateau_against_torch_if_available():
    torch = pytest.importorskip("torch")
    metrics = [5, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 2.9999, 2.9999, 3, 3, 3]
    kw = {"factor": 0.5, "patience": 2, "cooldown": 1, "threshold": 1e-3, "min_lr": 0.01}
    ours = S.ReduceLROnPlateau(make_opt(1.0), **kw)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    ref = [1.0]
    for m in metrics:
        theirs.step(m)
        ref.append(topt.param_groups[0]["lr"])
    assert run(ours, len(metrics), metrics) == ref
