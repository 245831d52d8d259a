"""Benchmarks of GradDrop's masking (J [T, B, N] fp32) against the reference composition.

One group per N ∈ {1e5, 1e6}, T = 6 tasks, B = 32 samples, leak 0, CPU (and CUDA if present):

* ``pymtl``: :func:`pymtl.ops.graddrop` (``graddrop_signed_sum`` then ``graddrop_combine``);
* ``reference``: ``graddrop_combine_reference(J, graddrop_signed_sum_reference(J, z), u, 0)``,
  the same maths in plain PyTorch (a [T, B, N] temporary per step);
* ``copy``: ``buf.copy_(J)``, the memory-bandwidth floor (the op reads J twice).

The entries of J are multiples of 1/64 in [-1, 1], so every sum here (32 terms of S, 6 of d)
is exact in fp32 in any order, and ``u`` is moved 1e-4 away from the exact purity: each
implementation must then return exactly the fp64 result, which the body asserts (so
``--benchmark-disable`` is a test). The values do not change the memory traffic timed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from bench._ops_common import DEVICES, InputCache, run_timed, short
from pymtl.ops import (
    graddrop,
    graddrop_combine_reference,
    graddrop_signed_sum_reference,
)

T, B = 6, 32
CASES = [
    pytest.param(device, N, impl, id=f"{device}-N{short(N)}-{impl}")
    for device in DEVICES
    for N in (100_000, 1_000_000)
    for impl in ("pymtl", "reference", "copy")
]
_cache = InputCache()
_free_inputs = _cache.fixture()


def _inputs(device: str, N: int) -> dict[str, Tensor]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator(device=device).manual_seed(N)
        J = torch.randint(-64, 65, (T, B, N), generator=g, device=device).float() / 64
        z = torch.randn(B, N, generator=g, device=device).relu()  # post-ReLU: many zeros
        S = graddrop_signed_sum_reference(J, z).double()
        purity = 0.5 * (1 + S.sum(0) / (S.abs().sum(0) + 1e-7))
        u = torch.rand(N, generator=g, device=device, dtype=torch.float64)
        close = (u - purity).abs() < 1e-4
        u[close] = torch.where(purity[close] > 0.5, purity[close] - 2e-4, purity[close] + 2e-4)
        return {"J": J, "z": z, "u": u.float(), "buf": torch.empty_like(J)}

    return _cache.get((device, N), device, make)


def _reference(J: Tensor, z: Tensor, u: Tensor) -> Tensor:
    return graddrop_combine_reference(J, graddrop_signed_sum_reference(J, z), u, 0.0)


@pytest.mark.parametrize(("device", "N", "impl"), CASES)
def test_graddrop(benchmark: Any, device: str, N: int, impl: str) -> None:
    entry = _inputs(device, N)
    J, z, u, buf = entry["J"], entry["z"], entry["u"], entry["buf"]
    fn: Callable[[], Tensor] = {
        "pymtl": lambda: graddrop(J, z, u, 0.0),
        "reference": lambda: _reference(J, z, u),
        "copy": lambda: buf.copy_(J),
    }[impl]

    benchmark.group = f"graddrop {device} T={T} B={B} N={short(N)}"
    benchmark.extra_info.update(impl=impl, device=device, T=T, B=B, N=N, bytes=J.nbytes)
    out = run_timed(benchmark, fn, device, J.nbytes)
    if impl == "copy":
        assert torch.equal(out, J)
        return
    expected = _reference(J.double(), z.double(), u.double())
    assert torch.equal(out.double(), expected), f"{impl}: differs from the exact result"
