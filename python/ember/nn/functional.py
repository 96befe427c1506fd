"""``ember.nn.functional``: stateless layers, activations and losses (``torch.nn.functional``).

Everything here is composite: built from ember ops that already have kernels and backwards
(matmul on our GEMM, relu on our element-wise kernel, logsumexp ...), so no new backward is
written. ``log_softmax`` is ``x - logsumexp(x)`` (after shifting x by its maximum), stable
and accurate for any finite logits.
"""

from __future__ import annotations

import numpy as np

from .. import _ops
from .._device import xp_of
from .._dtype import to_dtype
from .._utils import norm_dim
from ..autograd.function import Function
from ..tensor import Tensor

__all__ = [
    "bilinear",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "batch_norm",
    "cross_entropy",
    "dropout",
    "dropout2d",
    "elu",
    "embedding",
    "gelu",
    "group_norm",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softplus",
    "tanh",
]

_REDUCTIONS = ("none", "mean", "sum")


def _tensor_arg(x, name: str, op: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"[{op}] {name} must be a Tensor, got {type(x).__name__}")
    return x


def _float_arg(x, name: str, op: str) -> Tensor:
    _tensor_arg(x, name, op)
    if not x.dtype.is_floating_point:
        raise TypeError(f"[{op}] {name} must be a floating point tensor, got {x.dtype}")
    return x


def _same_device(op: str, *tensors) -> None:
    devs = {t.device for t in tensors if t is not None}
    if len(devs) > 1:
        raise RuntimeError(
            f"[{op}] expected all tensors on the same device, got "
            + " and ".join(sorted(str(d) for d in devs))
        )


def _reduction(size_average, reduce, reduction: str, op: str) -> str:
    """PyTorch's legacy ``size_average``/``reduce`` flags override ``reduction`` when given."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = ("mean" if size_average else "sum") if reduce else "none"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"[{op}] reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return reduction


# ----------------------------------------------------------------------------- layers


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y[..., o] = sum_ij input1[..., i] * weight[o, i, j] * input2[..., j] + bias[o].

    input1 [*, in1], input2 [*, in2] (same leading dims), weight [out, in1, in2], bias [out]
    -> [*, out]. One GEMM against the weight seen as [in1, out * in2], then the in2
    contraction, so autograd comes from the ops it is built of."""
    if weight.ndim != 3:
        raise ValueError(f"[bilinear] weight must be [out, in1, in2], got shape {weight.shape}")
    out_f, in1, in2 = weight.shape
    if input1.ndim < 1 or input1.shape[-1] != in1 or input2.ndim < 1 or input2.shape[-1] != in2:
        raise ValueError(
            f"[bilinear] inputs {input1.shape} and {input2.shape} don't match weight "
            f"[out={out_f}, in1={in1}, in2={in2}]"
        )
    if input1.shape[:-1] != input2.shape[:-1]:
        raise ValueError(
            f"[bilinear] inputs need the same leading dims, got {input1.shape} and {input2.shape}"
        )
    if bias is not None and bias.shape != (out_f,):
        raise ValueError(f"[bilinear] bias must be [{out_f}], got {bias.shape}")
    lead = input1.shape[:-1]
    t = input1.reshape(-1, in1) @ weight.permute(1, 0, 2).reshape(in1, out_f * in2)
    y = (t.reshape(-1, out_f, in2) * input2.reshape(-1, 1, in2)).sum(-1)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, out_f)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``.

    input [*, in_features], weight [out_features, in_features], bias [out_features]
    -> [*, out_features]. One GEMM whose epilogue adds the bias while each output tile is in
    cache; ``weight.T`` is a stride-swapped view (our GEMM reads it in place, no copy) and
    leading dims are folded into one GEMM of N = prod(*) rows. The backward GEMMs use
    transposed views too (grad_input = g @ W, grad_weight = g^T @ x, grad_bias = g.sum(0)).
    Unlike PyTorch's promotion-free CPU path, mixed dtypes raise TypeError here rather than
    at backward time.
    """
    return _linear_act(input, weight, bias, "none", op="linear")


def _linear_act(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str = "relu",
    op: str = "linear_act",
) -> Tensor:
    """``act(input @ weight.T + bias)`` in one pass: Linear followed by ReLU / GELU fused
    into the GEMM's epilogue (ember-specific; ``activation`` is "none", "relu", "gelu"
    (exact erf, as ``torch.nn.functional.gelu``) or "gelu_tanh" (``approximate="tanh"``)).

    Same shapes and checks as :func:`linear`; gradients flow to input, weight and bias. Used
    by ``nn.Linear(..., activation=...)``-style modules; equal to
    ``act(linear(input, weight, bias))`` up to float rounding.
    """
    from .._ops.linalg import _LINEAR_ACTS, LinearAct

    if activation not in _LINEAR_ACTS:
        raise ValueError(f"[{op}] activation must be one of {_LINEAR_ACTS}, got {activation!r}")
    _float_arg(input, "input", op)
    _float_arg(weight, "weight", op)
    if weight.ndim != 2:
        raise ValueError(
            f"[{op}] weight must be 2-D [out_features, in_features], got shape "
            f"{tuple(weight.shape)}"
        )
    if input.ndim == 0:
        raise ValueError(f"[{op}] input must have at least 1 dimension, got a 0-d tensor")
    out_f, in_f = weight.shape
    if input.shape[-1] != in_f:
        raise ValueError(
            f"[{op}] input has {input.shape[-1]} features (shape "
            f"{tuple(input.shape)}) but weight expects {in_f} (weight shape "
            f"{tuple(weight.shape)})"
        )
    if input.dtype is not weight.dtype:
        raise TypeError(
            f"[{op}] input is {input.dtype} but weight is {weight.dtype}; "
            "convert one of them (e.g. model.double() or x.float())"
        )
    if bias is not None:
        _float_arg(bias, "bias", op)
        if bias.shape != (out_f,):
            raise ValueError(f"[{op}] bias must have shape ({out_f},), got {tuple(bias.shape)}")
        if bias.dtype is not weight.dtype:
            raise TypeError(f"[{op}] bias is {bias.dtype} but weight is {weight.dtype}")
    _same_device(op, input, weight, bias)
    lead = input.shape[:-1]
    x = input.reshape(-1, in_f) if input.ndim != 2 else input
    kernel = isinstance(x._array, np.ndarray) and x._array.dtype in (np.float32, np.float64)
    if kernel:
        out = LinearAct.apply(x, weight, bias, activation)
    else:  # CUDA (cuBLAS via cupy for now) and float16: the composite path
        out = x @ weight.T
        if bias is not None:
            out = out + bias
        if activation == "relu":
            out = _ops.relu(out)
        elif activation != "none":
            raise NotImplementedError(
                f"[{op}] fused {activation} needs a float32/float64 CPU tensor for now"
            )
    return out.reshape(*lead, out_f) if input.ndim != 2 else out


# ------------------------------------------------------------------------ activations


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0) element-wise (our relu kernel). ``inplace`` is accepted for PyTorch
    compatibility; ember always returns a new tensor."""
    return _ops.relu(_tensor_arg(input, "input", "relu"))


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)) element-wise."""
    return _ops.sigmoid(_tensor_arg(input, "input", "sigmoid"))


def tanh(input: Tensor) -> Tensor:
    return _ops.tanh(_tensor_arg(input, "input", "tanh"))


def _softmax_input(input, dim, dtype, op):
    _tensor_arg(input, "input", op)
    if dtype is not None:
        input = input.to(to_dtype(dtype))
    _float_arg(input, "input", op)
    if dim is None:
        raise TypeError(f"[{op}] dim must be given (ember has no implicit softmax dim)")
    return input, norm_dim(dim, input.ndim, op)


def softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim`` (any shape; output has the input's shape).

    The row maximum is subtracted first (softmax is shift invariant, so the shift is a
    constant for autograd), so large logits don't overflow. ``dtype`` casts the input first.
    """
    x, d = _softmax_input(input, dim, dtype, "softmax")
    e = _ops.exp(_shift_by_max(x, d))
    return e / e.sum(d, keepdim=True)


def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """x - logsumexp(x) along ``dim`` (output has the input's shape), finite for any finite
    logits.

    Computed as s - logsumexp(s) with s = x - max(x): subtracting logsumexp(x) directly
    would round it to the precision of |x| (for logits near 1000, float32 results off by
    3e-5), while s is exact and logsumexp(s) lies in [0, log n]."""
    x, d = _softmax_input(input, dim, dtype, "log_softmax")
    s = _shift_by_max(x, d)
    return s - _ops.logsumexp(s, d, keepdim=True)


def _shift_by_max(x: Tensor, d: int) -> Tensor:
    """x - max(x, d), the max taken as a constant: softmax and log_softmax are shift
    invariant, so the gradient is exact without differentiating through the max."""
    if x.numel() == 0:
        return x
    m = _ops.amax(x.detach(), d, keepdim=True)
    # a row of -inf (or one holding +inf) would give inf - inf = NaN: shift those rows by 0
    return x - _ops.where(_ops.isfinite(m), m, 0.0)


# ----------------------------------------------------------------------------- losses


def _apply_reduction(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_class_target(op, input, target, weight, ignore_index):
    """Validate [N, C, *] input vs [N, *] integer target; returns (valid: the mask of
    non-ignored entries, safe: the target array as int64 with ignored entries set to 0)."""
    _float_arg(input, "input", op)
    _tensor_arg(target, "target", op)
    if target.dtype.is_floating_point or target.dtype.name == "bool":
        raise TypeError(f"[{op}] target must hold int64 class indices, got {target.dtype}")
    if input.ndim < 2:
        raise ValueError(
            f"[{op}] input must be [N, C] or [N, C, d1, ...] (or [C] unbatched), "
            f"got shape {tuple(input.shape)}"
        )
    want = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != want:
        raise ValueError(
            f"[{op}] input of shape {tuple(input.shape)} expects target of shape "
            f"{want}, got {tuple(target.shape)}"
        )
    n_classes = input.shape[1]
    if weight is not None:
        _float_arg(weight, "weight", op)
        if weight.shape != (n_classes,):
            raise ValueError(
                f"[{op}] weight must have shape ({n_classes},) (one per class), "
                f"got {tuple(weight.shape)}"
            )
    _same_device(op, input, target, weight)
    t = target._array
    valid = t != ignore_index
    checked = t[valid]
    bad = (checked < 0) | (checked >= n_classes)
    if bad.any():
        first = int(checked[bad].reshape(-1)[0])
        raise ValueError(f"[{op}] target {first} is out of range for {n_classes} classes")
    xp = xp_of(t)
    safe = xp.where(valid, t, 0).astype(np.int64, copy=False)
    return valid, safe


def _gather_class(logp: Tensor, safe) -> Tensor:
    """logp[n, safe[n, *], *] -> [N, *]: logp moved to class-last, rows picked by index (an
    autograd indexing op, so the gradient scatters back to the picked entries only)."""
    c = logp.shape[1]
    flat = (logp.movedim(1, -1) if logp.ndim > 2 else logp).reshape(-1, c)
    rows = xp_of(safe).arange(flat.shape[0])
    return flat[rows, safe.reshape(-1)].reshape(safe.shape)


def _nll(op, logp, target, weight, ignore_index, reduction):
    """Negative log-likelihood of class-index targets, reduced. Also returns what label
    smoothing needs: the non-ignored mask, whether it is all True, and the 'mean' divisor."""
    valid, safe = _check_class_target(op, logp, target, weight, ignore_index)
    loss = -_gather_class(logp, safe)
    xp = xp_of(safe)
    if weight is not None:
        wt = weight._array.astype(logp._array.dtype, copy=False)[safe]
        loss = loss * Tensor._wrap(wt)
    else:
        wt = xp.ones(safe.shape, logp._array.dtype)
    all_valid = bool(valid.all())
    if not all_valid:
        # where, not a multiply: an ignored row's picked value may be inf
        loss = _ops.where(Tensor._wrap(valid), loss, 0.0)
        wt = wt * valid
    # 'mean' is PyTorch's: the sum of weighted losses / the summed weights of the
    # non-ignored targets (NaN when every target is ignored)
    denom = Tensor._wrap(xp.asarray(wt.sum(), logp._array.dtype))
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = loss.sum()
    else:
        out = loss.sum() / denom
    return out, valid, all_valid, denom


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood: ``-input[n, target[n]] * weight[target[n]]``, reduced.

    input: log-probabilities [N, C] or [N, C, d1, ...] (or [C] unbatched); target: integer
    class indices [N] / [N, d1, ...] (or []) in [0, C) or ``ignore_index``; weight: [C].
    'mean' divides by the summed weights of the non-ignored targets, as in PyTorch. ember
    accepts any integer target dtype (PyTorch wants int64).
    """
    reduction = _reduction(size_average, reduce, reduction, "nll_loss")
    input, target, unbatched = _unbatch("nll_loss", input, target)
    out = _nll("nll_loss", input, target, weight, ignore_index, reduction)[0]
    return out.reshape(()) if unbatched and reduction == "none" else out


def _unbatch(op, input, target):
    _tensor_arg(input, "input", op)
    _tensor_arg(target, "target", op)
    if input.ndim == 1 and target.ndim == 0:
        return input.unsqueeze(0), target.reshape(1), True
    return input, target, False


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    ignore_index: int = -100,
    reduce=None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between logits and targets (``nll_loss(log_softmax(input, 1), target)``).

    input: unnormalised logits [N, C] or [N, C, d1, ...] (or [C] unbatched).
    target: either integer class indices [N] / [N, d1, ...] in [0, C) or ``ignore_index``,
    or class probabilities with the input's shape (float).
    weight: [C] per-class rescaling. label_smoothing in [0, 1]: the target becomes
    (1 - s) * one_hot + s / C, computed as PyTorch does:
    ``(1 - s) * nll + (s / C) * smooth`` where smooth = -sum_c weight[c] * logp[c].
    reduction 'mean' (index targets) divides by the summed weights of non-ignored targets;
    with probability targets it divides by N * d1 * ...; 'sum'; 'none' keeps [N, d1, ...].
    """
    op = "cross_entropy"
    reduction = _reduction(size_average, reduce, reduction, op)
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"[{op}] label_smoothing must be between 0.0 and 1.0, got {label_smoothing}"
        )
    _float_arg(input, "input", op)
    _tensor_arg(target, "target", op)
    if target.dtype.is_floating_point and target.shape == input.shape:
        return _cross_entropy_probs(input, target, weight, reduction, label_smoothing)
    input, target, unbatched = _unbatch(op, input, target)
    if input.ndim < 2:
        raise ValueError(
            f"[{op}] input must be [N, C] or [N, C, d1, ...] (or [C] unbatched), "
            f"got shape {tuple(input.shape)}"
        )
    logp = log_softmax(input, 1)
    loss, valid, all_valid, denom = _nll(op, logp, target, weight, ignore_index, reduction)
    if label_smoothing > 0:
        n_classes = input.shape[1]
        w = logp if weight is None else logp * _class_view(weight, logp)
        smooth = -w.sum(1)
        if not all_valid:
            smooth = _ops.where(Tensor._wrap(valid), smooth, 0.0)
        if reduction == "sum":
            smooth = smooth.sum()
        elif reduction == "mean":
            smooth = smooth.sum() / denom
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / n_classes) * smooth
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def _class_view(weight: Tensor, like: Tensor) -> Tensor:
    """weight [C] as [1, C, 1, ...] to broadcast over [N, C, d1, ...] (a constant)."""
    shape = [1] * like.ndim
    shape[1] = weight.shape[0]
    return Tensor._wrap(weight._array.astype(like._array.dtype, copy=False).reshape(shape))


def _cross_entropy_probs(input, target, weight, reduction, label_smoothing):
    op = "cross_entropy"
    if target.dtype is not input.dtype:
        raise TypeError(
            f"[{op}] probability targets must have the input's dtype {input.dtype}, "
            f"got {target.dtype}"
        )
    unbatched = input.ndim == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    n_classes = input.shape[1]
    if weight is not None:
        _float_arg(weight, "weight", op)
        if weight.shape != (n_classes,):
            raise ValueError(
                f"[{op}] weight must have shape ({n_classes},), got {tuple(weight.shape)}"
            )
    _same_device(op, input, target, weight)
    t = target  # differentiable, as in PyTorch
    if label_smoothing > 0:
        t = t * (1.0 - label_smoothing) + label_smoothing / n_classes
    logp = log_softmax(input, 1)
    prod = logp * t if weight is None else logp * t * _class_view(weight, logp)
    if reduction == "none":
        loss = -prod.sum(1)
        return loss.reshape(()) if unbatched else loss
    total = -prod.sum()
    if reduction == "sum":
        return total
    return total / (input.numel() // n_classes) if input.numel() else total * float("nan")


def mse_loss(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean"
) -> Tensor:
    """Mean squared error: (input - target)**2, reduced ('mean', 'sum' or 'none').

    input and target must have the same shape and floating dtype. ember differs from
    PyTorch here: a shape mismatch raises ValueError instead of broadcasting with a warning
    (an [N, 1] vs [N] mismatch would silently compute an [N, N] loss).
    """
    op = "mse_loss"
    reduction = _reduction(size_average, reduce, reduction, op)
    _pair_args(op, input, target)
    d = input - target
    return _apply_reduction(d * d, reduction)


# ------------------------------------------------ more activations (composite or numpy-backed)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x (any shape). ``inplace`` is accepted and ignored."""
    x = _float_arg(input, "input", "leaky_relu")
    return _ops.where(x > 0, x, x * negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha * (exp(x) - 1) (any shape). The exp sees min(x, 0) so the
    branch not taken never overflows (inf * 0 would poison the gradient with NaN)."""
    x = _float_arg(input, "input", "elu")
    return _ops.where(x > 0, x, alpha * (_ops.exp(_ops.clamp(x, max=0.0)) - 1.0))


def _erf(a):
    """erf element-wise (numpy has none): scipy's when installed, else math.erf per element."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scikit-learn brings scipy along
        import math

        return np.vectorize(math.erf, otypes=[a.dtype])(a)
    return erf(a).astype(a.dtype, copy=False)


class _GeluExact(Function):
    @staticmethod
    def forward(ctx, x):
        a = x._array
        cdf = 0.5 * (1.0 + _erf(a * a.dtype.type(1 / np.sqrt(2.0))))
        ctx.save_for_backward(x)
        return Tensor._wrap((a * cdf).astype(a.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        a = x._array
        cdf = 0.5 * (1.0 + _erf(a * a.dtype.type(1 / np.sqrt(2.0))))
        pdf = np.exp(-0.5 * a * a) * a.dtype.type(1 / np.sqrt(2.0 * np.pi))
        return (g._array * (cdf + a * pdf)).astype(a.dtype, copy=False)


class _Softplus(Function):
    @staticmethod
    def forward(ctx, x, beta, threshold):
        a = x._array
        xp = xp_of(a)
        bx = a * beta
        soft = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
        ctx.save_for_backward(x)
        ctx.beta, ctx.threshold = beta, threshold
        return Tensor._wrap(xp.where(bx > threshold, a, soft).astype(a.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        a = x._array
        xp = xp_of(a)
        bx = a * ctx.beta
        # sigmoid(bx) without overflow: exp of a non-positive number only
        e = xp.exp(-xp.abs(bx))
        sig = xp.where(bx >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        d = xp.where(bx > ctx.threshold, 1.0, sig)
        return (g._array * d).astype(a.dtype, copy=False), None, None


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) with Phi the standard normal CDF (``approximate='none'``, exact through
    erf), or PyTorch's tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    (``approximate='tanh'``). Any shape. The exact form runs on the CPU only."""
    x = _float_arg(input, "input", "gelu")
    if approximate == "tanh":
        inner = (x + 0.044715 * x * x * x) * float(np.sqrt(2.0 / np.pi))
        return 0.5 * x * (1.0 + _ops.tanh(inner))
    if approximate != "none":
        raise ValueError(f"[gelu] approximate must be 'none' or 'tanh', got {approximate!r}")
    if x.is_cuda:
        raise NotImplementedError("[gelu] the exact (erf) form has no CUDA path; use 'tanh'")
    return _GeluExact.apply(x)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x) (any shape)."""
    x = _float_arg(input, "input", "silu")
    return x * _ops.sigmoid(x)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch). Any
    shape; computed as max(bx, 0) + log1p(exp(-|bx|)), exact for large negative x too."""
    x = _float_arg(input, "input", "softplus")
    if beta == 0:
        raise ValueError("[softplus] beta must be non-zero")
    return _Softplus.apply(x, float(beta), float(threshold))


# ------------------------------------------------------------- dropout and embedding


def _check_p(op: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"[{op}] dropout probability has to be between 0 and 1, but got {p}")


def _keep_mask(op: str, p: float, shape, like: Tensor) -> Tensor:
    """A constant mask of 0 and 1/(1-p) (inverted dropout: the expectation is unchanged),
    drawn from ember's global generator."""
    from .. import random as _random

    dt = like._array.dtype
    if p == 1.0:
        keep = np.zeros(shape, dt)
    else:
        keep = (_random.default_generator().random(shape) >= p).astype(dt) * dt.type(1 / (1 - p))
    if like.is_cuda:
        from .._device import move

        keep = move(keep, like.device)
    return Tensor._wrap(keep)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) when ``training``;
    the identity otherwise. Any shape. ``inplace`` is accepted and ignored."""
    x = _float_arg(input, "input", "dropout")
    _check_p("dropout", p)
    if not training or p == 0.0:
        return x
    return x * _keep_mask("dropout", p, x.shape, x)


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels: input [N, C, H, W] (or [C, H, W]), one draw per (n, c), the kept
    channels scaled by 1/(1-p), when ``training``; the identity otherwise."""
    x = _float_arg(input, "input", "dropout2d")
    if x.ndim not in (3, 4):
        raise ValueError(f"[dropout2d] expected [N, C, H, W] or [C, H, W], got {tuple(x.shape)}")
    _check_p("dropout2d", p)
    if not training or p == 0.0:
        return x
    return x * _keep_mask("dropout2d", p, x.shape[:-2] + (1, 1), x)


class _Embedding(Function):
    @staticmethod
    def forward(ctx, weight, idx, padding_idx):
        ctx.save_for_backward(weight)
        ctx.idx, ctx.padding_idx = idx, padding_idx
        return Tensor._wrap(weight._array[idx])

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        xp = xp_of(w._array)
        grad = xp.zeros(w.shape, w._array.dtype)
        rows, gd = ctx.idx.reshape(-1), g._array.reshape(-1, w.shape[1])
        if xp is np:
            np.add.at(grad, rows, gd)  # repeated indices accumulate
        else:  # pragma: no cover - CUDA
            import cupyx

            cupyx.scatter_add(grad, rows, gd)
        if ctx.padding_idx is not None:
            grad[ctx.padding_idx] = 0
        return grad, None, None


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` [num_embeddings, embedding_dim] picked by integer ``input`` [*]:
    -> [*, embedding_dim]. The gradient of the ``padding_idx`` row is always zero."""
    op = "embedding"
    _tensor_arg(input, "input", op)
    _float_arg(weight, "weight", op)
    if input.dtype.is_floating_point or input.dtype.name == "bool":
        raise TypeError(f"[{op}] input must hold integer indices, got {input.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"[{op}] weight must be 2-D, got shape {tuple(weight.shape)}")
    _same_device(op, input, weight)
    n = weight.shape[0]
    idx = input._array.astype(np.int64, copy=False)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise ValueError(f"[{op}] index {bad} is out of range for {n} embeddings")
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"[{op}] padding_idx must be within num_embeddings ({n})")
        padding_idx %= n
    return _Embedding.apply(weight, idx, padding_idx)


# ----------------------------------------------------------------------- more losses


def _pair_args(op: str, input, target) -> None:
    _float_arg(input, "input", op)
    _float_arg(target, "target", op)
    if input.shape != target.shape:
        raise ValueError(
            f"[{op}] input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ"
        )
    if input.dtype is not target.dtype:
        raise TypeError(f"[{op}] input is {input.dtype} but target is {target.dtype}")
    _same_device(op, input, target)


def l1_loss(
    input: Tensor, target: Tensor, size_average=None, reduce=None, reduction: str = "mean"
) -> Tensor:
    """|input - target|, reduced. Same shapes and dtype required (no broadcasting)."""
    reduction = _reduction(size_average, reduce, reduction, "l1_loss")
    _pair_args("l1_loss", input, target)
    return _apply_reduction(_ops.abs(input - target), reduction)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """0.5 d^2 / beta where d = |input - target| < beta, else d - 0.5 beta; reduced.
    beta = 0 is the L1 loss."""
    op = "smooth_l1_loss"
    reduction = _reduction(size_average, reduce, reduction, op)
    _pair_args(op, input, target)
    if beta < 0:
        raise ValueError(f"[{op}] beta must be non-negative, got {beta}")
    d = _ops.abs(input - target)
    if beta == 0:
        return _apply_reduction(d, reduction)
    return _apply_reduction(_ops.where(d < beta, (0.5 / beta) * d * d, d - 0.5 * beta), reduction)


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0
) -> Tensor:
    """0.5 d^2 where d = |input - target| < delta, else delta (d - 0.5 delta); reduced."""
    op = "huber_loss"
    reduction = _reduction(None, None, reduction, op)
    _pair_args(op, input, target)
    if delta <= 0:
        raise ValueError(f"[{op}] delta must be positive, got {delta}")
    d = _ops.abs(input - target)
    return _apply_reduction(
        _ops.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction
    )


class _BCE(Function):
    """-(t log x + (1 - t) log(1 - x)) with each log clamped at -100, as PyTorch; backward
    (x - t) / max(x (1 - x), 1e-12) for x and log(1 - x) - log(x) (clamped) for t."""

    @staticmethod
    def forward(ctx, x, t):
        a, b = x._array, t._array
        xp = xp_of(a)
        with np.errstate(divide="ignore"):
            lx = xp.maximum(xp.log(a), -100.0)
            l1x = xp.maximum(xp.log1p(-a), -100.0)
        ctx.save_for_backward(x, t)
        ctx.logs = (lx, l1x)
        return Tensor._wrap((-(b * lx + (1 - b) * l1x)).astype(a.dtype, copy=False))

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        a, b = x._array, t._array
        xp = xp_of(a)
        gx = gt = None
        if ctx.needs_input_grad[0]:
            gx = g._array * (a - b) / xp.maximum(a * (1 - a), 1e-12)
            gx = gx.astype(a.dtype, copy=False)
        if ctx.needs_input_grad[1]:
            lx, l1x = ctx.logs
            gt = (g._array * (l1x - lx)).astype(a.dtype, copy=False)
        return gx, gt


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy of probabilities ``input`` in [0, 1] against ``target`` (same
    shape), each log clamped at -100 as PyTorch; ``weight`` broadcasts over the loss."""
    op = "binary_cross_entropy"
    reduction = _reduction(size_average, reduce, reduction, op)
    _pair_args(op, input, target)
    a = input._array
    if a.size and not bool(((a >= 0) & (a <= 1)).all()):
        raise ValueError(f"[{op}] all elements of input should be between 0 and 1")
    loss = _BCE.apply(input, target)
    if weight is not None:
        loss = loss * weight
    return _apply_reduction(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """sigmoid + binary cross-entropy in one stable expression:
    (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x), finite for any logits x.
    ``pos_weight`` (e.g. [C], broadcast over the last dim) weighs the positive term,
    ``weight`` the whole loss."""
    op = "binary_cross_entropy_with_logits"
    reduction = _reduction(size_average, reduce, reduction, op)
    _pair_args(op, input, target)
    sp = softplus(-input)
    if pos_weight is None:
        loss = (1.0 - target) * input + sp
    else:
        loss = (1.0 - target) * input + (1.0 + (pos_weight - 1.0) * target) * sp
    if weight is not None:
        loss = loss * weight
    return _apply_reduction(loss, reduction)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average=None,
    reduce=None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """Pointwise KL divergence of ``target`` from the log-probabilities ``input``:
    target (log target - input), 0 where target = 0 (or exp(t) (t - input) with
    ``log_target``). ``reduction`` 'mean' averages over elements (as PyTorch, which warns
    that 'batchmean', the sum over the batch size N, is the true KL divergence)."""
    op = "kl_div"
    if reduction == "batchmean" and size_average is None and reduce is None:
        batchmean, reduction = True, "sum"
    else:
        batchmean, reduction = False, _reduction(size_average, reduce, reduction, op)
    _pair_args(op, input, target)
    if log_target:
        loss = _ops.exp(target) * (target - input)
    else:
        pos = target > 0
        safe = _ops.where(pos, target, 1.0)  # log of 1, not of 0: no -inf reaches autograd
        loss = _ops.where(pos, target * (_ops.log(safe) - input), 0.0)
    out = _apply_reduction(loss, reduction)
    if batchmean and input.ndim:
        out = out / input.shape[0]
    return out


# ---------------------------------------------------------------------- normalisation


def _norm_input(op: str, input: Tensor) -> int:
    """Checks shared by the normalisations on our kernels: float32/float64, [N, C, *].
    Returns C."""
    _float_arg(input, "input", op)
    if input.dtype not in (to_dtype("float32"), to_dtype("float64")):
        raise TypeError(f"[{op}] input must be float32 or float64, got {input.dtype}")
    if input.ndim < 2:
        raise ValueError(
            f"[{op}] input must have at least 2 dims [N, C, *], got shape {tuple(input.shape)}"
        )
    return input.shape[1]


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over [N, C, *] (PyTorch's signature and semantics).

    y = (x - mean) / sqrt(var + eps) * weight + bias per channel C. ``training=True`` uses the
    batch mean and biased variance over N and the spatial dims and, when given, updates
    ``running_mean``/``running_var`` in place: r = (1 - momentum) * r + momentum * stat (the
    variance one with the unbiased batch variance). ``training=False`` uses the running
    statistics (then required). weight, bias, running_mean, running_var: [C] or None, same
    dtype as the input (float32/float64). Gradients flow to input, weight and bias. CPU only
    for now (our kernels); a CUDA input raises NotImplementedError.
    """
    op = "batch_norm"
    C = _norm_input(op, input)
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is None:
            continue
        _tensor_arg(t, name, op)
        if t.shape != (C,):
            raise ValueError(
                f"[{op}] {name} must have shape ({C},) for input of shape "
                f"{tuple(input.shape)}, got {tuple(t.shape)}"
            )
        if t.dtype is not input.dtype:
            raise TypeError(f"[{op}] {name} is {t.dtype} but input is {input.dtype}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"[{op}] running_mean and running_var must be given when not training")
    _same_device(op, input, running_mean, running_var, weight, bias)
    if not isinstance(input._array, np.ndarray):
        raise NotImplementedError(f"[{op}] only CPU tensors are supported for now")
    if training:
        n = input.numel() // C if C else 0
        if n <= 1:
            raise ValueError(
                f"[{op}] expected more than 1 value per channel when training, got input of "
                f"shape {tuple(input.shape)}"
            )
    from .._ops.batchnorm import batch_norm as _bn

    return _bn(input, running_mean, running_var, weight, bias, bool(training), momentum, eps)


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Group normalisation (PyTorch's signature): input [N, C, *] with C divisible by
    ``num_groups``; each sample's channels are split into ``num_groups`` groups normalised
    with their own mean and biased variance over (C/G, *), then y = xhat * weight[c] + bias[c]
    (weight, bias: [C] or None). The statistics, xhat and its gradient come from the batch-norm
    kernels (the input seen as [1, N*G, C/G * S]); the per-channel affine is an ordinary
    broadcast multiply-add. CPU only for now.
    """
    op = "group_norm"
    C = _norm_input(op, input)
    if not isinstance(num_groups, int) or num_groups < 1 or C % num_groups != 0:
        raise ValueError(
            f"[{op}] expected the number of channels ({C}) to be divisible by num_groups, got "
            f"num_groups={num_groups!r} for input of shape {tuple(input.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        _tensor_arg(t, name, op)
        if t.shape != (C,):
            raise ValueError(f"[{op}] {name} must have shape ({C},), got {tuple(t.shape)}")
        if t.dtype is not input.dtype:
            raise TypeError(f"[{op}] {name} is {t.dtype} but input is {input.dtype}")
    _same_device(op, input, weight, bias)
    if not isinstance(input._array, np.ndarray):
        raise NotImplementedError(f"[{op}] only CPU tensors are supported for now")
    from .._ops.batchnorm import GroupNormalize

    y = GroupNormalize.apply(input, num_groups, eps)
    shape = (1, C) + (1,) * (input.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(*shape)
    if bias is not None:
        y = y + bias.reshape(*shape)
    return y


# ---- convolution ----
def _conv_tuple(v, n: int, name: str, op: str, minimum: int) -> tuple:
    """An int or a length-n sequence of ints -> an n-tuple, each >= minimum."""
    vals = (v,) * n if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
    if (
        not isinstance(vals, (tuple, list))
        or len(vals) != n
        or any(not isinstance(e, (int, np.integer)) or isinstance(e, bool) for e in vals)
    ):
        raise ValueError(f"[{op}] {name} must be an int or a tuple of {n} ints, got {v!r}")
    vals = tuple(int(e) for e in vals)
    if any(e < minimum for e in vals):
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"[{op}] {name} must be {what}, got {v!r}")
    return vals


def _conv_args(op, input, weight, bias, stride, padding, dilation, groups, nd):
    """Validate a conv call; returns (stride, padding4, dilation) for the 2-D kernel."""
    _tensor_arg(input, "input", op)
    _tensor_arg(weight, "weight", op)
    if bias is not None:
        _tensor_arg(bias, "bias", op)
    if input.dtype not in (to_dtype("float32"), to_dtype("float64")):
        raise TypeError(f"[{op}] input must be float32 or float64, got {input.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype is not input.dtype:
            raise TypeError(f"[{op}] {name} is {t.dtype} but input is {input.dtype}")
    if input.ndim != nd + 2:
        raise ValueError(
            f"[{op}] expected a {nd + 2}-D input [N, C, {'H, W' if nd == 2 else 'L'}], got "
            f"shape {tuple(input.shape)}"
        )
    if weight.ndim != nd + 2:
        raise ValueError(
            f"[{op}] expected a {nd + 2}-D weight [out_channels, in_channels/groups, "
            f"{'kH, kW' if nd == 2 else 'kL'}], got shape {tuple(weight.shape)}"
        )
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"[{op}] groups must be a positive int, got {groups!r}")
    groups = int(groups)
    C, Co = input.shape[1], weight.shape[0]
    if C % groups != 0:
        raise ValueError(f"[{op}] in_channels ({C}) must be divisible by groups ({groups})")
    if Co % groups != 0:
        raise ValueError(f"[{op}] out_channels ({Co}) must be divisible by groups ({groups})")
    if weight.shape[1] * groups != C:
        raise ValueError(
            f"[{op}] input has {C} channels but weight {tuple(weight.shape)} with groups="
            f"{groups} expects {weight.shape[1] * groups}"
        )
    if bias is not None and tuple(bias.shape) != (Co,):
        raise ValueError(f"[{op}] bias must have shape ({Co},), got {tuple(bias.shape)}")
    stride = _conv_tuple(stride, nd, "stride", op, 1)
    dilation = _conv_tuple(dilation, nd, "dilation", op, 1)
    ksize = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"[{op}] padding='same' is not supported for strided convolutions")
            # PyTorch: total = d*(k-1), the extra one of an odd total goes on the far side.
            pads = [
                (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for d, k in zip(dilation, ksize)
            ]
        else:
            raise ValueError(
                f"[{op}] padding must be 'same', 'valid', an int or a tuple of ints, got "
                f"{padding!r}"
            )
    else:
        p = _conv_tuple(padding, nd, "padding", op, 0)
        pads = [(e, e) for e in p]
    spatial = tuple(input.shape[2:])
    for size, (lo, hi), d, k in zip(spatial, pads, dilation, ksize):
        if d * (k - 1) + 1 > size + lo + hi:
            raise ValueError(
                f"[{op}] kernel size {ksize} (dilation {dilation}) is larger than the padded "
                f"input {tuple(s + a + b for s, (a, b) in zip(spatial, pads))}"
            )
    _same_device(op, input, weight, bias)
    if not isinstance(input._array, np.ndarray):
        raise NotImplementedError(f"[{op}] only CPU tensors are supported for now")
    if nd == 1:
        return (1, stride[0]), (0, 0) + pads[0], (1, dilation[0]), groups
    return stride, pads[0] + pads[1], dilation, groups


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as PyTorch) on our CPU kernels.

    input [N, C, H, W], weight [O, C/groups, kH, kW], bias [O] or None -> [N, O, OH, OW] with
    OH = (H + 2*pad_h - dilation_h*(kH-1) - 1) // stride_h + 1 (likewise OW). stride, padding
    and dilation are ints or (h, w) pairs; padding may also be 'valid' (no padding) or 'same'
    (output size = input size, stride 1 only; for an even total padding d*(k-1) is odd, the
    extra row / column goes at the bottom / right, as in PyTorch). float32 / float64, CPU only.
    """
    stride, pads, dilation, groups = _conv_args(
        "conv2d", input, weight, bias, stride, padding, dilation, groups, 2
    )
    from .._ops.conv import conv2d as _conv

    return _conv(input, weight, bias, stride, pads, dilation, groups)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """1-D convolution: input [N, C, L], weight [O, C/groups, kL], bias [O] or None ->
    [N, O, OL]. Same arguments and rules as :func:`conv2d` (ints or 1-tuples, 'same', 'valid');
    runs the 2-D kernels with H = 1."""
    stride, pads, dilation, groups = _conv_args(
        "conv1d", input, weight, bias, stride, padding, dilation, groups, 1
    )
    from .._ops.conv import conv2d as _conv

    return _conv(input, weight, bias, stride, pads, dilation, groups)


__all__ += ["conv1d", "conv2d"]
