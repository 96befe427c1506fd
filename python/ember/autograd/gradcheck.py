"""``gradcheck``: compare autograd gradients with float64 central differences.

The default compares full Jacobians, column by column, as PyTorch does (exact, fine for the
small inputs of tests). ``fast_mode=True`` instead checks one random projection per input:
u^T J v by finite differences along v against (J^T u) . v from a single backward pass.
"""

from __future__ import annotations

import numpy as np

from .grad_mode import no_grad


def _outputs(fn, inputs):
    from ..tensor import Tensor

    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, Tensor) and o.dtype.is_floating_point]


def _flat_outputs(fn, inputs):
    with no_grad():
        return np.concatenate(
            [np.asarray(o._array, np.float64).ravel() for o in _outputs(fn, inputs)]
        )


def _check_inputs(inputs):
    from ..tensor import Tensor

    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not diff:
        raise ValueError("[gradcheck] no input requires grad")
    for i, t in enumerate(diff):
        if t.dtype.name != "float64":
            raise TypeError(f"[gradcheck] differentiable input {i} is {t.dtype}; use float64")
        if t.device.type != "cpu":
            raise ValueError("[gradcheck] inputs must be CPU tensors")
    return diff


def _perturbed(fn, inputs, t, flat_index, delta):
    a = t._array
    view = a.reshape(-1) if a.flags.c_contiguous else None
    if view is None:
        raise ValueError("[gradcheck] differentiable inputs must be contiguous")
    old = view[flat_index]
    view[flat_index] = old + delta
    try:
        return _flat_outputs(fn, inputs)
    finally:
        view[flat_index] = old


def _analytic_vjp(fn, inputs, diff, u):
    from .engine import run_backward

    outs = _outputs(fn, inputs)
    grads, off = [], 0
    for o in outs:
        n = o.numel()
        grads.append(u[off : off + n].reshape(o.shape).astype(o._array.dtype))
        off += n
    roots = [o for o in outs if o.requires_grad]
    groots = [g for o, g in zip(outs, grads) if o.requires_grad]
    if not roots:
        return [np.zeros(t.shape) for t in diff]
    res = run_backward(roots, groots, capture=diff)
    return [
        np.zeros(t.shape) if g is None else np.asarray(g, np.float64) for g, t in zip(res, diff)
    ]


def gradcheck(
    fn,
    inputs,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    fast_mode: bool = False,
    seed: int = 0,
) -> bool:
    """Check ``fn``'s autograd gradients against central differences (float64 inputs).

    ``inputs``: a tensor or tuple of tensors/other args; those with ``requires_grad`` are
    checked. Returns True, or raises ``GradcheckError`` (or returns False) with the worst entry.
    """
    from ..tensor import Tensor

    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    diff = _check_inputs(inputs)
    base = _flat_outputs(fn, inputs)
    rng = np.random.default_rng(seed)

    def fail(msg):
        if raise_exception:
            raise GradcheckError(msg)
        return False

    if fast_mode:
        u = rng.standard_normal(base.size)
        analytic = _analytic_vjp(fn, inputs, diff, u)
        for k, t in enumerate(diff):
            v = rng.standard_normal(t.shape)
            a = t._array
            old = a.copy()
            a += eps * v
            fp = _flat_outputs(fn, inputs)
            a[...] = old - eps * v
            fm = _flat_outputs(fn, inputs)
            a[...] = old
            num = float(u @ ((fp - fm) / (2 * eps)))
            ana = float((analytic[k] * v).sum())
            if abs(num - ana) > atol + rtol * abs(num):
                return fail(f"[gradcheck] input {k}: u^T J v numerical {num!r} vs analytic {ana!r}")
        return True

    # Full Jacobians: numerical column by column, analytic row by row.
    for k, t in enumerate(diff):
        n = t.numel()
        num = np.zeros((base.size, n))
        for j in range(n):
            fp = _perturbed(fn, inputs, t, j, eps)
            fm = _perturbed(fn, inputs, t, j, -eps)
            num[:, j] = (fp - fm) / (2 * eps)
        ana = np.zeros((base.size, n))
        for r in range(base.size):
            u = np.zeros(base.size)
            u[r] = 1.0
            ana[r] = _analytic_vjp(fn, inputs, diff, u)[k].ravel()
        err = np.abs(num - ana) - (atol + rtol * np.abs(num))
        if err.size and err.max() > 0:
            r, j = np.unravel_index(int(err.argmax()), err.shape)
            return fail(
                f"[gradcheck] Jacobian mismatch for input {k} at output {r}, element {j}: "
                f"numerical {num[r, j]!r} vs analytic {ana[r, j]!r}"
            )
    return True


class GradcheckError(RuntimeError):
    pass
