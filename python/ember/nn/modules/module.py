"""``ember.nn.Module``: the base class of every layer and model.

A Module keeps its Parameters, buffers and sub-Modules in three ordered dicts, filled by
attribute assignment (``self.fc = Linear(...)``), and walks them recursively for
``parameters()``, ``state_dict()``, ``to()`` and the rest, with PyTorch's names, signatures
and key naming (``"fc.weight"``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import _dtype as D
from ...autograd.grad_mode import no_grad
from ...tensor import Tensor, _zero_grads
from ..parameter import Parameter

if TYPE_CHECKING:
    from typing_extensions import Self


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns: the keys it could not match, both ways."""

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods: ``handle.remove()`` unregisters the hook.
    Also a context manager that removes the hook on exit."""

    _next_id = itertools.count()

    def __init__(self, hooks: dict, with_kwargs: set):
        self.hooks, self.with_kwargs = hooks, with_kwargs
        self.id = next(RemovableHandle._next_id)

    def remove(self) -> None:
        self.hooks.pop(self.id, None)
        self.with_kwargs.discard(self.id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _addindent(s: str, num_spaces: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * num_spaces + line for line in lines[1:])


def _check_name(name, op: str, module: Module, table: dict) -> None:
    if not isinstance(name, str):
        raise TypeError(f"[{op}] name should be a string, got {type(name).__name__}")
    if name == "":
        raise KeyError(f'[{op}] name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'[{op}] name can\'t contain ".", got {name!r}')
    if hasattr(module, name) and name not in table:
        raise KeyError(f"[{op}] attribute {name!r} already exists")


class Module:
    """Base class for all neural-network modules; subclasses define ``forward``.

    Example::

        class Net(ember.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = ember.nn.Linear(4, 2)

            def forward(self, x):          # x: [N, 4] -> [N, 2]
                return self.fc(x).relu()
    """

    training: bool

    def __init__(self) -> None:
        # object.__setattr__: our own __setattr__ looks for these dicts.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks_with_kwargs", set())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks_with_kwargs", set())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'[{self._get_name()}] Module [{self._get_name()}] is missing the required "forward" '
            "function"
        )

    # ------------------------------------------------------------------ registration
    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add ``param`` (a Parameter, or None for an optional one such as a missing bias)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                "[register_parameter] cannot assign parameter before Module.__init__() call"
            )
        _check_name(name, "register_parameter", self, self._parameters)
        if param is None:
            self._parameters[name] = None
            return
        if not isinstance(param, Parameter):
            raise TypeError(
                f"[register_parameter] cannot assign '{type(param).__name__}' object to parameter "
                f"'{name}' (ember.nn.Parameter or None required)"
            )
        if param.grad_fn is not None:
            raise ValueError(
                f"[register_parameter] cannot assign non-leaf Tensor to parameter '{name}'. Model "
                "parameters must be created explicitly; to express '{name}' as a function of "
                "another Tensor, compute the value in the forward() method."
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a tensor that is state but not a parameter (e.g. running statistics).

        Persistent buffers are part of ``state_dict()``; non-persistent ones are not."""
        if "_buffers" not in self.__dict__:
            raise AttributeError(
                "[register_buffer] cannot assign buffer before Module.__init__() call"
            )
        _check_name(name, "register_buffer", self, self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"[register_buffer] cannot assign '{type(tensor).__name__}' object to buffer "
                f"'{name}' (ember.Tensor or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module, reachable as the attribute ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"[add_module] {type(module).__name__} is not a Module subclass")
        _check_name(name, "add_module", self, self._modules)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")

        def remove_from(*dicts_or_sets):
            for d in dicts_or_sets:
                if name in d:
                    if isinstance(d, dict):
                        del d[name]
                    else:
                        d.discard(name)

        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError(
                    "[Module] cannot assign parameters before Module.__init__() call"
                )
            remove_from(
                self.__dict__, self._buffers, self._modules, self._non_persistent_buffers_set
            )
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"[Module] cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(ember.nn.Parameter or None expected)"
                )
            self.register_parameter(name, value)
        else:
            modules = self.__dict__.get("_modules")
            if isinstance(value, Module):
                if modules is None:
                    raise AttributeError(
                        "[Module] cannot assign module before Module.__init__() call"
                    )
                remove_from(
                    self.__dict__, self._parameters, self._buffers, self._non_persistent_buffers_set
                )
                modules[name] = value
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(
                        f"[Module] cannot assign '{type(value).__name__}' as child module "
                        f"'{name}' (ember.nn.Module or None expected)"
                    )
                modules[name] = value
            else:
                buffers = self.__dict__.get("_buffers")
                if buffers is not None and name in buffers:
                    if value is not None and not isinstance(value, Tensor):
                        raise TypeError(
                            f"[Module] cannot assign '{type(value).__name__}' as buffer "
                            f"'{name}' (ember.Tensor or None expected)"
                        )
                    buffers[name] = value
                else:
                    object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: look in the three registries.
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"[Module] '{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._buffers:
            del self._buffers[name]
            self._non_persistent_buffers_set.discard(name)
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        keys = list(super().__dir__())
        keys += list(self._parameters) + list(self._buffers) + list(self._modules)
        return sorted({k for k in keys if not k[0].isdigit()})

    # ------------------------------------------------------------------ traversal
    def _named_members(
        self, get_members, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ):
        memo = set()
        modules = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else [(prefix, self)]
        )
        for module_prefix, module in modules:
            for k, v in get_members(module):
                if v is None or (remove_duplicate and id(v) in memo):
                    continue
                if remove_duplicate:
                    memo.add(id(v))
                yield (module_prefix + ("." if module_prefix else "") + k, v)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs, e.g. ``("0.weight", ...)``; a parameter shared by several
        modules is listed once (under its first name) unless ``remove_duplicate=False``."""
        return self._named_members(
            lambda m: m._parameters.items(), prefix, recurse, remove_duplicate
        )

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The module's parameters (and its descendants' when ``recurse``), each once."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct children (name, module), each module once."""
        memo = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in memo:
                memo.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """This module and all descendants, depth first, pre-order (self first, name ``""``)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from m.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def get_submodule(self, target: str) -> Module:
        """The descendant named ``target`` (``"encoder.0"``); ``""`` is the module itself."""
        mod = self
        for item in target.split(".") if target else []:
            if item not in mod._modules or mod._modules[item] is None:
                raise AttributeError(
                    f"[get_submodule] {mod._get_name()} has no submodule named {item!r}"
                )
            mod = mod._modules[item]
        return mod

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant (affects Dropout, BatchNorm)."""
        if not isinstance(mode, bool):
            raise TypeError(f"[train] training mode is expected to be boolean, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``.grad``: to None (default), or to zeros in place."""
        _zero_grads(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ state dict
    def state_dict(
        self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, Tensor]:
        """name -> tensor for every parameter and persistent buffer (``"fc.weight"`` ...).

        The tensors share memory with the module's (they are detached unless ``keep_vars``),
        so clone them if the module will keep training and you want a snapshot."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(
                    destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars
                )
        return destination

    def _local_state(self, prefix: str) -> dict[str, Tensor]:
        out = {prefix + k: v for k, v in self._parameters.items() if v is not None}
        out.update(
            {
                prefix + k: v
                for k, v in self._buffers.items()
                if v is not None and k not in self._non_persistent_buffers_set
            }
        )
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> _IncompatibleKeys:
        """Copy values from ``state_dict`` into this module's parameters and buffers, in place.

        Every entry is checked before anything is written (ember differs from PyTorch here:
        a failed load leaves the module unchanged). Shapes must match exactly (ValueError);
        with ``strict`` (default) the key sets must match too (RuntimeError listing the keys).
        Returns ``(missing_keys, unexpected_keys)``. Values may be Tensors or numpy arrays;
        they are cast to each parameter's dtype and device.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"[load_state_dict] expected a mapping of names to tensors, got "
                f"{type(state_dict).__name__}"
            )
        own: dict[str, Tensor] = {}
        for prefix, module in self.named_modules(remove_duplicate=False):
            own.update(module._local_state(prefix + "." if prefix else ""))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            msgs = []
            if unexpected:
                msgs.append(
                    "Unexpected key(s) in state_dict: "
                    + ", ".join(f'"{k}"' for k in unexpected)
                    + "."
                )
            if missing:
                msgs.append(
                    "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + "."
                )
            raise RuntimeError(
                f"[load_state_dict] Error(s) in loading state_dict for {self._get_name()}:\n\t"
                + "\n\t".join(msgs)
            )
        pairs = []
        for key, dst in own.items():
            if key not in state_dict:
                continue
            src = state_dict[key]
            if isinstance(src, np.ndarray):
                src = Tensor._wrap(src)
            if not isinstance(src, Tensor):
                raise TypeError(
                    f"[load_state_dict] value for {key} must be a Tensor or numpy array, got "
                    f"{type(src).__name__}"
                )
            if src.shape != dst.shape:
                raise ValueError(
                    f"[load_state_dict] size mismatch for {key}: copying a param with shape "
                    f"{tuple(src.shape)} from checkpoint, the shape in current model is "
                    f"{tuple(dst.shape)}."
                )
            pairs.append((dst, src))
        with no_grad():
            for dst, src in pairs:
                if src._array is not dst._array:
                    dst.copy_(src)
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ conversion
    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every descendant (children first) and then on self; returns self.
        Typical use: custom initialisation, ``model.apply(init_weights)``."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> Module:
        """Replace every parameter's (and its grad's) array by ``fn``'s result, in place, so
        Parameter objects (and the optimizer state keyed by them) survive; buffers are
        rebound to the new tensors."""
        with no_grad():
            for m in self.modules():
                for p in m._parameters.values():
                    if p is None:
                        continue
                    new = fn(p)
                    if new._array is not p._array:
                        p._array = new._array
                        p._bump_version()
                    if p.grad is not None:
                        g = fn(p.grad)
                        if g._array is not p.grad._array:
                            p.grad = Tensor._wrap(g._array)
                for k, b in m._buffers.items():
                    if b is not None:
                        m._buffers[k] = fn(b)
        return self

    def to(self, *args, **kwargs) -> Module:
        """Move/cast parameters and buffers in place: ``to(device)``, ``to(dtype)``,
        ``to(device, dtype)``, ``to(tensor)``; keywords ``device=``, ``dtype=``.

        A dtype applies to floating-point parameters and buffers only (integer buffers keep
        theirs), as in PyTorch."""
        from ..._device import device as Device

        dtype, dev = kwargs.pop("dtype", None), kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"[Module.to] unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype, dev = a.dtype, a.device
            elif isinstance(a, (str, Device)):
                dev = a
            elif isinstance(a, int) and not isinstance(a, bool):
                dev = f"cuda:{a}"
            else:
                dtype = a
        if dtype is not None:
            dtype = D.to_dtype(dtype)
            if not dtype.is_floating_point:
                raise TypeError(
                    f"[Module.to] only accepts floating point dtypes, but got desired dtype={dtype}"
                )

        def convert(t: Tensor) -> Tensor:
            dt = dtype if dtype is not None and t.dtype.is_floating_point else None
            return t.to(device=dev, dtype=dt)

        return self._apply(convert)

    def cpu(self) -> Module:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Module:
        if device is None:
            return self.to("cuda")
        return self.to(f"cuda:{device}" if isinstance(device, int) else device)

    def float(self) -> Module:
        return self.to(D.float32)

    def double(self) -> Module:
        return self.to(D.float64)

    def half(self) -> Module:
        return self.to(D.float16)

    # ------------------------------------------------------------------ hooks and call
    def register_forward_pre_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """``hook(module, args)`` runs before ``forward``; it may return new args (a tuple,
        or a single value that is wrapped into one). With ``with_kwargs=True`` it is called as
        ``hook(module, args, kwargs)`` and may return ``(args, kwargs)``."""
        handle = RemovableHandle(self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs)
        self._forward_pre_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs.add(handle.id)
        if prepend:
            self._forward_pre_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """``hook(module, args, output)`` runs after ``forward``; a non-None return value
        replaces the output. With ``with_kwargs=True``: ``hook(module, args, kwargs, output)``."""
        handle = RemovableHandle(self._forward_hooks, self._forward_hooks_with_kwargs)
        self._forward_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_hooks_with_kwargs.add(handle.id)
        if prepend:
            self._forward_hooks.move_to_end(handle.id, last=False)
        return handle

    def __call__(self, *args, **kwargs):
        if not self._forward_pre_hooks and not self._forward_hooks:
            return self.forward(*args, **kwargs)
        for hid, hook in list(self._forward_pre_hooks.items()):
            if hid in self._forward_pre_hooks_with_kwargs:
                res = hook(self, args, kwargs)
                if res is not None:
                    if not (isinstance(res, tuple) and len(res) == 2):
                        raise RuntimeError(
                            "[forward_pre_hook] a hook registered with_kwargs=True must return "
                            f"None or a tuple (args, kwargs), got {type(res).__name__}"
                        )
                    args, kwargs = res
            else:
                res = hook(self, args)
                if res is not None:
                    args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hid, hook in list(self._forward_hooks.items()):
            if hid in self._forward_hooks_with_kwargs:
                res = hook(self, args, kwargs, out)
            else:
                res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    # ------------------------------------------------------------------ repr
    def _get_name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({k}): " + _addindent(repr(m), 2) for k, m in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                body = extra_lines[0]
            else:
                body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"
