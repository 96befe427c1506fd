"""The reverse pass: a topological walk over graph nodes from the roots.

Nodes are ordered by an iterative depth-first search (graphs of long recurrent unrolls would
overflow Python's recursion limit), then visited in reverse post-order, so a node runs only
after every node that feeds it a gradient. Gradients for a node's outputs are summed in a
dict keyed by the node; leaf tensors accumulate into ``.grad``.
"""

from __future__ import annotations

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

    def deliver(t, g):
        if captured is not None and id(t) in captured:
            prev = captured[id(t)]
            captured[id(t)] = g if prev is None else prev + g
            if t.grad_fn is None:
                return
        node = t.grad_fn
        if node is None:
            if captured is None and t.requires_grad:
                _accumulate_leaf(t, g)
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
            for i, (inp, g) in enumerate(zip(node._inputs, result)):
                if inp is None or g is None:
                    continue
                deliver(inp, _as_array(g, inp, node.name, i))
            if not retain_graph:
                node._release()

    if captured is not None:
        return [captured[id(t)] for t in capture]
    return None


def _accumulate_leaf(t, g):
    """``t.grad += g``, in place once a buffer exists (reusing it avoids fresh pages)."""
    from ..tensor import Tensor

    if g.dtype != t._array.dtype:
        g = g.astype(t._array.dtype)
    if t.grad is None:
        # The incoming array may be shared with another input's gradient (add's backward
        # hands the same array to both sides), so the buffer we will add into is our own copy.
        t.grad = Tensor._wrap(g.copy())
    else:
        t.grad._array += g
