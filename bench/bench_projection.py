"""Benchmarks of the PCGrad / GradVac projection solvers against their NumPy loops.

One group per (method, T), T ∈ {3, 10, 40}, CPU, float64 Gram of random J [T, 2T]:

* ``pymtl``: :func:`pymtl.ops.pcgrad_weights` / :func:`pymtl.ops.gradvac_weights` (K = 1 and
  K = 8 groups), the compiled op through its ``torch.library`` wrapper;
* ``reference``: ``pcgrad_weights_reference`` / ``gradvac_weights_reference``, the NumPy loops
  the balancers ran before (T (T − 1) steps of small NumPy calls per group).

Each call gets fixed orders (drawn once), so it times the solve alone. Every body checks the
op against the reference (1e-10 relative to max |w|, see tests/ops/test_projection.py), so
``--benchmark-disable`` is a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from pymtl.balancers.pcgrad import TaskOrder
from pymtl.ops import (
    gradvac_weights,
    gradvac_weights_reference,
    pcgrad_weights,
    pcgrad_weights_reference,
)

METHODS = [("pcgrad", 1), ("gradvac", 1), ("gradvac", 8)]
CASES = [
    pytest.param(method, K, T, impl, id=f"{method}-K{K}-T{T}-{impl}")
    for method, K in METHODS
    for T in (3, 10, 40)
    for impl in ("pymtl", "reference")
]


def _inputs(K: int, T: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(T * 31 + K)
    J = torch.randn(K, T, 2 * T, generator=g, dtype=torch.float64)
    G = J @ J.mT
    target = (torch.rand(K, T, T, generator=g, dtype=torch.float64) - 0.5) * 0.2
    return G, target, TaskOrder(T, seed=T).draw_tensor()


@pytest.mark.parametrize(("method", "K", "T", "impl"), CASES)
def test_projection(benchmark: Any, method: str, K: int, T: int, impl: str) -> None:
    G, target, orders = _inputs(K, T)
    fns: dict[str, Callable[[], Tensor]] = {
        "pcgrad-pymtl": lambda: pcgrad_weights(G[0], orders),
        "pcgrad-reference": lambda: pcgrad_weights_reference(G[0], orders),
        "gradvac-pymtl": lambda: gradvac_weights(G, target, orders, 0.5)[0],
        "gradvac-reference": lambda: gradvac_weights_reference(G, target, orders, 0.5)[0],
    }
    benchmark.group = f"projection {method} K={K} T={T}"
    benchmark.extra_info.update(impl=impl, method=method, K=K, T=T)
    w = benchmark(fns[f"{method}-{impl}"])
    expected = fns[f"{method}-reference"]()
    scale = 1.0 + float(expected.abs().max())
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-10 * scale)
