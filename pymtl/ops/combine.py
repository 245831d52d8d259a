"""``combine``: the weighted combination ``d = Jᵀ w`` of the per-task gradients.

``J`` [T, P] stacks the T per-task gradients of the P shared parameters. Every Gram-space
balancer ends with ``d = Jᵀ w = Σ_t w_t g_t``, the second streaming pass over J
(SPEC-methods §0.1) [pymtl]. With parameter groups (GradVac ``per_layer`` / ``per_tensor``,
SPEC-methods §2.9), group k owns the columns ``[b_k, b_{k+1})`` and its own weights ``w[k]``.

Accumulation: the compiled kernels sum the T products of each column in the input precision,
t ascending, with the partial sums in vector registers (fp64 accumulators measured 1.3–2.6×
slower for fp32 at T ≥ 10 on the CPU). The error of an entry is at most ``γ_T Σ_t |w_t J_tp|``.
The reference accumulates in fp64.

Gradient, with ``c_k`` the columns of group k: ``∂⟨d̄, d⟩/∂J[:, c_k] = w[k] ⊗ d̄[c_k]`` and
``∂⟨d̄, d⟩/∂w[k] = J[:, c_k] d̄[c_k]``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from pymtl._ext import extension as _C
from pymtl.errors import OpError
from pymtl.ops._common import DTYPES as _DTYPES
from pymtl.ops._common import current_stream, dtype_suffix, kernel_available
from pymtl.ops._common import row_major as _row_major

__all__ = ["combine", "combine_reference"]


def _pairs(bounds: Sequence[int]) -> list[tuple[int, int]]:
    return [(bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]


def combine_reference(J: Tensor, w: Tensor, bounds: Sequence[int] | None = None) -> Tensor:
    """``Jᵀ w`` (per column group) in pure PyTorch, accumulated in fp64, in ``J``'s dtype.

    The readable specification of :func:`combine`, its test oracle and its benchmark
    baseline. ``w`` is [T], or [K, T] with ``bounds`` (K + 1 column offsets). Costs a fp64
    copy of ``J``.
    """
    J64 = J.to(torch.float64)
    w64 = w.to(device=J.device, dtype=torch.float64)
    if bounds is None:
        return (w64 @ J64).to(J.dtype)
    parts = [w64[k] @ J64[:, a:b] for k, (a, b) in enumerate(_pairs(bounds))]
    return torch.cat(parts).to(J.dtype)


def _check_bounds(bounds: object, K: int, P: int) -> list[int]:
    where = "combine: bounds must be"
    if isinstance(bounds, (str, bytes, Tensor)) or not isinstance(bounds, Sequence):
        raise OpError(
            f"{where} a sequence of K + 1 = {K + 1} ints (0 = b_0 < … < b_K = P), "
            f"got {type(bounds).__name__}; convert a tensor with .tolist()"
        )
    try:
        values = [operator.index(b) for b in bounds if not isinstance(b, bool)]
    except TypeError:
        values = []
    if len(values) != len(bounds) or len(values) != K + 1:
        raise OpError(f"{where} {K + 1} ints for w of shape [{K}, T], got {list(bounds)!r}")
    if values[0] != 0 or values[-1] != P or any(a >= b for a, b in _pairs(values)):
        raise OpError(
            f"{where} strictly increasing from 0 to P = {P} (0 = b_0 < … < b_K = P), got {values}"
        )
    return values


def _check(J: object, w: object, bounds: object) -> list[int]:
    """Validates the arguments; returns the column bounds (``[0, P]`` without groups)."""
    if not isinstance(J, Tensor):
        raise OpError(f"combine: J must be a torch.Tensor [T, P], got {type(J).__name__}")
    if J.dim() != 2:
        raise OpError(f"combine: J must be 2-D [T, P], got shape {tuple(J.shape)}")
    if J.dtype not in _DTYPES:
        raise OpError(f"combine: J must be float32 or float64, got {J.dtype}")
    T, P = J.shape
    if not isinstance(w, Tensor):
        raise OpError(f"combine: w must be a torch.Tensor [T] or [K, T], got {type(w).__name__}")
    if not w.is_floating_point():
        raise OpError(f"combine: w must be a floating-point tensor, got {w.dtype}")
    if bounds is None:
        if w.shape != (T,):
            raise OpError(
                f"combine: w must have shape [T] = [{T}] for J of shape {tuple(J.shape)} "
                f"(or [K, T] with bounds), got {tuple(w.shape)}"
            )
        return [0, P]
    if w.dim() != 2 or w.shape[1] != T:
        raise OpError(
            f"combine: with bounds, w must have shape [K, T] = [K, {T}], got {tuple(w.shape)}"
        )
    return _check_bounds(bounds, w.shape[0], P)


def _kernel_available(J: Tensor) -> bool:
    return kernel_available(_C, J.device)


def _launch(J: Tensor, w: Tensor, bounds: list[int], out: Tensor) -> None:
    """Runs the compiled kernel: ``out`` [P] (contiguous) ← per-group ``Jᵀ w``."""
    T, P = J.shape
    J, ld = _row_major(J)
    w = w.contiguous()
    b = torch.tensor(bounds, dtype=torch.int64, device=J.device)
    suffix = dtype_suffix(J.dtype)
    args = (J.data_ptr(), T, P, ld, w.data_ptr(), w.shape[0], b.data_ptr(), out.data_ptr())
    if J.device.type == "cuda":
        with torch.cuda.device(J.device):
            getattr(_C, f"combine_cuda_{suffix}")(*args, current_stream(J.device))
    else:
        getattr(_C, f"combine_cpu_{suffix}")(*args)


@torch.library.custom_op("pymtl::combine", mutates_args=())
def _combine_op(J: Tensor, w: Tensor, bounds: list[int]) -> Tensor:
    if not _kernel_available(J):
        return combine_reference(J, w, bounds)
    d = torch.empty(J.shape[1], dtype=J.dtype, device=J.device)
    _launch(J, w, bounds, d)
    return d


@_combine_op.register_fake
def _(J: Tensor, w: Tensor, bounds: list[int]) -> Tensor:
    check = torch._check  # untyped in torch's stubs
    check(J.dim() == 2, lambda: f"combine: J must be 2-D [T, P], got {J.dim()}-D")  # type: ignore[no-untyped-call]
    check(w.dim() == 2 and w.dtype == J.dtype, lambda: "combine: w must be [K, T] in J's dtype")  # type: ignore[no-untyped-call]
    return J.new_empty((J.shape[1],))


def _setup_context(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[Tensor, Tensor, list[int]],
    output: Tensor,
) -> None:
    J, w, bounds = inputs
    ctx.save_for_backward(J, w)
    ctx.bounds = bounds  # type: ignore[attr-defined]


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad_d: Tensor
) -> tuple[Tensor | None, Tensor | None, None]:
    J, w = ctx.saved_tensors  # type: ignore[attr-defined]
    pairs = _pairs(ctx.bounds)  # type: ignore[attr-defined]
    needs_J, needs_w, _ = ctx.needs_input_grad  # type: ignore[attr-defined]
    grad_J = grad_w = None
    if needs_J:  # column block k of dJ is the outer product w[k] ⊗ d̄[block k]
        grad_J = torch.cat([torch.outer(w[k], grad_d[a:b]) for k, (a, b) in enumerate(pairs)], 1)
    if needs_w:  # dw[k] = J[:, block k] d̄[block k]
        grad_w = torch.stack([J[:, a:b] @ grad_d[a:b] for a, b in pairs])
    return grad_J, grad_w, None


_combine_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("pymtl::combine_into", mutates_args=("out",))
def _combine_into_op(J: Tensor, w: Tensor, bounds: list[int], out: Tensor) -> None:
    if _kernel_available(J):
        _launch(J, w, bounds, out)
    else:
        out.copy_(combine_reference(J, w, bounds))


@_combine_into_op.register_fake
def _(J: Tensor, w: Tensor, bounds: list[int], out: Tensor) -> None:
    return None


def _check_out(out: object, J: Tensor, w: Tensor) -> Tensor:
    P = J.shape[1]
    if not isinstance(out, Tensor):
        raise OpError(f"combine: out must be a torch.Tensor [P], got {type(out).__name__}")
    if out.shape != (P,) or out.dtype != J.dtype or out.device != J.device:
        raise OpError(
            f"combine: out must be [P] = [{P}], {J.dtype} on {J.device} like J, got "
            f"{tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if not out.is_contiguous():
        raise OpError(f"combine: out must be contiguous, got strides {out.stride()}")
    if torch.is_grad_enabled() and (J.requires_grad or w.requires_grad or out.requires_grad):
        raise OpError(
            "combine: out= is not differentiable, got inputs that require grad; call it "
            "under torch.no_grad() or without out="
        )
    return out


def combine(
    J: Tensor, w: Tensor, bounds: Sequence[int] | None = None, *, out: Tensor | None = None
) -> Tensor:
    """Weighted combination of the rows of ``J``: ``d = Jᵀ w``, per column group.

    Args:
        J: [T, P] float32 or float64, on CPU or CUDA. Rows may be strided (a column slice of a
            larger matrix is read in place); other layouts are copied once.
        w: [T] task weights, or [K, T] (one row per column group) with ``bounds``. Any
            floating dtype and device: cast to ``J``'s (a tiny copy).
        bounds: K + 1 ints, ``0 = b_0 < b_1 < … < b_K = P``: column p in ``[b_k, b_{k+1})``
            uses ``w[k]``. Only with a 2-D ``w``.
        out: optional [P] contiguous tensor in ``J``'s dtype and device to write ``d`` into
            (no allocation; on the CPU a fresh 40 MB result costs about as much again in page
            faults as the kernel). Not differentiable.

    Returns:
        d: [P] in ``J``'s dtype and on its device (``out`` itself when given).
        Differentiable in ``J`` and ``w`` (without ``out``); traceable by
        ``torch.compile(fullgraph=True)``.

    Raises:
        OpError: a wrong type, shape, dtype or bounds, or ``out`` with inputs requiring grad.

    Example:
        >>> combine(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), torch.tensor([2.0, 1.5]))
        tensor([0.5000, 1.5000])
    """
    cols = _check(J, w, bounds)
    w2 = (w if bounds is not None else w.unsqueeze(0)).to(device=J.device, dtype=J.dtype)
    if out is not None:
        _combine_into_op(J, w2, cols, _check_out(out, J, w))
        return out
    d: Tensor = _combine_op(J, w2, cols)
    return d
