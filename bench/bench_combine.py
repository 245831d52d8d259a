"""Benchmarks of ``combine`` (d = Jᵀ w, J [T, P] fp32) against its baselines.

One group per (device, T, P), five implementations:

* ``pymtl``: :func:`pymtl.ops.combine`, a fresh [P] result per call;
* ``pymtl_out``: the same kernel writing into a preallocated [P] buffer (``out=``);
* ``matmul``: ``w @ J``, what one writes without the op (MKL sgemv / cuBLAS), fresh result;
* ``matmul_out``: ``torch.mv(J.mT, w, out=buf)``;
* ``copy``: ``buf.copy_(J)`` into a preallocated buffer, the memory-bandwidth floor. It reads
  J once and writes as much; combine reads J once and writes only P values.

``extra_info`` holds impl, device, T, P, the bytes of J and ``GBps`` (bytes of J over the min
time). ``--benchmark-disable`` runs every body once as a correctness test (P = 1e7 skipped
there): each result must be within ``(T + 2) u Σ_t |w_t J_tp|`` of an fp64 ``Jᵀ w`` (the
bound of any order of the T-term sum, see tests/ops/test_combine.py), ``copy`` exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from bench._ops_common import DEVICES, InputCache, run_timed, short
from pymtl.ops import combine

SHAPES = [(T, P) for T in (3, 10, 40) for P in (1_000_000, 10_000_000)]
IMPLS = ["pymtl", "pymtl_out", "matmul", "matmul_out", "copy"]
U32 = 2.0**-24


CASES = [
    pytest.param(device, T, P, impl, id=f"{device}-T{T}-P{short(P)}-{impl}")
    for device in DEVICES
    for T, P in SHAPES
    for impl in IMPLS  # innermost: the implementations share one cached input
]

_cache = InputCache()
_free_inputs = _cache.fixture()


def _inputs(device: str, T: int, P: int) -> dict[str, Tensor]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator(device=device).manual_seed(T * 7919 + P)
        J = torch.randn(T, P, generator=g, device=device)
        J += torch.randn(T, 1, generator=g, device=device)
        w = torch.randn(T, generator=g, device=device)
        return {"J": J, "w": w, "buf": torch.empty_like(J), "d": torch.empty_like(J[0])}

    return _cache.get((device, T, P), device, make)


def _exact(entry: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """fp64 ``Jᵀ w`` and ``|J|ᵀ |w|``, summed over column chunks (no fp64 copy of all of J)."""
    if "exact" not in entry:
        J, w = entry["J"], entry["w"].double()
        parts = [
            (w @ J[:, c : c + (1 << 20)].double(), w.abs() @ J[:, c : c + (1 << 20)].double().abs())
            for c in range(0, J.shape[1], 1 << 20)
        ]
        entry["exact"] = torch.cat([p[0] for p in parts])
        entry["magnitude"] = torch.cat([p[1] for p in parts])
    return entry["exact"], entry["magnitude"]


@pytest.mark.parametrize(("device", "T", "P", "impl"), CASES)
def test_combine(benchmark: Any, device: str, T: int, P: int, impl: str) -> None:
    if benchmark.disabled and P > 1_000_000:
        pytest.skip("P = 1e7 only in timed runs (--benchmark-only)")
    entry = _inputs(device, T, P)
    J, w, buf, d = entry["J"], entry["w"], entry["buf"], entry["d"]
    fn: Callable[[], Tensor] = {
        "pymtl": lambda: combine(J, w),
        "pymtl_out": lambda: combine(J, w, out=d),
        "matmul": lambda: w @ J,
        "matmul_out": lambda: torch.mv(J.mT, w, out=d),
        "copy": lambda: buf.copy_(J),
    }[impl]

    benchmark.group = f"combine {device} T={T} P={short(P)}"
    benchmark.extra_info.update(impl=impl, device=device, T=T, P=P, dtype="float32", bytes=J.nbytes)
    out = run_timed(benchmark, fn, device, J.nbytes)

    if impl == "copy":
        assert torch.equal(out, J)
        return
    exact, magnitude = _exact(entry)
    err = (out.double() - exact).abs()
    assert (err <= (T + 2) * U32 * magnitude).all(), f"{impl}: max error {err.max().item():.3g}"
