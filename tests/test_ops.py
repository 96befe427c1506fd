"""Every op against the float64 numpy reference (tests/reference.py), driven by ONE table.

Each ``OpCase`` row names an op, its ember call, its reference forward and VJP, the input
shapes to try (regular and edge: size-1 dims, zero-size inputs, lengths that are not
multiples of the AVX2 width), how its inputs are drawn, which tolerance applies, and the
error inputs it must reject. The tests below run every row:

* forward in float32 against the reference (element-wise: ~1e-6 relative; reductions and
  matmul: at most 2x the error of a plain float32 numpy computation) and in float64;
* backward with a random upstream gradient against the reference VJP;
* ``ember.autograd.gradcheck`` in float64 (differentiable rows);
* non-contiguous inputs (transposed, strided and reversed views);
* error inputs (exception type and message).

Kernel-backed rows (relu, matmul and its wrappers) run under both CPU paths (scalar and
AVX2). numpy's ``empty`` is poisoned with NaN for every test here (see conftest.py), so an
output element a kernel fails to write shows up as a NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest

import ember
import reference as R
from reference import assert_elementwise, assert_exact, assert_reduction, assert_shape_dtype

pytestmark = pytest.mark.usefixtures("poison")

# ---------------------------------------------------------------------------------------------
# input generators: fresh random data with negatives and outliers, never zeros or ones
# ---------------------------------------------------------------------------------------------


def _outliers(rng, x, factor):
    if x.size >= 4:
        idx = rng.choice(x.size, size=max(1, x.size // 12), replace=False)
        x.reshape(-1)[idx] *= factor
    return x


def normal(rng, shape, factor=30.0):
    """Standard normal with a few outliers (x30)."""
    return _outliers(rng, rng.standard_normal(shape), factor)


def tame(rng, shape):
    """Moderate values (|x| up to ~20) for exp and friends, where float32 must not overflow."""
    return _outliers(rng, 2.0 * rng.standard_normal(shape), 4.0)


def positive(rng, shape):
    """Strictly positive, spanning small and large values (log, sqrt)."""
    return _outliers(rng, np.abs(rng.standard_normal(shape)) + 0.05, 30.0)


def nonzero(rng, shape):
    """Both signs, bounded away from zero (denominators)."""
    x = rng.standard_normal(shape)
    return _outliers(rng, np.sign(x) * (np.abs(x) + 0.5), 10.0)


def base(rng, shape):
    """Positive bases for pow with a tensor exponent."""
    return _outliers(rng, rng.uniform(0.3, 3.0, shape), 8.0)


def exponent(rng, shape):
    return rng.uniform(-2.5, 2.5, shape)


def away_from(*kinks, gap=0.05):
    """Normal data with no value within ``gap`` of a kink (abs/relu at 0, clamp's bounds),
    so finite differences never straddle one."""

    def gen(rng, shape):
        x = normal(rng, shape)
        for k in kinks:
            near = np.abs(x - k) < gap
            x = np.where(near, k + np.where(x >= k, 2 * gap, -2 * gap), x)
        return x

    return gen


def distinct(rng, shape):
    """All values distinct by a margin (no ties for max/min/argmax); negatives and outliers."""
    n = math.prod(shape)
    x = (rng.permutation(n) - n / 2.0) * 0.3 + rng.uniform(0.0, 0.1, n)
    if n >= 4:
        x[np.argmax(x)] *= 30.0
        x[np.argmin(x)] *= 30.0
    return x.reshape(shape)


def factors(rng, shape):
    """Magnitudes around 1 with both signs (prod): products stay in float32 range."""
    x = rng.uniform(0.6, 1.6, shape) * rng.choice([-1.0, 1.0], shape)
    return _outliers(rng, x, 3.0)


def dyadic(rng, shape):
    """Multiples of 2^-10 in (-2, 2): exact in float16; so is x +- 2^-6, which lets
    gradcheck difference a cast to a lower precision without rounding."""
    return np.round(rng.uniform(-1.9, 1.9, shape) * 1024) / 1024


def each(gen):
    """One generator per input shape."""
    return lambda rng, shapes: [gen(rng, s) for s in shapes]


NORMAL = each(normal)


def per_input(*gens):
    return lambda rng, shapes: [g(rng, s) for g, s in zip(gens, shapes, strict=True)]


def untied(rng, shapes):
    """Two inputs whose broadcast pairs differ by at least 0.05 (maximum/minimum)."""
    for _ in range(1000):
        x, y = normal(rng, shapes[0]), normal(rng, shapes[1])
        if x.size == 0 or y.size == 0 or np.min(np.abs(np.subtract(x, y))) > 0.05:
            return [x, y]
    raise AssertionError("could not draw untied inputs")


def cond_and_two(rng, shapes):
    """where(cond, x, y): a random bool condition with both values present, two float inputs."""
    c = rng.random(shapes[0]) < 0.5
    if c.size >= 2:
        c.reshape(-1)[:2] = [True, False]
    return [c, normal(rng, shapes[1]), normal(rng, shapes[2])]


def clamp_bounds(rng, shapes):
    """x of the full shape, tensor bounds lo < hi (broadcast), x at least 0.05 from both."""
    lo = LO + rng.uniform(-0.2, 0.2, shapes[1])
    hi = HI + rng.uniform(-0.2, 0.2, shapes[2])
    x = normal(rng, shapes[0])
    for b in (lo, hi):
        d = x - b
        assert d.shape == x.shape or d.size == 0, "x must have the broadcast shape"
        if d.size:
            x = np.where(np.abs(d) < 0.05, x + np.where(d >= 0, 0.1, -0.1), x)
    return [x, lo, hi]


def with_mask(rng, shapes):
    x = normal(rng, shapes[0])
    m = rng.random(shapes[0]) < 0.5
    if m.size >= 2:
        m.reshape(-1)[:2] = [True, False]
    return [x, m]


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Err:
    """``call()`` must raise ``exc`` with a message matching ``match``."""

    id: str
    call: Callable[[], object]
    exc: type
    match: str


@dataclasses.dataclass(frozen=True)
class OpCase:
    name: str
    fn: Callable  # ember: (*tensors) -> Tensor or tuple of Tensors
    ref: Callable  # numpy: (*arrays) -> array or tuple of arrays
    vjp: Callable | None  # numpy: (g, *arrays) -> one gradient (or None) per array input
    shapes: tuple  # input-shape sets (one shape per input)
    edge: tuple = ()  # size-1 dims, zero-size inputs, odd lengths
    make: Callable = NORMAL  # (rng, shapes) -> float64 (differentiable) / bool / int arrays
    fwd: str = "elementwise"  # tolerance: "elementwise", "reduction" or "exact"
    bwd: str = "elementwise"
    kernel: bool = False  # one of our CPU kernels: run under both CPU paths
    grad_shapes: tuple | None = None  # small shapes for gradcheck (default: shapes[0])
    errors: tuple = ()
    gradcheck_eps: float = 1e-6
    out_dtype: Callable | None = None  # float output dtype from the input dtype (default: same)
    view_shape: Callable | None = None  # view(): input shape -> target; raises unless viewable

    @property
    def differentiable(self) -> bool:
        return self.vjp is not None


def T(*shape, dtype=None, **kw):
    """A random tensor for error cases."""
    return (
        ember.randn(*shape, dtype=dtype, **kw)
        if dtype in (None, ember.float32, ember.float64)
        else ember.randint(-5, 5, shape, dtype=dtype)
    )


def E(id, exc, match, call):  # noqa: A002
    return Err(id, call, exc, match)


def S(*sets):
    """Input-shape sets written compactly: ``S("3x4,4", "0d,0d")`` is
    ``(((3, 4), (4,)), ((), ()))``; inputs are separated by commas, dims by "x", "0d" is 0-d."""
    return tuple(
        tuple(() if s == "0d" else tuple(int(n) for n in s.split("x")) for s in spec.split(","))
        for spec in sets
    )


def _binary_errors(op, fn):
    return (
        E("shapes", ValueError, rf"\[{op}\].*broadcast", lambda: fn(T(3, 4), T(3))),
        E("operand type", TypeError, rf"\[{op}\]", lambda: fn(T(3), "x")),
    )


def _unary_errors(op, fn):
    return (E("not a tensor", TypeError, rf"\[{op}\]", lambda: fn([1.0, 2.0])),)


def _dim_error(op, fn):
    msg = rf"\[{op}\] dimension out of range"
    return E("dim out of range", IndexError, msg, lambda: fn(T(3, 4), 2))


def _float_only_error(op, fn):
    msg = rf"\[{op}\].*floating"
    return E("integer input", TypeError, msg, lambda: fn(T(3, 4, dtype=ember.int64)))


BINARY_SHAPES = S(
    "3x4,3x4",
    "3x4,4",  # right operand broadcast
    "4,2x3x4",  # left operand broadcast
    "2x1x4,3x1",  # both broadcast
    "3x4,0d",  # 0-d tensor operand
    "0d,0d",
)
BINARY_EDGE = S(
    "1x1,1",
    "0x4,4",
    "3x1,1x0",  # broadcast against a zero-size operand: (3, 1) gets zero gradients
    "0,0d",
    "5x17,17",
)
UNARY_SHAPES = S("3x4", "2x3x5", "37", "0d")
UNARY_EDGE = S("1x1", "0x3", "4x0x2", "1")

LO, HI = -0.5, 0.8
EX, RED = "exact", "reduction"


def _binary(name, fn, ref, vjp, make=NORMAL, **kw):
    errors = _binary_errors(name, getattr(ember, name))
    return OpCase(name, fn, ref, vjp, BINARY_SHAPES, BINARY_EDGE, make=make, errors=errors, **kw)


def _unary(name, fn, ref, vjp, gen=normal, **kw):
    kw.setdefault("errors", _unary_errors(name, getattr(ember, name)))
    return OpCase(name, fn, ref, vjp, UNARY_SHAPES, UNARY_EDGE, make=each(gen), **kw)


def _scalar(name, fn, ref, vjp, gen=normal):
    return OpCase(name, fn, ref, vjp, S("3x4", "0d"), S("0x2"), make=each(gen))


def _reduction(name, fn, ref, vjp, shapes, edge=(), gen=normal, **kw):
    kw.setdefault("fwd", RED)
    kw.setdefault("bwd", RED)
    return OpCase(name, fn, ref, vjp, shapes, edge, make=each(gen), **kw)


def _extreme(name, fn, ref, vjp, shapes, edge=(), **kw):
    """max/min/argmax/argmin: exact values and indices on inputs without ties."""
    return _reduction(name, fn, ref, vjp, shapes, edge, gen=distinct, fwd=EX, bwd=EX, **kw)


def _matmul(name, fn, shapes, edge=(), ref=R.matmul, vjp=R.matmul_vjp, **kw):
    return OpCase(name, fn, ref, vjp, shapes, edge, fwd=RED, bwd=RED, kernel=True, **kw)


def _shape_op(name, fn, ref, vjp, shapes, edge=(), bwd=EX, **kw):
    return OpCase(name, fn, ref, vjp, shapes, edge, fwd=EX, bwd=bwd, **kw)


def _matmul_errors(op, fn):
    return (
        E("inner dims", ValueError, rf"\[{op}\]", lambda: fn(T(2, 3), T(4, 5))),
        E("dtype", TypeError, rf"\[{op}\]", lambda: fn(T(2, 3), 1.5)),
    )


def _view_shape(shape):
    return (shape[0], 1, -1)


def _lists(fn):
    return lambda *xs: fn(list(xs))


def _getitem(name, idx, shapes, edge=(), bwd=EX):
    return _shape_op(
        name,
        lambda x: x[idx],
        lambda x: R.getitem(x, idx),
        lambda g, x: R.getitem_vjp(g, x, idx),
        shapes,
        edge,
        bwd=bwd,
    )


IDX_BASIC = (slice(1, None), slice(None, None, 2))
IDX_INT_SLICE = (-1, slice(1, 3))
IDX_NONE_ELLIPSIS = (None, Ellipsis, 1)
IDX_ROWS_REPEATED = [0, 2, 0, 1, 2, 2]
IDX_PAIRED = (np.array([0, 1, 0, 2]), np.array([3, 3, 3, 0]))
IDX_MIXED = (slice(None), [3, 0, 3], slice(1, None))
IDX_NEG = np.array([2, 0, 2, -1])

# fmt: off
CASES = [
    # --- element-wise binary (broadcasting) ---------------------------------------------------
    _binary("add", ember.add, R.add, R.add_vjp),
    dataclasses.replace(
        _binary("sub", ember.sub, R.sub, R.sub_vjp),
        errors=_binary_errors("sub", ember.sub) + (
            E("bool operands", TypeError, r"\[sub\].*bool",
              lambda: ember.sub(ember.tensor([True]), ember.tensor([False]))),)),
    _binary("mul", ember.mul, R.mul, R.mul_vjp),
    _binary("div", ember.div, R.div, R.div_vjp, make=per_input(normal, nonzero)),
    _binary("pow", ember.pow, R.pow, R.pow_vjp, make=per_input(base, exponent)),
    _binary("maximum", ember.maximum, R.maximum, R.maximum_vjp, make=untied),
    _binary("minimum", ember.minimum, R.minimum, R.minimum_vjp, make=untied),
    OpCase("where", ember.where, R.where, R.where_vjp,
           S("3x4,3x4,3x4", "3x1,1x4,4", "3x4,0d,4", "2x3,2x3,0d"),
           S("1,1,1", "0x4,4,1x4", "3x1,1x0,3x1"), make=cond_and_two,
           errors=(E("condition dtype", TypeError, r"\[where\].*bool",
                     lambda: ember.where(T(3), T(3), T(3))),
                   E("shapes", ValueError, r"\[where\]",
                     lambda: ember.where(ember.ones(3, dtype=ember.bool), T(2), T(3))))),
    # operators with a Python scalar on either side
    _scalar("add_scalar", lambda x: x + 2.5, lambda x: x + 2.5, lambda g, x: (g,)),
    _scalar("rsub_scalar", lambda x: 2.5 - x, lambda x: 2.5 - x, lambda g, x: (-g,)),
    _scalar("mul_scalar", lambda x: -1.75 * x, lambda x: -1.75 * x, lambda g, x: (-1.75 * g,)),
    _scalar("div_scalar", lambda x: x / -1.7, lambda x: x / -1.7, lambda g, x: (g / -1.7,)),
    _scalar("rdiv_scalar", lambda x: 1.5 / x, lambda x: 1.5 / x,
            lambda g, x: R.div_vjp(g, 1.5, x)[1:], gen=nonzero),
    _scalar("pow_int", lambda x: x ** 3, lambda x: x ** 3, lambda g, x: R.pow_vjp(g, x, 3)[:1]),
    _scalar("pow_float", lambda x: ember.pow(x, 2.5), lambda x: R.pow(x, 2.5),
            lambda g, x: R.pow_vjp(g, x, 2.5)[:1], gen=positive),
    _scalar("pow_negative", lambda x: x ** -1.5, lambda x: R.pow(x, -1.5),
            lambda g, x: R.pow_vjp(g, x, -1.5)[:1], gen=positive),
    _scalar("rpow_scalar", lambda x: 2.0 ** x, lambda x: R.pow(2.0, x),
            lambda g, x: R.pow_vjp(g, 2.0, x)[1:], gen=tame),
    # --- element-wise unary ------------------------------------------------------------------
    _unary("neg", ember.neg, R.neg, R.neg_vjp,
           errors=_unary_errors("neg", ember.neg) + (
               E("bool", TypeError, r"\[neg\]", lambda: -ember.tensor([True, False])),)),
    _unary("abs", ember.abs, R.abs, R.abs_vjp, gen=away_from(0.0)),
    _unary("exp", ember.exp, R.exp, R.exp_vjp, gen=tame),
    _unary("log", ember.log, R.log, R.log_vjp, gen=positive),
    _unary("sqrt", ember.sqrt, R.sqrt, R.sqrt_vjp, gen=positive),
    _unary("sin", ember.sin, R.sin, R.sin_vjp),
    _unary("cos", ember.cos, R.cos, R.cos_vjp),
    _unary("tanh", ember.tanh, R.tanh, R.tanh_vjp, gen=tame),
    _unary("sigmoid", ember.sigmoid, R.sigmoid, R.sigmoid_vjp),
    OpCase("relu", ember.relu, R.relu, R.relu_vjp,
           S("7", "9", "8", "3x17", "2x33x5", "1003"), S("1", "0", "0x5", "0d", "1x1"),
           make=each(away_from(0.0)), kernel=True, grad_shapes=((2, 9),),
           errors=_unary_errors("relu", ember.relu)),
    _unary("clamp", lambda x: ember.clamp(x, LO, HI), lambda x: R.clamp(x, LO, HI),
           lambda g, x: R.clamp_vjp(g, x, LO, HI), gen=away_from(LO, HI),
           errors=(E("no bounds", ValueError, r"\[clamp\]", lambda: ember.clamp(T(3))),)),
    OpCase("clamp_tensor_bounds", ember.clamp, R.clamp, R.clamp_tensor_vjp,
           S("3x4,4,3x1", "5,0d,5", "2x3,2x3,2x3"), S("0x4,4,1", "3x1,1x0,1"), make=clamp_bounds,
           errors=(E("shapes", ValueError, r"\[clamp\]", lambda: ember.clamp(T(3), T(2), None)),)),
    _scalar("clamp_min", lambda x: x.clamp(min=LO), lambda x: R.clamp(x, LO),
            lambda g, x: R.clamp_vjp(g, x, LO), gen=away_from(LO)),
    _scalar("clamp_max", lambda x: ember.clamp(x, max=HI), lambda x: R.clamp(x, None, HI),
            lambda g, x: R.clamp_vjp(g, x, None, HI), gen=away_from(HI)),
    # --- reductions ----------------------------------------------------------------------------
    _reduction("sum", lambda x: x.sum(), R.sum, R.sum_vjp,
               S("3x4", "2x3x5", "1000", "0d"), S("0", "0x3", "1x1"),
               errors=(_dim_error("sum", ember.sum),)),
    _reduction("sum_dim", lambda x: ember.sum(x, 1), lambda x: R.sum(x, 1),
               lambda g, x: R.sum_vjp(g, x, 1), S("3x4", "2x3x5", "2x300"), S("0x3", "3x0", "3x1")),
    _reduction("sum_dims_keepdim", lambda x: x.sum((0, -1), keepdim=True),
               lambda x: R.sum(x, (0, -1), True), lambda g, x: R.sum_vjp(g, x, (0, -1), True),
               S("3x4", "2x3x5"), S("0x2x1")),
    _reduction("mean", ember.mean, R.mean, R.mean_vjp, S("3x4", "2x3x5", "1000"), S("1", "1x1"),
               errors=(_float_only_error("mean", ember.mean), _dim_error("mean", ember.mean))),
    _reduction("mean_dim", lambda x: x.mean(-1), lambda x: R.mean(x, -1),
               lambda g, x: R.mean_vjp(g, x, -1), S("3x4", "2x3x5"), S("0x3", "3x1")),
    _reduction("mean_dims_keepdim", lambda x: ember.mean(x, (0, 2), keepdim=True),
               lambda x: R.mean(x, (0, 2), True), lambda g, x: R.mean_vjp(g, x, (0, 2), True),
               S("2x3x5"), S("1x0x2")),
    _reduction("var", lambda x: x.var(), R.var, R.var_vjp, S("3x4", "2x3x5", "500"), S("2", "1x2"),
               errors=(_float_only_error("var", ember.var), _dim_error("var", ember.var))),
    _reduction("var_dim_c0", lambda x: ember.var(x, 1, correction=0), lambda x: R.var(x, 1, 0),
               lambda g, x: R.var_vjp(g, x, 1, 0), S("3x4", "2x3x5"), S("0x4", "3x1")),
    _reduction("var_dims_keepdim", lambda x: ember.var(x, (0, 1), keepdim=True),
               lambda x: R.var(x, (0, 1), 1, True), lambda g, x: R.var_vjp(g, x, (0, 1), 1, True),
               S("2x3x5")),
    _reduction("var_offset", lambda x: (x + 1000.0).var(1), lambda x: R.var(x + 1000.0, 1),
               lambda g, x: R.var_vjp(g, x + 1000.0, 1), S("4x64"), grad_shapes=((2, 5),)),
    _reduction("std", lambda x: x.std(), R.std, R.std_vjp, S("3x4", "2x3x5"), S("2"),
               errors=(_float_only_error("std", ember.std),)),
    _reduction("std_dim_c0", lambda x: x.std(0, correction=0), lambda x: R.std(x, 0, 0),
               lambda g, x: R.std_vjp(g, x, 0, 0), S("3x4", "5x3x2"), S("1x4", "3x0")),
    _reduction("std_dim_c1_keepdim", lambda x: ember.std(x, -1, keepdim=True),
               lambda x: R.std(x, -1, 1, True), lambda g, x: R.std_vjp(g, x, -1, 1, True),
               S("3x4")),
    _extreme("max", lambda x: x.max(), R.max, R.max_vjp, S("3x4", "2x3x5", "1"),
             errors=(E("empty", ValueError, r"\[max\]", lambda: ember.max(T(0, 3))),)),
    _extreme("min", ember.min, R.min, R.min_vjp, S("3x4", "2x3x5")),
    _extreme("max_dim", lambda x: ember.max(x, 1), lambda x: R.max(x, 1),
             lambda g, x: R.max_vjp(g, x, 1), S("3x4", "2x3x5"), S("3x1", "0x4", "1x17"),
             errors=(_dim_error("max", ember.max),
                     E("zero-size dim", ValueError, r"\[max\]", lambda: ember.max(T(3, 0), 1)))),
    _extreme("max_dim_keepdim", lambda x: x.max(0, keepdim=True), lambda x: R.max(x, 0, True),
             lambda g, x: R.max_vjp(g, x, 0, True), S("3x4", "2x3x5")),
    _extreme("min_dim", lambda x: ember.min(x, -1), lambda x: R.min(x, -1),
             lambda g, x: R.min_vjp(g, x, -1), S("3x4", "2x3x5"), S("3x1", "0x4"),
             errors=(_dim_error("min", ember.min),)),
    _extreme("argmax", ember.argmax, R.argmax, None, S("3x4", "2x3x5"), S("1"),
             errors=(E("empty", ValueError, r"\[argmax\]", lambda: ember.argmax(T(0))),
                     _dim_error("argmax", ember.argmax))),
    _extreme("argmax_dim_keepdim", lambda x: x.argmax(1, keepdim=True),
             lambda x: R.argmax(x, 1, True), None, S("3x4", "2x3x5"), S("0x4")),
    _extreme("argmin", ember.argmin, R.argmin, None, S("3x4"),
             errors=(_dim_error("argmin", ember.argmin),)),
    _extreme("argmin_dim", lambda x: x.argmin(0), lambda x: R.argmin(x, 0), None,
             S("3x4", "2x3x5"), S("1x4")),
    _reduction("logsumexp", lambda x: ember.logsumexp(x, 1), lambda x: R.logsumexp(x, 1),
               lambda g, x: R.logsumexp_vjp(g, x, 1), S("3x4", "2x3x5", "2x257"), S("3x1", "0x4"),
               errors=(_float_only_error("logsumexp", lambda x: ember.logsumexp(x, 0)),
                       _dim_error("logsumexp", ember.logsumexp))),
    _reduction("logsumexp_dims_keepdim", lambda x: x.logsumexp((0, 2), keepdim=True),
               lambda x: R.logsumexp(x, (0, 2), True),
               lambda g, x: R.logsumexp_vjp(g, x, (0, 2), True), S("2x3x5")),
    _reduction("prod", lambda x: x.prod(), R.prod, R.prod_vjp, S("3x4", "2x3x2"), S("1"),
               gen=factors, errors=(_dim_error("prod", ember.prod),)),
    _reduction("prod_dim", lambda x: ember.prod(x, 1), lambda x: R.prod(x, 1),
               lambda g, x: R.prod_vjp(g, x, 1), S("3x4", "2x3x5"), S("3x1", "0x4", "2x0"),
               gen=factors),
    _reduction("norm", lambda x: x.norm(), R.norm, R.norm_vjp, S("3x4", "2x3x5", "1000"), S("1"),
               errors=(_float_only_error("norm", ember.norm),
                       E("bad p", ValueError, r"\[norm\]", lambda: ember.norm(T(3), p=-1)))),
    _reduction("norm_dim", lambda x: ember.norm(x, dim=1), lambda x: R.norm(x, 2, 1),
               lambda g, x: R.norm_vjp(g, x, 2, 1), S("3x4", "2x3x5"), S("3x1", "0x4")),
    _reduction("norm_p1_dim", lambda x: ember.norm(x, p=1, dim=0), lambda x: R.norm(x, 1, 0),
               lambda g, x: R.norm_vjp(g, x, 1, 0), S("3x4"), gen=away_from(0.0)),
    _reduction("norm_p3_keepdim", lambda x: ember.norm(x, p=3, dim=-1, keepdim=True),
               lambda x: R.norm(x, 3, -1, True), lambda g, x: R.norm_vjp(g, x, 3, -1, True),
               S("3x4", "2x3x5"), gen=away_from(0.0)),
    # --- matmul (our GEMM kernel) ----------------------------------------------------------------
    _matmul("matmul", ember.matmul,
            S("7x9,9x13", "1x17,17x33", "16x8,8x24", "65x33,33x9", "2x3x5,2x5x7",
              "4x1x3x5,2x5x6", "2x3x5,5x4", "5,5", "5,5x3", "3x5,5", "2x3x5,5", "5,2x5x3"),
            S("1x1,1x1", "0x3,3x4", "3x0,0x4", "2x0x3,3x4", "3x4,4x0", "0,0"),
            grad_shapes=((2, 3), (3, 4)),
            errors=_matmul_errors("matmul", ember.matmul) + (
                E("batch dims", ValueError, r"\[matmul\]",
                  lambda: ember.matmul(T(2, 3, 4), T(3, 4, 5))),
                E("0-d", ValueError, r"\[matmul\]", lambda: ember.matmul(T(), T(3))))),
    _matmul("matmul_operator", lambda a, b: a @ b, S("9x7,7x3", "3x2x9,9x1"), S("0x3,3x2"),
            grad_shapes=((2, 3), (3, 2))),
    _matmul("mm", ember.mm, S("7x9,9x13", "1x1,1x30"), S("0x2,2x3"), grad_shapes=((3, 2), (2, 4)),
            errors=(E("3-D", ValueError, r"\[mm\]", lambda: ember.mm(T(2, 3, 4), T(4, 5))),)),
    _matmul("bmm", ember.bmm, S("3x7x9,3x9x5"), S("0x2x3,0x3x4"),
            grad_shapes=((2, 2, 3), (2, 3, 2)),
            errors=(E("batch", ValueError, r"\[bmm\]", lambda: ember.bmm(T(2, 3, 4), T(3, 4, 5))),
                    E("2-D", ValueError, r"\[bmm\]", lambda: ember.bmm(T(3, 4), T(4, 5))))),
    _matmul("dot", ember.dot, S("17,17", "1,1"), S("0,0"),
            errors=(E("2-D", ValueError, r"\[dot\]", lambda: ember.dot(T(3, 4), T(4))),)),
    _matmul("mv", ember.mv, S("9x7,7"), S("0x7,7"), grad_shapes=((3, 4), (4,)),
            errors=(E("vector", ValueError, r"\[mv\]", lambda: ember.mv(T(3, 4), T(4, 1))),)),
    _matmul("outer", ember.outer, S("5,9"), S("0,3"),
            ref=lambda a, b: R.matmul(a[:, None], b[None, :]),
            vjp=lambda g, a, b: tuple(
                x.reshape(-1) for x in R.matmul_vjp(g, a[:, None], b[None, :]))),
    # --- shape ops -----------------------------------------------------------------------------
    _shape_op("reshape", lambda x: x.reshape(2, -1), lambda x: R.reshape(x, (2, -1)),
              lambda g, x: R.reshape_vjp(g, x, None), S("3x4", "2x3x5"), S("2x0", "2x1"),
              errors=(E("size", ValueError, r"\[reshape\]", lambda: T(3, 4).reshape(5, -1)),
                      E("two -1", ValueError, r"\[reshape\]", lambda: T(3, 4).reshape(-1, -1)))),
    _shape_op("view", lambda x: ember.view(x, _view_shape(x.shape)),
              lambda x: R.view(x, _view_shape(x.shape)), lambda g, x: R.view_vjp(g, x, None),
              S("3x4", "2x3x5"), S("3x0"), view_shape=_view_shape,
              errors=(E("non-contiguous", RuntimeError, r"\[view\].*reshape",
                        lambda: T(3, 4).T.view(12)),)),
    _shape_op("flatten", ember.flatten, R.flatten, R.flatten_vjp, S("3x4", "2x3x5", "0d"),
              S("0x3"),
              errors=(E("dims", ValueError, r"\[flatten\]",
                        lambda: ember.flatten(T(2, 3, 4), 2, 1)),)),
    _shape_op("flatten_middle", lambda x: x.flatten(1, 2), lambda x: R.flatten(x, 1, 2),
              lambda g, x: R.flatten_vjp(g, x, 1, 2), S("2x3x5", "2x3x4x2"), S("2x0x3")),
    _shape_op("permute", lambda x: x.permute(2, 0, 1), lambda x: R.permute(x, (2, 0, 1)),
              lambda g, x: R.permute_vjp(g, x, (2, 0, 1)), S("2x3x5"), S("0x3x1"),
              errors=(E("not a permutation", ValueError, r"\[permute\]",
                        lambda: T(2, 3, 4).permute(0, 0, 1)),)),
    _shape_op("transpose", lambda x: ember.transpose(x, 0, -1), lambda x: R.transpose(x, 0, -1),
              lambda g, x: R.transpose_vjp(g, x, 0, -1), S("3x4", "2x3x5"), S("0x4"),
              errors=(E("dim", IndexError, r"\[transpose\]", lambda: T(3, 4).transpose(0, 2)),)),
    _shape_op("T", lambda x: x.T, lambda x: x.T, lambda g, x: (g.T,), S("3x4"), S("1x0")),
    _shape_op("squeeze", ember.squeeze, R.squeeze, R.squeeze_vjp, S("3x1x4x1", "1x1"), S("0x1"),
              errors=(E("dim", IndexError, r"\[squeeze\]", lambda: T(3, 4).squeeze(4)),)),
    _shape_op("squeeze_dim", lambda x: x.squeeze(1), lambda x: R.squeeze(x, 1),
              lambda g, x: R.squeeze_vjp(g, x, 1), S("3x1x4", "3x2x4"), S("0x1x2")),
    _shape_op("unsqueeze", lambda x: ember.unsqueeze(x, -1), lambda x: R.unsqueeze(x, -1),
              lambda g, x: R.unsqueeze_vjp(g, x, -1), S("3x4", "0d"), S("0"),
              errors=(E("dim", IndexError, r"\[unsqueeze\]", lambda: T(3, 4).unsqueeze(5)),)),
    _shape_op("unsqueeze_0", lambda x: x.unsqueeze(0), lambda x: R.unsqueeze(x, 0),
              lambda g, x: R.unsqueeze_vjp(g, x, 0), S("3x4")),
    _shape_op("expand", lambda x: x.expand(2, 3, 4), lambda x: R.expand(x, (2, 3, 4)),
              lambda g, x: R.expand_vjp(g, x, (2, 3, 4)), S("3x1", "1x4", "4", "0d"), S("3x4"),
              bwd=RED,
              errors=(E("size", ValueError, r"\[expand\]", lambda: T(3, 4).expand(2, 3, 5)),)),
    _shape_op("expand_minus1", lambda x: x.expand(5, -1, 7), lambda x: R.expand(x, (5, -1, 7)),
              lambda g, x: R.expand_vjp(g, x, (5, -1, 7)), S("3x1"), S("0x1"), bwd=RED),
    _shape_op("repeat", lambda x: x.repeat(2, 1, 3), lambda x: R.repeat(x, (2, 1, 3)),
              lambda g, x: R.repeat_vjp(g, x, (2, 1, 3)), S("3x4", "2x3x5", "4"), S("0x2"),
              bwd=RED,
              errors=(E("too few", ValueError, r"\[repeat\]", lambda: T(3, 4).repeat(2)),)),
    _shape_op("cat", _lists(ember.cat), lambda *xs: R.cat(xs), lambda g, *xs: R.cat_vjp(g, xs),
              S("2x3,4x3,1x3", "5,2"), S("0x3,2x3", "1x1,1x1"),
              errors=(E("sizes", ValueError, r"\[cat\]", lambda: ember.cat([T(3, 4), T(2, 3)])),
                      E("empty", ValueError, r"\[cat\]", lambda: ember.cat([])),
                      E("0-d", ValueError, r"\[cat\]", lambda: ember.cat([T(), T()])),
                      E("not tensors", TypeError, r"\[cat\]", lambda: ember.cat([T(2), [1.0]])))),
    _shape_op("cat_dim1", lambda *xs: ember.cat(xs, dim=1), lambda *xs: R.cat(xs, 1),
              lambda g, *xs: R.cat_vjp(g, xs, 1), S("3x2,3x5", "2x1x4,2x3x4,2x2x4"), S("3x0,3x2")),
    _shape_op("stack", _lists(ember.stack), lambda *xs: R.stack(xs),
              lambda g, *xs: R.stack_vjp(g, xs), S("3x4,3x4,3x4", "0d,0d"), S("0x2,0x2"),
              errors=(E("shapes", ValueError, r"\[stack\]",
                        lambda: ember.stack([T(3, 4), T(2, 3)])),)),
    _shape_op("stack_last", lambda *xs: ember.stack(xs, dim=-1), lambda *xs: R.stack(xs, -1),
              lambda g, *xs: R.stack_vjp(g, xs, -1), S("3x4,3x4")),
    _shape_op("split", lambda x: ember.split(x, 2), lambda x: R.split(x, 2),
              lambda g, x: R.split_vjp(g, x, 2), S("5x3", "4"), S("1x2"),
              errors=(E("sections", ValueError, r"\[split\]", lambda: T(3, 4).split([1, 1])),
                      E("size", ValueError, r"\[split\]", lambda: T(3, 4).split(0)))),
    _shape_op("split_sections", lambda x: x.split([1, 3, 0], dim=1),
              lambda x: R.split(x, [1, 3, 0], 1), lambda g, x: R.split_vjp(g, x, [1, 3, 0], 1),
              S("2x4"), S("0x4")),
    _shape_op("chunk", lambda x: x.chunk(3, -1), lambda x: R.chunk(x, 3, -1),
              lambda g, x: R.chunk_vjp(g, x, 3, -1), S("2x7", "3x6", "2x2"),
              errors=(E("chunks", ValueError, r"\[chunk\]", lambda: T(3).chunk(0)),)),
    dataclasses.replace(
        _getitem("getitem_basic", IDX_BASIC, S("4x5", "3x7x2"), S("1x1", "0x3")),
        errors=(E("out of range", IndexError, r"\[index\]", lambda: T(3, 4)[5]),
                E("float index", TypeError, r"\[index\]", lambda: T(3, 4)[1.5]))),
    _getitem("getitem_int", IDX_INT_SLICE, S("3x4", "2x5x2")),
    _getitem("getitem_none_ellipsis", IDX_NONE_ELLIPSIS, S("2x3x4", "3x2"), S("0x2")),
    _getitem("getitem_int_array_repeats", IDX_ROWS_REPEATED, S("3x4", "3", "4x2x3"), S("3x0"),
             bwd=RED),
    _getitem("getitem_paired_arrays", IDX_PAIRED, S("3x4", "3x4x2"), bwd=RED),
    _getitem("getitem_mixed", IDX_MIXED, S("2x4x3"), S("0x4x3"), bwd=RED),
    _shape_op("getitem_tensor_index", lambda x: x[ember.tensor(IDX_NEG)],
              lambda x: R.getitem(x, IDX_NEG), lambda g, x: R.getitem_vjp(g, x, IDX_NEG),
              S("3x4"), bwd=RED),
    _shape_op("getitem_bool_mask", lambda x, m: x[m], R.getitem,
              lambda g, x, m: R.getitem_vjp(g, x, m) + (None,), S("3x4,3x4", "5,5"),
              S("0x3,0x3"), make=with_mask),
    _shape_op("getitem_bool_rows", lambda x, m: x[m[:, 0]], lambda x, m: R.getitem(x, m[:, 0]),
              lambda g, x, m: R.getitem_vjp(g, x, m[:, 0]) + (None,), S("4x3,4x3"),
              make=with_mask),
    _shape_op("to_float64", lambda x: x.to(ember.float64), lambda x: R.to(x, np.float64),
              lambda g, x: R.to_vjp(g, x, np.float64), S("3x4", "0d"), S("0x2"),
              out_dtype=lambda dt: np.float64),
    _shape_op("to_float32", lambda x: x.to(dtype=ember.float32), lambda x: R.to(x, np.float32),
              lambda g, x: R.to_vjp(g, x, np.float32), S("3x4"), make=each(dyadic),
              out_dtype=lambda dt: np.float32, gradcheck_eps=2.0 ** -6),
    _shape_op("to_float16", lambda x: x.half(), lambda x: R.to(x, np.float16),
              lambda g, x: R.to_vjp(g, x, np.float16), S("3x4"), make=each(dyadic),
              out_dtype=lambda dt: np.float16, gradcheck_eps=2.0 ** -6),
    _shape_op("clone", ember.clone, np.copy, lambda g, x: (g,), S("3x4"), S("0")),
    _shape_op("contiguous", lambda x: x.contiguous(), np.ascontiguousarray, lambda g, x: (g,),
              S("3x4")),
    _shape_op("flip", lambda x: x.flip(0), lambda x: np.flip(x, 0),
              lambda g, x: (np.flip(g, 0),), S("3x4")),
]
# fmt: on

assert len({c.name for c in CASES}) == len(CASES), "duplicate OpCase names"

# ---------------------------------------------------------------------------------------------
# running a row
# ---------------------------------------------------------------------------------------------


def _fmt(shapes):
    return ",".join("x".join(map(str, s)) if s else "0d" for s in shapes)


def _paths(case):
    return ("scalar", "auto") if case.kernel else ("auto",)


def _params(kind):
    out = []
    for case in CASES:
        if kind == "backward" and not case.differentiable:
            continue
        sets = [("", s) for s in case.shapes] + [("edge:", s) for s in case.edge]
        for tag, shapes in sets:
            for path in _paths(case):
                out.append(
                    pytest.param(case, shapes, path, id=f"{case.name}-{tag}{_fmt(shapes)}-{path}")
                )
    return out


def _is_float(a):
    return np.asarray(a).dtype.kind == "f"


def _host(t):
    return t.detach().cpu().numpy()


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _noncontig(arr, variant):
    """(storage, make_view): ``make_view(storage)`` is a non-contiguous view holding the values
    of ``arr``, built with the same indexing on numpy arrays and on ember tensors. Transposed:
    the last two dims longer than 1 swapped; strided: every other element of a twice as long
    last non-trivial dim (the others are NaN, never to be read); reversed: that dim backwards."""
    long_dims = [i for i, n in enumerate(arr.shape) if n > 1]
    if not long_dims:
        return arr, lambda t: t  # 0-d or all dims of size <= 1: always contiguous
    if variant == "transposed" and len(long_dims) >= 2:
        i, j = long_dims[-2:]

        def swapped(t):
            return np.swapaxes(t, i, j) if isinstance(t, np.ndarray) else t.transpose(i, j)

        return np.ascontiguousarray(np.swapaxes(arr, i, j)), swapped
    k = long_dims[-1]
    step = -1 if variant == "reversed" else 2
    index = (slice(None),) * k + (slice(None, None, step),)
    if variant == "reversed":
        storage = np.ascontiguousarray(arr[index])
    else:
        storage = np.full(
            arr.shape[:k] + (2 * arr.shape[k],) + arr.shape[k + 1 :], np.nan, arr.dtype
        )
        storage[index] = arr
    return storage, lambda t: t[index]


def _inputs(case, arrays, dtype, device, requires_grad, variant=None):
    """Ember tensors for the arrays: floats in ``dtype`` (leaves requiring grad); the rest as
    they are. With ``variant``, each float input is instead a non-contiguous view of a bigger
    leaf tensor (a non-leaf that retains its grad, so ``.grad`` is still the input's)."""
    tensors = []
    for a in arrays:
        if not _is_float(a):
            tensors.append(ember.tensor(a, device=device))
            continue
        if variant is None:
            t = ember.tensor(a.astype(dtype), device=device, requires_grad=requires_grad)
            tensors.append(t)
            continue
        storage, make_view = _noncontig(a.astype(dtype), variant)
        leaf = ember.tensor(storage, device=device, requires_grad=requires_grad)
        x = make_view(leaf)
        if requires_grad and x is not leaf:
            x.retain_grad()
        assert x.is_contiguous() == make_view(storage).flags.c_contiguous
        np.testing.assert_array_equal(_host(x), a.astype(dtype))
        tensors.append(x)
    return tensors


def _expected_dtype(case, ref_out, dtype):
    if not _is_float(ref_out):
        return np.asarray(ref_out).dtype
    return np.dtype(case.out_dtype(dtype) if case.out_dtype else dtype)


def _compare(mode, actual, ref64, plain32, dtype, what, scale=None):
    if mode == "exact":
        assert_exact(actual, ref64, what)
    elif mode == "elementwise":
        if dtype == np.float32:
            assert_elementwise(actual, ref64, plain32, rtol=1e-6, what=what)
        else:
            assert_elementwise(actual, ref64, rtol=1e-12, what=what)
    elif dtype == np.float32:
        assert_reduction(actual, ref64, plain32, scale=scale, what=what)
    else:  # float64 reductions: the reference computed the same sum in the same precision
        assert_reduction(actual, ref64, ref64, floor=1e-12, scale=scale, what=what)


def _abs_scale(outputs):
    """The largest magnitude of the (float) outputs of the computation on absolute values."""
    return max(
        (float(np.max(np.abs(o))) for o in outputs if _is_float(o) and np.size(o)), default=0.0
    )


def _absolute(arrays):
    return [np.abs(a).astype(np.float64) if _is_float(a) else a for a in arrays]


def check_forward(case, shapes, dtype, device, rng, variant=None):
    arrays = case.make(rng, shapes)
    rounded = [a.astype(dtype) if _is_float(a) else a for a in arrays]  # what ember sees
    tensors = _inputs(case, arrays, dtype, device, False, variant)
    outs = _tuple(case.fn(*tensors))
    refs64 = _tuple(case.ref(*[a.astype(np.float64) if _is_float(a) else a for a in rounded]))
    plain32 = _tuple(case.ref(*rounded))
    scale = _abs_scale(_tuple(case.ref(*_absolute(rounded)))) if case.fwd == "reduction" else None
    assert len(outs) == len(refs64), (
        f"{case.name}: {len(outs)} outputs, reference has {len(refs64)}"
    )
    for k, (o, r, p) in enumerate(zip(outs, refs64, plain32, strict=True)):
        what = f"{case.name} output {k}"
        assert isinstance(o, ember.Tensor), f"{what}: not a Tensor"
        assert o.device == ember.device(device), f"{what}: on {o.device}, not {device}"
        actual = _host(o)
        assert_shape_dtype(actual, np.shape(r), _expected_dtype(case, r, dtype), what)
        if not _is_float(r):
            assert_exact(actual, r, what)
        else:
            _compare(case.fwd, actual, r, p, dtype, what, scale)


def check_backward(case, shapes, dtype, device, rng, variant=None):
    arrays = case.make(rng, shapes)
    rounded = [a.astype(dtype) if _is_float(a) else a for a in arrays]
    tensors = _inputs(case, arrays, dtype, device, True, variant)
    raw = case.fn(*tensors)
    multi = isinstance(raw, (tuple, list))
    outs = _tuple(raw)
    float_outs = [o for o in outs if o.dtype.is_floating_point]
    assert float_outs and all(o.requires_grad for o in float_outs), (
        f"{case.name}: no graph recorded"
    )
    # a random upstream gradient per float output (never ones), in that output's dtype
    gs = [rng.standard_normal(o.shape).astype(_host(o).dtype) for o in float_outs]
    ember.autograd.backward(float_outs, [ember.tensor(g, device=device) for g in gs])

    def vjp(inputs, grads):
        return _tuple(case.vjp(tuple(grads) if multi else grads[0], *inputs))

    ref64 = vjp(
        [a.astype(np.float64) if _is_float(a) else a for a in rounded],
        [g.astype(np.float64) for g in gs],
    )
    plain32 = vjp(rounded, gs)
    scale = (
        _abs_scale(vjp(_absolute(rounded), [np.abs(g).astype(np.float64) for g in gs]))
        if case.bwd == "reduction"
        else None
    )
    assert len(ref64) == len(tensors), f"{case.name}: reference VJP returned {len(ref64)} gradients"
    for i, (t, a, r, p) in enumerate(zip(tensors, rounded, ref64, plain32, strict=True)):
        if not _is_float(a):
            assert t.grad is None
            continue
        what = f"{case.name} grad of input {i}"
        assert t.grad is not None, f"{what}: no gradient"
        actual = _host(t.grad)
        assert_shape_dtype(actual, a.shape, dtype, what)
        mode, s = case.bwd, scale
        if mode == "elementwise" and not multi and a.shape != float_outs[0].shape:
            # a broadcast input: its gradient sums element-wise terms over the broadcast dims,
            # so it is a reduction, with rounding errors of the size of the sum of |terms|
            mode, s = "reduction", _broadcast_term_scale(vjp, rounded, gs, float_outs[0].shape, i)
        _compare(mode, actual, r, p, dtype, what, s)


def _broadcast_term_scale(vjp, inputs, gs, out_shape, i):
    """max over input i's elements of sum |term| (its gradient's terms before they are summed):
    the VJP of inputs broadcast to the output shape returns the terms unreduced."""
    full = [np.broadcast_to(a, out_shape).astype(np.float64) if _is_float(a) else a for a in inputs]
    terms = vjp(full, [g.astype(np.float64) for g in gs])[i]
    return float(np.max(R.sum_to(np.abs(terms), np.shape(inputs[i])), initial=0.0))


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,shapes,cpu_path", _params("forward"), indirect=["cpu_path"])
def test_forward_float32(case, shapes, cpu_path, device, rng):
    check_forward(case, shapes, np.float32, device, rng)


@pytest.mark.parametrize("case,shapes,cpu_path", _params("forward"), indirect=["cpu_path"])
def test_forward_float64(case, shapes, cpu_path, device, rng):
    check_forward(case, shapes, np.float64, device, rng)


@pytest.mark.parametrize("case,shapes,cpu_path", _params("backward"), indirect=["cpu_path"])
def test_backward_random_upstream(case, shapes, cpu_path, device, rng):
    check_backward(case, shapes, np.float32, device, rng)


@pytest.mark.parametrize("case,shapes,cpu_path", _params("backward"), indirect=["cpu_path"])
def test_backward_float64(case, shapes, cpu_path, device, rng):
    check_backward(case, shapes, np.float64, device, rng)


@pytest.mark.parametrize(
    "case,cpu_path",
    [pytest.param(c, p, id=f"{c.name}-{p}") for c in CASES if c.differentiable for p in _paths(c)],
    indirect=["cpu_path"],
)
def test_gradcheck(case, cpu_path, rng):
    shapes = case.grad_shapes or case.shapes[0]
    assert sum(math.prod(s) for s in shapes) <= 40, "keep gradcheck inputs small"
    arrays = case.make(rng, shapes)
    inputs = [
        ember.tensor(a, dtype=ember.float64, requires_grad=True)
        if _is_float(a)
        else ember.tensor(a)
        for a in arrays
    ]
    assert ember.autograd.gradcheck(case.fn, inputs, eps=case.gradcheck_eps)


NONCONTIG = ("transposed", "strided", "reversed")


def _noncontig_params():
    out = []
    for case in CASES:
        for variant in NONCONTIG:
            for path in _paths(case):
                out.append(pytest.param(case, variant, path, id=f"{case.name}-{variant}-{path}"))
    return out


@pytest.mark.parametrize("case,variant,cpu_path", _noncontig_params(), indirect=["cpu_path"])
def test_noncontiguous_inputs(case, variant, cpu_path, device, rng):
    shapes = max(case.shapes, key=lambda s: sum(len(x) for x in s))  # the most-dimensional set
    arrays = case.make(rng, shapes)
    tensors = _inputs(case, arrays, np.float32, device, False, variant)
    assert any(not t.is_contiguous() for t in tensors if t.dtype.is_floating_point), (
        "no input is non-contiguous: the test would test nothing"
    )
    if case.view_shape is not None:
        # a view is possible exactly when numpy can reshape the same strided array without a copy
        storage, make_view = _noncontig(arrays[0].astype(np.float32), variant)
        v = make_view(storage)
        try:
            np.reshape(v, case.view_shape(v.shape), copy=False)
        except ValueError:
            with pytest.raises(RuntimeError, match=r"\[view\].*reshape"):
                case.fn(*tensors)
            return
    check_forward(case, shapes, np.float32, device, rng, variant)
    if case.differentiable:
        check_backward(case, shapes, np.float32, device, rng, variant)


@pytest.mark.parametrize(
    "case,err", [pytest.param(c, e, id=f"{c.name}-{e.id}") for c in CASES for e in c.errors]
)
def test_error_inputs(case, err):
    with pytest.raises(err.exc, match=err.match):
        err.call()


def test_every_op_of_the_spec_has_a_row():
    required = {
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "pow_float",
        "neg",
        "abs",
        "exp",
        "log",
        "sqrt",
        "sin",
        "cos",
        "tanh",
        "sigmoid",
        "relu",
        "clamp",
        "maximum",
        "minimum",
        "where",
        "sum",
        "mean",
        "var",
        "var_dim_c0",
        "std",
        "std_dim_c0",
        "max",
        "min",
        "max_dim",
        "min_dim",
        "argmax",
        "argmin",
        "logsumexp",
        "prod",
        "norm",
        "matmul",
        "reshape",
        "view",
        "flatten",
        "permute",
        "transpose",
        "squeeze",
        "unsqueeze",
        "expand",
        "repeat",
        "cat",
        "stack",
        "split",
        "chunk",
        "getitem_basic",
        "getitem_int_array_repeats",
        "getitem_bool_mask",
        "getitem_none_ellipsis",
        "to_float64",
    }
    assert required <= {c.name for c in CASES}
    for c in CASES:
        assert c.shapes, c.name
        for shapes in c.shapes + c.edge:
            assert len(shapes) == len(c.make(np.random.default_rng(0), shapes))
    binary = [c for c in CASES if c.shapes == BINARY_SHAPES]
    assert len(binary) == 7 and all(any(len(set(s)) > 1 for s in c.shapes) for c in binary)
    assert all(
        any(0 in s for ss in c.edge for s in ss) for c in binary + [c for c in CASES if c.kernel]
    )


# ---------------------------------------------------------------------------------------------
# CUDA: requested without a GPU -> RuntimeError; mixed devices -> RuntimeError
# ---------------------------------------------------------------------------------------------

CUDA_REQUESTS = {
    "to": lambda: ember.randn(3).to("cuda"),
    "cuda()": lambda: ember.randn(3).cuda(),
    "tensor": lambda: ember.tensor([1.0, 2.0], device="cuda"),
    "zeros": lambda: ember.zeros(2, 3, device="cuda"),
    "ones_like": lambda: ember.ones_like(ember.randn(2), device="cuda"),
    "randn": lambda: ember.randn(2, device="cuda"),
    "arange": lambda: ember.arange(4, device="cuda"),
    "eye": lambda: ember.eye(3, device="cuda"),
    "synchronize": lambda: ember.cuda.synchronize(),
}


@pytest.mark.skipif(ember.cuda.is_available(), reason="checks the behaviour without a usable GPU")
@pytest.mark.parametrize("name", sorted(CUDA_REQUESTS))
def test_cuda_requested_without_gpu(name):
    with pytest.raises(RuntimeError, match=r"CUDA is not available"):
        CUDA_REQUESTS[name]()
    assert ember.cuda.device_count() == 0


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "matmul"])
def test_mixing_devices(op):
    fn = getattr(ember, op)
    x = ember.rand(3, 3) + 0.5
    if not ember.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"CUDA is not available"):
            fn(x, x.to("cuda"))
    else:
        with pytest.raises(RuntimeError, match=rf"\[{op}\].*same device"):
            fn(x, x.to("cuda"))


# ---------------------------------------------------------------------------------------------
# numerical robustness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_logsumexp_large_values(dtype, device):
    x = ember.tensor([1000.0, 1001.0, 1002.0], dtype=dtype, device=device, requires_grad=True)
    y = ember.logsumexp(x, 0)
    expected = 1002.0 + math.log(1.0 + math.exp(-1.0) + math.exp(-2.0))
    assert math.isfinite(y.item()) and abs(y.item() - expected) <= 1e-6 * expected
    y.backward()
    # the gradient is softmax(x) = [e^-2, e^-1, 1] / (e^-2 + e^-1 + 1); in float32 it can only
    # be as good as exp(x - lse) with lse rounded to float32 (ulp(1002) = 6e-5)
    p = np.exp(np.array([-2.0, -1.0, 0.0])) / np.exp(np.array([-2.0, -1.0, 0.0])).sum()
    x_np = np.array([1000.0, 1001.0, 1002.0], dtype=_host(x.grad).dtype)
    (plain,) = R.logsumexp_vjp(np.ones((), x_np.dtype), x_np, 0)
    if dtype == ember.float32:
        assert_reduction(_host(x.grad), p, plain, what="logsumexp grad")
    else:
        np.testing.assert_allclose(_host(x.grad), p, rtol=1e-12)
    # and very negative values, all -inf in a row does not give NaN for the others
    z = ember.tensor([[-1000.0, -1001.0], [-np.inf, -np.inf]], dtype=dtype, device=device)
    out = _host(ember.logsumexp(z, 1))
    np.testing.assert_allclose(out[0], -1000.0 + math.log(1 + math.exp(-1.0)), rtol=1e-7)
    assert out[1] == -np.inf


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
@pytest.mark.parametrize("value", [3.3, -0.1, 1e4 + 0.7, 7.0])
@pytest.mark.parametrize(
    "shape,dim", [((7,), None), ((5, 11), 1), ((3, 4, 6), (0, 2)), ((1000,), 0)]
)
def test_var_std_of_constant_input_is_exactly_zero(dtype, value, shape, dim, device):
    x = ember.full(shape, value, dtype=dtype, device=device, requires_grad=True)
    for correction in (0, 1):
        v = ember.var(x, dim, correction=correction)
        s = ember.std(x, dim, correction=correction)
        assert (_host(v) == 0).all(), f"var of a constant = {_host(v)}"
        assert (_host(s) == 0).all(), f"std of a constant = {_host(s)}"
    g = ember.randn(*v.shape, dtype=dtype, device=device)
    v.backward(g)
    assert (_host(x.grad) == 0).all(), "the gradient of var at a constant input is exactly 0"


NAN = float("nan")


def _nan_positions(n):
    """First element, both sides of the 8-lane boundary, and the tail."""
    return sorted(p for p in {0, 7, 8, n - 1} if p < n)


@pytest.mark.parametrize("n", [1, 8, 19, 67])
@pytest.mark.parametrize("cpu_path", ["scalar", "auto"], indirect=True)
def test_relu_propagates_nan(cpu_path, n, device, rng):
    x = normal(rng, (n,)).astype(np.float32)
    pos = _nan_positions(n)
    x[pos] = np.nan
    y = _host(ember.relu(ember.tensor(x, device=device)))
    assert np.isnan(y[pos]).all(), f"relu dropped a NaN under the {cpu_path} path"
    ok = np.setdiff1d(np.arange(n), pos)
    np.testing.assert_array_equal(y[ok], np.maximum(x[ok], 0))
    # NaN in the float64 path too
    y64 = _host(ember.relu(ember.tensor(x.astype(np.float64), device=device)))
    assert np.isnan(y64[pos]).all()


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_propagate_nan_from_either_side(op, device, rng):
    fn = getattr(ember, op)
    x = normal(rng, (19,)).astype(np.float32)
    y = normal(rng, (19,)).astype(np.float32)
    x[[0, 8, 18]] = np.nan
    y[[3, 8, 11]] = np.nan
    for a, b in ((x, y), (y, x)):
        out = _host(fn(ember.tensor(a, device=device), ember.tensor(b, device=device)))
        expect_nan = np.isnan(a) | np.isnan(b)
        np.testing.assert_array_equal(np.isnan(out), expect_nan)
        ref = getattr(np, op)(a, b)
        np.testing.assert_array_equal(out[~expect_nan], ref[~expect_nan])
    # against a scalar
    out = _host(fn(ember.tensor(x, device=device), 0.0))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))


@pytest.mark.parametrize("op", ["max", "min", "amax", "amin"])
def test_max_min_propagate_nan(op, device, rng):
    fn = getattr(ember, op)
    x = distinct(rng, (3, 19)).astype(np.float32)
    x[1, 5] = np.nan
    t = ember.tensor(x, device=device)
    assert math.isnan(fn(t).item())
    dimmed = fn(t, 1)
    values = _host(dimmed[0] if op in ("max", "min") else dimmed)
    assert np.isnan(values[1]) and not np.isnan(values[[0, 2]]).any()
    if op in ("max", "min"):
        np.testing.assert_array_equal(_host(dimmed[1])[1], 5)  # the index of the NaN


def test_clamp_propagates_nan(device, rng):
    x = normal(rng, (19,)).astype(np.float32)
    x[[0, 8, 18]] = np.nan
    for lo, hi in ((LO, HI), (LO, None), (None, HI)):
        out = _host(ember.clamp(ember.tensor(x, device=device), lo, hi))
        np.testing.assert_array_equal(np.isnan(out), np.isnan(x))


@pytest.mark.parametrize("cpu_path", ["scalar", "auto"], indirect=True)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 9, 13), (8, 8, 8), (17, 33, 65), (3, 1000, 5)])
def test_matmul_outputs_are_fully_written_and_finite(cpu_path, m, k, n, device, rng):
    """With numpy's empty poisoned (NaN), every output element must have been written."""
    a = ember.tensor(normal(rng, (m, k)).astype(np.float32), device=device, requires_grad=True)
    b = ember.tensor(normal(rng, (k, n)).astype(np.float32), device=device, requires_grad=True)
    c = a @ b
    assert np.isfinite(_host(c)).all()
    c.backward(ember.randn(m, n, device=device))
    assert np.isfinite(_host(a.grad)).all() and np.isfinite(_host(b.grad)).all()


@pytest.mark.parametrize("cpu_path", ["scalar", "auto"], indirect=True)
def test_subgradients_at_kinks_follow_pytorch(cpu_path, device):
    """Where the derivative is undefined ember picks PyTorch's value (the random inputs of the
    table never hit these points)."""

    def grad_of(fn, values, *others):
        x = ember.tensor(values, device=device, requires_grad=True)
        fn(x, *others).sum().backward()
        return _host(x.grad).tolist()

    kinks = [0.0, -0.0, 1.5, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0]  # 9 elements: a full lane + tail
    assert grad_of(ember.relu, kinks) == [0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert _host(ember.relu(ember.tensor(kinks, device=device))).tolist()[:4] == [0, 0, 1.5, 0]
    assert grad_of(ember.abs, [0.0, 2.0, -2.0]) == [0, 1, -1]
    assert grad_of(lambda x: ember.clamp(x, -1.0, 1.0), [-1.0, 1.0, 1.5, -3.0]) == [1, 1, 0, 0]
    y = ember.tensor([1.0, 2.0, 3.0], device=device)
    assert grad_of(ember.maximum, [1.0, 5.0, 3.0], y) == [0.5, 1, 0.5]
    assert grad_of(ember.minimum, [1.0, 5.0, 3.0], y) == [0.5, 0, 0.5]
    # max with dim: the whole gradient goes to the returned index (the first maximum)
    assert grad_of(lambda x: x.max(0)[0], [2.0, 7.0, 7.0, 1.0]) == [0, 1, 0, 0]


def test_poison_fixture_is_active():
    """The NaN poisoning the tests here rely on is really in place."""
    assert np.isnan(np.empty(5, np.float32)).all()
    assert np.isnan(np.empty_like(np.zeros(3))).all()


@pytest.mark.parametrize("op", ["amax", "amin"])
def test_amax_amin_split_the_gradient_among_ties(op, device):
    # PyTorch's rule: unlike max(dim) (gradient to the returned index), amax/amin share it
    x = np.array([[1.5, -3.0, -3.0, 1.5], [2.0, 2.0, 2.0, -7.0]], np.float32)
    if op == "amax":
        x = -x
    t = ember.tensor(x, device=device, requires_grad=True)
    g = np.array([0.6, -1.2], np.float32)
    getattr(ember, op)(t, 1).backward(ember.tensor(g, device=device))
    ext = x.max(1, keepdims=True) if op == "amax" else x.min(1, keepdims=True)
    mask = x == ext
    np.testing.assert_allclose(_host(t.grad), g[:, None] * mask / mask.sum(1, keepdims=True))
    # several dims at once: the extreme appears three times and each copy gets a third
    y = np.array([[5.0, -1.0, 5.0], [5.0, 0.5, 2.0]], np.float32)
    y = y if op == "amax" else -y
    u = ember.tensor(y, device=device, requires_grad=True)
    getattr(ember, op)(u, (0, 1)).backward(ember.tensor(0.9, device=device))
    np.testing.assert_allclose(_host(u.grad), 0.9 * (np.abs(y) == 5.0) / 3, rtol=1e-6)


def test_non_integer_dim_and_complex_operands_are_rejected_by_name():
    t = ember.tensor([[1.0, -2.0], [0.5, 4.0]])
    with pytest.raises(TypeError, match=r"\[sum\] dim must be an int"):
        ember.sum(t, 1.5)
    with pytest.raises(TypeError, match=r"\[mean\] dim must be an int"):
        t.mean(dim=1.0)
    with pytest.raises(TypeError, match=r"\[add\] complex numbers"):
        t + 1j
    with pytest.raises(TypeError, match=r"\[mul\] complex numbers"):
        ember.mul(t, np.complex64(2))
