"""``ember.save`` / ``ember.load``: checkpoints as one safetensors file, never pickle.

    ember.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, p)
    ckpt = ember.load(p)

File layout: a standard safetensors file. Its tensors are the tensor leaves of ``obj``, named
by their dotted path (``{"model": {"fc.weight": w}}`` -> ``"model.fc.weight"``; a state_dict
saved directly keeps its exact key names, so ``safetensors.torch.load_file`` hands PyTorch the
same keys). The safetensors metadata holds ``"ember.format": "1"`` and, under
``"ember.structure"``, JSON describing everything else: dicts (str or int keys, so optimizer
states round-trip), lists, tuples, numbers, strings, bools, None, and where each tensor goes.

Writes are atomic: the file is written to a temporary file in the same directory, flushed,
fsync'ed, then renamed over the target, so a crash mid-save leaves the previous checkpoint
intact. ``load`` validates the header (its length against the file size, JSON, dtypes, shapes,
offsets that must tile the data exactly, the structure against the tensors) before reading any
data, and raises ``ValueError("[load] ...")`` for a truncated, corrupt or hostile file; it
never allocates more than the file holds.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import struct
import tempfile
from typing import Any

import numpy as np

from .tensor import Tensor

__all__ = ["load", "save"]

_FORMAT = "1"
_MAX_HEADER = 100_000_000  # the limit safetensors itself applies
# safetensors dtype names ember can hold, with their numpy dtype (little-endian on disk)
_ST_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}


# ---------------------------------------------------------------------------- save
class _Flattener:
    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def _name(self, path: list[str]) -> str:
        base = ".".join(path) or "tensor"
        name, n = base, 1
        while name in self.tensors:  # {"a.b": t, "a": {"b": u}} both map to "a.b"
            name, n = f"{base}~{n}", n + 1
        return name

    def node(self, obj: Any, path: list[str]) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
            return int(obj)
        if isinstance(obj, (float, np.floating)):
            return {"float": repr(float(obj))}  # repr keeps nan/inf exact and JSON-standard
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, (Tensor, np.ndarray)):
            return self.leaf(obj, path)
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise TypeError(
                        f"[save] dict keys must be str or int, got {type(k).__name__} at "
                        f"{'.'.join(path) or '<root>'}"
                    )
                items.append([k, self.node(v, [*path, str(k)])])
            if isinstance(obj, collections.OrderedDict):  # a state_dict stays an OrderedDict
                return {"dict": items, "ordered": True}
            return {"dict": items}
        if isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {kind: [self.node(v, [*path, str(i)]) for i, v in enumerate(obj)]}
        raise TypeError(
            f"[save] can't save a {type(obj).__name__} at {'.'.join(path) or '<root>'}: "
            "only tensors, numpy arrays, numbers, strings, bools, None, dicts, lists and tuples"
        )

    def leaf(self, t, path: list[str]) -> dict:
        from .nn.parameter import Parameter

        name = self._name(path)
        if isinstance(t, Tensor):
            arr = t._host()
            node = {"tensor": name, "device": str(t.device)}
            if isinstance(t, Parameter):
                node["parameter"] = True
            elif t.requires_grad:
                node["requires_grad"] = True
        else:
            arr = t
            node = {"array": name}
        if arr.dtype.newbyteorder("<") not in _ST_DTYPES.values():
            raise TypeError(f"[save] can't save dtype {arr.dtype} (at {name})")
        # np.array, not np.ascontiguousarray: the latter turns a 0-d array (BatchNorm's
        # num_batches_tracked) into shape (1,)
        self.tensors[name] = np.array(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
        return node


def _write_safetensors(tensors: dict[str, np.ndarray], path: str, metadata: dict) -> None:
    """Write the safetensors file (a seam the tests replace to simulate a crash)."""
    import safetensors.numpy

    safetensors.numpy.save_file(tensors, path, metadata=metadata)


def save(obj: Any, f: str | os.PathLike) -> None:
    """Save ``obj`` (nested dicts/lists/tuples of tensors, numpy arrays, numbers, strings,
    bools and None: a ``state_dict``, or ``{"model": ..., "optimizer": ..., "epoch": ...}``)
    to the path ``f`` as safetensors + JSON metadata, atomically. CUDA tensors are copied to
    the host; their device is recorded. Differs from ``torch.save``: no pickle, so arbitrary
    objects are refused (TypeError), and ``f`` must be a path, not a file object."""
    path = os.fspath(f)
    flat = _Flattener()
    structure = flat.node(obj, [])
    metadata = {"ember.format": _FORMAT, "ember.structure": json.dumps(structure)}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        _write_safetensors(flat.tensors, tmp, metadata)
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        os.chmod(tmp, mode)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ---------------------------------------------------------------------------- load
def _bad(path: str, msg: str) -> ValueError:
    return ValueError(f"[load] {path}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_header(path: str) -> tuple[dict, dict]:
    """Validate a safetensors header without reading the data: (tensor entries, metadata)."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _bad(path, f"truncated file ({size} bytes): no 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise _bad(path, f"header length {n} is absurd (limit {_MAX_HEADER})")
        if n > size - 8:
            raise _bad(path, f"truncated file: header length {n} but only {size - 8} bytes follow")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"corrupt header: not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, "corrupt header: not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _bad(path, "corrupt header: __metadata__ must map strings to strings")
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in _ST_DTYPES:
            raise _bad(path, f"tensor {name!r}: unsupported dtype {dt!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _bad(path, f"tensor {name!r}: shape must be a list of non-negative ints")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise _bad(path, f"tensor {name!r}: data_offsets must be two ints")
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise _bad(
                path, f"tensor {name!r}: offsets [{begin}, {end}] outside the data ({data_len})"
            )
        nbytes = math.prod(shape) * _ST_DTYPES[dt].itemsize
        if end - begin != nbytes:
            raise _bad(
                path, f"tensor {name!r}: {dt} {shape} needs {nbytes} bytes, offsets span "
                f"{end - begin}"
            )  # fmt: skip
        spans.append((begin, end, name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise _bad(path, f"tensor {name!r}: data {what} (offset {begin}, expected {pos})")
        pos = end
    if pos != data_len:
        raise _bad(path, f"the tensors cover {pos} bytes of data but the file holds {data_len}")
    return header, meta


class _Rebuilder:
    def __init__(self, path: str, arrays: dict, map_location) -> None:
        self.path, self.arrays, self.map_location = path, arrays, map_location
        self.used: set[str] = set()

    def take(self, name) -> np.ndarray:
        if not isinstance(name, str) or name not in self.arrays:
            raise _bad(self.path, f"structure refers to a tensor {name!r} absent from the file")
        if name in self.used:
            raise _bad(self.path, f"structure refers to tensor {name!r} twice")
        self.used.add(name)
        return self.arrays[name]

    def node(self, n: Any) -> Any:
        if n is None or isinstance(n, (bool, str)) or _is_int(n):
            return n
        if not isinstance(n, dict) or len(n) == 0:
            raise _bad(self.path, f"structure has an unknown node {str(n)[:80]!r}")
        if "dict" in n and set(n) <= {"dict", "ordered"} and isinstance(n["dict"], list):
            out = collections.OrderedDict() if n.get("ordered") is True else {}
            for item in n["dict"]:
                if not (isinstance(item, list) and len(item) == 2):
                    raise _bad(self.path, "structure: dict items must be [key, value] pairs")
                k, v = item
                if not (isinstance(k, str) or _is_int(k)):
                    raise _bad(self.path, f"structure: bad dict key {k!r}")
                out[k] = self.node(v)
            return out
        if "list" in n and len(n) == 1 and isinstance(n["list"], list):
            return [self.node(v) for v in n["list"]]
        if "tuple" in n and len(n) == 1 and isinstance(n["tuple"], list):
            return tuple(self.node(v) for v in n["tuple"])
        if "float" in n and len(n) == 1 and isinstance(n["float"], str):
            try:
                return float(n["float"])
            except ValueError:
                raise _bad(self.path, f"structure: bad float {n['float'][:40]!r}") from None
        if "array" in n and len(n) == 1:
            return self.take(n["array"])
        if "tensor" in n and set(n) <= {"tensor", "device", "parameter", "requires_grad"}:
            return self.tensor(n)
        raise _bad(self.path, f"structure has an unknown node {str(n)[:80]!r}")

    def tensor(self, n: dict) -> Tensor:
        t = Tensor._wrap(self.take(n["tensor"]))
        if self.map_location is not None:
            device = self.map_location
        else:
            device = n.get("device", "cpu")
            if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d{1,4})?", device)):
                raise _bad(self.path, f"tensor {n['tensor']!r}: bad device {str(device)[:40]!r}")
        if str(device) != "cpu":
            t = t.to(device)
        if n.get("parameter") or n.get("requires_grad"):
            if not t.dtype.is_floating_point:
                raise _bad(self.path, f"tensor {n['tensor']!r}: an integer tensor can't need grad")
            if n.get("parameter"):
                from .nn.parameter import Parameter

                return Parameter(t)
            t.requires_grad_(True)
        return t


def load(f: str | os.PathLike, map_location: Any = None) -> Any:
    """Load what ``ember.save`` wrote: the same nesting of dicts (str and int keys), lists,
    tuples, numbers, strings, bools and None, with tensors back as ``Tensor`` (on the device
    they were saved from, or on ``map_location``, e.g. ``"cpu"``) and numpy arrays as arrays.
    A safetensors file written by another tool (e.g. ``safetensors.torch.save_file``) loads
    as a flat ``{name: Tensor}`` dict (dtypes ember can hold: BOOL, U8, I8, I16, I32, I64,
    F16, F32, F64; BF16 and the others are refused with a ValueError). Raises
    ``ValueError("[load] ...")`` for a truncated, corrupt or inconsistent file."""
    import safetensors

    path = os.fspath(f)
    header, meta = _read_header(path)
    arrays = {}
    try:
        with safetensors.safe_open(path, framework="np") as fh:
            for name in fh.keys():
                a = fh.get_tensor(name)
                arrays[name] = a if a.flags.writeable else a.copy()
    except safetensors.SafetensorError as e:
        raise _bad(path, f"safetensors refused the file ({e})") from None
    if set(arrays) != set(header):
        raise _bad(path, "safetensors read a different set of tensors than the header lists")
    if "ember.structure" not in meta:
        return {k: Tensor._wrap(arrays[k]) for k in sorted(header)}
    if meta.get("ember.format") != _FORMAT:
        raise _bad(path, f"unknown ember.format {meta.get('ember.format')!r}")
    try:
        structure = json.loads(meta["ember.structure"])
    except (ValueError, RecursionError) as e:
        raise _bad(path, f"corrupt ember.structure metadata ({e})") from None
    rebuild = _Rebuilder(path, arrays, map_location)
    try:
        obj = rebuild.node(structure)
    except RecursionError:
        raise _bad(path, "structure nested too deeply") from None
    unused = set(arrays) - rebuild.used
    if unused:
        raise _bad(path, f"tensors {sorted(unused)[:5]} are not referenced by the structure")
    return obj
