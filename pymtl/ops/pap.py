"""``pap_diffuse``: PAP-Net's cross-task affinity diffusion (SPEC-methods §1.9) [S][P][R].

For each sample, task i has affinity features ``f_i`` [N, C'] (N pixels of the affinity grid)
and task j features to diffuse ``X_j`` [N, C]:

* affinity of source i [R]: ``A_i = rownorm(f_i f_iᵀ)`` [N, N], by ``norm``:
  ``"softmax"`` ``softmax_row(τ f_i f_iᵀ)`` with τ = ``scale`` (default 1/√C');
  ``"cosine_sum"`` (EMA-Net parity): each channel L2-normalised over the N pixels, then
  ``f̂ f̂ᵀ`` divided by its column sums; ``"linear_relu"``: ``D⁻¹ φφᵀ`` with ``φ = ReLU(f) + ε``
  and ``D = diag(φ (φᵀ 1))``;
* mix for target j [S][R]: ``M̂_j = Σ_i α_ij A_i`` with ``α[:, j] = softmax(θ[:, j])``
  (``alpha_logits`` θ [T, T], column j = target j);
* diffusion, K = ``steps`` times [R]: ``X_j ← β M̂_j X_j + (1 − β) X_j⁽⁰⁾``.

No implementation here builds an N×N matrix except :func:`pap_diffuse_reference`:

* ``softmax`` [pymtl]: ``M̂_j X_j = Σ_i α_ij softmax(τ f_i f_iᵀ) X_j``, so one attention per
  source i with the T tasks' values side by side, ``V = [X_1 | … | X_T]`` [N, T·C], serves every
  target (:func:`pap_attention`, the custom op ``pymtl::pap_attention``: flash-style compiled
  kernels, or a blocked PyTorch fallback); the T×T mix and the β-blend are cheap tensor ops.
* ``cosine_sum`` and ``linear_relu`` are *exactly streamable*: each ``A_i = L_i R_iᵀ`` has rank
  C' (cosine: ``L = f̂``, ``R = f̂ / colsum``, ``colsum_m = f̂_m · Σ_n f̂_n``; linear:
  ``L = φ / d``, ``R = φ``, ``d = φ (φᵀ 1)``), so ``A_i X_j = L_i (R_iᵀ X_j)`` costs O(N·C'·C)
  and autograd differentiates the plain matmuls.

Memory O(B·T·N·(C' + T·C)) per step instead of O(B·T·N²). ``cosine_sum`` divides by column
sums that may be near zero (SPEC flag): compare it in fp64 only.

Kernels of ``pymtl::pap_attention`` [pymtl]: on the CPU (fp32/fp64, ``csrc/pap/pap.cpp``) blocks
of 64 queries × 64 keys with an online softmax, each logit block applied to all T·C value
columns, and a one-pass backward that recomputes P from lse (no atomics; deterministic for a
given thread count; ``PYMTL_PAP_CPU_ISA=avx2|base`` caps the instruction set, for tests). On
CUDA (fp32/fp16/bf16, C' ≤ 256, T·C ≤ 1024) ``csrc/pap/pap_cuda.cu``, accumulating in fp32.
Elsewhere (no extension, ``PYMTL_DISABLE_EXT=1``, fp64 on CUDA, larger widths) a blocked
PyTorch fallback over query-row blocks. The T×T mix of the attention outputs is the small
custom op ``pymtl::pap_task_mix``, so that no permuted copy of them is made.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pymtl._ext import extension as _C
from pymtl.errors import OpError
from pymtl.ops._common import current_stream, dtype_suffix, kernel_available

__all__ = [
    "LINEAR_RELU_EPS",
    "MAX_STEPS",
    "NORMS",
    "pap_attention",
    "pap_diffuse",
    "pap_diffuse_reference",
]

NORMS = ("softmax", "cosine_sum", "linear_relu")
"""The affinity normalisations (SPEC-methods §1.9)."""
MAX_STEPS = 8
"""The most diffusion steps K allowed (SPEC-methods §1.9)."""
LINEAR_RELU_EPS = 1e-6
"""The ε of ``φ = ReLU(f) + ε`` in ``linear_relu`` [R]: keeps every row sum positive."""

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # the kernel's codes
_FALLBACK_BLOCK = 1 << 22  # the fallback's logits per query block: B·T·rows·N elements


# ---------------------------------------------------------------------------------------------
# the materialised reference


def _affinity_reference(f: Tensor, norm: str, scale: float) -> Tensor:
    """``A_i`` [B, T, N, N] for every sample and source, materialised."""
    if norm == "softmax":
        return torch.softmax(scale * (f @ f.mT), dim=-1)
    if norm == "cosine_sum":
        f_hat = F.normalize(f, dim=-2)  # each channel over the N pixels
        gram = f_hat @ f_hat.mT
        return gram / gram.sum(dim=-2, keepdim=True)  # column sums
    phi = torch.relu(f) + LINEAR_RELU_EPS
    kernel = phi @ phi.mT
    return kernel / kernel.sum(dim=-1, keepdim=True)  # D⁻¹: row sums


def pap_diffuse_reference(
    f: Tensor,
    x: Tensor,
    alpha_logits: Tensor,
    beta: float = 0.05,
    steps: int = 1,
    norm: str = "softmax",
    scale: float | None = None,
) -> Tensor:
    """The diffusion of :func:`pap_diffuse` straight from the SPEC equations, materialising
    every N×N affinity ``A_i`` and mix ``M̂_j``: its readable specification, test oracle and
    benchmark baseline. Same arguments and result; memory O(B·T·N²)."""
    tau = _check_diffuse(f, x, alpha_logits, beta, steps, norm, scale)
    A = _affinity_reference(f, norm, tau)  # [B, T(i), N, N]
    alpha = torch.softmax(alpha_logits, dim=0).to(x.dtype)
    M = torch.einsum("ij,binm->bjnm", alpha, A)  # M̂_j = Σ_i α_ij A_i
    X = x
    for _ in range(steps):
        X = beta * (M @ X) + (1 - beta) * x
    return X


# ---------------------------------------------------------------------------------------------
# validation


def _tensor(op: str, name: str, t: object, dims: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise OpError(f"{op}: {name} must be a torch.Tensor {dims}, got {type(t).__name__}")
    if t.dim() != dims.count(",") + 1:
        raise OpError(f"{op}: {name} must be {dims}, got shape {tuple(t.shape)}")
    return t


def _check_features(op: str, f: Tensor, other: Tensor, name: str) -> None:
    """``f``'s dtype is one the op takes on its device, and ``other`` matches it."""
    allowed = (*_CUDA_DTYPES, torch.float64) if f.is_cuda else _CPU_DTYPES
    if f.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise OpError(f"{op}: f must be one of {names} on {f.device.type}, got {f.dtype}")
    if other.dtype != f.dtype or other.device != f.device:
        raise OpError(
            f"{op}: {name} must be {f.dtype} on {f.device} like f, got {other.dtype} on "
            f"{other.device}"
        )
    if min(f.shape[1:]) < 1 or other.shape[-1] < 1:
        raise OpError(f"{op}: T, N and the channel counts must be >= 1, got f {tuple(f.shape)}")


def _default_scale(op: str, f: Tensor, scale: object) -> float:
    if scale is None:
        return 1.0 / math.sqrt(f.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise OpError(f"{op}: scale must be a positive finite number or None, got {scale!r}")
    return float(scale)


def _check_diffuse(
    f: object, x: object, theta: object, beta: object, steps: object, norm: object, scale: object
) -> float:
    """Validates the arguments of ``pap_diffuse``; returns the logit scale τ."""
    op = "pap_diffuse"
    f = _tensor(op, "f", f, "4-D [B, T, N, C']")
    x = _tensor(op, "x", x, "4-D [B, T, N, C]")
    if x.shape[:3] != f.shape[:3]:
        raise OpError(
            f"{op}: x [B, T, N, C] must match f [B, T, N, C'] in B, T and N, got x "
            f"{tuple(x.shape)} and f {tuple(f.shape)}"
        )
    _check_features(op, f, x, "x")
    T = f.shape[1]
    theta = _tensor(op, "alpha_logits", theta, "2-D [T, T]")
    if theta.shape != (T, T) or not theta.is_floating_point() or theta.device != f.device:
        raise OpError(
            f"{op}: alpha_logits must be a floating tensor [T, T] = [{T}, {T}] on {f.device}, "
            f"got {theta.dtype} {tuple(theta.shape)} on {theta.device}"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise OpError(f"{op}: beta must be a number in [0, 1], got {beta!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise OpError(f"{op}: steps must be an int in [1, {MAX_STEPS}], got {steps!r}")
    if norm not in NORMS:
        raise OpError(f"{op}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return _default_scale(op, f, scale)


# ---------------------------------------------------------------------------------------------
# pap_attention: kernels and the blocked fallback


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of lse, delta and the fallback's arithmetic: fp32 for fp16 / bf16 inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _kernel(f: Tensor, v: Tensor) -> str:
    """Which implementation runs: ``"cuda"``, ``"cpu"`` or ``"fallback"`` (PyTorch)."""
    if not kernel_available(_C, f.device):
        return "fallback"
    assert _C is not None  # kernel_available says so
    if f.device.type == "cpu":
        return "cpu" if f.dtype in _CPU_DTYPES else "fallback"
    fits = f.shape[-1] <= _C.pap_cuda_max_cq and v.shape[-1] <= _C.pap_cuda_max_cv
    return "cuda" if f.dtype in _CUDA_DTYPES and fits and max(f.shape[:2]) <= 65535 else "fallback"


def _row_blocks(B: int, T: int, N: int) -> range:
    rows = max(1, _FALLBACK_BLOCK // max(1, B * T * N))
    return range(0, N, rows)


def _fallback_forward(f: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Blocks of query rows with torch matmuls: O(B·T·rows·N) memory, never N×N."""
    B, T, N, _ = f.shape
    acc = _acc_dtype(f.dtype)
    fa, va = f.to(acc), v.to(acc)[:, None]  # [B, T, N, Cq], [B, 1, N, Cv]
    o = fa.new_empty((B, T, N, v.shape[-1]))
    lse = fa.new_empty((B, T, N))
    rows = _row_blocks(B, T, N)
    for r0 in rows:
        r1 = min(N, r0 + rows.step)
        s = scale * (fa[:, :, r0:r1] @ fa.mT)  # [B, T, rows, N]
        lse[:, :, r0:r1] = torch.logsumexp(s, dim=-1)
        o[:, :, r0:r1] = torch.exp(s - lse[:, :, r0:r1, None]) @ va
    return o.to(f.dtype), lse


def _fallback_backward(
    f: Tensor, v: Tensor, lse: Tensor, grad_o: Tensor, delta: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    B, T, N, _ = f.shape
    acc = _acc_dtype(f.dtype)
    fa, va, ga = f.to(acc), v.to(acc), grad_o.to(acc)
    df = torch.zeros_like(fa)
    dv = torch.zeros_like(va)
    rows = _row_blocks(B, T, N)
    for r0 in rows:
        r1 = min(N, r0 + rows.step)
        fq, gq = fa[:, :, r0:r1], ga[:, :, r0:r1]  # [B, T, R, Cq], [B, T, R, Cv]
        p = torch.exp(scale * (fq @ fa.mT) - lse[:, :, r0:r1, None])  # [B, T, R, N]
        ds = scale * p * (gq @ va.mT[:, None] - delta[:, :, r0:r1, None])
        df[:, :, r0:r1] += ds @ fa  # query half of scale (dS + dSᵀ) f
        df += ds.mT @ fq  # key half
        dv += p.reshape(B, -1, N).mT @ gq.reshape(B, -1, gq.shape[-1])  # Σ_i P_iᵀ dO_i
    return df.to(f.dtype), dv.to(v.dtype)


@torch.library.custom_op("pymtl::pap_attention", mutates_args=())
def _attention_op(f: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    f, v = f.contiguous(), v.contiguous()
    kind = _kernel(f, v)
    if kind == "fallback":
        return _fallback_forward(f, v, scale)
    assert _C is not None
    B, T, N, Cq = f.shape
    Cv = v.shape[-1]
    o = f.new_empty((B, T, N, Cv))
    lse = f.new_empty((B, T, N), dtype=_acc_dtype(f.dtype))
    ptrs = (f.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr(), B, T, N, Cq, Cv, scale)
    if kind == "cuda":
        with torch.cuda.device(f.device):
            _C.pap_attn_fwd_cuda(_CUDA_DTYPES[f.dtype], *ptrs, current_stream(f.device))
    else:
        getattr(_C, f"pap_attn_fwd_cpu_{dtype_suffix(f.dtype)}")(*ptrs)
    return o, lse


@_attention_op.register_fake
def _(f: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    B, T, N, _ = f.shape
    return f.new_empty((B, T, N, v.shape[-1])), f.new_empty((B, T, N), dtype=_acc_dtype(f.dtype))


@torch.library.custom_op("pymtl::pap_attention_backward", mutates_args=())
def _attention_backward_op(
    f: Tensor, v: Tensor, lse: Tensor, grad_o: Tensor, delta: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    f, v, lse, grad_o, delta = (t.contiguous() for t in (f, v, lse, grad_o, delta))
    kind = _kernel(f, v)
    if kind == "fallback":
        return _fallback_backward(f, v, lse, grad_o, delta, scale)
    assert _C is not None
    B, T, N, Cq = f.shape
    sizes = (B, T, N, Cq, v.shape[-1], scale)
    if kind == "cuda":
        df = torch.zeros(f.shape, dtype=torch.float32, device=f.device)  # accumulated into
        dv = torch.zeros(v.shape, dtype=torch.float32, device=f.device)
        ptrs = (f.data_ptr(), v.data_ptr(), lse.data_ptr(), grad_o.data_ptr(), delta.data_ptr())
        with torch.cuda.device(f.device):
            _C.pap_attn_bwd_cuda(
                _CUDA_DTYPES[f.dtype], *ptrs, df.data_ptr(), dv.data_ptr(), *sizes,
                current_stream(f.device),
            )  # fmt: skip
        return df.to(f.dtype), dv.to(v.dtype)
    df, dv = torch.empty_like(f), torch.empty_like(v)
    getattr(_C, f"pap_attn_bwd_cpu_{dtype_suffix(f.dtype)}")(
        f.data_ptr(), v.data_ptr(), lse.data_ptr(), grad_o.data_ptr(), delta.data_ptr(),
        df.data_ptr(), dv.data_ptr(), *sizes,
    )  # fmt: skip
    return df, dv


@_attention_backward_op.register_fake
def _(
    f: Tensor, v: Tensor, lse: Tensor, grad_o: Tensor, delta: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    return f.new_empty(f.shape), v.new_empty(v.shape)


def _setup_context(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[Tensor, Tensor, float],
    output: tuple[Tensor, Tensor],
) -> None:
    ctx.save_for_backward(inputs[0], inputs[1], *output)
    ctx.scale = inputs[2]  # type: ignore[attr-defined]


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad_o: Tensor | None, grad_lse: Tensor | None
) -> tuple[Tensor, Tensor, None]:
    """``delta = rowsum(dO ⊙ O) − d lse`` (lse's own gradient enters dS like −delta does)."""
    f, v, o, lse = ctx.saved_tensors  # type: ignore[attr-defined]
    if grad_o is None:
        grad_o = torch.zeros_like(o)
    # a batched dot product: no [B, T, N, Cv] temporary
    delta = (grad_o.to(lse.dtype).unsqueeze(-2) @ o.to(lse.dtype).unsqueeze(-1)).view(lse.shape)
    if grad_lse is not None:
        delta = delta - grad_lse.to(lse.dtype)
    df, dv = _attention_backward_op(f, v, lse, grad_o, delta, ctx.scale)  # type: ignore[attr-defined]
    return df, dv, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def pap_attention(f: Tensor, v: Tensor, scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Shared-key attention of every source: ``O[b, i] = softmax_row(τ f_i f_iᵀ) V[b]``.

    Args:
        f: [B, T, N, Cq] affinity features (queries and keys), float32/float64 (also
            float16/bfloat16 on CUDA).
        v: [B, N, Cv] values shared by the T sources, in ``f``'s dtype and on its device.
        scale: the logit scale τ; ``None`` is 1/√Cq.

    Returns:
        ``(o, lse)``: o [B, T, N, Cv] in ``f``'s dtype; lse [B, T, N] the row log-sum-exp of
        ``τ f_i f_iᵀ`` (float32 for half inputs). Differentiable in f and v (and through lse);
        nothing N×N is stored. Traceable by ``torch.compile(fullgraph=True)``.

    Raises:
        OpError: a wrong type, rank, shape, dtype, device or scale.
    """
    op = "pap_attention"
    f = _tensor(op, "f", f, "4-D [B, T, N, Cq]")
    v = _tensor(op, "v", v, "3-D [B, N, Cv]")
    if v.shape[:2] != (f.shape[0], f.shape[2]):
        raise OpError(
            f"{op}: v [B, N, Cv] must match f [B, T, N, Cq] in B and N, got v "
            f"{tuple(v.shape)} and f {tuple(f.shape)}"
        )
    _check_features(op, f, v, "v")
    o, lse = _attention_op(f, v, _default_scale(op, f, scale))
    return o, lse


# ---------------------------------------------------------------------------------------------
# pap_diffuse


def _low_rank(f: Tensor, norm: str) -> tuple[Tensor, Tensor]:
    """``(L, R)`` [B, T, N, C'] with ``A_i = L_i R_iᵀ`` for ``cosine_sum`` / ``linear_relu``."""
    if norm == "cosine_sum":
        f_hat = F.normalize(f, dim=-2)
        colsum = f_hat @ f_hat.sum(dim=-2, keepdim=True).mT  # [B, T, N, 1]
        return f_hat, f_hat / colsum
    phi = torch.relu(f) + LINEAR_RELU_EPS
    rowsum = phi @ phi.sum(dim=-2, keepdim=True).mT  # d = φ (φᵀ 1)
    return phi / rowsum, phi


def _mix_low_rank(L: Tensor, R: Tensor, alpha: Tensor, X: Tensor) -> Tensor:
    """``Σ_i α_ij L_i (R_iᵀ X_j)`` [B, T, N, C] in O(B·T²·N·C'·C)."""
    B, T, N, Cq = L.shape
    W = torch.einsum("bink,bjnc->bijkc", R, X) * alpha[:, :, None, None]  # α_ij R_iᵀ X_j
    W = W.transpose(1, 2).reshape(B, T, T * Cq, X.shape[-1])  # [b, j, (i, k), c]
    return L.transpose(1, 2).reshape(B, 1, N, T * Cq) @ W


@torch.library.custom_op("pymtl::pap_task_mix", mutates_args=())
def _task_mix_op(alpha: Tensor, O: Tensor) -> Tensor:
    """``Y[:, j] = Σ_i α_ij O[:, i, :, j]``: α [T, T], O [B, T(i), N, T(j), C] → [B, T, N, C].

    The sum runs over the middle of O's layout, which a matmul (or einsum) reaches only through
    a permuted copy of O, in the forward and again in the backward. Here every term is a
    [B, N, C] slice, and the backward's one large buffer is dO, which the attention needs."""
    B, T, N, _, C = O.shape
    Y = O.new_zeros((B, T, N, C))
    for j in range(T):
        for i in range(T):
            Y[:, j] += alpha[i, j] * O[:, i, :, j]
    return Y


@_task_mix_op.register_fake
def _(alpha: Tensor, O: Tensor) -> Tensor:
    B, T, N, _, C = O.shape
    return O.new_empty((B, T, N, C))


@torch.library.custom_op("pymtl::pap_task_mix_backward", mutates_args=())
def _task_mix_backward_op(alpha: Tensor, O: Tensor, dY: Tensor) -> tuple[Tensor, Tensor]:
    d_alpha, dO = alpha.new_empty(alpha.shape), O.new_empty(O.shape)
    for j in range(alpha.shape[1]):
        for i in range(alpha.shape[0]):
            dO[:, i, :, j] = alpha[i, j] * dY[:, j]
            d_alpha[i, j] = (dY[:, j] * O[:, i, :, j]).sum()
    return d_alpha, dO


@_task_mix_backward_op.register_fake
def _(alpha: Tensor, O: Tensor, dY: Tensor) -> tuple[Tensor, Tensor]:
    return alpha.new_empty(alpha.shape), O.new_empty(O.shape)


def _save_inputs(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, Tensor], output: Tensor
) -> None:
    ctx.save_for_backward(*inputs)


def _task_mix_backward(
    ctx: torch.autograd.function.FunctionCtx, dY: Tensor
) -> tuple[Tensor, Tensor]:
    alpha, O = ctx.saved_tensors  # type: ignore[attr-defined]
    grads: tuple[Tensor, Tensor] = _task_mix_backward_op(alpha, O, dY)
    return grads


_task_mix_op.register_autograd(_task_mix_backward, setup_context=_save_inputs)


def _mix_softmax(f: Tensor, alpha: Tensor, X: Tensor, scale: float) -> Tensor:
    """``Σ_i α_ij softmax(τ f_i f_iᵀ) X_j`` [B, T, N, C]: one attention per source."""
    B, T, N, C = X.shape
    V = X.transpose(1, 2).reshape(B, N, T * C)  # [X_1 | … | X_T]
    O, _ = _attention_op(f, V, scale)  # [B, T(i), N, T·C]
    Y: Tensor = _task_mix_op(alpha, O.view(B, T, N, T, C))
    return Y


def pap_diffuse(
    f: Tensor,
    x: Tensor,
    alpha_logits: Tensor,
    beta: float = 0.05,
    steps: int = 1,
    norm: str = "softmax",
    scale: float | None = None,
) -> Tensor:
    """PAP-Net's diffusion ``X_j ← β Σ_i α_ij A_i X_j + (1 − β) X_j⁽⁰⁾``, ``steps`` times.

    Args:
        f: [B, T, N, C'] affinity features of the T tasks on an N-pixel grid; float32/float64
            (also float16/bfloat16 on CUDA).
        x: [B, T, N, C] the features to diffuse, in ``f``'s dtype and on its device.
        alpha_logits: [T, T] θ, column j = target j: ``α[:, j] = softmax(θ[:, j])``.
        beta: β in [0, 1] (0: the identity).
        steps: K in [1, 8].
        norm: ``"softmax"`` (default), ``"cosine_sum"`` or ``"linear_relu"`` (module docstring).
        scale: the softmax logit scale τ (default 1/√C'); unused by the other norms.

    Returns:
        y: [B, T, N, C], differentiable in f, x and alpha_logits; no N×N matrix is formed.

    Raises:
        OpError: a wrong type, rank, shape, dtype, device or hyperparameter.
    """
    tau = _check_diffuse(f, x, alpha_logits, beta, steps, norm, scale)
    alpha = torch.softmax(alpha_logits, dim=0).to(x.dtype)
    L, R = _low_rank(f, norm) if norm != "softmax" else (f, f)
    X = x
    for _ in range(steps):
        Y = _mix_softmax(f, alpha, X, tau) if norm == "softmax" else _mix_low_rank(L, R, alpha, X)
        X = beta * Y + (1 - beta) * x
    return X
