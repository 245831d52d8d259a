"""Slow, readable references for network selection: the paper's recursion and brute force.

Reference: SPEC-methods §4.2 [S][C:tstandley/taskgrouping main.cpp]. These are test oracles
and the pure-Python path for a custom BETTER [pymtl]; :func:`pymtl.taskgroups.select_networks`
is the compiled search to use.

* :func:`select_reference` is ``get_best_networks`` as SPEC §4.2 writes it, recursion and fold
  of BETTER included, with BETTER a Python callable ``strictly_better(score_a, score_b)`` on
  the per-task score vectors (uncovered tasks hold the large constant): A is kept only when
  it returns True, so ties go to B. No prune.
* :func:`select_brute_force` scores every subset of the candidates (itertools), so it is
  exponential in n: for small instances only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray

from pymtl.taskgroups.select import BUDGET_TOL, PAPER_BIG, _check_arrays, big_constant

__all__ = [
    "BruteForceResult",
    "StrictlyBetter",
    "requirements_rule",
    "select_brute_force",
    "select_reference",
    "sum_rule",
]

StrictlyBetter = Callable[[NDArray[np.float64], NDArray[np.float64]], bool]
"""``strictly_better(score_a, score_b)``: whether solution A must be kept over B."""


def _total(score: NDArray[np.float64]) -> float:
    """Σ_t score_t, left to right (the order the compiled search sums in)."""
    total = 0.0
    for value in score.tolist():
        total += value
    return total


def sum_rule(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    """The paper's BETTER: A only when its total loss is strictly lower [S]."""
    return _total(a) < _total(b)


def requirements_rule(max_loss: ArrayLike, *, big: float = PAPER_BIG) -> StrictlyBetter:
    """BETTER with hard per-task requirements ``max_loss`` [k] (``inf``: none) [pymtl]:
    solutions meeting all of them and covering every task (a score below ``big``, the
    instance's stand-in for ∞, see :func:`~pymtl.taskgroups.select.big_constant`) beat the
    others; the sum rule decides within each class. The compiled search's ``max_loss``."""
    req = np.asarray(max_loss, dtype=np.float64)

    def better(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
        a_ok = bool(np.all(a <= req) and np.all(a < big))
        b_ok = bool(np.all(b <= req) and np.all(b < big))
        return a_ok if a_ok != b_ok else sum_rule(a, b)

    return better


def _score(loss: NDArray[np.float64], solution: Sequence[int], big: float) -> Any:
    score = np.full(loss.shape[1], big)
    for i in solution:
        score = np.minimum(score, loss[i])
    return score


def select_reference(
    cost: ArrayLike,
    loss: ArrayLike,
    budget: float,
    *,
    better: StrictlyBetter = sum_rule,
) -> tuple[int, ...]:
    """The candidates ``get_best_networks`` picks (in the order added): SPEC §4.2 verbatim.

    Args:
        cost: [n] costs in SNT; loss: [n, k] losses, ``inf`` where not solved.
        budget: total cost allowed.
        better: ``strictly_better(score_a, score_b)``; default the paper's sum rule.
    """
    c, L = _check_arrays(cost, loss, [budget])
    big = big_constant(L)
    L = np.where(np.isinf(L), big, L)

    def prefer(a: list[int], b: list[int]) -> list[int]:
        if not a:
            return b
        return a if better(_score(L, a, big), _score(L, b, big)) else b

    def best(candidates: list[int], running: list[int], left: float) -> list[int]:
        if not candidates:
            return running
        r = _score(L, running, big)
        gain = {i: float(np.max(r - L[i])) for i in candidates}
        kept = [i for i in candidates if c[i] <= left + BUDGET_TOL and gain[i] > 0.0]
        kept.sort(key=gain.__getitem__)  # stable, ascending; expanded from the end
        result = running
        while kept:
            n = kept.pop()
            result = prefer(result, best(list(kept), [*running, n], left - c[n]))
        return result

    return tuple(best(list(range(len(c))), [], float(budget)))


@attrs.frozen(kw_only=True)
class BruteForceResult:
    """The best value over every subset within the budget, and every subset attaining it.

    Attributes:
        total: Σ_t min loss of the best subsets (∞ stands for the large constant).
        feasible: whether they cover every task and meet the requirements.
        optimal: every subset (sorted indices) with that value; empty if nothing fits.
    """

    total: float
    feasible: bool
    optimal: tuple[tuple[int, ...], ...]


def select_brute_force(
    cost: ArrayLike, loss: ArrayLike, budget: float, *, max_loss: ArrayLike | None = None
) -> BruteForceResult:
    """Score every subset of the candidates (2^n of them) and keep the best (for tests)."""
    c, L = _check_arrays(cost, loss, [budget])
    big = big_constant(L)
    L = np.where(np.isinf(L), big, L)
    req = np.full(L.shape[1], np.inf) if max_loss is None else np.asarray(max_loss, np.float64)
    best_key: tuple[bool, float] | None = None
    optimal: list[tuple[int, ...]] = []
    for size in range(1, len(c) + 1):
        for subset in itertools.combinations(range(len(c)), size):
            if sum(c[list(subset)].tolist()) > budget + BUDGET_TOL:
                continue
            score = _score(L, subset, big)
            ok = bool(np.all(score <= req) and np.all(score < big))
            key = (not ok, _total(score))
            if best_key is None or key < best_key:
                best_key, optimal = key, [subset]
            elif key == best_key:
                optimal.append(subset)
    if best_key is None:
        return BruteForceResult(total=float("inf"), feasible=False, optimal=())
    return BruteForceResult(total=best_key[1], feasible=not best_key[0], optimal=tuple(optimal))
