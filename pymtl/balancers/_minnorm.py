"""Exact small quadratic programs in Gram space, shared by the Gram-space balancers [pymtl].

Two problems appear in SPEC-methods §2.7 (MGDA) and §2.15 (UPGrad), both posed with the T×T
Gram matrix ``G = J Jᵀ`` of the task gradients ``g_t`` (the rows of J):

* :func:`simplex_min_norm`: the min-norm point of the convex hull of the gradients,
  ``min_{w ∈ Δ_T} wᵀ G w``, by Wolfe's algorithm (P. Wolfe, "Finding the nearest point in a
  polytope", Math. Programming 11, 1976) [P];
* :func:`box_min_norm`: ``min_{v ≥ u} vᵀ G v``, i.e. a non-negative least-squares problem
  ``min_{y ≥ 0} ½ yᵀ H y − bᵀ y`` (:func:`nnls_gram`), by the active-set method of Lawson &
  Hanson ("Solving Least Squares Problems", 1974, ch. 23) [P].

Both are active-set methods: they end at an exact KKT point up to rounding, in finitely many
steps, also when G is singular (T > P, repeated gradients), because the points (columns) they
keep active stay affinely (linearly) independent. SPEC-methods §2.18 note 1 asks for such an
exact solver: the reference MGDA's Frank–Wolfe loop is only accurate to about 1e-3 [S].

Rounding [pymtl]: the optimality tests compare each quantity with the rounding error of
computing it (Cauchy–Schwarz scale), a point that is numerically inside the active hull is
skipped, and a step that no longer lowers the objective ends the solve, so both loops always
terminate; with gradient norms spread over many orders of magnitude the answer is then exact
to ~1e-8 of the largest gradient norm rather than to rounding. Everything runs in float64
NumPy; the matrices are T×T with T ≤ 64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["box_min_norm", "nnls_gram", "simplex_min_norm"]

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]

TOLERANCE = 1e-12
"""Relative to the rounding scale of each optimality test (≈ T·ε_float64 ≈ 1e-15)."""


def _check_square(G: Array, where: str) -> Array:
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"{where}: expected a square [n, n] matrix (n ≥ 1), got {G.shape}")
    if not np.isfinite(G).all():
        raise ValueError(f"{where}: the matrix must be finite, got {G.tolist()}")
    if (np.diag(G) < -TOLERANCE * np.abs(G).max()).any():  # beyond rounding
        raise ValueError(f"{where}: not a Gram matrix (negative diagonal): {G.tolist()}")
    return G


def simplex_min_norm(G: Array, *, where: str = "simplex_min_norm") -> Array:
    """``argmin_{w ∈ Δ_T} wᵀ G w`` [T]: the weights of the min-norm point of the hull.

    At the answer ``(G w)_t = wᵀGw`` where ``w_t > 0`` and ``≥`` elsewhere. If every gradient
    vanishes (G = 0), every w is optimal and ``1/T`` is returned. When G is singular the
    weights may not be unique; the point ``Jᵀ w`` always is.
    """
    G = _check_square(G, where)
    T, scale = G.shape[0], float(np.max(np.diag(G)))
    if scale <= 0.0:
        if G.any():
            raise ValueError(f"{where}: not a Gram matrix (zero diagonal): {G.tolist()}")
        return np.full(T, 1.0 / T)
    G = G / scale
    lam = np.zeros(T)
    lam[int(np.argmin(np.diag(G)))] = 1.0
    active, blocked = lam > 0, np.zeros(T, dtype=bool)
    xx = float(np.min(np.diag(G)))  # ‖x‖², x = Jᵀλ the current point
    for _ in range(20 * T + 50):
        j = _entering_point(G, lam, xx, active | blocked)
        if j is None:
            return lam
        active[j] = True
        mu = _affine_minimum(G, active)
        if mu[j] <= 0.0:  # rounding: g_j lies in the affine hull of the active points
            active[j], blocked[j] = False, True
            continue
        new, new_active = _wolfe_minor_cycle(G, lam, mu, active)
        new_xx = float(new @ G @ new)
        if not new_xx < xx:  # no progress left at float64 precision: λ is the answer
            return lam
        lam, active, xx = new, new_active, new_xx
        blocked[:] = False
    raise RuntimeError(f"{where}: Wolfe's algorithm did not converge for G={G.tolist()}")


def _entering_point(G: Array, lam: Array, xx: float, skip: Mask) -> int | None:
    """The gradient with the lowest ⟨x, g_j⟩ below ‖x‖² (beyond rounding), or None."""
    Gl = G @ lam
    norms = np.sqrt(np.maximum(np.diag(G), 0.0))
    reach = float(norms @ lam)  # Cauchy–Schwarz: inner products are exact to ~ε‖g_i‖‖g_j‖
    candidates = ~skip & (xx - Gl > TOLERANCE * reach * (norms + reach))
    if not candidates.any():
        return None
    return int(np.argmin(np.where(candidates, Gl, np.inf)))


def _affine_minimum(G: Array, active: Mask) -> Array:
    """Weights (zero off ``active``, summing to 1) of the min-norm point of the affine hull."""
    idx = np.flatnonzero(active)
    k = idx.size
    sub = G[np.ix_(idx, idx)]
    beta = float(np.max(np.diag(sub))) or 1.0  # equilibrate the bordered KKT matrix
    K = np.ones((k + 1, k + 1))
    K[:k, :k], K[k, k] = sub / beta, 0.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    mu = np.zeros(G.shape[0])
    mu[idx] = np.linalg.lstsq(K, rhs, rcond=None)[0][:k]
    return mu


def _wolfe_minor_cycle(G: Array, lam: Array, mu: Array, active: Mask) -> tuple[Array, Mask]:
    """Move from λ towards μ until μ > 0 on the active set, dropping points that reach 0."""
    while True:
        bad = active & (mu <= 0.0)
        if not bad.any():
            return mu / mu.sum(), active
        ratios = np.where(bad, lam / np.where(bad, lam - mu, 1.0), np.inf)
        k = int(np.argmin(ratios))
        lam = lam + ratios[k] * (mu - lam)
        active = active & (lam > 0.0)
        active[k] = False  # the point whose weight reached zero first leaves
        lam = np.where(active, lam, 0.0)
        lam = lam / lam.sum()
        mu = _affine_minimum(G, active)


def nnls_gram(H: Array, b: Array, *, where: str = "nnls_gram") -> Array:
    """``argmin_{y ≥ 0} ½ yᵀ H y − bᵀ y`` [n] for a positive semi-definite ``H`` [n, n].

    Lawson–Hanson on the normal equations, after the diagonal scaling ``y_j = z_j / √H_jj``
    (which keeps ``y ≥ 0``). At the answer ``(b − H y)_j = 0`` where ``y_j > 0`` and ``≤ 0``
    elsewhere, up to rounding.

    Raises:
        ValueError: H is not a finite Gram-like matrix matching b, or the problem is unbounded
            (``H_jj = 0`` and ``b_j > 0``).
        RuntimeError: no convergence within ``20 n + 50`` steps (not seen in practice).
    """
    H, b = _check_square(H, where), np.asarray(b, dtype=np.float64)
    if b.shape != (H.shape[0],) or not np.isfinite(b).all():
        raise ValueError(f"{where}: expected a finite b of shape ({H.shape[0]},), got {b}")
    d = np.diag(H)
    live = d > 0
    if (b[~live] > 0).any():
        raise ValueError(f"{where}: unbounded problem: H_jj = 0 and b_j > 0 (b = {b.tolist()})")
    r = 1.0 / np.sqrt(d[live])
    y = np.zeros_like(b)
    if live.any():
        y[live] = r * _lawson_hanson(H[np.ix_(live, live)] * np.outer(r, r), b[live] * r, where)
    return y


def _lawson_hanson(H: Array, b: Array, where: str) -> Array:
    n = b.shape[0]
    y, passive = np.zeros(n), np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)  # numerically dependent columns, until y moves again
    value = 0.0  # the objective at y
    for _ in range(20 * n + 50):
        grad = b - H @ y
        slack = TOLERANCE * (np.abs(y).sum() + np.abs(b))  # H has a unit diagonal
        candidates = ~passive & ~blocked & (grad > slack)
        if not candidates.any():
            return y
        j = int(np.argmax(np.where(candidates, grad, -np.inf)))
        passive[j] = True
        z = _solve_passive(H, b, passive)
        if z[j] <= 0.0:  # rounding: column j lies in the span of the passive ones
            passive[j], blocked[j] = False, True
            continue
        new, new_passive = _restore_feasibility(H, b, y, z, passive)
        new_value = float(0.5 * new @ H @ new - b @ new)
        if not new_value < value:  # no progress left at float64 precision: y is the answer
            return y
        y, passive, value = new, new_passive, new_value
        blocked[:] = False
    raise RuntimeError(f"{where}: the Lawson–Hanson solve did not converge for H={H.tolist()}")


def _solve_passive(H: Array, b: Array, passive: Mask) -> Array:
    """The unconstrained minimiser over the passive coordinates, zero elsewhere."""
    idx = np.flatnonzero(passive)
    z = np.zeros_like(b)
    z[idx] = np.linalg.lstsq(H[np.ix_(idx, idx)], b[idx], rcond=None)[0]
    return z


def _restore_feasibility(
    H: Array, b: Array, y: Array, z: Array, passive: Mask
) -> tuple[Array, Mask]:
    """Lawson–Hanson inner loop: walk from y towards z, dropping coordinates that reach 0."""
    while True:
        bad = passive & (z <= 0.0)
        if not bad.any():
            return z, passive
        ratios = np.where(bad, y / np.where(bad, y - z, 1.0), np.inf)
        k = int(np.argmin(ratios))
        y = y + ratios[k] * (z - y)
        passive = passive & (y > 0.0)
        passive[k] = False  # the coordinate that reached zero first leaves
        y = np.where(passive, y, 0.0)
        z = _solve_passive(H, b, passive)


def box_min_norm(G: Array, lower: Array, *, where: str = "box_min_norm") -> Array:
    """``argmin_{v ≥ lower} vᵀ G v`` [T] (``v = lower + y``, ``y ≥ 0`` an NNLS in y)."""
    G, lower = _check_square(G, where), np.asarray(lower, dtype=np.float64)
    return lower + nnls_gram(G, -(G @ lower), where=where)
