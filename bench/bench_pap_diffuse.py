"""Benchmarks of ``pap_diffuse`` (PAP-Net's affinity diffusion, norm ``softmax``), forward and
backward, against its two baselines.

One group per (device, grid), B = 2, T = 3, C' = C = 128, one diffusion step, fp32; each
body runs y = f(f, x, θ) and backpropagates ⟨y, w⟩ into f, x and θ. Implementations:

* ``pymtl``: :func:`pymtl.ops.pap_diffuse`, the compiled shared-key attention (logits computed
  once per block and applied to all T·C value columns; flash-style backward);
* ``reference``: :func:`pymtl.ops.pap_diffuse_reference`, the materialised SPEC equations
  (every N×N affinity and mix; 3 GB per N×N fp32 matrix at 144×192, so it runs only where its
  estimated peak fits in ``REFERENCE_LIMIT_BYTES`` and is skipped with that reason otherwise);
* ``sdpa``: the same diffusion composed of ``torch.nn.functional.scaled_dot_product_attention``
  calls, one per source with V = all tasks' values, then the same T×T mix.

``extra_info`` holds impl, device, the sizes and ``peak_bytes``: the extra memory one forward
and backward needs at its peak, measured by ``bench._ops_common.peak_memory_bytes`` on an
untimed run after a warm-up run, before the timed ones (cpu: the resident-set high-water mark,
which also counts the C++ kernels' own scratch; cuda: ``torch.cuda.max_memory_allocated``),
and ``cpu_seconds``, the process CPU time of that run over all threads (on a machine shared
with other jobs, the wall times of all implementations stretch; their CPU time much less).

Run: ``pytest bench/bench_pap_diffuse.py --benchmark-only`` (``-k 72x96`` for the first grid
only). Under ``--benchmark-disable`` every body runs once on a 8×12 grid as a correctness test:
the result and the gradients against the fp64 reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from bench._ops_common import DEVICES, InputCache, peak_memory_bytes
from pymtl.ops import pap_diffuse, pap_diffuse_reference

B, T, CQ, C = 2, 3, 128, 128
GRIDS = {"cpu": [(72, 96), (144, 192)], "cuda": [(72, 96), (144, 192), (288, 384)]}
SMOKE_GRID = (8, 12)  # under --benchmark-disable
IMPLS = ["pymtl", "reference", "sdpa"]
REFERENCE_LIMIT_BYTES = 6e9
# Measured peak of the reference's forward + backward over B·T·N² fp32 entries: 4.3 on the CPU
# at 72×96 (5.0 GB).
REFERENCE_PEAK_FACTOR = 4.5
FP32_RTOL = 1e-4  # against fp64: see tests/ops/test_pap.py


def sdpa_diffuse(f: Tensor, x: Tensor, alpha_logits: Tensor, beta: float = 0.05) -> Tensor:
    """One diffusion step with one SDPA call per source i (V = [X_1 | … | X_T])."""
    Bn, Tn, N, Cx = x.shape
    alpha = torch.softmax(alpha_logits, dim=0).to(x.dtype)
    V = x.transpose(1, 2).reshape(Bn, 1, N, Tn * Cx)
    scale = 1.0 / math.sqrt(f.shape[-1])
    heads = [
        F.scaled_dot_product_attention(f[:, i : i + 1], f[:, i : i + 1], V, scale=scale)
        for i in range(Tn)
    ]
    O = torch.cat(heads, dim=1)  # [B, T(i), N, T·C]
    Y = torch.einsum("ij,binjc->bjnc", alpha, O.view(Bn, Tn, N, Tn, Cx))
    return beta * Y + (1 - beta) * x


FNS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "pymtl": pap_diffuse,
    "reference": pap_diffuse_reference,
    "sdpa": sdpa_diffuse,
}

CASES = [
    pytest.param(device, grid, impl, id=f"{device}-{grid[0]}x{grid[1]}-{impl}")
    for device in DEVICES
    for grid in GRIDS[device]
    for impl in IMPLS  # innermost: the implementations share one cached input
]

_cache = InputCache()
_free_inputs = _cache.fixture()


def _inputs(device: str, N: int) -> dict[str, Tensor]:
    def make() -> dict[str, Tensor]:
        g = torch.Generator(device=device).manual_seed(N)
        return {
            "f": torch.randn(B, T, N, CQ, generator=g, device=device),
            "x": torch.randn(B, T, N, C, generator=g, device=device),
            "theta": torch.randn(T, T, generator=g, device=device),
            "w": torch.randn(B, T, N, C, generator=g, device=device),
        }

    return _cache.get((device, N), device, make)


def _step(impl: str, entry: dict[str, Tensor]) -> Callable[[], list[Tensor]]:
    """Forward and backward of ``impl``: returns ``[y, df, dx, dθ]``."""

    def run() -> list[Tensor]:
        f, x, theta = (entry[k].detach().requires_grad_() for k in ("f", "x", "theta"))
        leaves = [f, x, theta]
        y = FNS[impl](f, x, theta)
        grads = torch.autograd.grad((y * entry["w"]).sum(), leaves)
        if leaves[0].is_cuda:
            torch.cuda.synchronize()
        return [y.detach(), *grads]

    return run


def _check_against_fp64(got: list[Tensor], entry: dict[str, Tensor], impl: str) -> None:
    f, x, theta = (entry[k].double().requires_grad_() for k in ("f", "x", "theta"))
    leaves = [f, x, theta]
    y = pap_diffuse_reference(f, x, theta)
    want = [y.detach(), *torch.autograd.grad((y * entry["w"].double()).sum(), leaves)]
    for name, a, b in zip(["y", "df", "dx", "dtheta"], got, want, strict=True):
        err = (a.double() - b).abs().max().item()
        assert err <= FP32_RTOL * max(b.abs().max().item(), 1.0), f"{impl} {name}: {err:.3g}"


@pytest.mark.parametrize(("device", "grid", "impl"), CASES)
def test_pap_diffuse(benchmark: Any, device: str, grid: tuple[int, int], impl: str) -> None:
    h, w = SMOKE_GRID if benchmark.disabled else grid
    N = h * w
    estimate = REFERENCE_PEAK_FACTOR * B * T * N * N * 4
    if impl == "reference" and estimate > REFERENCE_LIMIT_BYTES:
        pytest.skip(
            f"reference at {h}x{w} needs ~{estimate / 1e9:.0f} GB (N² = {N * N / 1e6:.0f} M "
            f"entries per affinity), over the {REFERENCE_LIMIT_BYTES / 1e9:.0f} GB limit"
        )
    entry = _inputs(device, N)
    run = _step(impl, entry)
    benchmark.group = f"pap_diffuse {device} {h}x{w}"
    benchmark.extra_info.update(impl=impl, device=device, B=B, T=T, N=N, Cq=CQ, C=C)
    if not benchmark.disabled:
        run()  # warm-up: one-time costs (thread pools, first-touch of allocator arenas)
    cpu_start = time.process_time()
    peak = peak_memory_bytes(run, device)
    cpu_seconds = time.process_time() - cpu_start  # all threads; less than wall × threads
    benchmark.extra_info.update(
        peak_bytes=peak, peak_MB=round(peak / 2**20, 1), cpu_seconds=round(cpu_seconds, 3)
    )
    rounds = 3 if N <= 72 * 96 or device == "cuda" else 1
    got = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
    if benchmark.disabled:
        _check_against_fp64(got, entry, impl)
