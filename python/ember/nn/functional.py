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
from ..tensor import Tensor

__all__ = [
    "cross_entropy",
    "linear",
    "log_softmax",
    "mse_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "softmax",
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
    _float_arg(input, "input", op)
    _float_arg(target, "target", op)
    if input.shape != target.shape:
        raise ValueError(
            f"[{op}] input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ"
        )
    if input.dtype is not target.dtype:
        raise TypeError(f"[{op}] input is {input.dtype} but target is {target.dtype}")
    _same_device(op, input, target)
    d = input - target
    return _apply_reduction(d * d, reduction)
