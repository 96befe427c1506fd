"""Element-wise arithmetic and math, with broadcasting and autograd.

Simple element-wise work leans on numpy/cupy (shared/DESIGN.md section 1); element-wise ops
with kernels of our own (relu) live in activation.py. Integer inputs of float-only math (exp,
log ...) are promoted to the default float dtype, as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from .. import _dtype as D
from ..autograd.function import Function
from ..tensor import Tensor
from ._common import (
    as_operand,
    broadcast_shape,
    cast,
    check_device,
    float_dtype_of,
    load_operands,
    result_type,
    save_operands,
    shape_of,
    unbroadcast,
)
from ._common import xp as xp_


def _prep(op, a, b, float_only=False):
    """Operands -> (operands, their arrays in the result dtype)."""
    a, b = as_operand(a, op), as_operand(b, op)
    check_device(op, a, b)
    broadcast_shape(op, shape_of(a), shape_of(b))
    dt = result_type(a, b)
    if float_only and not dt.is_floating_point:
        dt = D.get_default_dtype()
    return a, b, cast(a, dt), cast(b, dt)


def _grads(ctx, ga, gb):
    """Reduce each input's gradient back to its shape; None where no gradient is needed."""
    sa, sb = ctx.shapes
    return (
        unbroadcast(ga, sa) if ctx.needs_input_grad[0] else None,
        unbroadcast(gb, sb) if len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1] else None,
    )


class Add(Function):
    @staticmethod
    def forward(ctx, a, b, alpha=1):
        a, b, x, y = _prep("add", a, b)
        ctx.shapes, ctx.alpha = (shape_of(a), shape_of(b)), alpha
        return Tensor._wrap(x + y if alpha == 1 else x + alpha * y)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        return _grads(ctx, g, g if ctx.alpha == 1 else g * ctx.alpha)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b, alpha=1):
        a, b, x, y = _prep("sub", a, b)
        if getattr(x, "dtype", None) == np.bool_:
            raise TypeError("[sub] subtraction of bool tensors is not supported; use logical_xor")
        ctx.shapes, ctx.alpha = (shape_of(a), shape_of(b)), alpha
        return Tensor._wrap(x - y if alpha == 1 else x - alpha * y)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        return _grads(ctx, g, -g if ctx.alpha == 1 else -ctx.alpha * g)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b, x, y = _prep("mul", a, b)
        ctx.shapes = (shape_of(a), shape_of(b))
        save_operands(ctx, a, b)
        return Tensor._wrap(x * y)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        x, y = load_operands(ctx, g.dtype)
        return _grads(
            ctx,
            g * y if ctx.needs_input_grad[0] else None,
            g * x if ctx.needs_input_grad[1] else None,
        )


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b, x, y = _prep("div", a, b, float_only=True)  # true division: ints give floats
        ctx.shapes = (shape_of(a), shape_of(b))
        save_operands(ctx, a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return Tensor._wrap(x / y)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        x, y = load_operands(ctx, g.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = g / y if ctx.needs_input_grad[0] else None
            gb = -g * x / (y * y) if ctx.needs_input_grad[1] else None
        return _grads(ctx, ga, gb)


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b, x, y = _prep("pow", a, b)
        ctx.shapes = (shape_of(a), shape_of(b))
        save_operands(ctx, a, b)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return Tensor._wrap(x**y)

    @staticmethod
    def backward(ctx, g):
        g = g._array
        x, y = load_operands(ctx, g.dtype)
        xp = xp_of_any(g)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if ctx.needs_input_grad[0]:
                # d/dx x^y = y x^(y-1); PyTorch defines it as 0 where y == 0 (also at x == 0)
                ga = xp.where(y == 0, 0.0, g * y * x ** (y - 1)).astype(g.dtype, copy=False)
            if ctx.needs_input_grad[1]:
                # d/dy x^y = x^y log x; 0 where x == 0 and y >= 0 (the limit), as in PyTorch
                gb = xp.where((x == 0) & (y >= 0), 0.0, g * x**y * xp.log(x)).astype(
                    g.dtype, copy=False
                )
        return _grads(ctx, ga, gb)


def xp_of_any(a):
    from .._device import xp_of

    return xp_of(a)


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b, x, y = _prep("maximum", a, b)
        ctx.shapes = (shape_of(a), shape_of(b))
        save_operands(ctx, a, b)
        return Tensor._wrap(xp_of_any(x if hasattr(x, "shape") else y).maximum(x, y))

    @staticmethod
    def backward(ctx, g):
        return _minmax_grads(ctx, g._array, greater=True)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        a, b, x, y = _prep("minimum", a, b)
        ctx.shapes = (shape_of(a), shape_of(b))
        save_operands(ctx, a, b)
        return Tensor._wrap(xp_of_any(x if hasattr(x, "shape") else y).minimum(x, y))

    @staticmethod
    def backward(ctx, g):
        return _minmax_grads(ctx, g._array, greater=False)


def _minmax_grads(ctx, g, greater):
    """The winner gets the gradient; ties split it evenly, as PyTorch does."""
    x, y = load_operands(ctx, g.dtype)
    win_x = (x > y) if greater else (x < y)
    tie = x == y
    ga = g * (win_x + 0.5 * tie) if ctx.needs_input_grad[0] else None
    gb = g * (~win_x & ~tie) + g * (0.5 * tie) if ctx.needs_input_grad[1] else None
    return _grads(ctx, ga, gb)


# ----------------------------------------------------------------------------- unary math


class _Unary(Function):
    """One-input ops whose backward needs the input x and/or the output y."""

    float_only = True
    name = ""

    @classmethod
    def compute(cls, xp, x):
        raise NotImplementedError

    @classmethod
    def derivative(cls, xp, x, y, g):
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx, a):
        if not isinstance(a, Tensor):
            raise TypeError(f"[{cls.name}] expected a Tensor, got {type(a).__name__}")
        dt = float_dtype_of(a) if cls.float_only else a.dtype
        x = cast(a, dt)
        xp = xp_(a)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            try:
                y = cls.compute(xp, x)
            except TypeError as e:  # e.g. numpy refuses to negate a bool array
                raise TypeError(f"[{cls.name}] {e}") from None
        out = Tensor._wrap(y)
        ctx.save_for_backward(a, out)  # exp/tanh/sqrt/sigmoid derivatives reuse the output
        return out

    @classmethod
    def backward(cls, ctx, g):
        g = g._array
        a, out = ctx.saved_tensors
        x = a._array.astype(g.dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return cls.derivative(xp_of_any(g), x, out._array, g)


class Neg(_Unary):
    float_only, name = False, "neg"
    compute = classmethod(lambda cls, xp, x: -x)
    derivative = classmethod(lambda cls, xp, x, y, g: -g)


class Abs(_Unary):
    float_only, name = False, "abs"
    compute = classmethod(lambda cls, xp, x: xp.abs(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g * xp.sign(x))


class Exp(_Unary):
    name = "exp"
    compute = classmethod(lambda cls, xp, x: xp.exp(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g * y)


class Log(_Unary):
    name = "log"
    compute = classmethod(lambda cls, xp, x: xp.log(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g / x)


class Sqrt(_Unary):
    name = "sqrt"
    compute = classmethod(lambda cls, xp, x: xp.sqrt(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g / (2 * y))


class Sin(_Unary):
    name = "sin"
    compute = classmethod(lambda cls, xp, x: xp.sin(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g * xp.cos(x))


class Cos(_Unary):
    name = "cos"
    compute = classmethod(lambda cls, xp, x: xp.cos(x))
    derivative = classmethod(lambda cls, xp, x, y, g: -g * xp.sin(x))


class Tanh(_Unary):
    name = "tanh"
    compute = classmethod(lambda cls, xp, x: xp.tanh(x))
    derivative = classmethod(lambda cls, xp, x, y, g: g * (1 - y * y))


def _sigmoid(xp, x):
    # exp(-|x|) never overflows; both branches then keep full relative precision.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(_Unary):
    name = "sigmoid"
    compute = classmethod(lambda cls, xp, x: _sigmoid(xp, x))
    derivative = classmethod(lambda cls, xp, x, y, g: g * y * (1 - y))


class Clamp(Function):
    """min(max(x, min), max); the bounds may be scalars or tensors (broadcast, differentiable)."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):  # noqa: A002  PyTorch's argument names
        if min is None and max is None:
            raise ValueError("[clamp] at least one of min and max must be given")
        for v in (min, max):
            if isinstance(v, Tensor):
                check_device("clamp", a, v)
        broadcast_shape("clamp", a.shape, shape_of(min), shape_of(max))
        lo = min._array if isinstance(min, Tensor) else min
        hi = max._array if isinstance(max, Tensor) else max
        x = a._array
        xp = xp_(a)
        y = x
        if lo is not None:
            y = xp.where(x < lo, xp.asarray(lo, dtype=x.dtype), y)  # NaN stays NaN
        if hi is not None:
            y = xp.where(y > hi, xp.asarray(hi, dtype=x.dtype), y)
        ctx.save_for_backward(a, *(v if isinstance(v, Tensor) else None for v in (min, max)))
        ctx.consts = tuple(None if isinstance(v, Tensor) else v for v in (None, min, max))
        ctx.shapes = (a.shape, shape_of(min), shape_of(max))
        return Tensor._wrap(y.astype(x.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        g = g._array
        xp = xp_of_any(g)
        (a, tlo, thi) = ctx.saved_tensors
        x = a._array
        lo = tlo._array if tlo is not None else ctx.consts[1]
        hi = thi._array if thi is not None else ctx.consts[2]
        # which operand the output came from (PyTorch's rules, also when min > max: max wins);
        # NaN inputs: every comparison is False, so no gradient flows (as in PyTorch)
        if lo is not None and hi is not None:
            from_x = (x >= lo) & (x <= hi)
            from_lo = (x < lo) & (lo < hi)
            from_hi = (x > hi) | (hi < lo)
        elif lo is not None:
            from_x, from_lo, from_hi = x >= lo, x < lo, None
        else:
            from_x, from_lo, from_hi = x <= hi, None, x > hi
        zero = xp.zeros((), g.dtype)
        sx, slo, shi = ctx.shapes
        need = ctx.needs_input_grad
        gx = unbroadcast(xp.where(from_x, g, zero), sx) if need[0] else None
        glo = unbroadcast(xp.where(from_lo, g, zero), slo) if len(need) > 1 and need[1] else None
        ghi = unbroadcast(xp.where(from_hi, g, zero), shi) if len(need) > 2 and need[2] else None
        return gx, glo, ghi


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        a, b = as_operand(a, "where"), as_operand(b, "where")
        check_device("where", cond, a, b)
        shape = broadcast_shape("where", cond.shape, shape_of(a), shape_of(b))
        dt = result_type(a, b)
        c = cond._array
        if c.dtype != np.bool_:
            raise TypeError(f"[where] condition must be a bool tensor, got {cond.dtype}")
        xp = xp_(cond)
        ctx.shapes, ctx.c = (shape_of(a), shape_of(b)), c
        out = xp.where(c, cast(a, dt), cast(b, dt))  # already of the broadcast shape
        if out.shape != shape:  # pragma: no cover - where() broadcasts all three operands
            out = xp.broadcast_to(out, shape).copy()
        # a writeable array of its own (a broadcast_to view would be read-only)
        return Tensor._wrap(out.astype(D.np_dtype(dt), copy=False))

    @staticmethod
    def backward(ctx, g):
        g = g._array
        xp = xp_of_any(g)
        zero = xp.zeros((), g.dtype)
        sa, sb = ctx.shapes
        ga = unbroadcast(xp.where(ctx.c, g, zero), sa) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(xp.where(ctx.c, zero, g), sb) if ctx.needs_input_grad[2] else None
        return None, ga, gb


# ------------------------------------------------------------------ functional entry points


def add(input, other, *, alpha=1):
    return Add.apply(input, other, alpha)


def sub(input, other, *, alpha=1):
    return Sub.apply(input, other, alpha)


def mul(input, other):
    return Mul.apply(input, other)


def div(input, other, *, rounding_mode=None):
    if rounding_mode is None:
        return Div.apply(input, other)
    if rounding_mode == "floor":
        return _nograd("div", input, other, lambda xp, x, y: xp.floor_divide(x, y))
    if rounding_mode == "trunc":
        return _nograd(
            "div",
            input,
            other,
            lambda xp, x, y: xp.trunc(x / y).astype(
                result_type(as_operand(input, "div"), as_operand(other, "div")).np_dtype
            ),
        )
    raise ValueError(f"[div] rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")


true_divide = divide = div
multiply = mul
subtract = sub


def pow(input, exponent):  # noqa: A001
    return Pow.apply(input, exponent)


def maximum(input, other):
    return Maximum.apply(input, other)


def minimum(input, other):
    return Minimum.apply(input, other)


def neg(input):
    return Neg.apply(input)


negative = neg


def abs(input):  # noqa: A001
    return Abs.apply(input)


def exp(input):
    return Exp.apply(input)


def log(input):
    return Log.apply(input)


def sqrt(input):
    return Sqrt.apply(input)


def sin(input):
    return Sin.apply(input)


def cos(input):
    return Cos.apply(input)


def tanh(input):
    return Tanh.apply(input)


def sigmoid(input):
    return Sigmoid.apply(input)


def clamp(input, min=None, max=None):  # noqa: A002
    return Clamp.apply(input, min, max)


clip = clamp


def where(condition, input=None, other=None):
    """``where(cond, a, b)``; ``where(cond)`` alone returns the indices of True (no grad)."""
    if input is None and other is None:
        return tuple(
            Tensor._wrap(i.astype(np.int64)) for i in xp_(condition).nonzero(condition._array)
        )
    return Where.apply(condition, input, other)


# ------------------------------------------------------- non-differentiable element-wise ops


def _nograd(op, a, b, fn):
    a, b, x, y = _prep(op, a, b)
    xp = xp_of_any(x if hasattr(x, "shape") else y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return Tensor._wrap(xp.asarray(fn(xp, x, y)))


def _compare(op, ufunc_name):
    def f(input, other):
        return _nograd(op, input, other, lambda xp, x, y: getattr(xp, ufunc_name)(x, y))

    f.__name__ = op
    f.__doc__ = f"Element-wise ``{op}`` (a bool tensor, no gradient)."
    return f


eq = _compare("eq", "equal")
ne = _compare("ne", "not_equal")
lt = _compare("lt", "less")
le = _compare("le", "less_equal")
gt = _compare("gt", "greater")
ge = _compare("ge", "greater_equal")
less, less_equal, greater, greater_equal, not_equal = lt, le, gt, ge, ne


def _logical(op, ufunc_name, bool_only=False):
    def f(input, other):
        a, b = as_operand(input, op), as_operand(other, op)
        for t in (a, b):
            if isinstance(t, Tensor) and t.dtype.is_floating_point:
                raise TypeError(f"[{op}] not defined for floating tensors ({t.dtype})")
        return _nograd(op, a, b, lambda xp, x, y: getattr(xp, ufunc_name)(x, y))

    f.__name__ = op
    return f


bitwise_and = _logical("bitwise_and", "bitwise_and")
bitwise_or = _logical("bitwise_or", "bitwise_or")
bitwise_xor = _logical("bitwise_xor", "bitwise_xor")


def logical_and(input, other):
    return _nograd("logical_and", input, other, lambda xp, x, y: xp.logical_and(x, y))


def logical_or(input, other):
    return _nograd("logical_or", input, other, lambda xp, x, y: xp.logical_or(x, y))


def logical_xor(input, other):
    return _nograd("logical_xor", input, other, lambda xp, x, y: xp.logical_xor(x, y))


def logical_not(input):
    return Tensor._wrap(xp_(input).logical_not(input._array))


def bitwise_not(input):
    if input.dtype.is_floating_point:
        raise TypeError(f"[bitwise_not] not defined for floating tensors ({input.dtype})")
    return Tensor._wrap(xp_(input).invert(input._array))


def floor_divide(input, other):
    return _nograd("floor_divide", input, other, lambda xp, x, y: xp.floor_divide(x, y))


def remainder(input, other):
    return _nograd("remainder", input, other, lambda xp, x, y: xp.remainder(x, y))


fmod = remainder


def _unary_nograd(name, fn):
    def f(input):
        return Tensor._wrap(xp_(input).asarray(fn(xp_(input), input._array)))

    f.__name__ = name
    f.__doc__ = (
        f"Element-wise ``{name}`` (not differentiable: its gradient is zero almost everywhere)."
    )
    return f


floor = _unary_nograd("floor", lambda xp, x: xp.floor(x))
ceil = _unary_nograd("ceil", lambda xp, x: xp.ceil(x))
round = _unary_nograd("round", lambda xp, x: xp.round(x))  # noqa: A001
trunc = _unary_nograd("trunc", lambda xp, x: xp.trunc(x))
sign = _unary_nograd("sign", lambda xp, x: xp.sign(x))
isnan = _unary_nograd("isnan", lambda xp, x: xp.isnan(x))
isinf = _unary_nograd("isinf", lambda xp, x: xp.isinf(x))
isfinite = _unary_nograd("isfinite", lambda xp, x: xp.isfinite(x))


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return bool(
        xp_(input).allclose(
            input._array,
            as_operand(other, "allclose")._array,
            rtol=rtol,
            atol=atol,
            equal_nan=equal_nan,
        )
    )


def equal(input, other) -> bool:
    return input.shape == other.shape and bool((input._array == other._array).all())
