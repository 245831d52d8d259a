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

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from pymtl.ops import gram

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = [(T, P) for T in (3, 10, 40) for P in (1_000_000, 10_000_000)]
IMPLS = ["pymtl", "matmul", "copy"]

# Bound of gram's fp32 error (see tests/ops/test_gram.py): 2e-5 sqrt(G_ii G_jj), for any input.
PYMTL_TOL = 2e-5
# sgemm promises no more than the P-term worst case; this only catches a wrong answer.
MATMUL_TOL = 1e-2


def _short(P: int) -> str:
    return f"{P:.0e}".replace("e+0", "e")  # 1000000 -> "1e6"


CASES = [
    pytest.param(device, T, P, impl, id=f"{device}-T{T}-P{_short(P)}-{impl}")
    for device in DEVICES
    for T, P in SHAPES
    for impl in IMPLS  # innermost: the three share one cached input
]

# One shape's inputs at a time (T=40, P=1e7 fp32 is 1.6 GB, and the buffer as much again).
_cache: dict[tuple[str, int, int], dict[str, Tensor]] = {}


def _inputs(device: str, T: int, P: int) -> dict[str, Tensor]:
    key = (device, T, P)
    if key not in _cache:
        _cache.clear()
        if device == "cuda":
            torch.cuda.empty_cache()
        g = torch.Generator(device=device).manual_seed(T * 7919 + P)
        J = torch.randn(T, P, generator=g, device=device)
        J += torch.randn(T, 1, generator=g, device=device)  # correlated rows, as gradients are
        _cache[key] = {"J": J, "buf": torch.empty_like(J)}
    return _cache[key]


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


def _rounds(nbytes: int) -> int:
    """About 2 GB of J read per benchmark, 5 to 50 rounds."""
    return max(5, min(50, int(2e9 // max(nbytes, 1))))


@pytest.fixture(autouse=True, scope="module")
def _free_inputs() -> Iterator[None]:
    yield
    _cache.clear()


@pytest.mark.parametrize(("device", "T", "P", "impl"), CASES)
def test_gram(benchmark: Any, device: str, T: int, P: int, impl: str) -> None:
    entry = _inputs(device, T, P)
    J, buf = entry["J"], entry["buf"]
    fn: Callable[[], Tensor] = {
        "pymtl": lambda: gram(J),
        "matmul": lambda: J @ J.T,
        "copy": lambda: buf.copy_(J),
    }[impl]

    def timed() -> Tensor:
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"gram {device} T={T} P={_short(P)}"
    benchmark.extra_info.update(impl=impl, device=device, T=T, P=P, dtype="float32", bytes=J.nbytes)
    out = benchmark.pedantic(timed, rounds=_rounds(J.nbytes), warmup_rounds=1, iterations=1)
    if not benchmark.disabled:
        benchmark.extra_info["GBps"] = round(J.nbytes / benchmark.stats.stats.min / 1e9, 2)

    if impl == "copy":
        assert torch.equal(out, J)
        return
    R = _gram64(entry)
    d = R.diagonal().sqrt()
    err = (out.to(torch.float64) - R).abs() / (d[:, None] * d[None, :])
    tol = PYMTL_TOL if impl == "pymtl" else MATMUL_TOL
    assert err.max().item() <= tol, f"{impl}: error {err.max().item():.3g} sqrt(G_ii G_jj)"
