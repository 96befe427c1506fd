"""Shared fixtures: CPU kernel path, device, a seeded random generator, poisoned allocations.

* ``cpu_path``: runs a test under ``ember.backends.cpu.set_cpu_path("scalar")``, ``"avx2"``
  (AVX-512 turned off, on a CPU that has it: the kernels a CPU without AVX-512 runs, which CI's
  machine would otherwise never test) and ``"auto"`` (AVX2 / AVX-512 where the CPU has them),
  and restores the previous setting afterwards. Tests parametrise it indirectly when only some
  of their cases are kernel-backed.
* ``device``: ``"cpu"``, plus ``"cuda"`` when ``ember.cuda.is_available()``, so the same tests
  run on a GPU machine.
* ``rng``: a numpy Generator seeded from the test's id (reproducible, different per test);
  ``EMBER_TEST_SEED=<int>`` changes every test's data, to look for seed-dependent failures.
* ``poison``: numpy's ``empty``/``empty_like`` return NaN-filled (floats) or sentinel-filled
  (ints) buffers for the duration of the test, so an output element a kernel never writes
  shows up as a NaN instead of as whatever the allocator happened to hand out.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import ember
from ember.backends import cpu as cpu_backend

CPU_PATHS = ("scalar", "avx2", "auto")


def _avx2_expected() -> bool:
    """Whether "auto" selects AVX2: the CPU has AVX2+FMA and they are compiled in. (An explicit
    set_cpu_path("auto") overrides EMBER_NO_AVX2, which only sets the initial choice.)"""
    caps = cpu_backend.capabilities()
    return bool(caps["avx2"] and caps["fma"] and caps["compiled_avx2"])


@pytest.fixture(params=CPU_PATHS)
def cpu_path(request):
    """The CPU kernel path the test runs under: "scalar", "avx2" (the AVX-512 kernels turned
    off, as on a CPU without them; skipped where "auto" already is that) or "auto" (the best
    the CPU has)."""
    path = request.param
    if path == "avx2":
        if not _avx2_expected():
            pytest.skip("no AVX2 kernels on this CPU")
        if not cpu_backend.capabilities()["avx512f"] or ember._C._no_avx512():
            pytest.skip('no AVX-512 in use: "auto" runs the AVX2 kernels')
    previous = (ember._C._force_scalar(), ember._C._no_avx512())
    cpu_backend.set_cpu_path("scalar" if path == "scalar" else "auto")
    if path == "avx2":
        ember._C._set_no_avx512(True)
    try:
        selected = cpu_backend.get_cpu_path()
        if path == "scalar":
            assert selected == "scalar"
        else:
            assert selected == ("avx2" if _avx2_expected() else "scalar")
        if path == "avx2":
            assert not cpu_backend.capabilities()["gemm_path"].startswith("avx512")
        yield path
    finally:
        cpu_backend.set_cpu_path("scalar" if previous[0] else "auto")
        ember._C._set_no_avx512(previous[1])


def _devices():
    return ["cpu", "cuda"] if ember.cuda.is_available() else ["cpu"]


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def rng(request):
    base = int(os.environ.get("EMBER_TEST_SEED", "0"))
    return np.random.default_rng([base, zlib.crc32(request.node.nodeid.encode())])


def _fill_poison(a):
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.dtype.kind in "iu":
        a.fill(np.iinfo(a.dtype).max)
    elif a.dtype.kind == "b":
        a.fill(True)
    return a


@pytest.fixture
def poison(monkeypatch):
    real_empty, real_empty_like = np.empty, np.empty_like

    def empty(*args, **kwargs):
        return _fill_poison(real_empty(*args, **kwargs))

    def empty_like(*args, **kwargs):
        return _fill_poison(real_empty_like(*args, **kwargs))

    monkeypatch.setattr(np, "empty", empty)
    monkeypatch.setattr(np, "empty_like", empty_like)
    yield
