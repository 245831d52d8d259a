"""Pieces every op wrapper in :mod:`pymtl.ops` shares [pymtl].

The wrappers hand raw addresses to the compiled kernels of ``pymtl._C``: these helpers pick the
kernel (dtype suffix, availability on a device), lay ``J`` out as the kernels read it, and name
the caller's CUDA stream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

DTYPES = (torch.float32, torch.float64)
"""The dtypes the compiled kernels take."""


def kernel_available(ext: Any, device: torch.device) -> bool:
    """Whether the compiled module ``ext`` (``None`` when not loaded) has a kernel on ``device``.

    The caller passes its own module-level ``_C``, read at call time, so that setting it to
    ``None`` sends that op to its reference.
    """
    if ext is None or device.type not in ("cpu", "cuda"):
        return False
    return device.type == "cpu" or bool(ext.has_cuda)


def dtype_suffix(dtype: torch.dtype) -> str:
    """The suffix of a kernel's name for ``dtype``: ``"f32"`` or ``"f64"``."""
    return "f32" if dtype == torch.float32 else "f64"


def current_stream(device: torch.device) -> int:
    """The handle of the current CUDA stream of ``device``, as the kernels take it."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def row_major(J: Tensor) -> tuple[Tensor, int]:
    """``J`` [T, P] (or a contiguous copy) with unit column stride, and its row stride."""
    T, P = J.shape
    if P <= 1 or J.stride(1) == 1:
        ld = J.stride(0) if T > 1 else P
        if ld >= P:
            return J, ld
    J = J.contiguous()
    return J, P
