"""Dolan–Moré performance profiles of several methods over a set of problems.

Reference: E. D. Dolan and J. J. Moré, "Benchmarking optimization software with performance
profiles", Math. Programming 91 (2002) [pymtl]. For a method s and a problem p with value
``v[s, p]``, the performance ratio is

* ``r[s, p] = best_p / v[s, p]`` when higher values are better,
* ``r[s, p] = v[s, p] / best_p`` when lower values are better,

with ``best_p`` the best value any method reached on p, so ``r ≥ 1`` and the best method has
``r = 1``. The profile of s is ``ρ_s(τ) = |{p : r[s, p] ≤ τ}| / n_problems`` for ``τ ≥ 1``:
``ρ_s(1)`` is the fraction of problems s wins (ties count for every tied method) and the
height at large τ is the fraction it solves at all. A method that failed on a problem (NaN or
±inf value) gets ``r = ∞`` there, which plays the role of Dolan and Moré's ``r_M``. Values
must be ≥ 0 (ratios of signed numbers mean nothing); when the best value is 0 the methods that
reach 0 get ``r = 1`` and the others ``r = ∞``.

How pymtl uses it (:func:`pymtl.reporting.plot_comparison`): problems are the (task, seed)
pairs of the seeds every method ran, the value is the task's primary metric, and its direction
is the metric's ``higher_is_better``. SPEC-methods.md says nothing about the performance
profile of the Vandenhende et al. survey (its Figure 10), and the figure's construction could
not be checked here; this module implements the published Dolan–Moré definition, so the
survey's choices of problem set, x-axis scale and treatment of failures may differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["performance_profile", "performance_ratios"]


def performance_ratios(
    values: Mapping[str, Sequence[float]], higher_is_better: bool | Sequence[bool]
) -> dict[str, np.ndarray]:
    """``{method: r}`` with ``r[p] ≥ 1`` the performance ratio of the method on problem p.

    Args:
        values: ``{method: [value on problem 0, value on problem 1, ...]}``, same length for
            every method.
        higher_is_better: one direction for every problem, or one per problem.
    """
    methods = list(values)
    if not methods:
        raise ValueError("performance_ratios: no methods given (expected at least one)")
    lengths = {m: len(values[m]) for m in methods}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(
            f"performance_ratios: every method needs a value for each of the same problems "
            f"(got problem counts {lengths})"
        )
    V = np.array([np.asarray(values[m], dtype=np.float64) for m in methods])  # [S, P]
    higher = _directions(higher_is_better, V.shape[1])
    negative = np.argwhere(V < 0)
    if negative.size:
        s, p = negative[0]
        raise ValueError(
            f"performance_ratios: values must be >= 0 for ratios to mean anything (got "
            f"{V[s, p]} for method {methods[s]!r} on problem {p})"
        )
    finite = np.where(np.isfinite(V), V, np.nan)
    best = np.where(higher, np.fmax.reduce(finite, axis=0), np.fmin.reduce(finite, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(higher, best / finite, finite / best)
    ratios[~np.isfinite(ratios)] = np.inf  # failures, and x/0 against a best of 0
    ratios[finite == best] = 1.0  # the best (ties, and a best of 0) exactly 1
    return {m: ratios[i] for i, m in enumerate(methods)}


def _directions(higher_is_better: bool | Sequence[bool], n_problems: int) -> np.ndarray:
    """One direction per problem, from one bool or a sequence of exactly ``n_problems``."""
    if isinstance(higher_is_better, bool | np.bool_):
        return np.full(n_problems, bool(higher_is_better))
    higher = np.asarray(higher_is_better, dtype=bool)
    if higher.shape != (n_problems,):
        raise ValueError(
            f"performance_ratios: higher_is_better must be one bool or one per problem "
            f"({n_problems}), got {list(higher_is_better)!r}"
        )
    return higher


def performance_profile(
    values: Mapping[str, Sequence[float]],
    higher_is_better: bool | Sequence[bool],
    taus: Sequence[float] | np.ndarray,
) -> dict[str, np.ndarray]:
    """``{method: ρ(τ) for τ in taus}``: the fraction of problems whose performance ratio is
    ≤ τ (see the module docstring).

    Args:
        values: ``{method: [value per problem]}``, aligned across methods.
        higher_is_better: one direction for all problems, or one per problem.
        taus: the τ values (each ≥ 1).

    Example:
        >>> rho = performance_profile({"a": [2.0, 1.0], "b": [1.0, 2.0]}, True, [1.0, 2.0])
        >>> rho["a"].tolist(), rho["b"].tolist()
        ([0.5, 1.0], [0.5, 1.0])
    """
    grid = np.asarray(taus, dtype=np.float64)
    if grid.ndim != 1 or not np.all(np.isfinite(grid)) or np.any(grid < 1):
        raise ValueError(
            f"performance_profile: taus must be a 1-D sequence of finite values >= 1 "
            f"(got {grid.tolist()!r})"
        )
    ratios = performance_ratios(values, higher_is_better)
    return {m: np.mean(r[:, None] <= grid[None, :], axis=0) for m, r in ratios.items()}
