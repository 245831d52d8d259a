"""``pcgrad_weights`` / ``gradvac_weights``: the T×T projection solvers of PCGrad and GradVac.

Both work in Gram space (SPEC-methods §2.8, §2.9) [pymtl]: task i's projected gradient is
``pc_i = Jᵀ c_i`` with ``c_i = e_i`` at the start, ``⟨pc_i, g_j⟩ = (G c_i)_j`` and
``‖pc_i‖² = c_iᵀ G c_i``; the answer is ``w = Σ_i c_i`` (sum convention), so ``Jᵀ w = Σ_i pc_i``.
``orders[i]`` lists the tasks j ≠ i in the order ``pc_i`` meets them.

* PCGrad [C:tianheyu927/PCGrad, nash-mtl, torchjd]: if ``⟨pc_i, g_j⟩ < 0`` then
  ``c_i[j] −= (G c_i)_j / G_jj``; targets with ``G_jj < 1e-20`` are skipped.
* GradVac [C:LibMTL]: ``ρ = ⟨pc_i, g_j⟩ / (‖pc_i‖ ‖g_j‖)``; if ``ρ < φ̂_ij`` then
  ``c_i[j] += ‖pc_i‖ (φ̂√(1−ρ²) − ρ√(1−φ̂²)) / (‖g_j‖ √(1−φ̂²))`` with ``|φ̂|`` capped at
  ``1 − 1e-8``; always ``φ̂_ij ← (1−β) φ̂_ij + β ρ``. A pair where ``‖pc_i‖²`` or ``‖g_j‖²``
  is below 1e-20 is skipped (nothing changes). With K parameter groups each group has its
  own Gram, targets and ``c_i``, and all groups use the same orders (as LibMTL).

The kernels run each (group, task) independently: on the CPU in plain loops, on CUDA one
thread per task (T ≤ 64; larger T runs the CPU kernel on a host copy). The weights are not
differentiable: the inputs are detached. The references are the NumPy loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pymtl._ext import extension as _C
from pymtl.errors import OpError
from pymtl.ops._common import current_stream as _stream

__all__ = [
    "gradvac_weights",
    "gradvac_weights_reference",
    "pcgrad_weights",
    "pcgrad_weights_reference",
]

MIN_SQUARED_NORM = 1e-20
MAX_TARGET = 1.0 - 1e-8
CUDA_MAX_TASKS = 64


def pcgrad_weights_reference(G: Tensor, orders: Tensor) -> Tensor:
    """PCGrad's ``w = Σ_i c_i`` from ``G`` [T, T] and ``orders`` [T, T-1], as NumPy loops."""
    Gn = G.detach().to(device="cpu", dtype=torch.float64).numpy()
    T = Gn.shape[0]
    w = np.zeros(T)
    for i, order in enumerate(orders.tolist()):
        c = np.zeros(T)
        c[i] = 1.0
        for j in order:
            dot = float(Gn[j] @ c)  # ⟨pc_i, g_j⟩
            if dot < 0.0 and Gn[j, j] >= MIN_SQUARED_NORM:
                c[j] -= dot / Gn[j, j]
        w += c
    return torch.from_numpy(w).to(G.device)


def _gradvac_group(
    G: NDArray[np.float64], target: NDArray[np.float64], orders: list[list[int]], beta: float
) -> NDArray[np.float64]:
    """One group: returns ``w`` [T] and updates ``target`` [T, T] in place."""
    T = G.shape[0]
    w = np.zeros(T)
    for i in range(T):
        c = np.zeros(T)
        c[i] = 1.0
        for j in orders[i]:
            Gc = G @ c
            pc_sq, g_sq = float(c @ Gc), float(G[j, j])
            if pc_sq < MIN_SQUARED_NORM or g_sq < MIN_SQUARED_NORM:
                continue
            pc_norm, g_norm = math.sqrt(pc_sq), math.sqrt(g_sq)
            rho = min(max(float(Gc[j]) / (pc_norm * g_norm), -1.0), 1.0)
            phi = float(target[i, j])
            if rho < phi:
                phi = min(max(phi, -MAX_TARGET), MAX_TARGET)
                root = math.sqrt(1.0 - phi * phi)
                c[j] += pc_norm * (phi * math.sqrt(1.0 - rho * rho) - rho * root) / (g_norm * root)
            target[i, j] = (1.0 - beta) * target[i, j] + beta * rho
        w += c
    return w


def gradvac_weights_reference(
    G: Tensor, target: Tensor, orders: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """GradVac's ``w`` [K, T] and new targets [K, T, T] from ``G`` and ``target`` [K, T, T],
    group by group, as NumPy loops (``target`` is not modified)."""
    Gn = G.detach().to(device="cpu", dtype=torch.float64).numpy()
    new = target.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    order_lists = orders.tolist()
    w = np.stack([_gradvac_group(Gn[k], new[k], order_lists, beta) for k in range(Gn.shape[0])])
    w = w.reshape(Gn.shape[:2])  # [K, T], also when K = 0
    return torch.from_numpy(w).to(G.device), torch.from_numpy(new).to(G.device)


def _check_gram(op: str, G: object, ndim: int) -> tuple[int, int]:
    """``(K, T)`` of a float64 ``G`` [T, T] (ndim 2, K = 1) or [K, T, T] (ndim 3)."""
    shape = "[T, T]" if ndim == 2 else "[K, T, T]"
    if not isinstance(G, Tensor):
        raise OpError(f"{op}: G must be a torch.Tensor {shape}, got {type(G).__name__}")
    if G.dim() != ndim or G.shape[-1] != G.shape[-2]:
        raise OpError(f"{op}: G must be {shape}, got shape {tuple(G.shape)}")
    if G.dtype != torch.float64:
        raise OpError(f"{op}: G must be float64, got {G.dtype}; convert it with G.double()")
    return (1 if ndim == 2 else G.shape[0]), G.shape[-1]


def _check_orders(op: str, orders: object, T: int, device: torch.device) -> Tensor:
    if not isinstance(orders, Tensor):
        raise OpError(f"{op}: orders must be a torch.Tensor [T, T-1], got {type(orders).__name__}")
    if orders.shape != (T, max(T - 1, 0)) or orders.dtype != torch.int64:
        raise OpError(
            f"{op}: orders must be int64 [T, T-1] = [{T}, {max(T - 1, 0)}], got "
            f"{orders.dtype} {tuple(orders.shape)}"
        )
    if orders.device != device:
        raise OpError(f"{op}: orders must be on G's device {device}, got {orders.device}")
    return orders


def _check_order_values(op: str, orders: Tensor) -> None:
    """Every row i of ``orders`` (on the CPU) is a permutation of the tasks j ≠ i."""
    T = orders.shape[0]
    if T <= 1:
        return
    expected = torch.arange(T).expand(T, T)[~torch.eye(T, dtype=torch.bool)].view(T, T - 1)
    bad = (orders.sort(dim=1).values != expected).any(dim=1).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise OpError(
            f"{op}: orders[{i}] must be a permutation of the tasks other than {i}, "
            f"got {orders[i].tolist()}"
        )


def _route(op: str, G: Tensor, orders: Tensor) -> str:
    """``reference``, ``cpu``, ``cuda`` or ``host`` (CUDA tensors, CPU kernel: T > 64).

    The CPU kernel checks the orders itself (see :func:`_run_cpu`); the references are
    checked here; the CUDA kernel skips invalid entries (checking would synchronise)."""
    if _C is not None and G.device.type == "cpu":
        return "cpu"
    if _C is not None and G.device.type == "cuda" and _C.has_cuda:
        return "cuda" if G.shape[-1] <= CUDA_MAX_TASKS else "host"
    if orders.device.type == "cpu":
        _check_order_values(op, orders)
    return "reference"


def _run_cpu(op: str, kernel: Callable[..., None], *args: object) -> None:
    """Calls a CPU kernel; its complaint about ``orders`` becomes an :class:`OpError`."""
    try:
        kernel(*args)
    except ValueError as exc:
        raise OpError(f"{op}: {exc}") from None


def _pcgrad(G: Tensor, orders: Tensor) -> Tensor:
    route = _route("pcgrad_weights", G, orders)
    if route == "reference":
        return pcgrad_weights_reference(G, orders)
    if route == "host":
        return _pcgrad(G.cpu(), orders.cpu()).to(G.device)
    assert _C is not None  # route says so
    T = G.shape[0]
    G, orders = G.contiguous(), orders.contiguous()
    w = torch.empty(T, dtype=torch.float64, device=G.device)
    if route == "cuda":
        with torch.cuda.device(G.device):
            _C.pcgrad_weights_cuda(
                G.data_ptr(), T, orders.data_ptr(), w.data_ptr(), _stream(G.device)
            )
    else:
        _run_cpu(
            "pcgrad_weights",
            _C.pcgrad_weights_cpu,
            G.data_ptr(),
            T,
            orders.data_ptr(),
            w.data_ptr(),
        )
    return w


@torch.library.custom_op("pymtl::pcgrad_weights", mutates_args=())
def _pcgrad_op(G: Tensor, orders: Tensor) -> Tensor:
    return _pcgrad(G, orders)


@_pcgrad_op.register_fake
def _(G: Tensor, orders: Tensor) -> Tensor:
    return G.new_empty((G.shape[0],))


def pcgrad_weights(G: Tensor, orders: Tensor) -> Tensor:
    """PCGrad's projection weights ``w = Σ_i c_i`` (sum convention).

    Args:
        G: [T, T] float64 Gram matrix of the task gradients, on CPU or CUDA.
        orders: [T, T-1] int64 on ``G``'s device; row i is the order in which ``pc_i`` meets
            the tasks j ≠ i. Checked to be permutations when on the CPU; on CUDA an invalid
            entry is skipped.

    Returns:
        w: [T] float64 on ``G``'s device; ``Jᵀ w`` is ``Σ_i pc_i``. Not differentiable.

    Raises:
        OpError: a wrong type, shape, dtype or device, or rows of ``orders`` that are not
            permutations of the other tasks.

    Example:
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> pcgrad_weights(G, torch.tensor([[1], [0]]))
        tensor([2.0000, 1.5000], dtype=torch.float64)
    """
    _, T = _check_gram("pcgrad_weights", G, 2)
    _check_orders("pcgrad_weights", orders, T, G.device)
    w: Tensor = _pcgrad_op(G.detach(), orders)
    return w


def _gradvac(G: Tensor, target: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    route = _route("gradvac_weights", G, orders)
    if route == "reference":
        return gradvac_weights_reference(G, target, orders, beta)
    if route == "host":
        w, new = _gradvac(G.cpu(), target.cpu(), orders.cpu(), beta)
        return w.to(G.device), new.to(G.device)
    assert _C is not None  # route says so
    K, T = G.shape[0], G.shape[1]
    G, target, orders = G.contiguous(), target.contiguous(), orders.contiguous()
    w = torch.empty((K, T), dtype=torch.float64, device=G.device)
    new = torch.empty_like(target)
    ptrs = (G.data_ptr(), target.data_ptr(), orders.data_ptr(), K, T, beta, w.data_ptr())
    if route == "cuda":
        with torch.cuda.device(G.device):
            _C.gradvac_weights_cuda(*ptrs, new.data_ptr(), _stream(G.device))
    else:
        _run_cpu("gradvac_weights", _C.gradvac_weights_cpu, *ptrs, new.data_ptr())
    return w, new


@torch.library.custom_op("pymtl::gradvac_weights", mutates_args=())
def _gradvac_op(G: Tensor, target: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return _gradvac(G, target, orders, beta)


@_gradvac_op.register_fake
def _(G: Tensor, target: Tensor, orders: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    return G.new_empty(G.shape[:2]), torch.empty_like(target)


def gradvac_weights(
    G: Tensor, target: Tensor, orders: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """GradVac's weights per parameter group, and the updated cosine targets.

    Args:
        G: [K, T, T] float64 Gram matrices, one per parameter group, on CPU or CUDA.
        target: [K, T, T] float64 targets φ̂ on ``G``'s device (row i: the task corrected).
            Not modified.
        orders: [T, T-1] int64 on ``G``'s device, shared by all groups (see
            :func:`pcgrad_weights`).
        beta: EMA rate of the targets, in [0, 1].

    Returns:
        ``(w, new_target)``: w [K, T] float64 (``J_kᵀ w[k] = Σ_i pc_i`` in group k) and the
        targets after the step [K, T, T]. Not differentiable.

    Raises:
        OpError: a wrong type, shape, dtype, device or ``beta``, or invalid ``orders``.
    """
    op = "gradvac_weights"
    _K, T = _check_gram(op, G, 3)
    if not isinstance(target, Tensor) or target.shape != G.shape or target.dtype != G.dtype:
        got = f"{target.dtype} {tuple(target.shape)}" if isinstance(target, Tensor) else target
        raise OpError(f"{op}: target must be float64 [K, T, T] = {list(G.shape)}, got {got}")
    if target.device != G.device:
        raise OpError(f"{op}: target must be on G's device {G.device}, got {target.device}")
    _check_orders(op, orders, T, G.device)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise OpError(f"{op}: beta must be a number in [0, 1], got {beta!r}")
    w, new = _gradvac_op(G.detach(), target.detach(), orders, float(beta))
    return w, new
