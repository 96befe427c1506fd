"""The autograd engine and its rules: accumulation, broadcasting, grad modes, requires_grad,
backward/grad entry points, retain_graph, custom Functions, gradcheck itself, multi-output
ops, deep graphs, retain_grad, and augmented assignment in model code."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import ember
from ember.autograd import Function, GradcheckError, gradcheck

F64 = ember.float64


def host(t):
    return t.detach().cpu().numpy()


def leaf(rng, *shape, dtype=np.float32):
    return ember.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


# ---------------------------------------------------------------------------------------------
# accumulation
# ---------------------------------------------------------------------------------------------


def test_accumulates_over_uses_of_a_tensor(rng):
    x = leaf(rng, 5, dtype=np.float64)
    y = (x * x + 3.0 * x - x.exp()).sum()  # x used in four places
    y.backward()
    a = host(x)
    np.testing.assert_allclose(host(x.grad), 2 * a + 3 - np.exp(a), rtol=1e-12)


def test_diamond_graph(rng):
    x = leaf(rng, 4, dtype=np.float64)
    h = x * 2.0
    out = (h.exp() * h.sin()).sum()  # h feeds two branches that meet again
    out.backward()
    a = 2 * host(x)
    np.testing.assert_allclose(
        host(x.grad), 2 * (np.exp(a) * np.sin(a) + np.exp(a) * np.cos(a)), rtol=1e-12
    )


def test_accumulates_across_backward_calls_in_place(rng):
    x = leaf(rng, 3)
    w = rng.standard_normal(3).astype(np.float32)
    (x * ember.tensor(w)).sum().backward()
    first = x.grad
    np.testing.assert_allclose(host(first), w)
    (x * ember.tensor(w)).sum().backward()
    assert x.grad is first, "the gradient buffer is reused, accumulated in place"
    np.testing.assert_allclose(host(x.grad), 2 * w)
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(host(x.grad), np.full(3, 3.0))


def test_leaf_gradients_do_not_share_memory(rng):
    """add's backward hands one array to both inputs: each leaf must get its own buffer."""
    x, y = leaf(rng, 3), leaf(rng, 3)
    (x + y).backward(ember.tensor([1.0, 2.0, 3.0]))
    assert not np.shares_memory(x.grad.numpy(), y.grad.numpy())
    x.grad.zero_()
    assert host(y.grad).tolist() == [1.0, 2.0, 3.0]


def test_broadcasting_gradients_are_reduced_to_the_input_shapes(rng):
    a = leaf(rng, 3, 1, dtype=np.float64)
    b = leaf(rng, 4, dtype=np.float64)
    c = ember.tensor(rng.standard_normal(()), requires_grad=True)
    d = leaf(rng, 2, 1, 1, dtype=np.float64)
    g = rng.standard_normal((2, 3, 4))
    (a * b + c - d).backward(ember.tensor(g))
    assert (
        a.grad.shape == (3, 1)
        and b.grad.shape == (4,)
        and c.grad.shape == ()
        and d.grad.shape == (2, 1, 1)
    )
    np.testing.assert_allclose(host(a.grad), (g * host(b)).sum(axis=(0, 2))[:, None], rtol=1e-12)
    np.testing.assert_allclose(host(b.grad), (g * host(a)).sum(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(host(c.grad), g.sum(), rtol=1e-12)
    np.testing.assert_allclose(host(d.grad), -g.sum(axis=(1, 2), keepdims=True), rtol=1e-12)


def test_gradient_dtype_follows_the_leaf(rng):
    x = leaf(rng, 3)  # float32
    (x.double() * 2.0).sum().backward()
    assert x.grad.dtype is ember.float32
    np.testing.assert_array_equal(host(x.grad), np.full(3, 2.0, np.float32))


def test_non_contiguous_leaf(rng):
    storage = rng.standard_normal((4, 6)).astype(np.float32)
    x = ember.from_numpy(storage[:, ::2].T).requires_grad_()  # a strided, transposed leaf
    assert not x.is_contiguous()
    g = rng.standard_normal((3, 4)).astype(np.float32)
    (x.sin() * 2.0).backward(ember.tensor(g))
    np.testing.assert_allclose(host(x.grad), 2 * np.cos(storage[:, ::2].T) * g, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# grad modes
# ---------------------------------------------------------------------------------------------


def test_no_grad_and_enable_grad(rng):
    x = leaf(rng, 3)
    with ember.no_grad():
        y = x * 2
        assert not ember.is_grad_enabled()
        with ember.enable_grad():
            z = x * 2
            assert ember.is_grad_enabled()
        assert not ember.is_grad_enabled()
    assert ember.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None


def test_grad_mode_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with ember.no_grad():
            raise ZeroDivisionError
    assert ember.is_grad_enabled()


def test_grad_mode_decorators(rng):
    x = leaf(rng, 3)

    @ember.no_grad()
    def f(t):
        return t * 2

    @ember.enable_grad()
    def g(t):
        return t * 2

    @ember.set_grad_enabled(False)
    def h(t):
        return t * 2

    assert ember.is_grad_enabled(), "decorating must not change the mode"
    assert not f(x).requires_grad and h(x).grad_fn is None
    with ember.no_grad():
        assert g(x).requires_grad
    assert f.__name__ == "f"


def test_bare_no_grad_decorator(rng):
    """``@ember.no_grad`` without parentheses, as PyTorch allows."""
    x = leaf(rng, 3)

    @ember.no_grad
    def f(t):
        return t * 2

    assert not f(x).requires_grad and ember.is_grad_enabled()


def test_set_grad_enabled_call_and_context(rng):
    x = leaf(rng, 3)
    try:
        ember.set_grad_enabled(False)
        assert not (x * 2).requires_grad
    finally:
        ember.set_grad_enabled(True)
    assert (x * 2).requires_grad
    with ember.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert ember.is_grad_enabled()
    with ember.inference_mode():
        assert not (x * 2).requires_grad


def test_grad_mode_is_thread_local(rng):
    x = leaf(rng, 3)
    seen = []
    with ember.no_grad():
        t = threading.Thread(target=lambda: seen.append((x * 2).requires_grad))
        t.start()
        t.join()
    assert seen == [True]


# ---------------------------------------------------------------------------------------------
# requires_grad, detach, is_leaf
# ---------------------------------------------------------------------------------------------


def test_requires_grad_rules(rng):
    x = ember.zeros(3)
    assert not x.requires_grad and x.is_leaf
    assert x.requires_grad_() is x and x.requires_grad
    with pytest.raises(RuntimeError, match=r"\[requires_grad_\] only floating point"):
        ember.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match=r"floating point"):
        ember.ones(2, dtype=ember.int64, requires_grad=True)
    y = x * 2
    assert y.requires_grad and not y.is_leaf
    with pytest.raises(RuntimeError, match=r"non-leaf"):
        y.requires_grad_(False)
    c = ember.randn(3) * 2  # nothing requires grad: no graph
    assert not c.requires_grad and c.grad_fn is None and c.is_leaf
    m = ember.randn(3) * x  # one input suffices
    assert m.requires_grad


def test_detach_stops_gradients(rng):
    x = leaf(rng, 3, dtype=np.float64)
    y = (x * x.detach()).sum()  # d/dx = x (the detached factor is a constant)
    y.backward()
    np.testing.assert_allclose(host(x.grad), host(x), rtol=1e-12)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    z = x * 2
    z.detach_()
    assert z.grad_fn is None and not z.requires_grad


def test_int_outputs_do_not_require_grad(rng):
    x = leaf(rng, 3, 4)
    assert not x.argmax(1).requires_grad
    _, idx = x.max(1)
    assert not idx.requires_grad and idx.dtype is ember.int64
    assert not (x > 0).requires_grad


# ---------------------------------------------------------------------------------------------
# backward entry points
# ---------------------------------------------------------------------------------------------


def test_backward_needs_a_gradient_for_non_scalars(rng):
    x = leaf(rng, 3)
    with pytest.raises(RuntimeError, match=r"\[backward\].*scalar"):
        (x * 2).backward()
    g = rng.standard_normal(3).astype(np.float32)
    (x * 2).backward(ember.tensor(g))
    np.testing.assert_allclose(host(x.grad), 2 * g)
    with pytest.raises(ValueError, match=r"\[backward\].*shape"):
        (x * 2).backward(ember.ones(4))
    (x[0] * 1.0).backward()  # one element: implicit gradient 1
    with pytest.raises(RuntimeError, match=r"does not require grad"):
        ember.randn(3).sum().backward()


def test_backward_of_several_roots(rng):
    x = leaf(rng, 3, dtype=np.float64)
    y1, y2 = x * 2.0, x.exp()
    g1, g2 = rng.standard_normal(3), rng.standard_normal(3)
    ember.autograd.backward([y1, y2], [ember.tensor(g1), ember.tensor(g2)])
    np.testing.assert_allclose(host(x.grad), 2 * g1 + np.exp(host(x)) * g2, rtol=1e-12)


def test_second_backward_needs_retain_graph(rng):
    x = leaf(rng, 4, dtype=np.float64)
    y = (x.exp() * x).sum()
    y.backward()
    first = host(x.grad).copy()
    with pytest.raises(RuntimeError, match=r"retain_graph"):
        y.backward()
    x.grad = None
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    z.backward(retain_graph=True)
    np.testing.assert_allclose(host(x.grad), 2 * first, rtol=1e-12)
    z.backward()
    np.testing.assert_allclose(host(x.grad), 3 * first, rtol=1e-12)
    with pytest.raises(RuntimeError, match=r"retain_graph"):
        z.backward()


def test_autograd_grad(rng):
    x = leaf(rng, 3, dtype=np.float64)
    w = leaf(rng, 3, dtype=np.float64)
    unused = leaf(rng, 2, dtype=np.float64)
    h = x * w
    y = (h * h).sum()
    gx, gh = ember.autograd.grad(y, [x, h], retain_graph=True)
    a, b = host(x), host(w)
    np.testing.assert_allclose(host(gx), 2 * a * b * b, rtol=1e-12)
    np.testing.assert_allclose(host(gh), 2 * a * b, rtol=1e-12)  # w.r.t. a non-leaf too
    assert x.grad is None and w.grad is None, "grad() does not touch .grad"
    with pytest.raises(RuntimeError, match=r"\[grad\].*allow_unused"):
        ember.autograd.grad(y, [x, unused], retain_graph=True)
    gx2, gu = ember.autograd.grad(y, [x, unused], allow_unused=True, retain_graph=True)
    assert gu is None
    np.testing.assert_allclose(host(gx2), host(gx))
    (gw,) = ember.autograd.grad(x * w, w, grad_outputs=ember.tensor([1.0, 2.0, 3.0], dtype=F64))
    np.testing.assert_allclose(host(gw), a * [1.0, 2.0, 3.0], rtol=1e-12)
    with pytest.raises(RuntimeError, match=r"\[grad\]"):
        ember.autograd.grad((ember.randn(2) * x[:2]).sum(), [ember.randn(2)])


# ---------------------------------------------------------------------------------------------
# custom Functions and gradcheck
# ---------------------------------------------------------------------------------------------


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x


class ScaledMul(Function):
    """Two tensor inputs and a Python constant; only the needed gradients are computed."""

    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return a * b * scale

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = g * b * ctx.scale if ctx.needs_input_grad[0] else None
        gb = g * a * ctx.scale if ctx.needs_input_grad[1] else None
        return ga, gb, None


class WrongCube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2 * x * x  # wrong: 2 instead of 3


def test_custom_function_end_to_end(rng):
    x = leaf(rng, 4, dtype=np.float64)
    y = Cube.apply(x)
    assert y.grad_fn is not None and y.grad_fn.name == "CubeBackward"
    np.testing.assert_allclose(host(y), host(x) ** 3, rtol=1e-12)
    g = rng.standard_normal(4)
    (y * 2.0).backward(ember.tensor(g))
    np.testing.assert_allclose(host(x.grad), 2 * 3 * host(x) ** 2 * g, rtol=1e-12)
    # in no_grad mode nothing is recorded
    with ember.no_grad():
        assert Cube.apply(x).grad_fn is None


def test_custom_function_needs_input_grad(rng):
    a = leaf(rng, 3, dtype=np.float64)
    b = ember.tensor(rng.standard_normal(3))
    out = ScaledMul.apply(a, b, 2.5)
    assert out.grad_fn.needs_input_grad == (True, False, False)
    out.sum().backward()
    np.testing.assert_allclose(host(a.grad), 2.5 * host(b), rtol=1e-12)
    assert b.grad is None


def test_gradcheck_passes_on_custom_functions(rng):
    x = ember.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(Cube.apply, (x,))
    a = ember.tensor(rng.standard_normal(4), requires_grad=True)
    b = ember.tensor(rng.standard_normal(4), requires_grad=True)
    assert gradcheck(lambda p, q: ScaledMul.apply(p, q, -1.5), (a, b))
    assert gradcheck(Cube.apply, (x,), fast_mode=True)


def test_gradcheck_catches_a_wrong_backward(rng):
    x = ember.tensor(rng.uniform(0.5, 1.5, (2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"Jacobian mismatch"):
        gradcheck(WrongCube.apply, (x,))
    assert gradcheck(WrongCube.apply, (x,), raise_exception=False) is False
    with pytest.raises(GradcheckError):
        gradcheck(WrongCube.apply, (x,), fast_mode=True)
    assert issubclass(GradcheckError, RuntimeError)


def test_gradcheck_input_rules(rng):
    with pytest.raises(TypeError, match=r"float64"):
        gradcheck(Cube.apply, (ember.randn(3, requires_grad=True),))
    with pytest.raises(ValueError, match=r"no input requires grad"):
        gradcheck(Cube.apply, (ember.randn(3, dtype=F64),))


def test_custom_function_output_must_match_input_shape():
    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return ember.ones(5)

    x = ember.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"BadShapeBackward.*shape"):
        BadShape.apply(x).backward()


# ---------------------------------------------------------------------------------------------
# multi-output ops
# ---------------------------------------------------------------------------------------------


def test_split_with_only_some_pieces_used(rng):
    x = leaf(rng, 7, 2)
    a, b, c, d = ember.split(x, 2)
    g = rng.standard_normal(b.shape).astype(np.float32)
    (b * ember.tensor(g)).sum().backward()
    expected = np.zeros((7, 2), np.float32)
    expected[2:4] = g
    np.testing.assert_array_equal(host(x.grad), expected)
    x.grad = None
    p, q, r = x.chunk(3)  # sizes 3, 3, 1
    (r.sum() + p[0].sum()).backward()
    expected = np.zeros((7, 2), np.float32)
    expected[6] = 1
    expected[0] = 1
    np.testing.assert_array_equal(host(x.grad), expected)
    x.grad = None
    rows = x.unbind(0)
    rows[4].sum().backward()
    assert host(x.grad)[4].tolist() == [1.0, 1.0] and host(x.grad).sum() == 2.0


def test_max_with_dim_values_and_indices(rng):
    a = np.array([[1.0, 5.0, -2.0], [7.0, 0.5, 3.0]], np.float32)
    x = ember.tensor(a, requires_grad=True)
    values, indices = x.max(1)
    assert indices.tolist() == [1, 0] and values.tolist() == [5.0, 7.0]
    values.backward(ember.tensor([2.0, -1.0]))
    np.testing.assert_array_equal(host(x.grad), [[0, 2, 0], [-1, 0, 0]])
    # indices alone: used to index, the gradient flows through the indexing
    x.grad = None
    _, idx = x.min(1)
    picked = x[ember.arange(2), idx]
    picked.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [[0, 0, 1], [0, 1, 0]])


def test_full_max_splits_ties_evenly():
    x = ember.tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(host(x.grad), [0.0, 0.5, 0.5, 0.0])


# ---------------------------------------------------------------------------------------------
# graph size, retain_grad, augmented assignment
# ---------------------------------------------------------------------------------------------


def test_deep_chain_has_no_recursion_limit():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x
    n = max(5000, 2 * sys.getrecursionlimit())
    for _ in range(n):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(host(x.grad), [1.0, 1.0])
    np.testing.assert_array_equal(host(y), [1.0 + n, 2.0 + n])
    z = x
    for _ in range(n):
        z = z * 1.0001
    del y
    z.sum().backward()
    np.testing.assert_allclose(host(x.grad), 1.0 + 1.0001**n, rtol=1e-3)
    del z  # freeing a deep graph must not overflow the stack either


def test_retain_grad_on_non_leaf(rng):
    x = leaf(rng, 3, dtype=np.float64)
    y = x * 2.0
    y.retain_grad()
    w = x * 3.0  # no retain_grad: no .grad
    (y * y + w).sum().backward()
    np.testing.assert_allclose(host(y.grad), 2 * host(y), rtol=1e-12)
    assert w.grad is None
    np.testing.assert_allclose(host(x.grad), 8 * host(x) + 3, rtol=1e-12)
    x.retain_grad()  # a no-op on a leaf
    assert x.grad is not None


def test_augmented_assignment_in_model_code(rng):
    """``h += b`` under grad mode computes out of place (leaves untouched) with right grads."""
    W = leaf(rng, 3, 4, dtype=np.float64)
    x = ember.tensor(rng.standard_normal((2, 3)))
    b = leaf(rng, 4, dtype=np.float64)
    W0, b0 = host(W).copy(), host(b).copy()
    h = x @ W
    h_before = h
    h += b
    h *= 2.0
    h -= 1.0
    loss = (h * h).sum()
    loss.backward()
    assert h is not h_before
    np.testing.assert_array_equal(host(W), W0)
    np.testing.assert_array_equal(host(b), b0)
    hv = 2 * (host(x) @ W0 + b0) - 1
    np.testing.assert_allclose(host(b.grad), (2 * hv * 2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(host(W.grad), host(x).T @ (2 * hv * 2), rtol=1e-12)
    # a leaf requiring grad: `a += 1` rebinds the name, the leaf itself keeps its value
    a = leaf(rng, 2, dtype=np.float64)
    a0 = host(a).copy()
    alias = a
    a += 1.0
    assert a is not alias and np.array_equal(host(alias), a0)
    # without autograd involved it is a true in-place op
    c = ember.zeros(2)
    c_id = id(c)
    c += 1.0
    assert id(c) == c_id and c.tolist() == [1.0, 1.0]


# ---- first accumulation into .grad: move a fresh gradient, copy a shared one -----------------
class _Fresh(ember.autograd.Function):
    """Backward returns a newly allocated array; remembers its address (not the array)."""

    addr = None
    keep = None

    @staticmethod
    def forward(ctx, x):
        return x._array * 2

    @staticmethod
    def backward(ctx, g):
        out = g._array * 2
        _Fresh.addr = out.ctypes.data
        if _Fresh.keep is not None:
            _Fresh.keep.append(out)  # someone else holds it: must be copied
        return out


def test_fresh_gradient_becomes_grad_without_copy():
    x = ember.ones(5, requires_grad=True)
    _Fresh.keep = None
    _Fresh.apply(x).sum().backward()
    assert x.grad._array.ctypes.data == _Fresh.addr
    np.testing.assert_array_equal(x.grad.numpy(), np.full(5, 2.0, np.float32))


def test_held_gradient_is_copied_into_grad():
    x = ember.ones(5, requires_grad=True)
    _Fresh.keep = []
    try:
        _Fresh.apply(x).sum().backward()
        kept = _Fresh.keep[0]
    finally:
        _Fresh.keep = None
    assert not np.shares_memory(x.grad._array, kept)
    x.grad._array += 1  # accumulating into .grad must not reach the array another holds
    np.testing.assert_array_equal(kept, np.full(5, 2.0, np.float32))


def test_shared_and_upstream_gradients_are_not_aliased():
    a, b = ember.ones(4, requires_grad=True), ember.ones(4, requires_grad=True)
    (a + b).backward(ember.ones(4))  # add hands the same array to both inputs
    assert not np.shares_memory(a.grad._array, b.grad._array)
    a.grad._array += 1
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(4, np.float32))
    up = np.full(4, 3.0, np.float32)
    c = ember.ones(4, requires_grad=True)
    c.reshape(2, 2).reshape(4).backward(ember.from_numpy(up))  # upstream passed through
    assert not np.shares_memory(c.grad._array, up)
    c.grad._array += 1
    np.testing.assert_array_equal(up, np.full(4, 3.0, np.float32))
