"""GradDrop's sign-purity masking, fused over the activation gradients (SPEC-methods §2.11).

Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
NeurIPS 2020 [S][C:LibMTL, SamsungLabs/MTL]. With ``J`` [T, B, N] the per-task gradients of a
shared activation Z (N values per sample) and ``z`` [B, N] its values:

* ``S[t, n] = Σ_b sign(z[b, n]) J[t, b, n]`` (:func:`graddrop_signed_sum`);
* ``P[n] = ½ (1 + Σ_t S[t, n] / (Σ_t |S[t, n]| + 1e-7))``, and with ``u`` [N] uniform(0, 1),
  ``M[t, n] = 1[P > u] 1[S > 0] + 1[P < u] 1[S < 0]`` (a tie ``P == u`` or ``S == 0`` drops
  the gradient);
* ``d[b, n] = Σ_t (ℓ + (1 − ℓ) M[t, n]) J[t, b, n]`` with leak ℓ (:func:`graddrop_combine`).

The two ops are separate on purpose: under ``torch.distributed`` the caller all-reduces S
between them, so every rank takes the same decisions [pymtl]. :func:`graddrop` chains them.

Accumulation: the kernels (and the references) sum in the input precision, b ascending for S
and t ascending for P and d. The mask follows the reference formula term by term, so both take
the same decisions except where P and u agree to rounding. The ops are not differentiable
(the inputs are detached): the result is a gradient to backpropagate, not a function of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pymtl._ext import extension as _C
from pymtl.errors import OpError
from pymtl.ops._common import DTYPES as _DTYPES
from pymtl.ops._common import current_stream as _stream
from pymtl.ops._common import dtype_suffix, kernel_available

__all__ = [
    "EPS",
    "graddrop",
    "graddrop_combine",
    "graddrop_combine_reference",
    "graddrop_signed_sum",
    "graddrop_signed_sum_reference",
]

EPS = 1e-7
"""The ε of the purity ``P`` (LibMTL, SamsungLabs)."""


def graddrop_signed_sum_reference(J: Tensor, z: Tensor) -> Tensor:
    """``S = Σ_b sign(z_b) ⊙ J_{:, b}``: [T, B, N], [B, N] → [T, N], in pure PyTorch."""
    return (torch.sign(z) * J).sum(dim=1)


def graddrop_combine_reference(J: Tensor, S: Tensor, u: Tensor, leak: float) -> Tensor:
    """``d = Σ_t (ℓ + (1 − ℓ) M_t) ⊙ J_t``: [T, B, N], [T, N], [N] → [B, N], in pure PyTorch."""
    purity = 0.5 * (1 + S.sum(dim=0) / (S.abs().sum(dim=0) + EPS))
    mask = ((purity > u) & (S > 0)) | ((purity < u) & (S < 0))
    coef = leak + (1 - leak) * mask.to(J.dtype)
    return (coef[:, None, :] * J).sum(dim=0)


def _check_J(op: str, J: object) -> tuple[int, int, int]:
    if not isinstance(J, Tensor):
        raise OpError(f"{op}: J must be a torch.Tensor [T, B, N], got {type(J).__name__}")
    if J.dim() != 3:
        raise OpError(
            f"{op}: J must be 3-D [T, B, N] (tasks × samples × values), got shape {tuple(J.shape)}"
        )
    if J.dtype not in _DTYPES:
        raise OpError(f"{op}: J must be float32 or float64, got {J.dtype}")
    T, B, N = J.shape
    return T, B, N


def _check_like(op: str, name: str, x: object, shape: tuple[int, ...], J: Tensor) -> Tensor:
    """``x`` has ``shape`` and ``J``'s dtype and device."""
    dims = "[" + ", ".join(str(s) for s in shape) + "]"
    if not isinstance(x, Tensor):
        raise OpError(f"{op}: {name} must be a torch.Tensor {dims}, got {type(x).__name__}")
    if x.shape != shape:
        raise OpError(
            f"{op}: {name} must have shape {dims} for J of shape {tuple(J.shape)}, got "
            f"{tuple(x.shape)}"
        )
    if x.dtype != J.dtype or x.device != J.device:
        raise OpError(
            f"{op}: {name} must be {J.dtype} on {J.device} like J, got {x.dtype} on {x.device}"
        )
    return x


def _kernel_available(J: Tensor) -> bool:
    return kernel_available(_C, J.device)


def _suffix(J: Tensor) -> str:
    return dtype_suffix(J.dtype)


@torch.library.custom_op("pymtl::graddrop_signed_sum", mutates_args=())
def _signed_sum_op(J: Tensor, z: Tensor) -> Tensor:
    if not _kernel_available(J):
        return graddrop_signed_sum_reference(J, z)
    T, B, N = J.shape
    J, z = J.contiguous(), z.contiguous()
    S = torch.empty((T, N), dtype=J.dtype, device=J.device)
    args = (J.data_ptr(), z.data_ptr(), T, B, N, S.data_ptr())
    if J.device.type == "cuda":
        with torch.cuda.device(J.device):
            getattr(_C, f"graddrop_signed_sum_cuda_{_suffix(J)}")(*args, _stream(J.device))
    else:
        getattr(_C, f"graddrop_signed_sum_cpu_{_suffix(J)}")(*args)
    return S


@_signed_sum_op.register_fake
def _(J: Tensor, z: Tensor) -> Tensor:
    return J.new_empty((J.shape[0], J.shape[2]))


@torch.library.custom_op("pymtl::graddrop_combine", mutates_args=())
def _combine_op(J: Tensor, S: Tensor, u: Tensor, leak: float) -> Tensor:
    if not _kernel_available(J):
        return graddrop_combine_reference(J, S, u, leak)
    T, B, N = J.shape
    J, S, u = J.contiguous(), S.contiguous(), u.contiguous()
    d = torch.empty((B, N), dtype=J.dtype, device=J.device)
    args = (J.data_ptr(), S.data_ptr(), u.data_ptr(), leak, T, B, N)
    if J.device.type == "cuda":
        coef = torch.empty((T, N), dtype=J.dtype, device=J.device)
        with torch.cuda.device(J.device):
            getattr(_C, f"graddrop_combine_cuda_{_suffix(J)}")(
                *args, coef.data_ptr(), d.data_ptr(), _stream(J.device)
            )
    else:
        getattr(_C, f"graddrop_combine_cpu_{_suffix(J)}")(*args, d.data_ptr())
    return d


@_combine_op.register_fake
def _(J: Tensor, S: Tensor, u: Tensor, leak: float) -> Tensor:
    return J.new_empty((J.shape[1], J.shape[2]))


def graddrop_signed_sum(J: Tensor, z: Tensor) -> Tensor:
    """Batch-marginalised signed gradients ``S[t, n] = Σ_b sign(z[b, n]) J[t, b, n]``.

    Args:
        J: [T, B, N] float32 or float64 per-task gradients of the activation, CPU or CUDA.
        z: [B, N] the activation values, in ``J``'s dtype and on its device.

    Returns:
        S: [T, N] in ``J``'s dtype and on its device. Not differentiable.

    Raises:
        OpError: a wrong type, shape, dtype or device.
    """
    _T, B, N = _check_J("graddrop_signed_sum", J)
    _check_like("graddrop_signed_sum", "z", z, (B, N), J)
    S: Tensor = _signed_sum_op(J.detach(), z.detach())
    return S


def graddrop_combine(J: Tensor, S: Tensor, u: Tensor, leak: float = 0.0) -> Tensor:
    """The GradDrop gradient of the activation: ``d = Σ_t (ℓ + (1 − ℓ) M_t) ⊙ J_t``.

    Args:
        J: [T, B, N] float32 or float64 per-task gradients of the activation, CPU or CUDA.
        S: [T, N] the signed sums (:func:`graddrop_signed_sum`, all-reduced across processes
            when distributed), in ``J``'s dtype and on its device.
        u: [N] uniform(0, 1) draws (from a generator seeded alike on every process); any
            floating dtype and device, cast to ``J``'s.
        leak: ℓ in [0, 1]; 0 drops the masked gradients (LibMTL), 1 keeps everything.

    Returns:
        d: [B, N] in ``J``'s dtype and on its device. Not differentiable.

    Raises:
        OpError: a wrong type, shape, dtype, device or leak.

    Example:
        >>> J = torch.tensor([[[2.0, 3.0]], [[-1.0, 3.0]]])  # T=2, B=1, N=2
        >>> S = graddrop_signed_sum(J, torch.tensor([[1.0, -2.0]]))
        >>> graddrop_combine(J, S, torch.tensor([0.5, 0.25]))
        tensor([[2., 6.]])
    """
    op = "graddrop_combine"
    T, _B, N = _check_J(op, J)
    _check_like(op, "S", S, (T, N), J)
    if not isinstance(u, Tensor) or u.shape != (N,) or not u.is_floating_point():
        got = f"{u.dtype} {tuple(u.shape)}" if isinstance(u, Tensor) else type(u).__name__
        raise OpError(f"{op}: u must be a floating-point tensor [N] = [{N}], got {got}")
    if isinstance(leak, bool) or not isinstance(leak, (int, float)) or not 0.0 <= leak <= 1.0:
        raise OpError(f"{op}: leak must be a number in [0, 1], got {leak!r}")
    u = u.detach().to(device=J.device, dtype=J.dtype)
    d: Tensor = _combine_op(J.detach(), S.detach(), u, float(leak))
    return d


def graddrop(J: Tensor, z: Tensor, u: Tensor, leak: float = 0.0) -> Tensor:
    """:func:`graddrop_combine` of :func:`graddrop_signed_sum`, for a single process."""
    return graddrop_combine(J, graddrop_signed_sum(J, z), u, leak)
