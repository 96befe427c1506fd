"""The reverse pass: a topological walk over graph nodes from the roots.

Nodes are ordered by an iterative depth-first search (graphs of long recurrent unrolls would
overflow Python's recursion limit), then visited in reverse post-order, so a node runs only
after every node that feeds it a gradient. Gradients for a node's outputs are summed in a
dict keyed by the node; leaf tensors accumulate into ``.grad``.
"""

from __future__ import annotations

import sys

import numpy as np

from .grad_mode import no_grad


def _topo_order(roots):
    order, seen = [], set()
    for root in roots:
        if root is None or id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(root._inputs))]
        while stack:
            node, it = stack[-1]
            advanced = False
            for t in it:
                nxt = None if t is None else t.grad_fn
                if nxt is not None and id(nxt) not in seen:
                    seen.add(id(nxt))
                    stack.append((nxt, iter(nxt._inputs)))
                    advanced = True
                    break
            if not advanced:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _as_array(g, inp, name, i):
    from ..tensor import Tensor

    if isinstance(g, Tensor):
        g = g._array
    want = inp._array
    if g.shape != want.shape:
        raise RuntimeError(
            f"[{name}] backward returned a gradient of shape {g.shape} for input {i} "
            f"of shape {want.shape}"
        )
    # numpy promotions inside a backward (a float64 scalar, say) must not turn a float32
    # graph into float64 for everything upstream.
    return g if g.dtype == want.dtype else g.astype(want.dtype)


def run_backward(roots, grad_roots, retain_graph=False, capture=None):
    """Propagate ``grad_roots`` (arrays) from ``roots`` (tensors).

    With ``capture`` (a list of tensors) the gradients of those tensors are returned instead of
    being accumulated into ``.grad`` of the leaves (``ember.autograd.grad``).
    """
    from ..tensor import Tensor

    captured = {id(t): None for t in capture} if capture is not None else None
    pending = {}  # node -> list of per-output grads (arrays or None)

    def deliver(t, g, fresh=False):
        if captured is not None and id(t) in captured:
            prev = captured[id(t)]
            captured[id(t)] = g if prev is None else prev + g
            if t.grad_fn is None:
                return
        node = t.grad_fn
        if node is None:
            if captured is None and t.requires_grad:
                _accumulate_leaf(t, g, fresh)
            return
        slots = pending.get(node)
        if slots is None:
            slots = pending[node] = [None] * len(node._out_meta)
        prev = slots[t._output_nr]
        slots[t._output_nr] = g if prev is None else prev + g

    root_nodes = []
    for t, g in zip(roots, grad_roots):
        deliver(t, g)
        root_nodes.append(t.grad_fn)

    with no_grad():
        for node in _topo_order(root_nodes):
            slots = pending.pop(node, None)
            if slots is None:
                continue  # reachable, but no gradient flows into it from these roots
            if node._freed:
                raise RuntimeError(
                    f"[{node.name}] trying to backward through the graph a second time (or to "
                    "read saved tensors after they were freed). Pass retain_graph=True to the "
                    "first backward() to keep the graph."
                )
            if node._retained:
                for nr, ref in node._retained.items():
                    t = ref()
                    if t is not None and slots[nr] is not None:
                        _accumulate_leaf(t, slots[nr])
            grads = []
            for g, meta in zip(slots, node._out_meta):
                if g is None and meta is not None and node.materialize_grads:
                    shape, dt, kind = meta
                    xp = np if kind is np.ndarray else __import__("cupy")
                    g = xp.zeros(shape, dt)
                grads.append(None if g is None else Tensor._wrap(g))
            result = node._fn.backward(node, *grads)
            if not isinstance(result, tuple):
                result = (result,)
            if any(inp is not None for inp in node._inputs[len(result) :]):
                raise RuntimeError(
                    f"[{node.name}] backward returned {len(result)} gradients but forward had "
                    f"{len(node._inputs)} inputs, and a missing one requires grad"
                )
            arrays = [
                None if inp is None or g is None else _as_array(g, inp, node.name, i)
                for i, (inp, g) in enumerate(zip(node._inputs, result))
            ]
            result = g = None  # drop references: _is_fresh counts them
            for i, inp in enumerate(node._inputs[: len(arrays)]):
                g, arrays[i] = arrays[i], None
                if g is not None:
                    fresh = _is_fresh(g)  # a statement of its own: no argument on the stack
                    deliver(inp, g, fresh)
            g = None
            if not retain_graph:
                node._release()

    if captured is not None:
        return [captured[id(t)] for t in capture]
    return None


def _is_fresh(g) -> bool:
    """Whether nothing but the caller's one local variable refers to the numpy array ``g`` and
    it owns its memory: a gradient a backward allocated and returned once (not the upstream
    gradient, not an array kept in ctx, not handed to two inputs, not a view). Such an array
    can become ``.grad`` itself instead of being copied (PyTorch's AccumulateGrad steals a
    gradient on the same use-count test). ``sys.getrefcount`` sees 3 references then: the
    caller's variable, this function's parameter and its own argument; any other holder makes
    it more, and an interpreter that counts fewer only loses the shortcut."""
    return type(g) is np.ndarray and g.flags.owndata and sys.getrefcount(g) == 3


def _accumulate_leaf(t, g, fresh=False):
    """``t.grad += g``, in place once a buffer exists (reusing it avoids fresh pages).

    The first gradient becomes ``.grad``: moved when ``fresh`` (see ``_is_fresh``), else
    copied, since the incoming array may be shared (add's backward hands the same array to
    both sides, the upstream gradient may be the user's array)."""
    from ..tensor import Tensor

    if g.dtype != t._array.dtype:
        g = g.astype(t._array.dtype)
        fresh = True
    if t.grad is None:
        t.grad = Tensor._wrap(g if fresh else g.copy())
    else:
        t.grad._array += g
