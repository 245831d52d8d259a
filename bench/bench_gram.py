"""Benchmarks of ``gram`` (G = J Jᵀ, J [T, P] fp32) against its two baselines.

One group per (device, T, P), three implementations:

* ``pymtl``: :func:`pymtl.ops.gram`, the compiled op through its ``torch.library`` wrapper;
* ``matmul``: ``J @ J.T``, what one writes without the op (BLAS / cuBLAS sgemm);
* ``copy``: ``buf.copy_(J)`` into a preallocated buffer, a memory-bandwidth floor. It reads J
  once and also writes as much, so a kernel that only reads J once can beat it (by up to ~2x
  when both are bandwidth-bound).

``extra_info`` holds impl, device, T, P, the bytes of J and ``GBps``: those bytes over the min
time (the rate at which J was read; for ``copy``, half the traffic it moved).

Run: ``pytest bench --benchmark-only``; with ``--benchmark-disable`` every body runs once as a
correctness test (``pymtl`` and ``matmul`` against an fp64 Gram, ``copy`` exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from bench._ops_common import DEVICES, InputCache, run_timed, short
from pymtl.ops import gram

SHAPES = [(T, P) for T in (3, 10, 40) for P in (1_000_000, 10_000_000)]
IMPLS = ["pymtl", "matmul", "copy"]

# Bound of gram's fp32 error (see tests/ops/test_gram.py): 2e-5 sqrt(G_ii G_jj), for any input.
PYMTL_TOL = 2e-5
# sgemm promises no more than the P-term worst case; this only catches a wrong answer.
MATMUL_TOL = 1e-2


CASES = [
    pytest.param(device, T, P, impl, id=f"{device}-T{T}-P{short(P)}-{impl}")
    for device in DEVICES
    for T, P in SHAPES
    for impl in IMPLS  # innermost: the three share one cached input
]

# One shape's inputs at a time (T=40, P=1e7 fp32 is 1.6 GB, and the buffer as much again).
_cache = InputCache()
_free_inputs = _cache.fixture()


def _inputs(device: str, T: int, P: int) -> dict[str, Tensor]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator(device=device).manual_seed(T * 7919 + P)
        J = torch.randn(T, P, generator=g, device=device)
        J += torch.randn(T, 1, generator=g, device=device)  # correlated rows, as gradients are
        return {"J": J, "buf": torch.empty_like(J)}

    return _cache.get((device, T, P), device, make)


def _gram64(entry: dict[str, Tensor]) -> Tensor:
    """The fp64 Gram of ``entry["J"]``, summed over column chunks (no fp64 copy of all of J)."""
    if "G64" not in entry:
        J = entry["J"]
        G = torch.zeros(J.shape[0], J.shape[0], dtype=torch.float64, device=J.device)
        for c in range(0, J.shape[1], 1 << 20):
            Jc = J[:, c : c + (1 << 20)].to(torch.float64)
            G.addmm_(Jc, Jc.T)
        entry["G64"] = G
    return entry["G64"]


@pytest.mark.parametrize(("device", "T", "P", "impl"), CASES)
def test_gram(benchmark: Any, device: str, T: int, P: int, impl: str) -> None:
    entry = _inputs(device, T, P)
    J, buf = entry["J"], entry["buf"]
    fn: Callable[[], Tensor] = {
        "pymtl": lambda: gram(J),
        "matmul": lambda: J @ J.T,
        "copy": lambda: buf.copy_(J),
    }[impl]

    benchmark.group = f"gram {device} T={T} P={short(P)}"
    benchmark.extra_info.update(impl=impl, device=device, T=T, P=P, dtype="float32", bytes=J.nbytes)
    out = run_timed(benchmark, fn, device, J.nbytes)

    if impl == "copy":
        assert torch.equal(out, J)
        return
    R = _gram64(entry)
    d = R.diagonal().sqrt()
    err = (out.to(torch.float64) - R).abs() / (d[:, None] * d[None, :])
    tol = PYMTL_TOL if impl == "pymtl" else MATMUL_TOL
    assert err.max().item() <= tol, f"{impl}: error {err.max().item():.3g} sqrt(G_ii G_jj)"
