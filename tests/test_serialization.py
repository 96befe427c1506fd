"""ember.save / ember.load: round trips, atomic writes, hostile files, PyTorch interop."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import ember
import ember.nn as nn
from ember import serialization


def _model_and_opt(rng):
    ember.manual_seed(int(rng.integers(1 << 30)))
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    opt = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    x = ember.from_numpy(rng.standard_normal((8, 5)).astype(np.float32))
    for _ in range(2):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
    return model, opt


def _assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, ember.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_round_trip_model_optimizer_and_metadata(tmp_path, rng):
    model, opt = _model_and_opt(rng)
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "meta": {
            "name": "run-α",
            "best": -0.125,
            "odd": [float("nan"), float("inf"), -float("inf"), 1e-310],
            "flags": (True, False, None),
            "big": 2**70,
            "ints": ember.from_numpy(rng.integers(-9, 9, (2, 3))),
            "mask": ember.from_numpy(rng.random(4) < 0.5),
            "half": ember.from_numpy(rng.standard_normal(3).astype(np.float16)),
            "np": rng.standard_normal((2, 2)),
            "empty": ember.from_numpy(np.zeros((0, 4), np.float32)),
        },
    }
    p = tmp_path / "ckpt.safetensors"
    ember.save(ckpt, p)
    back = ember.load(p)
    _assert_same(ckpt, back)
    assert list(back["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys survive
    # the loaded state restores a fresh model and optimizer to the same trajectory
    model2, opt2 = _model_and_opt(np.random.default_rng(99))
    model2.load_state_dict(back["model"])
    opt2.load_state_dict(back["optimizer"])
    x = ember.from_numpy(rng.standard_normal((4, 5)).astype(np.float32))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        (m(x) ** 2).mean().backward()
        o.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_state_dict_keys_kept_exactly_and_parameters(tmp_path, rng):
    import safetensors.numpy

    model, _ = _model_and_opt(rng)
    p = tmp_path / "m.safetensors"
    ember.save(model.state_dict(), p)
    flat = safetensors.numpy.load_file(str(p))
    assert sorted(flat) == sorted(model.state_dict())
    w = nn.Parameter(ember.from_numpy(rng.standard_normal((2, 3))))
    ember.save({"w": w, "t": ember.from_numpy(rng.standard_normal(2)).requires_grad_()}, p)
    back = ember.load(p, map_location="cpu")
    assert isinstance(back["w"], nn.Parameter) and back["t"].requires_grad
    back["t"].detach().add_(1.0)  # loaded tensors are writeable


def test_plain_safetensors_file_loads_flat(tmp_path, rng):
    import safetensors.numpy

    a = rng.standard_normal((3, 2)).astype(np.float32)
    p = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"layer.weight": a}, str(p))
    back = ember.load(p)
    assert list(back) == ["layer.weight"]
    np.testing.assert_array_equal(back["layer.weight"].numpy(), a)


def test_save_refuses_unsupported_objects(tmp_path):
    with pytest.raises(TypeError, match=r"^\[save\] can't save a object"):
        ember.save({"x": object()}, tmp_path / "a")
    with pytest.raises(TypeError, match=r"^\[save\] dict keys"):
        ember.save({(1, 2): 3}, tmp_path / "a")
    assert not os.listdir(tmp_path)  # nothing written, no temp file left


def test_key_collisions_are_disambiguated(tmp_path, rng):
    a, b = (ember.from_numpy(rng.standard_normal(2)) for _ in range(2))
    obj = {"a.b": a, "a": {"b": b}}
    ember.save(obj, tmp_path / "c")
    _assert_same(obj, ember.load(tmp_path / "c"))


# ------------------------------------------------------------------------ atomicity
def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, rng, monkeypatch):
    p = tmp_path / "ckpt.safetensors"
    old = {"w": ember.from_numpy(rng.standard_normal((4, 4))), "epoch": 1}
    ember.save(old, p)
    before = p.read_bytes()

    def crashing_writer(tensors, path, metadata):
        with open(path, "wb") as fh:
            fh.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(serialization, "_write_safetensors", crashing_writer)
    with pytest.raises(OSError, match="simulated"):
        ember.save({"w": ember.from_numpy(rng.standard_normal((4, 4))), "epoch": 2}, p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temp file is gone
    _assert_same(old, ember.load(p))

    def interrupted(tensors, path, metadata):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "_write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ember.save({"epoch": 3}, p)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_replace_is_the_commit_point(tmp_path, rng, monkeypatch):
    p = tmp_path / "ckpt"
    ember.save({"epoch": 1}, p)
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((a, b)), real_replace(a, b)))
    ember.save({"epoch": 2}, p)
    (src, dst), = calls  # fmt: skip
    assert os.path.dirname(src) == str(tmp_path) and dst == str(p)
    assert ember.load(p) == {"epoch": 2}


# ---------------------------------------------------------------------- hostile files
def _good_file(tmp_path, rng) -> bytes:
    p = tmp_path / "good"
    ember.save(
        {
            "a": ember.from_numpy(rng.standard_normal((3, 4)).astype(np.float32)),
            "b": {"c": ember.from_numpy(rng.integers(-5, 5, 6)), "n": 7},
        },
        p,
    )
    return p.read_bytes()


def _load_bytes(tmp_path, data: bytes, name="bad"):
    p = tmp_path / name
    p.write_bytes(data)
    return ember.load(p)


def test_truncated_files_raise_value_error(tmp_path, rng):
    good = _good_file(tmp_path, rng)
    for cut in sorted({0, 1, 7, 8, 9, 20, 100, len(good) // 2, len(good) - 1}):
        with pytest.raises(ValueError, match=r"^\[load\] .*(truncated|tensors cover|offsets)"):
            _load_bytes(tmp_path, good[:cut])
    with pytest.raises(ValueError, match=r"^\[load\] .*the file holds"):
        _load_bytes(tmp_path, good + b"\x00" * 3)


def test_header_length_huge_or_past_the_end(tmp_path, rng):
    good = _good_file(tmp_path, rng)
    for n in (2**64 - 1, 2**40, 100_000_001):
        with pytest.raises(ValueError, match=r"^\[load\] .*absurd"):
            _load_bytes(tmp_path, struct.pack("<Q", n) + good[8:])
    with pytest.raises(ValueError, match=r"^\[load\] .*truncated"):
        _load_bytes(tmp_path, struct.pack("<Q", len(good)) + good[8:])


def test_flipped_header_bytes_raise_value_error(tmp_path, rng):
    good = _good_file(tmp_path, rng)
    (n,) = struct.unpack("<Q", good[:8])
    for pos in range(8, 8 + n):  # every header byte
        bad = bytearray(good)
        bad[pos] ^= 0x5A
        try:
            out = _load_bytes(tmp_path, bytes(bad))
        except ValueError as e:
            assert str(e).startswith("[load] ")
        else:  # a flip inside a string the format does not check (e.g. padding) may load
            assert isinstance(out, dict)


_dev_struct = json.dumps(
    {"dict": [["a", {"tensor": "a", "device": "disk"}], ["b", {"tensor": "b.c"}]]}
)


def _rewrite(good: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + good[8 + n :]


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda h: h["a"].update(dtype="F8_E4M3"), "unsupported dtype"),
        (lambda h: h["a"].update(dtype=7), "unsupported dtype"),
        (lambda h: h["a"].update(shape=[3, -4]), "shape"),
        (lambda h: h["a"].update(shape=[2**40, 2**40]), "needs"),
        (lambda h: h["a"].update(data_offsets=[0, 10**12]), "outside the data"),
        (lambda h: h["a"].update(data_offsets=[-8, 40]), "outside the data"),
        (lambda h: h["b.c"].update(data_offsets=h["a"]["data_offsets"]), "overlaps|gap"),
        (lambda h: h["__metadata__"].update({"ember.structure": _dev_struct}), "bad device"),
        (lambda h: h["a"].update(extra=1), "exactly dtype"),
        (lambda h: h.update(__metadata__={"ember.format": 1}), "strings to strings"),
        (lambda h: h["__metadata__"].update({"ember.format": "9"}), "unknown ember.format"),
        (lambda h: h["__metadata__"].update({"ember.structure": "{"}), "corrupt ember.structure"),
        (
            lambda h: h["__metadata__"].update({"ember.structure": '{"tensor": "zz"}'}),
            "absent from the file",
        ),
        (
            lambda h: h["__metadata__"].update({"ember.structure": '{"list": [{"tensor": "a"}]}'}),
            "not referenced",
        ),
        (
            lambda h: h["__metadata__"].update(
                {"ember.structure": '{"list": [{"tensor": "a"}, {"tensor": "a"}]}'}
            ),
            "twice",
        ),
        (lambda h: h["__metadata__"].update({"ember.structure": '{"evil": 1}'}), "unknown node"),
        (
            lambda h: h["__metadata__"].update({"ember.structure": "[" * 100000 + "]" * 100000}),
            "corrupt ember.structure|too deeply",
        ),
    ],
)
def test_hostile_headers(tmp_path, rng, edit, pattern):
    good = _good_file(tmp_path, rng)
    with pytest.raises(ValueError, match=r"^\[load\] .*(" + pattern + ")"):
        _load_bytes(tmp_path, _rewrite(good, edit))


def test_non_json_header(tmp_path):
    raw = b"\xff\xfe not json"
    with pytest.raises(ValueError, match=r"^\[load\] .*not valid JSON"):
        _load_bytes(tmp_path, struct.pack("<Q", len(raw)) + raw)
    raw = b"[1, 2]"
    with pytest.raises(ValueError, match=r"^\[load\] .*not a JSON object"):
        _load_bytes(tmp_path, struct.pack("<Q", len(raw)) + raw)


# -------------------------------------------------------------------- PyTorch interop
def test_pytorch_interop_both_ways(tmp_path, rng):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    model, _ = _model_and_opt(rng)
    p = tmp_path / "ember.safetensors"
    ember.save(model.state_dict(), p)
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    tmodel.load_state_dict(safetensors.torch.load_file(str(p)))  # strict: same key names
    x = rng.standard_normal((6, 5)).astype(np.float32)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    with ember.no_grad():
        got = model(ember.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # and back: a PyTorch state_dict saved by safetensors.torch loads into an ember model
    tmodel2 = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    q = tmp_path / "torch.safetensors"
    safetensors.torch.save_file(tmodel2.state_dict(), str(q))
    model.load_state_dict(ember.load(q))
    with torch.no_grad():
        want = tmodel2(torch.from_numpy(x)).numpy()
    with ember.no_grad():
        got = model(ember.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_zero_dim_tensor_keeps_its_shape(tmp_path):
    """0-d tensors (BatchNorm's num_batches_tracked) come back 0-d, not as shape (1,)."""
    t = ember.zeros((), dtype=ember.int64)
    ember.save({"a": t, "nested": {"b": t + 3}}, tmp_path / "z.safetensors")
    d = ember.load(tmp_path / "z.safetensors")
    assert d["a"].shape == () and d["nested"]["b"].shape == ()
    assert int(d["nested"]["b"].item()) == 3
