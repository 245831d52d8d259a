"""``gram``: the Gram matrix ``G = J Jᵀ`` of the per-task gradients.

``J`` [T, P] stacks the T per-task gradients of the P shared parameters; ``G`` [T, T] holds
their inner products ``G_ij = ⟨g_i, g_j⟩`` (SPEC-methods §0). Every Gram-computable balancer
starts from it [pymtl].

Accumulation: the compiled kernels sum products in the input precision over runs of at most
256 elements per accumulator and add the runs in fp64, so an fp32 Gram over millions of
parameters keeps the accuracy of a short fp32 sum. The reference accumulates in fp64.

Gradient: ``∂⟨Ḡ, J Jᵀ⟩/∂J = (Ḡ + Ḡᵀ) J``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pymtl._ext import extension as _C
from pymtl.errors import OpError
from pymtl.ops._common import DTYPES as _DTYPES
from pymtl.ops._common import current_stream, dtype_suffix, kernel_available
from pymtl.ops._common import row_major as _row_major

__all__ = ["gram", "gram_reference"]


def gram_reference(J: Tensor) -> Tensor:
    """``J Jᵀ`` in pure PyTorch, accumulated in fp64 and returned in ``J``'s dtype.

    The readable specification of :func:`gram`, its test oracle and its benchmark baseline.
    Costs a fp64 copy of ``J``.
    """
    J64 = J.to(torch.float64)
    G = J64 @ J64.mT
    # A BLAS product is not exactly symmetric (entries differ in the last bits); the mean of G
    # and Gᵀ is, since fp addition commutes.
    return ((G + G.mT) / 2).to(J.dtype)


def _check(J: object) -> None:
    if not isinstance(J, Tensor):
        raise OpError(f"gram: J must be a torch.Tensor [T, P], got {type(J).__name__}")
    if J.dim() != 2:
        raise OpError(
            f"gram: J must be 2-D [T, P] (tasks × parameters), got shape {tuple(J.shape)}"
        )
    if J.dtype not in _DTYPES:
        raise OpError(
            f"gram: J must be float32 or float64, got {J.dtype} with shape {tuple(J.shape)}; "
            "convert it with J.float() first"
        )


@torch.library.custom_op("pymtl::gram", mutates_args=())
def _gram_op(J: Tensor) -> Tensor:
    T, P = J.shape
    if not kernel_available(_C, J.device):
        return gram_reference(J)
    assert _C is not None  # kernel_available says so
    J, ld = _row_major(J)
    G = torch.empty((T, T), dtype=J.dtype, device=J.device)
    suffix = dtype_suffix(J.dtype)
    if J.device.type == "cuda":
        work = torch.empty((_C.gram_cuda_splits(P), T, T), dtype=torch.float64, device=J.device)
        with torch.cuda.device(J.device):
            getattr(_C, f"gram_cuda_{suffix}")(
                J.data_ptr(), T, P, ld, G.data_ptr(), work.data_ptr(), current_stream(J.device)
            )
    else:
        getattr(_C, f"gram_cpu_{suffix}")(J.data_ptr(), T, P, ld, G.data_ptr())
    return G


@_gram_op.register_fake
def _(J: Tensor) -> Tensor:
    check = torch._check  # untyped in torch's stubs
    check(J.dim() == 2, lambda: f"gram: J must be 2-D [T, P], got {J.dim()}-D")  # type: ignore[no-untyped-call]
    check(J.dtype in _DTYPES, lambda: f"gram: J must be float32 or float64, got {J.dtype}")  # type: ignore[no-untyped-call]
    return J.new_empty((J.shape[0], J.shape[0]))


def _setup_context(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: Tensor
) -> None:
    ctx.save_for_backward(inputs[0])


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_G: Tensor) -> Tensor:
    J: Tensor = ctx.saved_tensors[0]  # type: ignore[attr-defined]
    return (grad_G + grad_G.mT) @ J


_gram_op.register_autograd(_backward, setup_context=_setup_context)


def gram(J: Tensor) -> Tensor:
    """Gram matrix of the rows of ``J``: ``G = J Jᵀ``.

    Args:
        J: [T, P] float32 or float64, on CPU or CUDA. Rows may be strided (a column slice of a
            larger matrix is read in place); other layouts are copied once.

    Returns:
        G: [T, T], symmetric, in ``J``'s dtype and on its device. Differentiable; traceable by
        ``torch.compile(fullgraph=True)``.

    Raises:
        OpError: ``J`` is not a 2-D float32/float64 tensor.

    Example:
        >>> gram(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
        tensor([[ 1., -1.],
                [-1.,  2.]])
    """
    _check(J)
    G: Tensor = _gram_op(J)
    return G
