"""The Tensor object: creation, properties, conversions, type promotion, comparisons, in-place
ops, ``__setitem__`` and indexing semantics (numpy's, which PyTorch shares for these cases)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import ember

F32, F64, I64 = ember.float32, ember.float64, ember.int64


def host(t):
    return t.detach().cpu().numpy()


@pytest.fixture
def default_dtype():
    """Restore the default float dtype after a test that changes it."""
    old = ember.get_default_dtype()
    yield
    ember.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------
# creation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,dtype,shape",
    [
        (1.5, F32, ()),
        (-3, I64, ()),
        (True, ember.bool, ()),
        ([1.0, -2.5], F32, (2,)),
        ([1, -2], I64, (2,)),
        ([1, 2.5], F32, (2,)),  # mixed ints and floats: float
        ([True, False], ember.bool, (2,)),
        ([[1, 2, 3], [4, 5, 6]], I64, (2, 3)),
        (np.array([1.5, 2.0]), F64, (2,)),  # numpy arrays keep their dtype
        (np.array([1, 2], np.int32), ember.int32, (2,)),
        (np.array([1, 2], np.uint8), ember.uint8, (2,)),
        (np.array([0.5], np.float16), ember.float16, (1,)),
        (np.float64(2.25), F64, ()),  # numpy scalars too
        (np.int32(7), ember.int32, ()),
        ([], F32, (0,)),
    ],
)
def test_tensor_dtype_inference(data, dtype, shape):
    t = ember.tensor(data)
    assert t.dtype is dtype
    assert t.shape == shape
    np.testing.assert_array_equal(host(t), np.asarray(data))


def test_tensor_constructor_matches_ember_tensor():
    assert ember.Tensor([1.5, 2.0]).dtype is F32 and ember.Tensor([1, 2]).dtype is I64
    t = ember.Tensor([1.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf


def test_tensor_dtype_argument_and_default_dtype(default_dtype):
    assert ember.tensor([1, 2], dtype=F64).dtype is F64
    assert ember.tensor([1.7, -1.7], dtype=I64).tolist() == [1, -1]
    assert ember.tensor([1.0], dtype="float16").dtype is ember.float16
    ember.set_default_dtype(F64)
    assert ember.tensor([1.5]).dtype is F64
    assert ember.zeros(2).dtype is F64
    assert ember.tensor([1]).dtype is I64  # ints are not affected
    with pytest.raises(TypeError, match=r"set_default_dtype"):
        ember.set_default_dtype(I64)


def test_tensor_copies_and_as_tensor_from_numpy_share():
    a = np.arange(4.0)
    t = ember.tensor(a)
    a[0] = 100.0
    assert t[0].item() == 0.0
    s = ember.from_numpy(a)
    s2 = ember.as_tensor(a)
    a[1] = -7.0
    assert s[1].item() == -7.0 and s2[1].item() == -7.0
    assert s.dtype is F64
    with pytest.raises(TypeError, match=r"\[from_numpy\]"):
        ember.from_numpy([1.0, 2.0])


def test_tensor_creation_errors():
    with pytest.raises(ValueError, match=r"\[tensor\]"):
        ember.tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match=r"\[tensor\]"):
        ember.tensor(np.array([1 + 2j]))
    with pytest.raises(TypeError, match=r"bfloat16"):
        ember.zeros(2, dtype=ember.bfloat16)
    with pytest.raises(ValueError, match=r"\[zeros\] negative dimension"):
        ember.zeros(2, -1)
    with pytest.raises(RuntimeError, match=r"floating point"):
        ember.tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize("fn,value", [(ember.zeros, 0), (ember.ones, 1)])
def test_zeros_ones(fn, value):
    for args in [(2, 3), ((2, 3),), ([2, 3],)]:
        t = fn(*args)
        assert t.shape == (2, 3) and t.dtype is F32
        assert (host(t) == value).all()
    assert fn(4, dtype=I64).dtype is I64
    assert fn(0, 3).shape == (0, 3)
    assert fn().shape == ()
    assert fn(2, requires_grad=True).requires_grad


def test_full_and_empty():
    t = ember.full((2, 3), 2.5)
    assert t.dtype is F32 and (host(t) == 2.5).all()
    assert ember.full((2,), 7).dtype is I64  # dtype from the fill value, as PyTorch
    assert ember.full((2,), True).dtype is ember.bool
    assert ember.full(3, -1.0, dtype=F64).dtype is F64
    e = ember.empty(3, 4, dtype=F64)
    assert e.shape == (3, 4) and e.dtype is F64


def test_arange():
    t = ember.arange(5)
    assert t.dtype is I64 and t.tolist() == [0, 1, 2, 3, 4]
    assert ember.arange(1, 10, 3).tolist() == [1, 4, 7]
    assert ember.arange(5, 0, -2).tolist() == [5, 3, 1]
    f = ember.arange(0, 1, 0.25)
    assert f.dtype is F32 and f.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert ember.arange(3, dtype=F64).dtype is F64
    assert ember.arange(0).shape == (0,)
    with pytest.raises(ValueError, match=r"\[arange\]"):
        ember.arange(0, 5, 0)


def test_linspace_eye():
    t = ember.linspace(-1, 1, 5)
    assert t.dtype is F32
    np.testing.assert_allclose(host(t), [-1, -0.5, 0, 0.5, 1])
    assert ember.linspace(2, 3, 1).tolist() == [2.0]
    assert ember.linspace(0, 1, 0).shape == (0,)
    with pytest.raises(ValueError, match=r"\[linspace\]"):
        ember.linspace(0, 1, -1)
    np.testing.assert_array_equal(host(ember.eye(3)), np.eye(3))
    np.testing.assert_array_equal(host(ember.eye(2, 4, dtype=I64)), np.eye(2, 4, dtype=np.int64))


def test_random_creation():
    ember.manual_seed(0)
    r = host(ember.rand(20000))
    assert r.dtype == np.float32 and r.min() >= 0.0 and r.max() < 1.0
    assert abs(r.mean() - 0.5) < 0.01
    n = host(ember.randn(20000, dtype=F64))
    assert n.dtype == np.float64 and abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03
    i = ember.randint(-3, 4, (5000,))
    assert i.dtype is I64 and set(i.tolist()) == set(range(-3, 4))
    assert ember.randint(5, (2, 3)).shape == (2, 3)
    assert ember.randint(5, size=(4,)).shape == (4,)
    p = ember.randperm(50)
    assert p.dtype is I64 and sorted(p.tolist()) == list(range(50))
    with pytest.raises(ValueError, match=r"\[randint\]"):
        ember.randint(5, 5, (2,))
    with pytest.raises(TypeError, match=r"\[rand\]"):
        ember.rand(3, dtype=I64)


def test_manual_seed_reproducibility():
    def draw():
        return (
            host(ember.rand(5)),
            host(ember.randn(2, 3)),
            ember.randint(0, 100, (6,)).tolist(),
            ember.randperm(8).tolist(),
            host(ember.empty(4).normal_()),
            host(ember.empty(3).uniform_(-2, 2)),
        )

    ember.manual_seed(1234)
    first = draw()
    ember.manual_seed(1234)
    second = draw()
    ember.manual_seed(4321)
    third = draw()
    for a, b, c in zip(first, second, third, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert ember.initial_seed() == 4321
    # a Generator object is independent of the global state
    g1, g2 = ember.Generator().manual_seed(7), ember.Generator().manual_seed(7)
    a = host(ember.randn(4, generator=g1))
    ember.randn(10)  # global draws don't affect it
    np.testing.assert_array_equal(a, host(ember.randn(4, generator=g2)))


def test_like_functions():
    x = ember.randn(2, 3, dtype=F64)
    for fn, check in [
        (ember.zeros_like, lambda a: (a == 0).all()),
        (ember.ones_like, lambda a: (a == 1).all()),
        (lambda t, **k: ember.full_like(t, 3.5, **k), lambda a: (a == 3.5).all()),
        (ember.empty_like, lambda a: True),
        (ember.rand_like, lambda a: ((a >= 0) & (a < 1)).all()),
        (ember.randn_like, lambda a: np.isfinite(a).all()),
    ]:
        y = fn(x)
        assert y.shape == (2, 3) and y.dtype is F64 and y.device == x.device
        assert check(host(y))
        assert fn(x, dtype=F32).dtype is F32
    ri = ember.randint_like(ember.zeros(3, 2, dtype=I64), 10)
    assert ri.dtype is I64 and ri.shape == (3, 2) and 0 <= ri.min().item() and ri.max().item() < 10
    with pytest.raises(TypeError):
        ember.rand_like(ember.zeros(2, dtype=I64))


# ---------------------------------------------------------------------------------------------
# properties and conversions
# ---------------------------------------------------------------------------------------------


def test_properties():
    t = ember.randn(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4)
    assert t.size(1) == 3 and t.size(-1) == 4
    assert t.ndim == 3 and t.dim() == 3
    assert t.numel() == 24 and ember.numel(t) == 24
    assert t.dtype is F32 and t.is_floating_point() and ember.is_floating_point(t)
    assert t.device == ember.device("cpu") and t.device == "cpu" and str(t.device) == "cpu"
    assert not t.is_cuda and t.get_device() == -1
    assert t.is_leaf and not t.requires_grad and t.grad is None and t.grad_fn is None
    assert len(t) == 2 and [r.shape for r in t] == [(3, 4), (3, 4)]
    assert t.stride() == (12, 4, 1) and t.is_contiguous()
    assert t.element_size() == 4
    assert ember.is_tensor(t) and not ember.is_tensor(np.zeros(2))
    with pytest.raises(IndexError, match=r"\[size\]"):
        t.size(3)
    with pytest.raises(TypeError, match=r"\[len\]"):
        len(ember.tensor(1.0))


def test_item_and_tolist():
    assert ember.tensor(2.5).item() == 2.5 and isinstance(ember.tensor(2.5).item(), float)
    assert ember.tensor([7]).item() == 7 and isinstance(ember.tensor([7]).item(), int)
    assert ember.tensor(True).item() is True
    with pytest.raises(ValueError, match=r"\[item\]"):
        ember.tensor([1.0, 2.0]).item()
    nested = ember.tensor([[1, 2], [3, 4]]).tolist()
    assert nested == [[1, 2], [3, 4]] and isinstance(nested[0][0], int)
    assert ember.tensor(1.5).tolist() == 1.5
    assert float(ember.tensor([2.5])) == 2.5 and int(ember.tensor(3.9)) == 3
    assert bool(ember.tensor([1.0])) is True
    with pytest.raises(RuntimeError, match=r"ambiguous"):
        bool(ember.tensor([1.0, 2.0]))


def test_numpy_shares_memory_and_refuses_requires_grad():
    t = ember.randn(3)
    a = t.numpy()
    a[0] = 42.0
    assert t[0].item() == 42.0
    t.add_(1.0)
    assert a[0] == 43.0
    r = ember.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\[numpy\].*detach"):
        r.numpy()
    d = r.detach().numpy()
    d[1] = 5.0
    assert r[1].item() == 5.0  # detach shares memory


def test_array_protocol():
    t = ember.tensor([1.0, 2.0, 3.0])
    a = np.asarray(t)
    assert a.dtype == np.float32 and np.shares_memory(a, t.numpy())
    b = np.asarray(t, dtype=np.float64)
    assert b.dtype == np.float64 and b.tolist() == [1.0, 2.0, 3.0]
    c = np.array(t, copy=True)
    c[0] = 9.0
    assert t[0].item() == 1.0
    with pytest.raises(RuntimeError):
        np.asarray(ember.randn(2, requires_grad=True))


def test_dlpack_round_trip():
    t = ember.arange(6, dtype=F32).reshape(2, 3)
    assert t.__dlpack_device__()[0] == 1  # kDLCPU
    a = np.from_dlpack(t)
    assert a.shape == (2, 3) and a.dtype == np.float32
    back = ember.from_numpy(a)
    back[1, 2] = -1.0  # all three share one buffer
    assert t[1, 2].item() == -1.0 and a[1, 2] == -1.0
    np.testing.assert_array_equal(host(back), host(t))
    with pytest.raises(RuntimeError, match=r"__dlpack__"):
        np.from_dlpack(ember.randn(2, requires_grad=True))


def test_to_dtype_and_device():
    t = ember.tensor([1.7, -1.7, 2.5])
    assert t.to(F32) is t and t.to("cpu") is t and t.cpu() is t  # nothing to do: self
    c = t.to(F32, copy=True)
    assert c is not t and not np.shares_memory(c.numpy(), t.numpy())
    d = t.to(F64)
    assert d.dtype is F64 and d.tolist() == pytest.approx([1.7, -1.7, 2.5], rel=1e-7)
    assert t.to(dtype=I64).tolist() == [1, -1, 2]  # truncation toward zero
    assert t.to(ember.zeros(1, dtype=F64)).dtype is F64
    assert t.to("cpu", F64).dtype is F64
    assert t.double().dtype is F64 and t.float() is t
    assert t.long().tolist() == [1, -1, 2] and t.long().dtype is I64
    assert t.int().dtype is ember.int32 and t.half().dtype is ember.float16
    assert t.bool().tolist() == [True, True, True]
    assert t.type() == "ember.float32" and t.type(F64).dtype is F64
    assert t.type_as(ember.zeros(1, dtype=I64)).dtype is I64
    with pytest.raises(TypeError, match=r"\[to\]"):
        t.to(object())


def test_contiguous_clone_detach():
    x = ember.randn(3, 4)
    xt = x.T
    assert not xt.is_contiguous()
    c = xt.contiguous()
    assert c.is_contiguous() and np.array_equal(host(c), host(x).T)
    assert x.contiguous().numpy() is x.numpy() or np.shares_memory(
        x.contiguous().numpy(), x.numpy()
    )
    k = x.clone()
    k.add_(1.0)
    assert not np.array_equal(host(k), host(x)) and not np.shares_memory(k.numpy(), x.numpy())
    r = ember.randn(2, requires_grad=True)
    rc = r.clone()
    assert rc.grad_fn is not None and rc.requires_grad
    d = r.detach()
    assert (
        not d.requires_grad
        and d.grad_fn is None
        and np.shares_memory(d.numpy(), r.detach().numpy())
    )


def test_repr_is_readable():
    s = repr(ember.tensor([1.0, 2.5]))
    assert s.startswith("tensor([") and "1." in s and "2.5" in s and "dtype" not in s
    assert "dtype=ember.float64" in repr(ember.tensor([1.0], dtype=F64))
    assert repr(ember.tensor([1, 2])) == "tensor([1, 2])"
    r = ember.randn(2, requires_grad=True)
    assert "requires_grad=True" in repr(r)
    assert "grad_fn=<MulBackward>" in repr(r * 2)
    assert repr(ember.zeros(0)) == "tensor([])"
    assert "..." in repr(ember.zeros(10000))  # large tensors are summarised
    assert f"{ember.tensor(3.14159):.2f}" == "3.14"


# ---------------------------------------------------------------------------------------------
# type promotion (PyTorch's rules)
# ---------------------------------------------------------------------------------------------


def _t(values, dtype):
    return ember.tensor(values, dtype=dtype)


@pytest.mark.parametrize(
    "make,expected,values",
    [
        (lambda: _t([1.5, 2.0], F32) + 2.5, F32, [4.0, 4.5]),
        (lambda: 2.5 * _t([1.5, 2.0], F32), F32, [3.75, 5.0]),
        (
            lambda: _t([1, 2], I64) + 2.5,
            F32,
            [3.5, 4.5],
        ),  # int tensor + float scalar: default float
        (lambda: _t([1, 2], I64) * 2, I64, [2, 4]),
        (lambda: _t([1, 2], ember.int32) * 3, ember.int32, [3, 6]),  # a Python int doesn't widen
        (lambda: _t([1, 2], ember.int32) + _t([1, 1], I64), I64, [2, 3]),
        (lambda: _t([1, 3], I64) / _t([2, 4], I64), F32, [0.5, 0.75]),  # true division
        (lambda: _t([1, 3], I64) / 2, F32, [0.5, 1.5]),
        (lambda: _t([1.0, 2.0], F32) + _t([1.0, 1.0], F64), F64, [2.0, 3.0]),
        (
            lambda: _t([1.0, 2.0], F32) + _t(0.5, F64),
            F32,
            [1.5, 2.5],
        ),  # 0-d: same category, no widening
        (
            lambda: _t([1, 2], I64) + _t(0.5, F64),
            F64,
            [1.5, 2.5],
        ),  # 0-d of a higher category decides
        (lambda: _t([1.0, 2.0], ember.float16) + _t([1.0, 1.0], F32), F32, [2.0, 3.0]),
        (lambda: _t([1, 2], ember.uint8) + _t([1, 1], ember.int8), ember.int16, [2, 3]),
        (lambda: _t([True, False], ember.bool) + 1, I64, [2, 1]),
        (lambda: _t([True, False], ember.bool) * 1.5, F32, [1.5, 0.0]),
        (lambda: ember.where(_t([True, False], ember.bool), _t([1, 2], I64), 0.5), F32, [1.0, 0.5]),
        (lambda: ember.maximum(_t([1, 5], I64), _t([2.5, 2.5], F32)), F32, [2.5, 5.0]),
        (lambda: ember.cat([_t([1], I64), _t([2.5], F32)]), F32, [1.0, 2.5]),
        (lambda: ember.matmul(_t([[1.0, 2.0]], F32), _t([[1], [2]], I64)), F32, [[5.0]]),
        (lambda: ember.exp(_t([0, 0], I64)), F32, [1.0, 1.0]),  # float-only math promotes ints
        (lambda: _t([1, 2], ember.int32).sum(), I64, 3),  # integer sums accumulate in int64
    ],
)
def test_type_promotion(make, expected, values):
    r = make()
    assert r.dtype is expected, f"{r.dtype} != {expected}"
    np.testing.assert_allclose(host(r), values)


def test_promotion_follows_default_dtype(default_dtype):
    ember.set_default_dtype(F64)
    assert (_t([1, 2], I64) + 2.5).dtype is F64
    assert (_t([1, 2], I64) / _t([1, 2], I64)).dtype is F64
    assert (_t([1.0], F32) + 2.5).dtype is F32  # a float tensor keeps its own dtype


# ---------------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,npop",
    [
        ("eq", np.equal),
        ("ne", np.not_equal),
        ("lt", np.less),
        ("le", np.less_equal),
        ("gt", np.greater),
        ("ge", np.greater_equal),
    ],
)
def test_comparisons_return_bool_without_grad(op, npop, rng):
    a = np.round(rng.standard_normal((3, 4)), 1).astype(np.float32)
    b = np.round(rng.standard_normal((4,)), 1).astype(np.float32)
    b[0] = a[0, 0]  # at least one equality
    x = ember.tensor(a, requires_grad=True)
    y = ember.tensor(b, requires_grad=True)
    for r, expected in [
        (getattr(ember, op)(x, y), npop(a, b)),
        (getattr(x, op)(y), npop(a, b)),
        (getattr(ember, op)(x, 0.5), npop(a, np.float32(0.5))),
    ]:
        assert r.dtype is ember.bool and not r.requires_grad and r.grad_fn is None
        np.testing.assert_array_equal(host(r), expected)
    dunder = {"eq": x == y, "ne": x != y, "lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y}[op]
    np.testing.assert_array_equal(host(dunder), npop(a, b))


def test_logical_and_misc_nograd_ops():
    a, b = ember.tensor([True, False, True]), ember.tensor([True, True, False])
    assert ember.logical_and(a, b).tolist() == [True, False, False]
    assert (a | b).tolist() == [True, True, True] and (~a).tolist() == [False, True, False]
    assert ember.isnan(ember.tensor([1.0, float("nan")])).tolist() == [False, True]
    assert ember.tensor([-1.5, 2.5]).floor().tolist() == [-2.0, 2.0]
    assert ember.equal(ember.tensor([1, 2]), ember.tensor([1, 2]))
    assert ember.allclose(ember.tensor([1.0]), ember.tensor([1.0 + 1e-7]))
    with pytest.raises(TypeError, match=r"\[bitwise_and\]"):
        ember.tensor([1.0]) & ember.tensor([2.0])


# ---------------------------------------------------------------------------------------------
# in-place ops
# ---------------------------------------------------------------------------------------------

INPLACE = [
    ("add_", lambda t: t.add_(ember.tensor([1.0, 2.0, 3.0])), lambda a: a + [1.0, 2.0, 3.0]),
    (
        "add_alpha",
        lambda t: t.add_(ember.tensor([1.0, 2.0, 3.0]), alpha=-2),
        lambda a: a - 2 * np.array([1.0, 2.0, 3.0]),
    ),
    ("sub_", lambda t: t.sub_(0.5), lambda a: a - 0.5),
    ("mul_", lambda t: t.mul_(ember.tensor(-2.0)), lambda a: a * -2.0),
    ("div_", lambda t: t.div_(4.0), lambda a: a / 4.0),
    ("zero_", lambda t: t.zero_(), lambda a: np.zeros_like(a)),
    ("fill_", lambda t: t.fill_(1.25), lambda a: np.full_like(a, 1.25)),
    (
        "copy_",
        lambda t: t.copy_(ember.tensor([7.0, 8.0, 9.0], dtype=F64)),
        lambda a: np.array([7.0, 8.0, 9.0]),
    ),
    ("copy_broadcast", lambda t: t.copy_(ember.tensor(3)), lambda a: np.full_like(a, 3.0)),
    ("clamp_", lambda t: t.clamp_(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)),
    ("clamp_min", lambda t: t.clamp_(min=0.0), lambda a: np.maximum(a, 0.0)),
    ("iadd", lambda t: t.__iadd__(1.5), lambda a: a + 1.5),
    ("imul", lambda t: t.__imul__(ember.tensor([1.0, 0.0, -1.0])), lambda a: a * [1.0, 0.0, -1.0]),
]


@pytest.mark.parametrize("name,op,ref", INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_ops(name, op, ref):
    start = np.array([-1.2, 0.3, 2.7], np.float32)
    t = ember.tensor(start)
    storage = t.numpy()
    v0 = t._version[0]
    r = op(t)
    assert r is t, "in-place ops return self"
    assert t.numpy() is storage, "in place: the same storage"
    assert t.dtype is F32
    np.testing.assert_allclose(host(t), ref(start.astype(np.float64)), rtol=1e-6)
    assert t._version[0] > v0, "the version counter is bumped"


@pytest.mark.parametrize("name,op,ref", INPLACE, ids=[i[0] for i in INPLACE])
def test_inplace_on_leaf_requiring_grad(name, op, ref):
    t = ember.tensor([-1.2, 0.3, 2.7], requires_grad=True)
    if name in ("iadd", "imul"):  # augmented assignment computes out of place under grad mode
        r = op(t)
        assert (
            r is not t and r.grad_fn is not None and t.tolist() == pytest.approx([-1.2, 0.3, 2.7])
        )
    else:
        with pytest.raises(
            RuntimeError, match=r"in-place operation on a leaf tensor that requires grad"
        ):
            op(t)
        assert t.tolist() == pytest.approx([-1.2, 0.3, 2.7])  # untouched
    with ember.no_grad():
        r = op(t)
    assert r is t and t.requires_grad and t.grad_fn is None
    np.testing.assert_allclose(
        host(t), ref(np.array([-1.2, 0.3, 2.7], np.float32).astype(np.float64)), rtol=1e-6
    )


def test_inplace_on_non_leaf_in_graph_is_refused():
    x = ember.randn(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"in-place operation on a tensor in the graph"):
        y.mul_(3)


def test_inplace_errors():
    t = ember.zeros(3)
    with pytest.raises(ValueError, match=r"\[add_\].*broadcast"):
        t.add_(ember.zeros(2, 3))
    i = ember.tensor([1, 2, 3])
    with pytest.raises(TypeError, match=r"\[div_\]"):
        i.div_(2.5)  # a float result can't be stored in an int tensor
    e = ember.zeros(3, 1).expand(3, 4)
    with pytest.raises(ValueError, match=r"read-only"):
        e.add_(1.0)
    with pytest.raises(ValueError, match=r"\[copy_\]"):
        t.copy_(ember.zeros(4))


def test_inplace_through_a_view_changes_the_base():
    t = ember.zeros(3, 4)
    t[1].add_(1.0)
    t[:, 2].fill_(5.0)
    t.T[0].sub_(2.0)
    expected = np.zeros((3, 4), np.float32)
    expected[1] += 1
    expected[:, 2] = 5
    expected[:, 0] -= 2
    np.testing.assert_array_equal(host(t), expected)


def test_version_counter_detects_modified_saved_tensor():
    x = ember.randn(4, requires_grad=True)
    w = ember.randn(4)
    y = (x * w).sum()  # mul saves w for x's gradient
    w.add_(1.0)
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation"):
        y.backward()


def test_version_counter_is_shared_by_views_and_detach():
    x = ember.randn(4, requires_grad=True)
    y = x.exp()  # exp saves its output
    with ember.no_grad():
        y[1:].mul_(2.0)  # through a view
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation"):
        y.sum().backward()
    x2 = ember.randn(3, requires_grad=True)
    z = (x2 * x2).sum()
    x2.detach().zero_()  # detach shares the storage and the version counter
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation"):
        z.backward()
    x3 = ember.randn(3, 4, requires_grad=True)
    w = ember.randn(3, 4)
    z3 = (x3 * w.contiguous()).sum()  # contiguous() of a contiguous tensor is the same storage
    w.fill_(0.0)
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation"):
        z3.backward()


def test_inplace_on_unsaved_input_is_fine():
    x = ember.randn(4, requires_grad=True)
    w = ember.randn(4)
    y = (x + w).sum()  # add saves nothing
    w.add_(1.0)
    y.backward()
    np.testing.assert_array_equal(host(x.grad), np.ones(4, np.float32))


def test_where_result_is_writable():
    r = ember.where(ember.tensor([True, False, True]), ember.zeros(3), 1.0)
    r.add_(1.0)
    r[0] = -1.0
    assert r.tolist() == [-1.0, 2.0, 1.0]


# ---------------------------------------------------------------------------------------------
# __setitem__
# ---------------------------------------------------------------------------------------------


SETITEM = [
    ("int", 1, -5.0),
    ("slice", (slice(None), slice(1, 3)), 2.5),
    ("row_tensor", 0, "row"),
    ("int_list", [0, 2], -1.0),
    ("bool_mask", "mask", 0.0),
    ("ellipsis", (Ellipsis, -1), 9.0),
    ("broadcast_col", (slice(None), slice(0, 1)), "col"),
]


@pytest.mark.parametrize("name,idx,value", SETITEM, ids=[s[0] for s in SETITEM])
def test_setitem_matches_numpy(name, idx, value, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    t = ember.tensor(a)
    if isinstance(idx, str):
        idx = a > 0
        t_idx = ember.tensor(idx)
    else:
        t_idx = idx
    if value == "row":
        v = rng.standard_normal(4).astype(np.float32)
        tv = ember.tensor(v)
    elif value == "col":
        v = rng.standard_normal((3, 1)).astype(np.float32)
        tv = ember.tensor(v)
    else:
        v = tv = value
    v0 = t._version[0]
    t[t_idx] = tv
    a[idx] = v
    np.testing.assert_array_equal(host(t), a)
    assert t._version[0] > v0


def test_setitem_rules():
    x = ember.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\[setitem\]"):
        x[0] = 1.0
    with ember.no_grad():
        x[0] = 1.0
    assert x[0].item() == 1.0
    y = ember.zeros(3)
    with pytest.raises(IndexError, match=r"\[setitem\]"):
        y[5] = 1.0
    with pytest.raises(ValueError, match=r"\[setitem\]"):
        y[:] = ember.zeros(4)
    with pytest.raises(ValueError, match=r"read-only"):
        ember.zeros(1).expand(3)[0] = 1.0
    # a saved tensor modified by setitem is detected
    w = ember.randn(3)
    z = (ember.randn(3, requires_grad=True) * w).sum()
    w[0] = 0.0
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation"):
        z.backward()


# ---------------------------------------------------------------------------------------------
# indexing semantics vs numpy
# ---------------------------------------------------------------------------------------------

A = np.arange(60, dtype=np.float32).reshape(3, 4, 5) - 30.5
INDICES = [
    1,
    -1,
    (0, 2),
    (-1, -2, -3),
    slice(1, None),
    slice(None, None, 2),
    (slice(None), slice(3, 0, -1)),
    (Ellipsis, 2),
    (None, 1),
    (1, None, Ellipsis),
    (slice(None), None, 0),
    Ellipsis,
    (),
    [2, 0, 2],
    np.array([1, 1, 0]),
    (slice(None), [3, 0, 3]),
    ([0, 2], [1, 3]),
    ([0, 2], slice(None), [4, 0]),
    (np.array([[0, 1], [2, 2]]),),
    A[:, 0, 0] > -20,
    A > 0,
    (1, A[1, :, 0] > -20),
    (A[:, :, 0] > 0,),
    (slice(0, 2), [1, 1, 2], slice(None, None, -2)),
    ([],),
    (slice(5, 10),),
]


def _index_array(i):
    a = np.asarray(i)
    return a if a.dtype == np.bool_ else a.astype(np.int64)


@pytest.mark.parametrize("idx", INDICES, ids=[repr(i)[:40] for i in range(len(INDICES))])
def test_getitem_matches_numpy(idx):
    t = ember.tensor(A)
    expected = A[idx]
    got = t[idx]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(host(got), expected)
    # the same index given with tensors instead of lists/arrays
    conv = tuple(
        ember.tensor(_index_array(i)) if isinstance(i, (list, np.ndarray)) else i
        for i in (idx if isinstance(idx, tuple) else (idx,))
    )
    np.testing.assert_array_equal(host(t[conv if isinstance(idx, tuple) else conv[0]]), expected)


def test_basic_index_is_a_view_advanced_is_a_copy():
    t = ember.tensor(A)
    v = t[1, :, ::2]
    v.fill_(0.0)
    assert (host(t)[1, :, ::2] == 0).all()
    c = t[[0, 1]]
    c.fill_(7.0)
    assert not (host(t)[0] == 7.0).any()


def test_indexing_errors():
    t = ember.tensor(A)
    with pytest.raises(IndexError, match=r"\[index\]"):
        t[3]
    with pytest.raises(IndexError, match=r"\[index\]"):
        t[0, 0, 0, 0]
    with pytest.raises(TypeError, match=r"\[index\]"):
        t[ember.tensor([0.0, 1.0])]
    with pytest.raises(TypeError, match=r"\[index\]"):
        t[[0.5]]


def test_tensor_memory_is_released():
    """Graph nodes do not keep tensors alive in cycles (saved tensors hold arrays only)."""
    import weakref

    gc.disable()  # freed by reference counting alone, not by the cycle collector
    try:
        x = ember.randn(100, requires_grad=True)
        y = (x * 2).exp()
        ref = weakref.ref(y)
        y.sum().backward()
        del y
        assert ref() is None
    finally:
        gc.enable()
