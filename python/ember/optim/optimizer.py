"""``ember.optim.Optimizer``: parameter groups, per-parameter state, and PyTorch-shaped
``state_dict()`` / ``load_state_dict()``."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ..autograd.grad_mode import enable_grad, no_grad
from ..tensor import Tensor, _zero_grads


class _RequiredParameter:
    """Marks a hyper-parameter that has no default (it must be given per group)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class: ``params`` is an iterable of Tensors, or of dicts (parameter groups) each
    with ``"params"`` and optional per-group hyper-parameters that override ``defaults``.

    Subclasses implement ``step()``; ``self.state[p]`` holds each parameter's buffers.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], defaults: dict[str, Any]):
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(
                f"[{name}] params argument given to the optimizer should be an iterable of "
                "Tensors or dicts, but got a Tensor"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"[{name}] optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``{"params": [...], "lr": ...}``); missing hyper-parameters take the
        optimizer's defaults."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(
                f"[{name}] param_group must be a dict, got {type(param_group).__name__}"
            )
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                f"[{name}] optimizer parameters need to be organized in ordered "
                "collections, but the ordering of tensors in sets will change between "
                "runs. Please use a list instead."
            )
        elif params is None:
            raise ValueError(f"[{name}] a parameter group needs a 'params' entry")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"[{name}] optimizer can only optimize Tensors, but one of the "
                    f"params is {type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(f"[{name}] can't optimize a non-leaf Tensor")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"[{name}] a parameter group contains the same parameter twice")
        group["params"] = params
        for key, default in self.defaults.items():
            if default is required and key not in group:
                raise ValueError(
                    f"[{name}] parameter group didn't specify a value of required "
                    f"optimization parameter {key}"
                )
            group.setdefault(key, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"[{name}] some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized parameters: to None (default) or to zeros."""
        _zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a ``.grad``; returns ``closure()``'s loss if given
        (the closure re-evaluates the model with grad enabled). Subclasses implement
        ``_step_group(group)``, or override ``step`` itself."""
        loss = self._closure_loss(closure)
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"[{type(self).__name__}] optimizers implement _step_group()")

    def _closure_loss(self, closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``
        where parameters are numbered 0, 1, ... across groups in order (as PyTorch). The
        state tensors are the optimizer's own (not copies): deep-copy to keep a snapshot."""
        index: dict[int, int] = {}
        groups = []
        start = 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = list(range(start, start + len(g["params"])))
            index.update({id(p): i for p, i in zip(g["params"], ids)})
            packed["params"] = ids
            start += len(ids)
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by ``state_dict()`` (of an optimizer over
        parameters of the same shapes, in the same group layout). State tensors are copied,
        cast to each parameter's dtype (floating ones) and moved to its device."""
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"[{name}] loaded state dict has a different number of parameter groups"
            )
        for g, sg in zip(self.param_groups, saved_groups):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(
                    f"[{name}] loaded state dict contains a parameter group that "
                    "doesn't match the size of optimizer's group"
                )
        id_map = {
            i: p
            for g, sg in zip(self.param_groups, saved_groups)
            for i, p in zip(sg["params"], g["params"])
        }

        def cast(value, p):
            if isinstance(value, Tensor):
                dt = p.dtype if value.dtype.is_floating_point else None
                return value.detach().to(device=p.device, dtype=dt, copy=True)
            if isinstance(value, dict):
                return {k: cast(v, p) for k, v in value.items()}
            return copy.deepcopy(value)

        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k not in id_map:
                raise ValueError(
                    f"[{name}] loaded state refers to parameter {k}, which is in no parameter group"
                )
            p = id_map[k]
            s = cast(v, p)
            for key, t in s.items():
                if isinstance(t, Tensor) and t.ndim and t.shape != p.shape:
                    raise ValueError(
                        f"[{name}] state {key!r} of parameter {k} has shape "
                        f"{tuple(t.shape)} but the parameter has {tuple(p.shape)}"
                    )
            state[p] = s
        new_groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            ng = {k: copy.deepcopy(v) for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            new_groups.append(ng)
        self.state = state
        self.param_groups = new_groups

    def __repr__(self) -> str:
        s = type(self).__name__ + " ("
        for i, g in enumerate(self.param_groups):
            s += f"\nParameter Group {i}"
            for k in sorted(g):
                if k != "params":
                    s += f"\n    {k}: {g[k]}"
        return s + "\n)"
