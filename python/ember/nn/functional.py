"""``ember.nn.functional``: stateless layers, activations and losses (``torch.nn.functional``).

Most of it is composite: built from ember ops that already have kernels and backwards
(matmul on our GEMM, relu on our element-wise kernel, ...), so no new backward is written.
``softmax``, ``log_softmax`` and class-index ``cross_entropy`` (float32/float64 CPU tensors),
``batch_norm``, ``group_norm``, ``layer_norm`` and ``rms_norm`` run our own kernels with
their own backwards (python/ember/_ops/softmax.py, batchnorm.py, layernorm.py); softmax and
cross-entropy fall back to the composite versions for other dtypes and CUDA tensors.
"""

from __future__ import annotations

import math

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
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "rms_norm",
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

    float32/float64 CPU tensors run our softmax kernel (one online max+sum pass and one
    output pass per row, see kernels/cpu/softmax.cpp); other dtypes and CUDA tensors the
    composite x - max(x) version. Large logits don't overflow; a row of only -inf, or one
    holding +inf or NaN, gives NaN (as PyTorch). ``dtype`` casts the input first.
    """
    x, d = _softmax_input(input, dim, dtype, "softmax")
    if _on_kernels(x) and x.ndim > 0:
        return _softmax_kernel(x, d, False)
    e = _ops.exp(_shift_by_max(x, d))
    return e / e.sum(d, keepdim=True)


def log_softmax(input: Tensor, dim: int, dtype=None) -> Tensor:
    """x - logsumexp(x) along ``dim`` (output has the input's shape), finite for any finite
    logits.

    Computed as (x - max) - log(sum(exp(x - max))): subtracting logsumexp(x) directly would
    round it to the precision of |x| (for logits near 1000, float32 results off by 3e-5),
    while x - max is exact and the log-sum lies in [0, log n]. float32/float64 CPU tensors
    run our kernel (one online max+sum pass, one output pass per row); others the composite
    version."""
    x, d = _softmax_input(input, dim, dtype, "log_softmax")
    if _on_kernels(x) and x.ndim > 0:
        return _softmax_kernel(x, d, True)
    s = _shift_by_max(x, d)
    return s - _ops.logsumexp(s, d, keepdim=True)


def _on_kernels(x: Tensor) -> bool:
    """Whether our CPU kernels take x: a float32/float64 numpy-backed tensor."""
    return isinstance(x._array, np.ndarray) and x._array.dtype in (np.float32, np.float64)


def _softmax_kernel(x: Tensor, d: int, log: bool) -> Tensor:
    from .._ops.softmax import softmax as _softmax

    return _softmax(x, d, log)


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
    reduction 'mean' (index targets) divides by the summed weights of non-ignored targets
    (NaN when every target is ignored, as PyTorch); with probability targets it divides by
    N * d1 * ...; 'sum'; 'none' keeps [N, d1, ...].
    Class-index targets on float32/float64 CPU logits run our fused kernel: one pass over the
    logits forward (saving each row's max and log-sum-exp), one backward pass that recomputes
    the softmax; probability targets, other dtypes and CUDA use the composite version.
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
    if _on_kernels(input):
        return _cross_entropy_kernel(
            input, target, weight, ignore_index, reduction, label_smoothing, unbatched
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


def _cross_entropy_kernel(input, target, weight, ignore_index, reduction, smoothing, unbatched):
    """Class-index cross-entropy on our fused kernel (float32/float64 CPU logits): one pass
    over the logits forward (per-row loss and log-sum-exp), one backward."""
    op = "cross_entropy"
    valid, safe = _check_class_target(op, input, target, weight, ignore_index)
    t = target._array
    w = None if weight is None else weight._array
    denom = 0.0
    if reduction == "mean":  # PyTorch: the summed weights of the non-ignored targets
        denom = float(valid.sum()) if w is None else float(w.astype(np.float64)[safe][valid].sum())
    from .._ops.softmax import cross_entropy as _ce

    loss = _ce(input, t, w, ignore_index, float(smoothing), reduction, denom)
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

# ---- layer_norm / rms_norm ----


def _norm_shape_args(op, input, normalized_shape, params):
    """Checks for layer_norm / rms_norm: returns normalized_shape as a tuple."""
    _float_arg(input, "input", op)
    if input.dtype not in (to_dtype("float32"), to_dtype("float64")):
        raise TypeError(f"[{op}] input must be float32 or float64, got {input.dtype}")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    dims = (normalized_shape,) if is_int(normalized_shape) else normalized_shape
    if not isinstance(dims, (tuple, list)) or not all(is_int(v) for v in dims):
        raise TypeError(
            f"[{op}] normalized_shape must be an int or a sequence of ints, "
            f"got {normalized_shape!r}"
        )
    shape = tuple(int(v) for v in dims)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k :]) != shape:
        raise ValueError(
            f"[{op}] expected input with shape [*, {', '.join(map(str, shape))}], got input of "
            f"shape {tuple(input.shape)}"
        )
    for name, t in params:
        if t is None:
            continue
        _tensor_arg(t, name, op)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"[{op}] {name} must have shape {shape} (normalized_shape), got {tuple(t.shape)}"
            )
        if t.dtype is not input.dtype:
            raise TypeError(f"[{op}] {name} is {t.dtype} but input is {input.dtype}")
    _same_device(op, input, *(t for _, t in params))
    if not isinstance(input._array, np.ndarray):
        raise NotImplementedError(f"[{op}] only CPU tensors are supported for now")
    return shape


def layer_norm(
    input: Tensor,
    normalized_shape,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalisation over the trailing dims (PyTorch's signature and semantics).

    input [*, *normalized_shape]; each trailing block is normalised with its own mean and
    biased variance: y = (x - mean) / sqrt(var + eps) * weight + bias. weight, bias:
    normalized_shape or None, the input's dtype (float32/float64). Gradients flow to input,
    weight and bias. Our kernel (one statistics pass + one output pass per row, statistics in
    double); CPU only for now (a CUDA input raises NotImplementedError).
    """
    op = "layer_norm"
    shape = _norm_shape_args(op, input, normalized_shape, (("weight", weight), ("bias", bias)))
    from .._ops.layernorm import layer_norm as _ln

    return _ln(input, weight, bias, shape, float(eps), rms=False)


def rms_norm(
    input: Tensor,
    normalized_shape,
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """RMS normalisation over the trailing dims (PyTorch's signature and semantics):
    y = x / sqrt(mean(x^2) + eps) * weight. ``eps=None`` uses the machine epsilon of the
    input's dtype (``finfo(dtype).eps``, as PyTorch). weight: normalized_shape or None.
    CPU only for now."""
    op = "rms_norm"
    shape = _norm_shape_args(op, input, normalized_shape, (("weight", weight),))
    if eps is None:
        eps = float(np.finfo(input._array.dtype).eps)
    from .._ops.layernorm import layer_norm as _ln

    return _ln(input, weight, None, shape, float(eps), rms=True)


# ---- pooling ----
# Max / average / adaptive pooling on our kernels (ember/_ops/pool.py, kernels/cpu/pool2d.cpp).
# Inputs [N, C, H, W] or unbatched [C, H, W]; the 1-D forms run the 2-D kernels with H = 1.

__all__ += [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "max_pool1d",
    "max_pool2d",
]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _pool_tuple(op: str, name: str, v, n: int) -> tuple:
    """An int or a sequence of 1 or ``n`` ints -> an n-tuple (PyTorch's _pair/_single)."""
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    if _is_int(v):
        return (int(v),) * n
    if isinstance(v, (list, tuple)) and len(v) == n:
        if all(_is_int(e) for e in v):
            return tuple(int(e) for e in v)
    raise ValueError(f"[{op}] {name} must be an int or a tuple of {n} ints, got {v!r}")


def _pool_input(op: str, input: Tensor, spatial: int) -> Tensor:
    """Checks a pooling input ([N, C, *S] or [C, *S], float32/float64, CPU) and returns it as
    [N, C, H, W] (H = 1 for the 1-D forms)."""
    _float_arg(input, "input", op)
    if input.dtype not in (to_dtype("float32"), to_dtype("float64")):
        raise TypeError(f"[{op}] input must be float32 or float64, got {input.dtype}")
    if input.ndim not in (spatial + 1, spatial + 2):
        names = "L" if spatial == 1 else "H, W"
        raise ValueError(
            f"[{op}] input must be {spatial + 1}-D [C, {names}] or {spatial + 2}-D "
            f"[N, C, {names}], got shape {tuple(input.shape)}"
        )
    if any(n == 0 for n in input.shape[-spatial - 1 :]):
        raise ValueError(
            f"[{op}] input must have non-zero channel and spatial sizes, got shape "
            f"{tuple(input.shape)}"
        )
    if not isinstance(input._array, np.ndarray):
        raise NotImplementedError(f"[{op}] only CPU tensors are supported for now")
    x = input if input.ndim == spatial + 2 else input.unsqueeze(0)
    return x.unsqueeze(2) if spatial == 1 else x


def _pool_output(t: Tensor, input: Tensor, spatial: int) -> Tensor:
    """The [N, C, OH, OW] result back in the input's form (unbatched, 1-D)."""
    if spatial == 1:
        t = t.squeeze(2)
    return t if input.ndim == spatial + 2 else t.squeeze(0)


def _pool_window(op, x, kernel_size, stride, padding, dilation, ceil_mode, spatial):
    """Checked 2-D window arguments (the 1-D ones padded with a 1-row window) and the output
    size, with PyTorch's rules and messages naming the op."""
    k = _pool_tuple(op, "kernel_size", kernel_size, spatial)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if no_stride else _pool_tuple(op, "stride", stride, spatial)
    p = _pool_tuple(op, "padding", padding, spatial)
    d = _pool_tuple(op, "dilation", dilation, spatial)
    if spatial == 1:
        k, s, p, d = (1,) + k, (1,) + s, (0,) + p, (1,) + d
    if min(k) <= 0:
        raise ValueError(f"[{op}] kernel_size must be positive, got {kernel_size!r}")
    if min(s) <= 0:
        raise ValueError(f"[{op}] stride must be positive, got {stride!r}")
    if min(d) <= 0:
        raise ValueError(f"[{op}] dilation must be positive, got {dilation!r}")
    if min(p) < 0 or any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(
            f"[{op}] padding must be between 0 and half the kernel size, got padding "
            f"{padding!r} for kernel_size {kernel_size!r}"
        )
    from .._ops.pool import output_size

    hw = tuple(
        output_size(n, ki, si, pi, di, ceil_mode)
        for n, ki, si, pi, di in zip(x.shape[2:], k, s, p, d)
    )
    if min(hw) < 1:
        size = tuple(x.shape[2:]) if spatial == 2 else (x.shape[3],)
        raise ValueError(
            f"[{op}] input of spatial size {size} gives an output of size "
            f"{hw if spatial == 2 else hw[1:]}: too small for kernel_size {kernel_size!r} with "
            f"padding {padding!r} and dilation {dilation!r}"
        )
    return k, s, p, d, hw


def _max_pool(op, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, sp):
    x = _pool_input(op, input, sp)
    k, s, p, d, hw = _pool_window(op, x, kernel_size, stride, padding, dilation, ceil_mode, sp)
    from .._ops.pool import MaxPool2d

    out, idx = MaxPool2d.apply(x, k, s, p, d, bool(ceil_mode), hw, bool(return_indices))
    out = _pool_output(out, input, sp)
    return (out, _pool_output(idx, input, sp)) if return_indices else out


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling over [N, C, H, W] or [C, H, W] (PyTorch's signature and semantics).

    Windows of ``kernel_size`` spaced ``dilation`` apart, moved by ``stride`` (default: the
    kernel), over the input padded implicitly with -inf by ``padding`` (at most half the
    kernel). ``ceil_mode`` rounds the output size up, keeping only windows that start inside
    the input or the left padding. NaN propagates (a window holding a NaN gives NaN). With
    ``return_indices`` also returns the int64 argmax, a flat index h*W + w within each input
    plane (the first maximum in row-major window order, as PyTorch). Gradients flow to the
    argmax. Differs from PyTorch only in a window that holds no input element at all
    (possible with dilation on tiny inputs): -inf with index -1 instead of an out-of-range one.
    """
    return _max_pool(
        "max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2
    )


def max_pool1d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """1-D max pooling over [N, C, L] or [C, L] (max_pool2d with a one-row window; indices
    are positions along L)."""
    return _max_pool(
        "max_pool1d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1
    )


def _avg_pool(op, input, kernel_size, stride, padding, ceil_mode, count_include_pad, div, sp):
    if div is not None and (not _is_int(div) or div == 0):
        raise ValueError(f"[{op}] divisor_override must be a non-zero int or None, got {div!r}")
    x = _pool_input(op, input, sp)
    k, s, p, _, hw = _pool_window(op, x, kernel_size, stride, padding, 1, ceil_mode, sp)
    from .._ops.pool import AvgPool2d

    out = AvgPool2d.apply(x, k, s, p, bool(ceil_mode), bool(count_include_pad), int(div or 0), hw)
    return _pool_output(out, input, sp)


def avg_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling over [N, C, H, W] or [C, H, W] (PyTorch's signature and semantics).

    Each output is the sum of the input elements in its window divided by the window size
    counted with the zero ``padding`` (``count_include_pad=True``; windows that ceil_mode
    extends past the padding are clipped first) or without it, or by ``divisor_override``.
    """
    return _avg_pool(
        "avg_pool2d",
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
        2,
    )


def avg_pool1d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """1-D average pooling over [N, C, L] or [C, L] (avg_pool2d with a one-row window)."""
    return _avg_pool(
        "avg_pool1d", input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1
    )


def _adaptive_size(op: str, x: Tensor, output_size, sp: int) -> tuple:
    """output_size (int, or a tuple whose None entries keep the input size) -> (OH, OW)."""
    in_size = tuple(x.shape[4 - sp :])
    if isinstance(output_size, (list, tuple)) and len(output_size) == 1:
        output_size = output_size[0]
    if output_size is None or (_is_int(output_size)):
        size = (output_size,) * sp
    elif isinstance(output_size, (list, tuple)) and len(output_size) == sp:
        size = tuple(output_size)
    else:
        raise ValueError(
            f"[{op}] output_size must be an int or a tuple of {sp}, got {output_size!r}"
        )
    size = tuple(n if o is None else o for o, n in zip(size, in_size))
    if not all(_is_int(o) and o >= 1 for o in size):
        raise ValueError(f"[{op}] output_size must be positive, got {output_size!r}")
    return (1,) + tuple(int(o) for o in size) if sp == 1 else tuple(int(o) for o in size)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Adaptive average pooling of [N, C, H, W] or [C, H, W] to ``output_size`` (int, or a pair
    whose None entries keep that input size). Output (i, j) averages rows
    [floor(i*H/OH), ceil((i+1)*H/OH)) and likewise columns (PyTorch's windows); output size 1
    is the global average pool (a fast path)."""
    op = "adaptive_avg_pool2d"
    x = _pool_input(op, input, 2)
    hw = _adaptive_size(op, x, output_size, 2)
    from .._ops.pool import AdaptiveAvgPool2d

    return _pool_output(AdaptiveAvgPool2d.apply(x, hw), input, 2)


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Adaptive average pooling of [N, C, L] or [C, L] to ``output_size`` positions."""
    op = "adaptive_avg_pool1d"
    x = _pool_input(op, input, 1)
    hw = _adaptive_size(op, x, output_size, 1)
    from .._ops.pool import AdaptiveAvgPool2d

    return _pool_output(AdaptiveAvgPool2d.apply(x, hw), input, 1)


def _adaptive_max(op, input, output_size, return_indices, sp):
    x = _pool_input(op, input, sp)
    hw = _adaptive_size(op, x, output_size, sp)
    from .._ops.pool import AdaptiveMaxPool2d

    out, idx = AdaptiveMaxPool2d.apply(x, hw)
    out = _pool_output(out, input, sp)
    return (out, _pool_output(idx, input, sp)) if return_indices else out


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Adaptive max pooling of [N, C, H, W] or [C, H, W] (windows as adaptive_avg_pool2d; max,
    NaN and index rules as max_pool2d)."""
    return _adaptive_max("adaptive_max_pool2d", input, output_size, return_indices, 2)


def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    """Adaptive max pooling of [N, C, L] or [C, L]."""
    return _adaptive_max("adaptive_max_pool1d", input, output_size, return_indices, 1)


# ---- scaled_dot_product_attention ----

__all__.append("scaled_dot_product_attention")


def _attn_dense_mask(mask, causal: bool, lq: int, lk: int, dtype):
    """Additive float mask (numpy, broadcastable to [..., Lq, Lk]) and a 0/1 array marking the
    rows that have at least one key, for the composite attention path (None, None: no mask)."""
    m = None
    if mask is not None:
        m = (
            np.where(mask, dtype.type(0), dtype.type(-np.inf))
            if mask.dtype == np.bool_
            else mask.astype(dtype)
        )
    if causal:
        c = np.where(np.tril(np.ones((lq, lk), bool)), dtype.type(0), dtype.type(-np.inf))
        m = c if m is None else m + c
    if m is None:
        return None, None
    valid = np.any(m > -np.inf, axis=-1, keepdims=True)
    return np.where(valid, m, dtype.type(0)), valid.astype(dtype)


def _attention_composite(q, k, v, mask, causal, dropout_p, scale, training=True):
    """softmax(q k^T * scale + mask) v from ember ops (matmul, softmax, dropout): the path
    for dropout_p > 0, CUDA tensors and MultiheadAttention's need_weights=True. Stores the
    [..., Lq, Lk] weights. Fully-masked rows give 0 (as the fused kernel). Returns
    (output, weights)."""
    from .._device import move

    lq, lk = q.shape[-2], k.shape[-2]
    s = _ops.matmul(q, k.transpose(-2, -1)) * scale
    m, valid = _attn_dense_mask(mask, causal, lq, lk, q._array.dtype)
    if m is not None:
        s = s + Tensor._wrap(move(m, q.device) if q.is_cuda else m)
    w = softmax(s, -1)
    if valid is not None:
        w = w * Tensor._wrap(move(valid, q.device) if q.is_cuda else valid)
    w = dropout(w, dropout_p, training)
    return _ops.matmul(w, v), w


def _mask_array(attn_mask, op: str):
    if attn_mask is None:
        return None
    if isinstance(attn_mask, Tensor):
        return attn_mask.cpu()._array if attn_mask.is_cuda else attn_mask._array
    if isinstance(attn_mask, np.ndarray):
        return attn_mask
    raise TypeError(f"[{op}] attn_mask must be a Tensor or None, got {type(attn_mask).__name__}")


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value (``torch.nn.functional``'s signature).

    query [..., Lq, D], key [..., Lk, D], value [..., Lk, Dv] -> [..., Lq, Dv]; the leading
    dims broadcast. ``attn_mask``: bool (True = the key takes part, as PyTorch) or float
    (added to the scores), broadcastable to [..., Lq, Lk]; it receives no gradient.
    ``is_causal``: query i sees keys j <= i (top-left aligned, as PyTorch); not together with
    ``attn_mask``. ``scale`` defaults to 1/sqrt(D).

    CPU float32/float64 runs our flash-style kernel: tiles with an online softmax, O(L*D)
    memory (no Lq x Lk matrix), and a backward that recomputes the scores from the saved
    log-sum-exp. ``dropout_p > 0`` (and CUDA tensors) run a non-fused composite path
    (matmul, softmax, ember's dropout on the weights, drawn from ember's global generator),
    which stores the [..., Lq, Lk] weights.

    Differs from PyTorch: a fully-masked row (no key takes part) gives 0 output and 0
    gradient instead of NaN.
    """
    op = "scaled_dot_product_attention"
    for name, t in (("query", query), ("key", key), ("value", value)):
        _float_arg(t, name, op)
        if t.ndim < 2:
            raise ValueError(f"[{op}] {name} must have at least 2 dims [..., L, D], got {t.shape}")
    _same_device(op, query, key, value)
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            f"[{op}] query, key and value must have the same dtype, got "
            f"{query.dtype}, {key.dtype} and {value.dtype}"
        )
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(f"[{op}] query has head dim {query.shape[-1]} but key has {key.shape[-1]}")
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"[{op}] key has {key.shape[-2]} positions but value has {value.shape[-2]}"
        )
    try:
        bshape = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ValueError:
        raise ValueError(
            f"[{op}] batch dims of query {tuple(query.shape)}, key {tuple(key.shape)} and value "
            f"{tuple(value.shape)} do not broadcast"
        ) from None
    if is_causal and attn_mask is not None:
        raise ValueError(f"[{op}] attn_mask must be None when is_causal=True")
    _check_p(op, dropout_p)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1]) if query.shape[-1] > 0 else 1.0
    scale = float(scale)
    mask = _mask_array(attn_mask, op)
    if isinstance(attn_mask, Tensor):
        _same_device(op, query, attn_mask)
    lq, lk = query.shape[-2], key.shape[-2]
    if dropout_p > 0.0 or query.is_cuda:
        from .._ops.attention import prepare_mask

        if mask is not None and not query.is_cuda:  # same shape checks as the kernel path
            prepare_mask(mask, bshape, lq, lk, query._array.dtype)
        return _attention_composite(query, key, value, mask, is_causal, dropout_p, scale)[0]
    from .._ops.attention import prepare_mask
    from .._ops.attention import scaled_dot_product_attention as _sdpa

    m, div = prepare_mask(mask, bshape, lq, lk, query._array.dtype)
    return _sdpa(query, key, value, m, div, scale, is_causal)
