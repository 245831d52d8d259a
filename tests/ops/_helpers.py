"""Helpers shared by the op tests in ``tests/ops`` [pymtl]."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch import Tensor

import pymtl._ext

DTYPES = [torch.float32, torch.float64]


def kernel_available(device: str) -> bool:
    """Whether the ops run a compiled kernel on ``device`` (else they run their references)."""
    ext = pymtl._ext.extension
    return ext is not None and (device == "cpu" or (device == "cuda" and ext.has_cuda))


def unit_roundoff(dtype: torch.dtype) -> float:
    """u of ``dtype``: 2^-24 for fp32, 2^-53 for fp64."""
    return 2.0**-24 if dtype == torch.float32 else 2.0**-53


def make_J(T: int, P: int, dtype: torch.dtype, device: str, seed: int = 0) -> Tensor:
    """Gradient-like rows: each its own mean (so rows correlate) and a power-of-two scale
    (rows of very different norms; the scaling itself is exact). Made on the CPU, so every
    device sees the same numbers."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(T, P, generator=g, dtype=torch.float64)
    J += torch.randn(T, 1, generator=g, dtype=torch.float64)
    J *= 2.0 ** torch.randint(-4, 5, (T, 1), generator=g).to(torch.float64)
    return J.to(dtype=dtype, device=device)


def run_without_extension(script: str) -> None:
    """Runs ``script`` in a fresh interpreter with ``PYMTL_DISABLE_EXT=1`` (warnings are errors);
    it must exit 0 and print ``fallback ok``."""
    env = {**os.environ, pymtl._ext.ENV_DISABLE_EXT: "1"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fallback ok" in proc.stdout
