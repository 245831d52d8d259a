"""Conflict-Averse Gradient descent (``cagrad``).

Reference: Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021
(SPEC-methods §2.10) [C:nash-mtl (copy of official), LibMTL, torchjd]. With ``g₀ = Jᵀb`` the
mean gradient (``b = 1/T``), CAGrad moves along the ``d`` that maximises the worst task's local
improvement in a ball of radius ``c‖g₀‖`` around ``g₀``. Its dual, in Gram form:

    w* = argmin_{w ∈ Δ_T}  wᵀ G b + c ‖g₀‖ √(wᵀ G w),     ‖g₀‖ = √(bᵀ G b),

then ``d = g₀ + λ g_w*`` with ``λ = c‖g₀‖ / (‖g_w*‖ + 1e-8)``, i.e. ``w = b + λ w*``, divided
by ``1 + c²`` (``rescale=1``, default), ``1 + c`` (``rescale=2``) or 1 (``rescale=0``).
``reduction="sum"`` (default) multiplies by T like the official code; task-specific parameters
get s = 1 (``1/T`` with ``reduction="mean"``) [C:nash-mtl].

Solver [pymtl]: the official code runs SLSQP, which stops at its tolerance (SPEC-methods §2.18
note 2); here the dual is solved exactly up to rounding, in float64. A point ``w`` with
``g_w ≠ 0`` is optimal iff it solves the simplex QP ``min_{w∈Δ} ½‖g_w + t g₀‖²`` (the min-norm
point of the hull of the shifted gradients ``g_i + t g₀``) at ``t = ‖g_w‖ / (c‖g₀‖)``: the KKT
conditions of the two problems coincide. Each QP is solved exactly (Lawson–Hanson, see
:mod:`pymtl.balancers._minnorm`); on the QP's support ``w`` is affine in t, so the matching t
is a root of a quadratic, checked against the QP's KKT conditions; a bracket on t (bisection
where a root falls outside) finds the right support in a few QPs. If no exact root passes
(0 optimal with ``g_w = 0``, or rounding at a support change), the QP's answer at the final,
1e-14-narrow bracket is returned. When ``‖g_w*‖² ≤ 1e-12 max_t ‖g_t‖²`` (0 in the hull of the
gradients is optimal, possible only when T exceeds their rank), ``g_w*`` is zero up to rounding
and its direction is noise: ``d = g₀`` is used, the limit the official code's
``λ = c‖g₀‖/(‖g_w‖ + 1e-8)`` reaches only when ``g_w`` is exactly 0 [pymtl].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pymtl.balancers._minnorm import simplex_min_norm
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.balancers.pcgrad import REDUCTIONS, gram_float64
from pymtl.hookspecs import hookimpl

__all__ = ["CAGrad", "CAGradConfig", "cagrad_dual", "cagrad_objective"]

Array = NDArray[np.float64]
KKT_TOLERANCE = 1e-10
ZERO_GW = 1e-12
"""``‖g_w*‖² ≤ ZERO_GW · max_t ‖g_t‖²`` counts as ``g_w* = 0`` (then d = g₀)."""


def _c(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
        raise ValueError(f"balancer 'cagrad': 'c' must be a number >= 0 (got {value!r})")


@attrs.frozen(kw_only=True)
class CAGradConfig:
    """Options of ``cagrad``.

    Attributes:
        c: radius of the ball around g₀, relative to ‖g₀‖ (0 gives the mean gradient).
        rescale: 0 (none), 1 (divide by 1 + c², default) or 2 (divide by 1 + c).
        reduction: ``sum`` (×T, as the official code) or ``mean``.
    """

    c: float = attrs.field(default=0.4, validator=_c)
    rescale: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1, 2)))
    reduction: str = attrs.field(default="sum", validator=attrs.validators.in_(REDUCTIONS))


def cagrad_objective(G: Array, w: Array, c: float) -> float:
    """The dual objective ``wᵀGb + c‖g₀‖√(wᵀGw)`` at ``w``."""
    b = np.full(G.shape[0], 1.0 / G.shape[0])
    g0_norm, gw_norm = (math.sqrt(max(float(v @ G @ v), 0.0)) for v in (b, w))
    return float(w @ G @ b) + c * g0_norm * gw_norm


def cagrad_dual(G: Array, c: float) -> Array:
    """``w* = argmin_{w ∈ Δ_T} wᵀGb + c‖g₀‖√(wᵀGw)`` for a Gram matrix ``G`` [T, T], exactly.

    See the module docstring. With ``c‖g₀‖ = 0`` the objective is linear and the best vertex
    is returned (it does not change CAGrad's update: λ = 0).
    """
    T = G.shape[0]
    scale = float(np.max(np.diag(G), initial=0.0))
    if scale <= 0.0:
        return np.full(T, 1.0 / T)
    G = G / scale  # w* is invariant to the scale of G; tolerances become relative
    a = G @ np.full(T, 1.0 / T)
    g0_sq = max(float(a.mean()), 0.0)
    kappa = c * math.sqrt(g0_sq)
    if kappa <= 0.0:
        vertex = np.zeros(T)
        vertex[int(np.argmin(a))] = 1.0
        return vertex
    lo, hi = 0.0, 2.0 / kappa  # ‖g_w‖ ≤ 1 < κ t at t = hi
    t = 1.0 / kappa
    w = simplex_min_norm(_shifted(G, a, g0_sq, t))
    for _ in range(100):
        if math.sqrt(max(float(w @ G @ w), 0.0)) >= kappa * t:
            lo = t
        else:
            hi = t
        roots = _piece_roots(G, a, kappa, w > 0.0)
        for root, candidate in roots:
            if _is_qp_solution(G, a, candidate, root):
                best: Array = np.clip(candidate, 0.0, None)
                best /= best.sum()
                return best
        inside = [r for r, _ in roots if lo < r < hi]
        t = inside[0] if inside else 0.5 * (lo + hi)
        if hi - lo <= 1e-14 * hi:
            break
        w = simplex_min_norm(_shifted(G, a, g0_sq, t))
    return simplex_min_norm(G) if lo == 0.0 else w  # lo = 0: g_w = 0 is optimal


def _shifted(G: Array, a: Array, g0_sq: float, t: float) -> Array:
    """Gram matrix of the shifted gradients ``g_i + t g₀``."""
    ones = np.ones_like(a)
    return G + t * (np.outer(a, ones) + np.outer(ones, a)) + t * t * g0_sq


def _piece_roots(
    G: Array, a: Array, kappa: float, support: NDArray[np.bool_]
) -> list[tuple[float, Array]]:
    """Roots t > 0 of ``‖g_w(t)‖ = κ t`` where ``w(t)`` solves the QP with the equality-
    constrained KKT system on ``support`` (affine in t), each with its ``w``."""
    idx = np.flatnonzero(support)
    m = idx.size
    K = np.zeros((m + 1, m + 1))
    K[:m, :m], K[:m, m], K[m, :m] = G[np.ix_(idx, idx)], 1.0, 1.0
    rhs = np.zeros((m + 1, 2))
    rhs[m, 0], rhs[:m, 1] = 1.0, -a[idx]
    try:
        sol = np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:  # affinely dependent gradients on this support
        return []
    p, q = np.zeros_like(a), np.zeros_like(a)
    p[idx], q[idx] = sol[:m, 0], sol[:m, 1]
    A2, B2, C2 = float(q @ G @ q) - kappa * kappa, 2.0 * float(p @ G @ q), float(p @ G @ p)
    if abs(A2) < 1e-300:
        ts = [-C2 / B2] if B2 != 0.0 else []
    else:
        disc = B2 * B2 - 4.0 * A2 * C2
        ts = [] if disc < 0.0 else [(-B2 + s * math.sqrt(disc)) / (2.0 * A2) for s in (1, -1)]
    return [(t, p + t * q) for t in sorted(ts) if t > 0.0 and math.isfinite(t)]


def _is_qp_solution(G: Array, a: Array, w: Array, t: float) -> bool:
    """KKT of ``min_{w∈Δ} ½wᵀGw + t aᵀw``: w ≥ 0, equal gradient on the support, ≥ off it."""
    if (w < -KKT_TOLERANCE).any():
        return False
    grad = G @ w + t * a
    on = w > KKT_TOLERANCE
    if not on.any():
        return False
    mu = float(grad[on].mean())
    tol = KKT_TOLERANCE * (1.0 + t)
    return bool(np.abs(grad[on] - mu).max() <= tol and (grad[~on] >= mu - tol).all())


class CAGrad(Balancer):
    """CAGrad: the best worst-task improvement near the mean gradient (Gram form) [C:nash-mtl].

    Reference: Liu et al., NeurIPS 2021 [C:nash-mtl (copy of official), LibMTL, torchjd].
    Shared parameters: ``d = Jᵀ w`` with ``w = T (b + λ w*) / (1 + c²)`` by default;
    task-specific parameters: s = 1. The dual is solved exactly (see :func:`cagrad_dual`).

    Args:
        tasks: task names, in loss order.
        c: ball radius relative to ‖g₀‖.
        rescale: 0, 1 or 2 (divide by 1, 1 + c², 1 + c).
        reduction: ``sum`` (×T) or ``mean``.

    Example:
        >>> import torch
        >>> G = torch.tensor([[1.0, -1.0], [-1.0, 2.0]])  # g1 = (1, 0), g2 = (-1, 1)
        >>> CAGrad(["seg", "depth"], c=0.5, reduction="mean")(torch.ones(2), gram=G).shared
        tensor([0.6000, 0.4000])
    """

    name = "cagrad"
    Config = CAGradConfig
    needs = Needs.GRAM

    def __init__(
        self, tasks: Sequence[str], *, c: float = 0.4, rescale: int = 1, reduction: str = "sum"
    ) -> None:
        super().__init__(tasks)
        CAGradConfig(c=c, rescale=rescale, reduction=reduction)  # same validation
        self.c, self.rescale, self.reduction = float(c), rescale, reduction

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        assert gram is not None  # checked by Balancer.forward
        G, T = gram_float64(gram, where=f"balancer {self.name!r}"), self.num_tasks
        b = np.full(T, 1.0 / T)
        w_star = cagrad_dual(G, self.c)
        g0_norm = math.sqrt(max(float(b @ G @ b), 0.0))
        gw_sq = float(w_star @ G @ w_star)
        if gw_sq > ZERO_GW * float(np.max(np.diag(G), initial=0.0)):
            w = b + self.c * g0_norm / (math.sqrt(gw_sq) + 1e-8) * w_star
        else:  # g_w* = 0 up to rounding: its direction is noise, d = g₀
            w = b
        w = w / (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        s = np.full(T, 1.0 / T)
        if self.reduction == "sum":
            w, s = w * T, s * T
        return Weights(shared=torch.from_numpy(w).to(losses), task=torch.from_numpy(s).to(losses))

    def extra_repr(self) -> str:
        return (
            f"tasks={self.tasks}, c={self.c:g}, rescale={self.rescale}, "
            f"reduction={self.reduction!r}"
        )


@hookimpl
def pymtl_register_balancers() -> list[type[Balancer]]:
    return [CAGrad]
