"""Tests of the fused optimizers (ember.optim.SGD/Adam/AdamW/RMSprop/Adagrad, _C.*_step).

The spec is PyTorch's published update rule of each optimizer, re-implemented below in plain
numpy (``REFS``), run in float64 (or in the parameters' dtype for the overflow cases). Each
optimizer runs a 20-step trajectory with random gradients on both CPU paths and must match it
to float32 precision; PyTorch itself is an extra oracle when installed.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember import _C

# Sizes cover AVX2 tails (not multiples of 8) and one tensor big enough to be threaded.
SHAPES = [(3, 5), (37,), (2, 3, 4), (1,)]
BIG = (300_001,)


# ------------------------------------------------------------------ numpy references
def ref_sgd(
    p, g, st, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False
):
    g = -g if maximize else g
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        st["buf"] = g.copy() if t == 1 else momentum * st["buf"] + (1 - dampening) * g
        g = g + momentum * st["buf"] if nesterov else st["buf"]
    return p - lr * g


def ref_adam(
    p,
    g,
    st,
    t,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    maximize=False,
    decoupled=False,
):
    b1, b2 = betas
    g = -g if maximize else g
    if t == 1:
        st["m"], st["v"], st["vmax"] = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    if weight_decay:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    v = st["v"]
    if amsgrad:
        st["vmax"] = np.maximum(st["vmax"], st["v"])  # NaN propagates, as torch.maximum
        v = st["vmax"]
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    denom = np.sqrt(v) / math.sqrt(bc2) + eps
    return p - (lr / bc1) * (st["m"] / denom)


def ref_adamw(p, g, st, t, weight_decay=1e-2, **kw):
    return ref_adam(p, g, st, t, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(
    p,
    g,
    st,
    t,
    lr=1e-2,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    centered=False,
    maximize=False,
):
    g = -g if maximize else g
    if t == 1:
        st["sq"], st["ga"], st["buf"] = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    if weight_decay:
        g = g + weight_decay * p
    st["sq"] = alpha * st["sq"] + (1 - alpha) * g * g
    if centered:
        st["ga"] = st["ga"] + (1 - alpha) * (g - st["ga"])
        # One rounding, like PyTorch's fused CPU addcmul (finite where ga*ga alone overflows).
        var = st["sq"].astype(np.float64) - st["ga"].astype(np.float64) ** 2
        avg = np.sqrt(var.astype(p.dtype)) + eps
    else:
        avg = np.sqrt(st["sq"]) + eps
    if momentum > 0:
        st["buf"] = momentum * st["buf"] + g / avg
        return p - lr * st["buf"]
    return p - lr * g / avg


def ref_adagrad(
    p,
    g,
    st,
    t,
    lr=1e-2,
    lr_decay=0.0,
    weight_decay=0.0,
    initial_accumulator_value=0.0,
    eps=1e-10,
    maximize=False,
):
    g = -g if maximize else g
    if t == 1:
        st["sum"] = np.full_like(p, initial_accumulator_value)
    if weight_decay:
        g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    st["sum"] = st["sum"] + g * g
    return p - clr * g / (np.sqrt(st["sum"]) + eps)


REFS = {
    "SGD": ref_sgd,
    "Adam": ref_adam,
    "AdamW": ref_adamw,
    "RMSprop": ref_rmsprop,
    "Adagrad": ref_adagrad,
}

CASES = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 0.02, "eps": 1e-3, "maximize": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True, "maximize": True}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.05}),
    ("RMSprop", {"lr": 0.005, "alpha": 0.9, "centered": True, "maximize": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5}),
    ("Adagrad", {"lr": 0.1}),
    (
        "Adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.05,
            "weight_decay": 0.02,
            "initial_accumulator_value": 0.3,
            "eps": 1e-6,
        },
    ),
    ("Adagrad", {"lr": 0.1, "maximize": True}),
]


def case_id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items())


def run_ref(name, kw, init, grads_per_step, dtype=np.float64):
    ps = [a.astype(dtype) for a in init]
    sts = [{} for _ in ps]
    with np.errstate(all="ignore"):
        for t, grads in enumerate(grads_per_step, 1):
            ps = [REFS[name](p, g.astype(dtype), s, t, **kw) for p, g, s in zip(ps, grads, sts)]
    return ps


def run_ember(name, kw, init, grads_per_step, dtype=np.float32):
    params = [nn.Parameter(ember.tensor(a.astype(dtype))) for a in init]
    arrays = [p._array for p in params]
    opt = getattr(ember.optim, name)(params, **kw)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = ember.tensor(g.astype(dtype))
        opt.step()
    assert all(p._array is a for p, a in zip(params, arrays))  # updated in place
    return params, opt


def assert_float32_precision(name, kw, init, grads, params):
    """|ours - ref64| within 2e-5 (relative to 1 + |ref|), or within 4x the error of the same
    rule run in plain float32 numpy where the math itself is ill-conditioned (e.g. centered
    RMSprop's sq - ga^2 cancels)."""
    ref64 = run_ref(name, kw, init, grads)
    ref32 = run_ref(name, kw, init, grads, np.float32)
    for p, r, r32 in zip(params, ref64, ref32):
        ours = p.detach().numpy().astype(np.float64)
        bound = 2e-5 * (1 + np.abs(r)) + 4 * np.abs(r32 - r)
        bad = ~(np.abs(ours - r) <= bound)
        assert not bad.any(), (name, kw, np.flatnonzero(bad)[:5], ours[bad][:5], r[bad][:5])


def random_problem(rng, shapes, steps=20):
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) * rng.uniform(0.1, 3) for s in shapes] for _ in range(steps)]
    return init, grads


# ------------------------------------------------------------------ trajectories
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_float32_matches_reference(rng, cpu_path, case):
    name, kw = case
    init, grads = random_problem(rng, SHAPES)
    params, _ = run_ember(name, kw, init, grads, np.float32)
    assert_float32_precision(name, kw, init, grads, params)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_float64_matches_reference(rng, case):
    name, kw = case
    init, grads = random_problem(rng, SHAPES, steps=8)
    params, _ = run_ember(name, kw, init, grads, np.float64)
    ref = run_ref(name, kw, init, grads)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_tensor_threaded(rng, cpu_path, name, threads):
    kw = dict(CASES[[c[0] for c in CASES].index(name) + 1][1])
    init, grads = random_problem(rng, [BIG, (5,), BIG], steps=3)
    old = ember.get_num_threads()
    ember.set_num_threads(threads)
    try:
        params, _ = run_ember(name, kw, init, grads, np.float32)
    finally:
        ember.set_num_threads(old)
    assert_float32_precision(name, kw, init, grads, params)


def test_sgd_first_step_buffer_is_written(rng, poison):
    """The first step's momentum buffer comes from np.empty_like: every element is written."""
    init, grads = random_problem(rng, SHAPES, steps=1)
    params, opt = run_ember("SGD", {"lr": 0.1, "momentum": 0.9}, init, grads)
    for p, g in zip(params, grads[0]):
        np.testing.assert_array_equal(opt.state[p]["momentum_buffer"].numpy(), g.astype(np.float32))


# ------------------------------------------------------------------ zero / huge / NaN
EDGE = [
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("Adam", {"lr": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 0.1}),
    ("RMSprop", {"lr": 0.1, "centered": True, "momentum": 0.5}),
    ("Adagrad", {"lr": 0.1}),
]


@pytest.mark.parametrize("case", EDGE, ids=case_id)
@pytest.mark.parametrize("kind", ["zero", "huge", "nan"])
def test_special_gradients(rng, cpu_path, case, kind):
    """Computed in the parameters' own dtype, as PyTorch does: a 1e30 gradient squares to inf
    in float32, NaN propagates into the parameters; nothing is special-cased."""
    name, kw = case
    shapes = [(19,), (3, 4)]
    init, grads = random_problem(rng, shapes, steps=3)
    for step in grads[:2]:
        for g in step:
            g[::3] = {"zero": 0.0, "huge": 1e30, "nan": np.nan}[kind]
    params, _ = run_ember(name, kw, init, grads, np.float32)
    ref = run_ref(name, kw, init, grads, np.float32)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-5, atol=1e-5, equal_nan=True)
    if kind == "nan" and name != "Adagrad":
        assert np.isnan(params[0].detach().numpy()[0])
    if kind == "zero" and name in ("Adam", "Adagrad"):  # all-zero history: no movement
        params, _ = run_ember(name, kw, init, grads[:2], np.float32)
        np.testing.assert_array_equal(params[0].detach().numpy()[0], init[0][0].astype(np.float32))


# ------------------------------------------------------------------ torch cross-check
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_against_torch_if_available(rng, case):
    torch = pytest.importorskip("torch")
    name, kw = case
    init, grads = random_problem(rng, SHAPES)
    params, _ = run_ember(name, kw, init, grads, np.float32)
    tps = [torch.nn.Parameter(torch.tensor(a.astype(np.float32))) for a in init]
    topt = getattr(torch.optim, name)(tps, **kw)
    for step in grads:
        for tp, g in zip(tps, step):
            tp.grad = torch.tensor(g.astype(np.float32))
        topt.step()
    for p, tp in zip(params, tps):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", EDGE, ids=case_id)
def test_special_gradients_against_torch_if_available(rng, case):
    torch = pytest.importorskip("torch")
    name, kw = case
    init, grads = random_problem(rng, [(24,)], steps=3)
    grads[0][0][::4], grads[0][0][1::4], grads[1][0][2::4] = 0.0, 1e30, np.nan
    params, _ = run_ember(name, kw, init, grads, np.float32)
    tp = torch.nn.Parameter(torch.tensor(init[0].astype(np.float32)))
    topt = getattr(torch.optim, name)([tp], **kw)
    for step in grads:
        tp.grad = torch.tensor(step[0].astype(np.float32))
        topt.step()
    np.testing.assert_allclose(
        params[0].detach().numpy(), tp.detach().numpy(), rtol=1e-5, atol=1e-5, equal_nan=True
    )


# ------------------------------------------------------------------ API
def test_param_groups_state_and_version(rng):
    a, b = nn.Parameter(ember.randn(4, 3)), nn.Parameter(ember.randn(5))
    opt = ember.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5, "amsgrad": True}], lr=0.1)
    assert opt.param_groups[1]["betas"] == (0.9, 0.999) and opt.param_groups[1]["lr"] == 0.5
    va, vb = a._version[0], b._version[0]
    a.grad = ember.randn(4, 3)
    opt.step()  # b has no grad: untouched, no state
    assert a._version[0] == va + 1 and b._version[0] == vb and b not in opt.state
    assert opt.state[a]["step"] == 1 and set(opt.state[a]) == {"step", "exp_avg", "exp_avg_sq"}
    b.grad = ember.randn(5)
    opt.step()
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1
    assert "max_exp_avg_sq" in opt.state[b]
    opt.zero_grad()
    assert a.grad is None and b.grad is None


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adagrad", "SGD"])
def test_state_dict_round_trip(rng, name):
    kw = {"lr": 0.05, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {})}
    init, grads = random_problem(rng, SHAPES[:3], steps=6)
    p1 = [nn.Parameter(ember.tensor(a.astype(np.float32))) for a in init]
    p2 = [nn.Parameter(ember.tensor(a.astype(np.float32))) for a in init]
    o1 = getattr(ember.optim, name)(p1, **kw)
    o2 = getattr(ember.optim, name)(p2, lr=1.0)
    for i, step in enumerate(grads):
        if i == 3:
            o2.load_state_dict(pickle.loads(pickle.dumps(o1.state_dict())))
            for a, b in zip(p1, p2):
                b.data = ember.tensor(a.detach().numpy().copy())
        for ps in (p1, p2):
            for p, g in zip(ps, step):
                p.grad = ember.tensor(g.astype(np.float32))
        o1.step()
        if i >= 3:
            o2.step()
    assert o2.param_groups[0]["lr"] == 0.05
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_argument_validation():
    p = [nn.Parameter(ember.randn(2))]
    opt = ember.optim
    cases = [
        (lambda: opt.Adam(p, lr=-1), r"^\[Adam\] invalid learning rate: -1$"),
        (lambda: opt.Adam(p, eps=-1e-8), r"^\[Adam\] invalid epsilon value: -1e-08$"),
        (lambda: opt.Adam(p, betas=(1.0, 0.9)), r"^\[Adam\] invalid beta parameter at index 0"),
        (lambda: opt.Adam(p, betas=(0.9, -0.1)), r"^\[Adam\] invalid beta parameter at index 1"),
        (lambda: opt.AdamW(p, weight_decay=-1), r"^\[AdamW\] invalid weight_decay value: -1$"),
        (lambda: opt.AdamW(p, lr=-0.5), r"^\[AdamW\] invalid learning rate: -0.5$"),
        (lambda: opt.RMSprop(p, alpha=-1), r"^\[RMSprop\] invalid alpha value: -1$"),
        (lambda: opt.RMSprop(p, momentum=-1), r"^\[RMSprop\] invalid momentum value: -1$"),
        (lambda: opt.Adagrad(p, lr_decay=-1), r"^\[Adagrad\] invalid lr_decay value: -1$"),
        (
            lambda: opt.Adagrad(p, initial_accumulator_value=-1),
            r"^\[Adagrad\] invalid initial_accumulator_value value: -1$",
        ),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


def test_in_place_or_raise(rng):
    """A parameter the kernel cannot update in place raises instead of being copied."""
    base = ember.tensor(rng.standard_normal((4, 6)).astype(np.float32))
    p = nn.Parameter(base)
    p._array = p._array[:, ::2]  # a non-contiguous view
    p.grad = ember.randn(4, 3)
    with pytest.raises(ValueError, match=r"^\[adam\] params\[0\] must be C-contiguous"):
        ember.optim.Adam([p]).step()
    q = nn.Parameter(ember.randn(3))
    q._array.flags.writeable = False
    q.grad = ember.randn(3)
    with pytest.raises(ValueError, match=r"read-only"):
        ember.optim.SGD([q], lr=0.1).step()
    r = nn.Parameter(ember.tensor(np.ones(3, np.float16)))
    r.grad = ember.tensor(np.ones(3, np.float16))
    with pytest.raises(TypeError, match=r"float16"):
        ember.optim.RMSprop([r]).step()


def test_binding_errors():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"^\[adam\] exp_avgs has 0 arrays but params has 1"):
        _C.adam_step(
            [x], [x.copy()], [], [x.copy()], None, 0.1, 0.9, 0.9, 1e-8, 0, 1, 1, False, False, False
        )
    with pytest.raises(TypeError, match=r"^\[sgd\] grads\[0\] has dtype float64"):
        _C.sgd_step([x], [np.ones(4)], None, 0.1, 0, 0, 0, False, False, False)
    with pytest.raises(ValueError, match=r"overlaps"):
        _C.adagrad_step([x], [x.copy()], [x], 0.1, 1e-10, 0, False)
    with pytest.raises(ValueError, match=r"has 3 elements"):
        _C.adagrad_step([x], [x.copy()], [np.ones(3, np.float32)], 0.1, 1e-10, 0, False)


@pytest.mark.parametrize("name", list(REFS))
def test_empty_scalar_and_mixed_dtype_params(rng, name):
    """Zero-size and 0-d parameters, and float32 + float64 parameters in one group (one kernel
    call per dtype), all match the reference."""
    init = [np.zeros((0, 3)), np.array(rng.standard_normal()), rng.standard_normal(11)]
    dtypes = [np.float32, np.float32, np.float64]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(4)]
    ps = [nn.Parameter(ember.tensor(a.astype(d))) for a, d in zip(init, dtypes)]
    kw = {"lr": 0.1, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {})}
    opt = getattr(ember.optim, name)(ps, **kw)
    for step in grads:
        for p, g, d in zip(ps, step, dtypes):
            p.grad = ember.tensor(g.astype(d))
        opt.step()
    ref = run_ref(name, kw, init, grads)
    for p, r, d in zip(ps, ref, dtypes):
        assert p.dtype is ember.tensor(np.zeros(1, d)).dtype and p.shape == r.shape
        tol = 1e-12 if d == np.float64 else 2e-5
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", ["Adam", "AdamW", "RMSprop"])
def test_step_with_closure_returns_loss_and_updates(cls):
    ember.manual_seed(2)
    w = ember.nn.Parameter(ember.randn(5))
    target = ember.randn(5)
    opt = getattr(ember.optim, cls)([w], lr=0.1)
    before = w.detach().numpy().copy()

    def closure():
        opt.zero_grad()
        loss = ((w - target) ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    expected = float(((before - target.numpy()) ** 2).sum())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert not np.allclose(w.detach().numpy(), before)
