"""Tests of ember.nn (Module, Parameter, layers, functional, init), ember.optim (SGD) and the
main job (python -m ember).

Oracles are float64 numpy references written here, independently of the code under test
(loops over samples rather than the vectorised formulas used by ember), plus float64 finite
differences (ember.autograd.gradcheck). PyTorch cross-checks run only when torch is
installed and are never the only oracle.
"""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn
from ember.autograd import gradcheck


def t64(a, requires_grad=False):
    return ember.tensor(np.asarray(a, np.float64), requires_grad=requires_grad)


def randn64(rng, *shape, requires_grad=False):
    return t64(rng.standard_normal(shape), requires_grad)


class Net(nn.Module):
    """A model with every kind of member: own Parameter, a Sequential child, a persistent
    integer buffer, a non-persistent buffer, an optional (None) parameter."""

    def __init__(self, dtype=None):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, 8, dtype=dtype), nn.ReLU(), nn.Linear(8, 3, bias=False, dtype=dtype)
        )
        self.scale = nn.Parameter(ember.randn(3, dtype=dtype))
        self.register_buffer("steps", ember.tensor([7]))
        self.register_buffer("cache", ember.randn(2), persistent=False)
        self.register_parameter("shift", None)

    def forward(self, x):
        return self.body(x) * self.scale


# ================================================================================ Parameter


def test_parameter_shares_array_and_is_leaf(rng):
    base = ember.tensor(rng.standard_normal((2, 3)).astype(np.float32))
    p = nn.Parameter(base)
    assert isinstance(p, ember.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    assert p._array is base._array  # no copy
    assert not base.requires_grad  # the source tensor is not changed
    assert not nn.Parameter(base, requires_grad=False).requires_grad
    assert nn.Parameter().shape == (0,)


def test_parameter_repr_and_errors(rng):
    p = nn.Parameter(ember.tensor([1.5, -2.25]))
    assert repr(p) == "Parameter containing:\ntensor([ 1.5000, -2.2500], requires_grad=True)"
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(ember.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"\[Parameter\]"):
        nn.Parameter(np.zeros(3))


def test_parameter_ops_give_plain_tensors_and_pickle(rng):
    p = nn.Parameter(ember.tensor(rng.standard_normal(3).astype(np.float32)))
    assert type(p * 2) is ember.Tensor and type(p.detach()) is ember.Tensor
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is nn.Parameter and q.requires_grad
    np.testing.assert_array_equal(q.detach().numpy(), p.detach().numpy())


# ================================================================================ Module


def test_registration_and_names():
    ember.manual_seed(0)
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "scale",
        "body.0.weight",
        "body.0.bias",
        "body.2.weight",
    ]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert next(n for n, _ in net.named_parameters(prefix="m")) == "m.scale"
    assert len(list(net.parameters())) == 4
    assert [n for n, _ in net.named_buffers()] == ["steps", "cache"]
    assert [n for n, _ in net.named_children()] == ["body"]
    assert [n for n, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "body.2"]
    assert net.shift is None and "shift" in net._parameters
    assert net.body[0].weight.shape == (8, 4)
    assert "scale" in dir(net) and "body" in dir(net)


def test_shared_parameters_are_listed_once():
    a = nn.Linear(3, 3)
    b = nn.Linear(3, 3)
    b.weight = a.weight  # tied weights
    seq = nn.Sequential(a, nn.ReLU(), b, a)  # a module used twice
    names = [n for n, _ in seq.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.bias"]
    assert len(list(seq.named_parameters(remove_duplicate=False))) == 6  # 2 + 2 + 2
    assert len(list(seq.modules())) == 4  # seq, a, relu, b


def test_setattr_rules():
    net = Net()
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        net.scale = ember.randn(3)
    net.scale = None  # allowed: removes the value, keeps the slot
    assert net.scale is None and "scale" not in dict(net.named_parameters())
    with pytest.raises(TypeError, match="as child module 'body'"):
        net.body = 3
    with pytest.raises(TypeError, match="as buffer 'steps'"):
        net.steps = [1, 2]
    net.steps = ember.tensor([9])
    assert net.state_dict()["steps"].tolist() == [9]
    net.extra = 5  # plain attributes still work
    assert net.extra == 5 and "extra" not in net.state_dict()
    # a Parameter assigned over a plain attribute moves into _parameters
    net.extra = nn.Parameter(ember.randn(2))
    assert "extra" in dict(net.named_parameters())
    del net.extra
    assert "extra" not in dict(net.named_parameters())
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        getattr(net, "missing")  # noqa: B009


def test_register_errors():
    m = nn.Module()
    with pytest.raises(KeyError, match=r'contain "\."'):
        m.register_parameter("a.b", nn.Parameter(ember.randn(1)))
    with pytest.raises(KeyError, match="empty"):
        m.register_buffer("", ember.randn(1))
    with pytest.raises(TypeError, match=r"\[register_parameter\].*Parameter or None"):
        m.register_parameter("w", ember.randn(2))
    with pytest.raises(TypeError, match=r"\[register_buffer\]"):
        m.register_buffer("b", np.zeros(2))
    m.register_buffer("b", ember.randn(1))
    with pytest.raises(KeyError, match="attribute 'b' already exists"):
        m.register_parameter("b", nn.Parameter(ember.randn(1)))
    with pytest.raises(KeyError, match="already exists"):
        m.add_module("forward", nn.ReLU())  # would shadow a method
    x = ember.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("w", _nonleaf_param(x))

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(ember.randn(1))  # before super().__init__()

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\)"):
        Early()
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


def _nonleaf_param(x):
    p = nn.Parameter(x.detach())
    p.grad_fn = (x * 2).grad_fn  # simulate a Parameter produced inside a graph
    return p


def test_train_eval_requires_grad_and_apply():
    net = Net()
    assert net.training and net.body[1].training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(TypeError, match="boolean"):
        net.train("yes")
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "ReLU", "Linear", "Sequential", "Net"]  # children first


def test_zero_grad(rng):
    net = Net(dtype=ember.float64)
    net(randn64(rng, 5, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    g = net.scale.grad
    net.zero_grad(set_to_none=False)
    assert net.scale.grad is g and not g._array.any()
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


# ----------------------------------------------------------------------------- state_dict


def test_state_dict_contents():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["scale", "steps", "body.0.weight", "body.0.bias", "body.2.weight"]
    for k, v in sd.items():
        assert type(v) is ember.Tensor and not v.requires_grad, k
    assert sd["scale"]._array is net.scale._array  # detached, not copied (as PyTorch)
    kv = net.state_dict(keep_vars=True)
    assert kv["scale"] is net.scale


def test_state_dict_round_trip(rng):
    ember.manual_seed(1)
    src = Net(dtype=ember.float64)
    src.steps.fill_(42)
    ember.manual_seed(2)
    dst = Net(dtype=ember.float64)
    x = randn64(rng, 6, 4)
    assert not np.allclose(src(x).detach().numpy(), dst(x).detach().numpy())
    params_before = list(dst.parameters())
    res = dst.load_state_dict(src.state_dict())  # grad mode is on: load uses no_grad
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert list(dst.parameters()) == params_before  # same objects, values copied in
    np.testing.assert_array_equal(dst(x).detach().numpy(), src(x).detach().numpy())
    assert dst.steps.tolist() == [42]
    with ember.no_grad():
        src.scale.mul_(3.0)  # the copy is independent of the source afterwards
    assert not np.allclose(dst.scale.detach().numpy(), src.scale.detach().numpy())


def test_load_state_dict_numpy_values_and_dtype_cast(rng):
    lin = nn.Linear(3, 2)
    w = rng.standard_normal((2, 3))  # float64 into a float32 layer
    b = rng.standard_normal(2)
    lin.load_state_dict({"weight": w, "bias": ember.tensor(b)})
    assert lin.weight.dtype is ember.float32
    np.testing.assert_allclose(lin.weight.detach().numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(lin.bias.detach().numpy(), b, rtol=1e-6)


def test_load_state_dict_strict_errors():
    net = Net()
    sd = net.state_dict()
    del sd["body.0.bias"]
    sd["bogus.weight"] = ember.randn(2)
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert msg.startswith("[load_state_dict] Error(s) in loading state_dict for Net")
    assert 'Missing key(s) in state_dict: "body.0.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "bogus.weight"' in msg
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["body.0.bias"] and res.unexpected_keys == ["bogus.weight"]
    assert "missing_keys" in repr(res)


def test_load_state_dict_size_mismatch_leaves_module_unchanged(rng):
    lin = nn.Linear(4, 3)
    before = {k: v.numpy().copy() for k, v in lin.state_dict().items()}
    good_w = ember.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    good_b = ember.tensor(rng.standard_normal(3).astype(np.float32))
    with pytest.raises(
        ValueError,
        match=r"^\[load_state_dict\] size mismatch for weight: "
        r"copying a param with shape \(4, 3\) from checkpoint, the shape in "
        r"current model is \(3, 4\)",
    ):
        lin.load_state_dict({"weight": ember.randn(4, 3), "bias": good_b})
    with pytest.raises(
        ValueError,
        match=r"size mismatch for bias: copying a param with "
        r"shape \(4,\) from checkpoint",
    ):
        lin.load_state_dict({"weight": good_w, "bias": ember.randn(4)})
    for k, v in lin.state_dict().items():  # nothing was written, not even the good values
        np.testing.assert_array_equal(v.numpy(), before[k])
    seq = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="size mismatch for 0.bias"):
        seq.load_state_dict({"0.weight": ember.randn(2, 2), "0.bias": ember.randn(3)})


def test_deepcopy_keeps_ties_and_is_independent():
    a = nn.Linear(3, 3)
    seq = nn.Sequential(a, nn.ReLU(), a)
    c = copy.deepcopy(seq)
    assert c[0] is c[2] and c[0] is not a
    assert type(c[0].weight) is nn.Parameter and c[0].weight.requires_grad
    with ember.no_grad():
        c[0].weight.fill_(0.5)
    assert not np.allclose(a.weight.detach().numpy(), 0.5)
    net = Net()
    back = pickle.loads(pickle.dumps(net))
    assert list(back.state_dict()) == list(net.state_dict())
    x = ember.randn(2, 4)
    np.testing.assert_array_equal(back(x).detach().numpy(), net(x).detach().numpy())


# ----------------------------------------------------------------------------- to / dtype


def test_to_double_in_place_keeps_objects(rng):
    net = Net()
    opt = ember.optim.SGD(net.parameters(), lr=0.1)
    net(ember.randn(2, 4)).sum().backward()
    params = list(net.parameters())
    vals = [p.detach().numpy().astype(np.float64) for p in params]
    assert net.double() is net
    assert list(net.parameters()) == params
    for p, v in zip(params, vals):
        assert p.dtype is ember.float64 and p.grad.dtype is ember.float64
        np.testing.assert_array_equal(p.detach().numpy(), v)  # exact widening
    assert net.steps.dtype is ember.int64  # integer buffers keep their dtype
    assert net.cache.dtype is ember.float64
    out = net(randn64(rng, 2, 4))
    assert out.dtype is ember.float64
    opt.step()  # the optimizer still holds the same (converted) parameters
    assert params[0].dtype is ember.float64
    net.float()
    assert all(p.dtype is ember.float32 for p in net.parameters())
    net.to(dtype=ember.float64)
    assert net.scale.dtype is ember.float64
    net.to(ember.randn(1))  # to(tensor): its dtype and device
    assert net.scale.dtype is ember.float32
    assert net.cpu() is net
    with pytest.raises(TypeError, match="floating point dtypes"):
        net.to(ember.int32)


@pytest.mark.skipif(ember.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_gpu_raises():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        nn.Linear(2, 2).cuda()


# ----------------------------------------------------------------------------- hooks


def test_forward_hooks(rng):
    lin = nn.Linear(3, 2, dtype=ember.float64)
    x = randn64(rng, 4, 3)
    calls = []

    def pre(mod, args):
        calls.append("pre")
        assert mod is lin
        return args[0] * 2.0  # a single value is wrapped into the args tuple

    def post(mod, args, out):
        calls.append("post")
        np.testing.assert_array_equal(args[0].numpy(), 2 * x.numpy())
        return out + 1.0

    def observe(mod, args, out):
        calls.append("observe")  # returns None: output unchanged

    h1 = lin.register_forward_pre_hook(pre)
    h2 = lin.register_forward_hook(post)
    h3 = lin.register_forward_hook(observe, prepend=True)
    ref = 2 * x.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy() + 1
    np.testing.assert_allclose(lin(x).detach().numpy(), ref, rtol=1e-12)
    assert calls == ["pre", "observe", "post"]
    for h in (h1, h2, h3):
        h.remove()
    h1.remove()  # removing twice is harmless
    calls.clear()
    np.testing.assert_allclose(
        lin(x).detach().numpy(), ref - 1 - x.numpy() @ lin.weight.detach().numpy().T, rtol=1e-12
    )
    assert calls == []


def test_forward_hooks_with_kwargs_and_context_manager():
    class Scale(nn.Module):
        def forward(self, x, *, factor=1.0):
            return x * factor

    m = Scale()
    x = ember.tensor([1.5, -2.0])

    def pre(mod, args, kwargs):
        return args, {"factor": kwargs.get("factor", 1.0) * 10}

    def post(mod, args, kwargs, out):
        assert kwargs == {"factor": 30.0}
        return out - 1

    with (
        m.register_forward_pre_hook(pre, with_kwargs=True),
        m.register_forward_hook(post, with_kwargs=True),
    ):
        assert m(x, factor=3.0).tolist() == [44.0, -61.0]
    assert m(x, factor=3.0).tolist() == [4.5, -6.0]
    assert not m._forward_hooks and not m._forward_pre_hooks_with_kwargs  # all cleaned up


# ----------------------------------------------------------------------------- repr


def test_repr_nested():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3, bias=False)

        def extra_repr(self):
            return "depth=2,\nwidth=3"

    net = nn.Sequential(
        OrderedDict(block=Block(), act=nn.ReLU(), flat=nn.Flatten(), out=nn.Linear(3, 1))
    )
    assert repr(net) == (
        "Sequential(\n"
        "  (block): Block(\n"
        "    depth=2,\n"
        "    width=3\n"
        "    (fc): Linear(in_features=2, out_features=3, bias=False)\n"
        "  )\n"
        "  (act): ReLU()\n"
        "  (flat): Flatten(start_dim=1, end_dim=-1)\n"
        "  (out): Linear(in_features=3, out_features=1, bias=True)\n"
        ")"
    )
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"
    assert repr(nn.Identity()) == "Identity()"


# ================================================================================ containers


def test_sequential_indexing():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    sub = seq[1:]
    assert type(sub) is nn.Sequential and list(sub) == layers[1:]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]  # names are kept
    with pytest.raises(IndexError, match=r"\[Sequential\] index 3 is out of range"):
        seq[3]
    with pytest.raises(TypeError, match="integers or slices"):
        seq["0"]
    tanh = nn.Tanh()
    assert seq.append(tanh) is seq and seq[3] is tanh and len(seq) == 4
    seq[1] = nn.Sigmoid()
    assert type(seq[1]) is nn.Sigmoid
    del seq[1]
    assert len(seq) == 3 and [type(m) for m in seq] == [nn.Linear, nn.Linear, nn.Tanh]
    with pytest.raises(TypeError, match="is not a Module subclass"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_sequential_forward_matches_manual(rng):
    seq = nn.Sequential(
        nn.Linear(4, 5, dtype=ember.float64),
        nn.Tanh(),
        nn.Linear(5, 2, dtype=ember.float64),
        nn.Sigmoid(),
    )
    x = randn64(rng, 3, 4)
    w0, b0 = seq[0].weight.detach().numpy(), seq[0].bias.detach().numpy()
    w2, b2 = seq[2].weight.detach().numpy(), seq[2].bias.detach().numpy()
    ref = 1 / (1 + np.exp(-(np.tanh(x.numpy() @ w0.T + b0) @ w2.T + b2)))
    np.testing.assert_allclose(seq(x).detach().numpy(), ref, rtol=1e-12)


def test_modulelist():
    ml = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    ml.append(nn.Linear(2, 1))
    ml.extend([nn.Tanh()])
    ml += [nn.Sigmoid()]
    ml.insert(1, nn.Identity())
    assert [type(m).__name__ for m in ml] == [
        "Linear",
        "Identity",
        "ReLU",
        "Linear",
        "Tanh",
        "Sigmoid",
    ]
    assert [n for n, _ in ml.named_children()] == [str(i) for i in range(6)]
    assert len(list(ml.parameters())) == 4
    del ml[1]
    assert [n for n, _ in ml.named_children()] == [str(i) for i in range(5)]
    assert type(ml[1]) is nn.ReLU and type(ml[-1]) is nn.Sigmoid
    assert type(ml[:2]) is nn.ModuleList and len(ml[:2]) == 2
    with pytest.raises(IndexError):
        ml[5]
    with pytest.raises(NotImplementedError):
        ml(ember.randn(2))


def test_flatten_identity_activations(rng):
    x = randn64(rng, 2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 2)(x).shape == (24, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)
    np.testing.assert_array_equal(nn.Flatten()(x).numpy(), x.numpy().reshape(2, 60))
    assert nn.Identity(3, foo=1)(x) is x
    a = x.numpy()
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(a, 0))
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-a)), rtol=1e-14)
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh(a), rtol=1e-14)
    np.testing.assert_array_equal(F.relu(x).numpy(), np.maximum(a, 0))


# ================================================================================ Linear


def test_linear_forward_matches_float64_reference(rng):
    lin = nn.Linear(5, 3, dtype=ember.float64)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    for shape in [(7, 5), (5,), (2, 4, 5), (2, 1, 3, 5)]:
        x = randn64(rng, *shape)
        out = lin(x)
        assert out.shape == shape[:-1] + (3,)
        ref = np.einsum("...i,oi->...o", x.numpy(), w) + b
        np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-14)
    nob = nn.Linear(5, 3, bias=False, dtype=ember.float64)
    assert nob.bias is None and len(list(nob.parameters())) == 1
    x = randn64(rng, 4, 5)
    np.testing.assert_allclose(
        nob(x).detach().numpy(), x.numpy() @ nob.weight.detach().numpy().T, rtol=1e-12
    )


def test_linear_float32_forward_backward_vs_reference(rng):
    lin = nn.Linear(33, 17)  # sizes that are not multiples of a SIMD width
    x32 = rng.standard_normal((19, 33)).astype(np.float32)
    g32 = rng.standard_normal((19, 17)).astype(np.float32)
    x = ember.tensor(x32, requires_grad=True)
    out = lin(x)
    out.backward(ember.tensor(g32))
    w, b = lin.weight.detach().numpy().astype(np.float64), lin.bias.detach().numpy()
    xd, gd = x32.astype(np.float64), g32.astype(np.float64)
    np.testing.assert_allclose(out.detach().numpy(), xd @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), gd @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lin.weight.grad.numpy(), gd.T @ xd, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lin.bias.grad.numpy(), gd.sum(0), rtol=1e-5, atol=1e-5)


def test_linear_reads_the_weight_in_place(monkeypatch):
    """F.linear hands the GEMM a transposed view of the weight, not a copy (forward and the
    input-gradient GEMM)."""
    lin = nn.Linear(5, 3)
    seen = []
    real = ember._C.gemm

    def spy(a, b, c, *args, **kwargs):
        seen.append(b)
        return real(a, b, c, *args, **kwargs)

    monkeypatch.setattr(ember._C, "gemm", spy)
    x = ember.randn(4, 5, requires_grad=True)
    lin(x).sum().backward()
    shared = [np.shares_memory(b, lin.weight._array) for b in seen]
    assert len(seen) == 3 and shared.count(True) == 2, shared


def test_linear_gradcheck(rng):
    lin = nn.Linear(4, 3, dtype=ember.float64)
    x = randn64(rng, 2, 4, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.linear(x, w, b), (x, lin.weight, lin.bias))
    x3 = randn64(rng, 2, 2, 4, requires_grad=True)
    assert gradcheck(lambda x, w: F.linear(x, w), (x3, lin.weight))
    assert gradcheck(lambda x: lin(x), (x3,))


def test_linear_errors(rng):
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"^\[linear\] input has 5 features"):
        lin(ember.randn(2, 5))
    with pytest.raises(
        TypeError,
        match=r"^\[linear\] input is ember.float64 but weight is "
        r"ember.float32",
    ):
        lin(randn64(rng, 2, 4))
    with pytest.raises(TypeError, match=r"^\[linear\] input must be a floating point"):
        lin(ember.tensor([[1, 2, 3, 4]]))
    with pytest.raises(ValueError, match=r"^\[linear\] bias must have shape \(3,\)"):
        F.linear(ember.randn(2, 4), lin.weight, ember.randn(4))
    with pytest.raises(ValueError, match=r"^\[Linear\] in_features"):
        nn.Linear(-1, 3)


def test_linear_init_bounds_and_seed():
    ember.manual_seed(5)
    lin = nn.Linear(200, 300)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    bound = 1 / math.sqrt(200)
    assert lin.weight.shape == (300, 200) and lin.bias.shape == (300,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # the whole interval is used, not a narrower one
    assert np.abs(w).max() > 0.99 * bound and np.abs(b).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound  # uniform: std = bound/sqrt(3)
    assert abs(w.mean()) < 0.01 * bound and (b < 0).any() and (b > 0).any()
    ember.manual_seed(5)
    again = nn.Linear(200, 300)
    np.testing.assert_array_equal(again.weight.detach().numpy(), w)
    np.testing.assert_array_equal(again.bias.detach().numpy(), b)
    ember.manual_seed(6)
    assert not np.array_equal(nn.Linear(200, 300).weight.detach().numpy(), w)
    assert nn.Linear(3, 2, dtype=ember.float64).weight.dtype is ember.float64
    empty = nn.Linear(0, 4)  # fan_in 0: nothing to draw, bias bound 0
    assert empty.weight.shape == (4, 0) and not empty.bias.numpy(force=True).any()


# ================================================================================ init


def test_init_functions():
    ember.manual_seed(0)
    w = nn.Parameter(ember.empty(400, 250))  # in-place init of a Parameter needs no no_grad
    nn.init.uniform_(w, -0.5, 1.5)
    a = w.detach().numpy()
    assert a.min() >= -0.5 and a.max() < 1.5 and abs(a.mean() - 0.5) < 0.01
    nn.init.normal_(w, 2.0, 0.5)
    a = w.detach().numpy()
    assert abs(a.mean() - 2.0) < 0.01 and abs(a.std() - 0.5) < 0.01
    nn.init.constant_(w, -0.75)
    assert (w.detach().numpy() == -0.75).all()
    nn.init.zeros_(w)
    assert not w.detach().numpy().any()
    nn.init.ones_(w)
    assert (w.detach().numpy() == 1).all()
    nn.init.xavier_uniform_(w, gain=2.0)
    bound = 2.0 * math.sqrt(6 / (400 + 250))
    a = w.detach().numpy()
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / 250)
    a = w.detach().numpy()
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
    nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
    assert np.abs(w.detach().numpy()).max() <= math.sqrt(6 / 400)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert abs(w.detach().numpy().std() - math.sqrt(2 / 250)) < 0.02 * math.sqrt(2 / 250)
    nn.init.xavier_normal_(w)
    assert abs(w.detach().numpy().std() - math.sqrt(2 / 650)) < 0.02 * math.sqrt(2 / 650)
    assert w.grad_fn is None and w.requires_grad


def test_init_reproducible_and_generator():
    ember.manual_seed(11)
    a = nn.init.normal_(ember.empty(5, 5)).numpy().copy()
    ember.manual_seed(11)
    np.testing.assert_array_equal(nn.init.normal_(ember.empty(5, 5)).numpy(), a)
    g1, g2 = ember.Generator().manual_seed(3), ember.Generator().manual_seed(3)
    x = nn.init.uniform_(ember.empty(4), generator=g1).numpy().copy()
    np.testing.assert_array_equal(nn.init.uniform_(ember.empty(4), generator=g2).numpy(), x)


def test_init_gain_and_errors():
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert nn.init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert nn.init.calculate_gain("sigmoid") == 1.0
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(ember.empty(5))
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_uniform_(ember.empty(3, 3), mode="fan_avg")
    with pytest.raises(TypeError, match=r"\[uniform_\] needs a floating point"):
        nn.init.uniform_(ember.zeros(3, dtype=ember.int64))


# ================================================================================ softmax


def _softmax_ref(x, axis):
    out = np.empty_like(x)
    xm = np.moveaxis(x, axis, -1)
    om = np.moveaxis(out, axis, -1)
    for idx in np.ndindex(*xm.shape[:-1]):
        row = xm[idx]
        e = np.exp(row - row.max())
        om[idx] = e / e.sum()
    return out


@pytest.mark.parametrize(
    "shape,dim",
    [((4, 7), 1), ((4, 7), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((6,), 0), ((2, 1, 3), 1)],
)
def test_softmax_log_softmax_vs_reference(rng, shape, dim):
    x = randn64(rng, *shape) * 3
    ref = _softmax_ref(x.numpy(), dim)
    np.testing.assert_allclose(F.softmax(x, dim).numpy(), ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(F.log_softmax(x, dim).numpy(), np.log(ref), rtol=1e-12, atol=1e-13)
    # float32 input: error comparable to a float32 computation
    x32 = ember.tensor(x.numpy().astype(np.float32))
    np.testing.assert_allclose(F.softmax(x32, dim).numpy(), ref, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(
        F.log_softmax(x32, dim=dim).numpy(), np.log(ref), rtol=1e-5, atol=2e-6
    )


@pytest.mark.parametrize("shape,dim", [((3, 4), 1), ((2, 3, 2), 1), ((3, 4), 0)])
def test_softmax_log_softmax_gradcheck(rng, shape, dim):
    x = randn64(rng, *shape, requires_grad=True)
    assert gradcheck(lambda x: F.softmax(x, dim), (x,))
    assert gradcheck(lambda x: F.log_softmax(x, dim), (x,))


def test_softmax_backward_vs_reference(rng):
    x = randn64(rng, 5, 6, requires_grad=True)
    g = rng.standard_normal((5, 6))
    F.softmax(x, 1).backward(t64(g))
    s = _softmax_ref(x.detach().numpy(), 1)
    np.testing.assert_allclose(
        x.grad.numpy(), s * (g - (g * s).sum(1, keepdims=True)), rtol=1e-12, atol=1e-14
    )
    x.grad = None
    F.log_softmax(x, 1).backward(t64(g))
    np.testing.assert_allclose(
        x.grad.numpy(), g - s * g.sum(1, keepdims=True), rtol=1e-12, atol=1e-14
    )


def test_softmax_robustness():
    for dt in (ember.float32, ember.float64):
        x = ember.tensor([1000.0, 1001.0, 1002.0], dtype=dt)
        ls = F.log_softmax(x, 0).numpy()
        assert np.isfinite(ls).all()
        np.testing.assert_allclose(ls, [-2.40760596, -1.40760596, -0.40760596], rtol=1e-6)
        s = F.softmax(x, 0).numpy()
        assert np.isfinite(s).all() and abs(s.sum() - 1) < 1e-6
        np.testing.assert_allclose(s, [0.09003057, 0.24472847, 0.66524096], rtol=1e-6)
        big = ember.tensor([[-1000.0, 0.0, 1000.0]], dtype=dt)
        np.testing.assert_allclose(F.softmax(big, 1).numpy(), [[0, 0, 1]], atol=1e-30)
    masked = ember.tensor([[-np.inf, 0.5, -1.0]])
    s = F.softmax(masked, 1).numpy()
    assert s[0, 0] == 0 and np.isfinite(s).all() and abs(s.sum() - 1) < 1e-6
    assert F.softmax(ember.tensor([1.0, 2.0]), 0, dtype=ember.float64).dtype is ember.float64


def test_softmax_errors():
    with pytest.raises(TypeError, match=r"^\[softmax\] input must be a floating point"):
        F.softmax(ember.tensor([1, 2]), 0)
    with pytest.raises(IndexError, match=r"^\[log_softmax\] dimension out of range"):
        F.log_softmax(ember.randn(2, 3), 2)
    with pytest.raises(TypeError, match=r"\[softmax\] dim must be given"):
        F.softmax(ember.randn(2, 3), None)


# ================================================================================ losses


def _ce_ref(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """PyTorch's cross_entropy with class-index targets, sample by sample, in float64.

    x [N, C, *], t [N, *]. Per sample: nll = -w[t] logp[t]; smooth = -sum_c w[c] logp[c];
    loss = (1 - s) nll + s / C * smooth; ignored samples give 0. 'mean' divides by the sum
    of w[t] over non-ignored samples."""
    x = np.moveaxis(np.asarray(x, np.float64), 1, -1)
    n_classes = x.shape[-1]
    x = x.reshape(-1, n_classes)
    tf = np.asarray(t).reshape(-1)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    losses, wsum = np.zeros(len(tf)), 0.0
    for i, (row, c) in enumerate(zip(x, tf)):
        if c == ignore_index:
            continue
        m = row.max()
        logp = row - m - math.log(sum(math.exp(v - m) for v in row))
        nll = -w[c] * logp[c]
        smooth = -sum(w[k] * logp[k] for k in range(n_classes))
        losses[i] = (1 - label_smoothing) * nll + label_smoothing / n_classes * smooth
        wsum += w[c]
    if reduction == "none":
        return losses.reshape(np.asarray(t).shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / wsum if wsum else np.nan


def _ce_inputs(rng, shape, ignore=True):
    x = rng.standard_normal(shape) * 2
    tshape = (shape[0],) + shape[2:]
    t = rng.integers(0, shape[1], tshape)
    if ignore:
        t.reshape(-1)[::3] = -100 if ignore is True else ignore
    return x, t


CE_CASES = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": True},
    {"weight": True, "reduction": "none"},
    {"label_smoothing": 0.2},
    {"label_smoothing": 0.3, "weight": True},
    {"label_smoothing": 0.1, "weight": True, "reduction": "sum"},
    {"label_smoothing": 0.25, "reduction": "none", "weight": True},
]


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("case", CE_CASES)
@pytest.mark.parametrize("ignore", [False, True, 2])
def test_cross_entropy_vs_reference(rng, shape, case, ignore):
    x, t = _ce_inputs(rng, shape, ignore)
    kw = dict(case)
    ignore_index = 2 if ignore == 2 else -100
    w = rng.uniform(0.2, 2.0, shape[1]) if kw.pop("weight", False) else None
    ref = _ce_ref(x, t, w, ignore_index, **kw)
    out = F.cross_entropy(
        t64(x), ember.tensor(t), None if w is None else t64(w), ignore_index=ignore_index, **kw
    )
    assert out.dtype is ember.float64 and out.shape == np.shape(ref)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-14)
    # float32 logits against the same float64 reference
    out32 = F.cross_entropy(
        ember.tensor(x.astype(np.float32)),
        ember.tensor(t),
        None if w is None else ember.tensor(w.astype(np.float32)),
        ignore_index=ignore_index,
        **kw,
    )
    assert out32.dtype is ember.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_gradcheck(rng, case):
    x, t = _ce_inputs(rng, (4, 3, 2), ignore=True)
    kw = dict(case)
    w = t64(rng.uniform(0.2, 2.0, 3)) if kw.pop("weight", False) else None
    xt = t64(x, requires_grad=True)
    assert gradcheck(lambda x: F.cross_entropy(x, ember.tensor(t), w, **kw), (xt,))


def test_cross_entropy_grad_vs_reference(rng):
    x, t = _ce_inputs(rng, (5, 4), ignore=True)
    w = rng.uniform(0.2, 2.0, 4)
    xt = t64(x, requires_grad=True)
    F.cross_entropy(xt, ember.tensor(t), t64(w), label_smoothing=0.1).backward()
    # d/dx of sum_i [(1-s) w[t] (-logp[t]) + s/C sum_c w[c] (-logp[c])] / sum_i w[t]:
    # each part -a . logp has gradient -(a - p * sum(a)).
    p = _softmax_ref(x, 1)
    grad = np.zeros_like(x)
    valid = t != -100
    for i in np.flatnonzero(valid):
        a = 0.1 / 4 * w
        a[t[i]] += 0.9 * w[t[i]]
        grad[i] = -(a - p[i] * a.sum())
    grad /= w[t[valid]].sum()
    np.testing.assert_allclose(xt.grad.numpy(), grad, rtol=1e-12, atol=1e-15)


def test_cross_entropy_extreme_logits():
    x = ember.tensor([[1e4, -1e4], [-1e4, 1e4]], requires_grad=True)
    loss = F.cross_entropy(x, ember.tensor([1, 0]))
    assert loss.item() == 20000.0
    loss.backward()
    g = x.grad.numpy()
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, [[0.5, -0.5], [-0.5, 0.5]])  # (softmax - onehot) / N
    # a -inf logit for a class that is not the target gives a finite loss and gradient
    y = ember.tensor([[-np.inf, 1.0, 2.0]], requires_grad=True)
    loss = F.cross_entropy(y, ember.tensor([2]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(y.grad.numpy()).all()


def test_cross_entropy_unbatched_and_all_ignored(rng):
    x = rng.standard_normal(5)
    out = F.cross_entropy(t64(x), ember.tensor(3))
    np.testing.assert_allclose(out.item(), _ce_ref(x[None], [3]), rtol=1e-13)
    assert F.cross_entropy(t64(x), ember.tensor(3), reduction="none").shape == ()
    t = ember.tensor([-100, -100])
    assert math.isnan(F.cross_entropy(randn64(rng, 2, 3), t).item())  # 0 / 0, as PyTorch
    assert F.cross_entropy(randn64(rng, 2, 3), t, reduction="sum").item() == 0.0


def test_cross_entropy_probability_targets(rng):
    x = rng.standard_normal((4, 5, 2))
    p = rng.uniform(0.1, 1.0, (4, 5, 2))
    p /= p.sum(1, keepdims=True)
    w = rng.uniform(0.5, 1.5, 5)
    logp = np.log(_softmax_ref(x, 1))
    for s in (0.0, 0.2):
        q = p * (1 - s) + s / 5
        per = -(logp * q * w[None, :, None]).sum(1)
        for red, ref in [("none", per), ("sum", per.sum()), ("mean", per.sum() / 8)]:
            out = F.cross_entropy(t64(x), t64(p), t64(w), reduction=red, label_smoothing=s)
            np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12)
    xt, pt = t64(x, requires_grad=True), t64(p, requires_grad=True)
    assert gradcheck(lambda x, p: F.cross_entropy(x, p, t64(w), label_smoothing=0.1), (xt, pt))


def test_cross_entropy_errors(rng):
    x = ember.randn(4, 10)
    with pytest.raises(
        ValueError,
        match=r"^\[cross_entropy\] target 12 is out of range for "
        r"10 classes$",
    ):
        F.cross_entropy(x, ember.tensor([1, 2, 12, 3]))
    with pytest.raises(ValueError, match=r"target -3 is out of range for 10 classes"):
        F.cross_entropy(x, ember.tensor([1, -3, -100, 3]))
    with pytest.raises(ValueError, match=r"target 10 is out of range"):
        F.cross_entropy(x, ember.tensor([1, 10, 0, 3]), ignore_index=1)
    with pytest.raises(
        ValueError,
        match=r"^\[cross_entropy\] input of shape \(4, 10\) expects "
        r"target of shape \(4,\), got \(5,\)",
    ):
        F.cross_entropy(x, ember.tensor([1, 2, 3, 4, 5]))
    with pytest.raises(
        TypeError,
        match=r"^\[cross_entropy\] target must hold int64 class "
        r"indices, got ember.float32",
    ):
        F.cross_entropy(x, ember.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] input must be a floating point"):
        F.cross_entropy(ember.tensor([[1, 2]]), ember.tensor([0]))
    with pytest.raises(ValueError, match=r"reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        F.cross_entropy(x, ember.tensor([1, 2, 3, 4]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0"):
        F.cross_entropy(x, ember.tensor([1, 2, 3, 4]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must have shape \(10,\)"):
        F.cross_entropy(x, ember.tensor([1, 2, 3, 4]), weight=ember.ones(9))
    with pytest.raises(ValueError, match=r"^\[cross_entropy\] input must be \[N, C\]"):
        F.cross_entropy(ember.randn(3), ember.tensor([1, 2, 0]))
    with pytest.raises(TypeError, match=r"^\[cross_entropy\] target must be a Tensor"):
        F.cross_entropy(x, [1, 2, 3, 4])


def test_nll_loss_vs_reference(rng):
    x = rng.standard_normal((6, 4))
    logp = np.log(_softmax_ref(x, 1))
    t = rng.integers(0, 4, 6)
    t[1] = -100
    w = rng.uniform(0.5, 2.0, 4)
    per = np.array([0.0 if c == -100 else -w[c] * logp[i, c] for i, c in enumerate(t)])
    valid = t != -100
    for red, ref in [("none", per), ("sum", per.sum()), ("mean", per.sum() / w[t[valid]].sum())]:
        out = F.nll_loss(t64(logp), ember.tensor(t), t64(w), reduction=red)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-13)
    # legacy flags: reduce=False means 'none'
    assert F.nll_loss(t64(logp), ember.tensor(t), reduce=False).shape == (6,)
    lp = t64(logp, requires_grad=True)
    assert gradcheck(lambda a: F.nll_loss(a, ember.tensor(t), t64(w)), (lp,))
    # nll_loss of log_softmax is cross_entropy
    np.testing.assert_allclose(
        F.nll_loss(F.log_softmax(t64(x), 1), ember.tensor(t)).item(),
        F.cross_entropy(t64(x), ember.tensor(t)).item(),
        rtol=1e-14,
    )


def test_loss_modules(rng):
    x, t = _ce_inputs(rng, (5, 4), ignore=True)
    w = rng.uniform(0.5, 2.0, 4)
    crit = nn.CrossEntropyLoss(weight=t64(w), label_smoothing=0.1, reduction="sum")
    np.testing.assert_allclose(
        crit(t64(x), ember.tensor(t)).item(),
        _ce_ref(x, t, w, reduction="sum", label_smoothing=0.1),
        rtol=1e-12,
    )
    assert list(crit.state_dict()) == ["weight"]  # the class weights are a buffer
    assert repr(crit) == "CrossEntropyLoss(reduction='sum')"
    nll = nn.NLLLoss(ignore_index=0)
    logp = np.log(_softmax_ref(x, 1))
    tt = np.array([0, 1, 2, 3, 1])
    ref = np.mean([-logp[i, c] for i, c in enumerate(tt) if c != 0])
    np.testing.assert_allclose(nll(t64(logp), ember.tensor(tt)).item(), ref, rtol=1e-13)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    np.testing.assert_allclose(
        nn.MSELoss()(t64(a), t64(b)).item(), ((a - b) ** 2).mean(), rtol=1e-14
    )
    with pytest.raises(ValueError, match=r"^\[MSELoss\] reduction must be"):
        nn.MSELoss(reduction="mean ")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_vs_reference_and_gradcheck(rng, reduction):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    sq = (a - b) ** 2
    ref = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(
        F.mse_loss(t64(a), t64(b), reduction=reduction).numpy(), ref, rtol=1e-14
    )
    x, y = t64(a, requires_grad=True), t64(b, requires_grad=True)
    assert gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), (x, y))
    x.grad = y.grad = None
    g = rng.standard_normal((3, 4)) if reduction == "none" else None
    out = F.mse_loss(x, y, reduction=reduction)
    out.backward(None if g is None else t64(g))
    scale = {"mean": 1 / 12, "sum": 1.0, "none": g}[reduction]
    np.testing.assert_allclose(x.grad.numpy(), 2 * (a - b) * scale, rtol=1e-13)
    np.testing.assert_allclose(y.grad.numpy(), -2 * (a - b) * scale, rtol=1e-13)


def test_mse_loss_errors():
    with pytest.raises(
        ValueError,
        match=r"^\[mse_loss\] input shape \(4, 1\) and target "
        r"shape \(4,\) differ",
    ):
        F.mse_loss(ember.randn(4, 1), ember.randn(4))
    with pytest.raises(
        TypeError,
        match=r"^\[mse_loss\] input is ember.float32 but target is "
        r"ember.float64",
    ):
        F.mse_loss(ember.randn(4), ember.randn(4, dtype=ember.float64))
    with pytest.raises(TypeError, match=r"^\[mse_loss\] target must be a floating point"):
        F.mse_loss(ember.randn(2), ember.tensor([1, 2]))


# ================================================================================ SGD


def _sgd_ref(
    params,
    grads_per_step,
    lr,
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    maximize=False,
):
    """torch.optim.SGD's documented algorithm, written out per element in float64."""
    params = [p.astype(np.float64).copy() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.astype(np.float64)
            if maximize:
                g = -g
            if weight_decay != 0:
                g = g + weight_decay * p
            if momentum != 0:
                if bufs[i] is None:
                    bufs[i] = g.copy()
                else:
                    bufs[i] = momentum * bufs[i] + (1 - dampening) * g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = p - lr * g
    return params, bufs


SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.8, "nesterov": True},
    {"weight_decay": 0.05},
    {"momentum": 0.9, "weight_decay": 0.01, "maximize": True},
    {"momentum": 0.7, "dampening": 0.1, "weight_decay": 0.1},
    {"momentum": 0.5, "nesterov": True, "weight_decay": 0.02, "maximize": True},
]


@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_matches_reference(rng, case):
    shapes = [(3, 4), (4,), (2, 2, 3)]
    init = [rng.standard_normal(s) for s in shapes]
    params = [nn.Parameter(t64(a)) for a in init]
    steps = [[rng.standard_normal(s) for s in shapes] for _ in range(5)]
    opt = ember.optim.SGD(params, lr=0.07, **case)
    grad_tensors = []
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = t64(g)
            grad_tensors.append(p.grad)
        opt.step()
    ref, bufs = _sgd_ref(init, steps, 0.07, **case)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-13, atol=1e-14)
    for p, b in zip(params, bufs):
        if b is None:
            assert p not in opt.state  # no state without momentum, as PyTorch
        else:
            np.testing.assert_allclose(opt.state[p]["momentum_buffer"].numpy(), b, rtol=1e-13)
    for t, g in zip(grad_tensors, (g for grads in steps for g in grads)):
        np.testing.assert_array_equal(t.numpy(), g)  # no gradient was written to


def test_sgd_float32_and_param_groups(rng):
    a, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    pa = nn.Parameter(ember.tensor(a.astype(np.float32)))
    pb = nn.Parameter(ember.tensor(b.astype(np.float32)))
    pc = nn.Parameter(ember.tensor(rng.standard_normal(2).astype(np.float32)))
    c_before = pc.detach().numpy().copy()
    opt = ember.optim.SGD(
        [{"params": [pa]}, {"params": pb, "lr": 0.5, "momentum": 0.0}, {"params": [pc]}],
        lr=0.1,
        momentum=0.9,
    )
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[0]["lr"] == 0.1
    ga = [rng.standard_normal((5, 3)) for _ in range(3)]
    gb = [rng.standard_normal(3) for _ in range(3)]
    for x, y in zip(ga, gb):
        pa.grad = ember.tensor(x.astype(np.float32))
        pb.grad = ember.tensor(y.astype(np.float32))
        opt.step()  # pc has no grad: skipped
    assert pa.dtype is ember.float32 and opt.state[pa]["momentum_buffer"].dtype is ember.float32
    ref_a = _sgd_ref([a.astype(np.float32)], [[x.astype(np.float32)] for x in ga], 0.1, 0.9)[0]
    ref_b = _sgd_ref([b.astype(np.float32)], [[y.astype(np.float32)] for y in gb], 0.5)[0]
    np.testing.assert_allclose(pa.detach().numpy(), ref_a[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pb.detach().numpy(), ref_b[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pc.detach().numpy(), c_before)
    opt.param_groups[0]["lr"] = 0.0  # a scheduler changing lr is honoured
    before = pa.detach().numpy().copy()
    opt.zero_grad()
    assert pa.grad is None
    pa.grad = ember.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    opt.step()
    # lr 0 still moves nothing: param -= 0 * g
    np.testing.assert_array_equal(pa.detach().numpy(), before)


def test_sgd_step_closure_and_version_bump(rng):
    lin = nn.Linear(3, 1, dtype=ember.float64)
    opt = ember.optim.SGD(lin.parameters(), lr=0.1)
    x = randn64(rng, 4, 3)

    def closure():
        opt.zero_grad()
        loss = lin(x).pow(2).mean()
        loss.backward()
        return loss

    with ember.no_grad():  # the closure runs with grad enabled even so
        loss = opt.step(closure)
    assert isinstance(loss, ember.Tensor) and lin.weight.grad is not None
    assert closure().item() < loss.item()
    out = (lin(x) ** 2).sum()  # saves the weight for backward ...
    lin.weight.grad = t64(rng.standard_normal((1, 3)))
    opt.step()  # ... which the step then changes in place
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.backward()


def test_sgd_zero_grad_keep_buffers(rng):
    p = nn.Parameter(randn64(rng, 3))
    opt = ember.optim.SGD([p], lr=0.1)
    p.grad = randn64(rng, 3)
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and not p.grad.numpy().any()


def test_sgd_argument_validation():
    p = [nn.Parameter(ember.randn(2))]
    with pytest.raises(ValueError, match=r"^\[SGD\] invalid learning rate: -1$"):
        ember.optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match=r"^\[SGD\] invalid momentum value: -0.5$"):
        ember.optim.SGD(p, momentum=-0.5)
    with pytest.raises(ValueError, match=r"^\[SGD\] invalid weight_decay value: -0.1$"):
        ember.optim.SGD(p, weight_decay=-0.1)
    with pytest.raises(
        ValueError,
        match=r"Nesterov momentum requires a momentum and zero "
        r"dampening",
    ):
        ember.optim.SGD(p, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        ember.optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"^\[SGD\] optimizer got an empty parameter list"):
        ember.optim.SGD([])
    with pytest.raises(TypeError, match="iterable of Tensors or dicts, but got a Tensor"):
        ember.optim.SGD(p[0])
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        ember.optim.SGD([np.zeros(2)])
    with pytest.raises(TypeError, match="ordered"):
        ember.optim.SGD([{"params": set(p)}])
    x = ember.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match="non-leaf"):
        ember.optim.SGD([x * 2])
    opt = ember.optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": p})
    opt.add_param_group({"params": [nn.Parameter(ember.randn(1))], "lr": 0.3})
    assert opt.param_groups[1]["momentum"] == 0  # defaults fill missing hyper-parameters
    assert repr(opt).startswith("SGD (\nParameter Group 0\n    dampening: 0\n    lr: 0.1")


def test_sgd_state_dict_round_trip(rng):
    def make():
        ember.manual_seed(3)
        return nn.Sequential(
            nn.Linear(3, 4, dtype=ember.float64), nn.Tanh(), nn.Linear(4, 2, dtype=ember.float64)
        )

    m1 = make()
    params = list(m1.parameters())
    opt1 = ember.optim.SGD(
        [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}],
        lr=0.05,
        momentum=0.9,
        nesterov=True,
    )
    x, y = randn64(rng, 6, 3), randn64(rng, 6, 2)

    def train_step(model, opt):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()

    for _ in range(3):
        train_step(m1, opt1)
    sd = opt1.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sd["param_groups"][1]["lr"] == 0.02 and sd["param_groups"][0]["nesterov"] is True
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert sd["state"][0]["momentum_buffer"] is opt1.state[params[0]]["momentum_buffer"]
    saved = pickle.loads(pickle.dumps(sd))  # a checkpoint survives serialisation

    m2 = make()
    m2.load_state_dict(m1.state_dict())
    p2 = list(m2.parameters())
    opt2 = ember.optim.SGD([{"params": p2[:2]}, {"params": p2[2:]}], lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[1]["lr"] == 0.02 and opt2.param_groups[0]["momentum"] == 0.9
    assert opt2.param_groups[0]["params"][0] is p2[0]
    for _ in range(3):
        train_step(m1, opt1)
        train_step(m2, opt2)
    for a, b in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    # loading copies: the saved dict is not aliased by the optimizer's state
    assert (
        opt2.state[p2[0]]["momentum_buffer"]._array
        is not saved["state"][0]["momentum_buffer"]._array
    )


def test_sgd_load_state_dict_errors():
    p = [nn.Parameter(ember.randn(2)), nn.Parameter(ember.randn(3))]
    opt = ember.optim.SGD(p, lr=0.1, momentum=0.9)
    other = ember.optim.SGD([{"params": p[:1]}, {"params": p[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict(other.state_dict())
    small = ember.optim.SGD(p[:1], lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(small.state_dict())
    bad = {
        "state": {0: {"momentum_buffer": ember.randn(5)}},
        "param_groups": opt.state_dict()["param_groups"],
    }
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict(bad)


def test_sgd_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    init = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    kw = {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "maximize": True}
    p = nn.Parameter(t64(init))
    tp = torch.nn.Parameter(torch.tensor(init))
    opt, topt = ember.optim.SGD([p], **kw), torch.optim.SGD([tp], **kw)
    for g in grads:
        p.grad, tp.grad = t64(g), torch.tensor(g)
        opt.step()
        topt.step()
    np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-13)


def test_cross_entropy_against_torch_if_available(rng):
    torch = pytest.importorskip("torch")
    x, t = _ce_inputs(rng, (5, 4, 3), ignore=True)
    w = rng.uniform(0.5, 2.0, 4)
    kw = {"label_smoothing": 0.15}
    ours = F.cross_entropy(t64(x), ember.tensor(t), t64(w), **kw).item()
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(x), torch.tensor(t), torch.tensor(w), **kw
    ).item()
    assert ours == pytest.approx(ref, rel=1e-12)


# ================================================================================ end to end


def test_mlp_learns_synthetic_problem(rng):
    """A 2-16-3 MLP on three Gaussian blobs: the loss must fall far below its start."""
    ember.manual_seed(0)
    centers = np.array([[2.0, -1.0], [-2.0, -1.5], [0.0, 2.5]])
    y = rng.integers(0, 3, 240)
    x = (centers[y] + 0.6 * rng.standard_normal((240, 2))).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xt, yt = ember.from_numpy(x), ember.from_numpy(y)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.15 * losses[0]
    with ember.no_grad():
        acc = (model(xt).argmax(1).numpy() == y).mean()
    assert acc > 0.95


def test_main_job_pieces_reproducible():
    pytest.importorskip("sklearn")
    from ember.__main__ import load_digits_split, make_mlp

    x_tr, y_tr, _, y_te = load_digits_split(0)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert len(y_tr) + len(y_te) == 1797 and x_tr.shape[1] == 64
    assert x_tr.min() >= 0 and x_tr.max() <= 1
    # stratified: each class has ~20 % of its samples in the test set
    for c in range(10):
        n_c = (y_tr == c).sum() + (y_te == c).sum()
        assert (y_te == c).sum() == round(0.2 * n_c)
    assert np.array_equal(load_digits_split(0)[3], y_te)
    ember.manual_seed(0)
    a = make_mlp()
    ember.manual_seed(0)
    b = make_mlp()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
    assert [p.shape for p in a.parameters()] == [
        (128, 64),
        (128,),
        (64, 128),
        (64,),
        (10, 64),
        (10,),
    ]


def test_main_job_runs_briefly():
    pytest.importorskip("sklearn")
    r = subprocess.run(
        [sys.executable, "-m", "ember", "--epochs", "3", "--threads", "1", "--min-accuracy", "0.8"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 3
    assert lines[-1].startswith("test accuracy ") and "mean epoch time" in lines[-1]
    r = subprocess.run(
        [sys.executable, "-m", "ember", "--epochs", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 1 and "FAILED: test accuracy" in r.stderr  # 1 epoch is not enough


def test_main_job_without_sklearn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from ember.__main__ import main\n"
        "sys.exit(main([]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert r.returncode == 2
    assert (
        'python -m ember needs scikit-learn for the digits data: pip install "ember[examples]"'
    ) in r.stderr
