"""Exact network selection under an inference budget: Standley's branch and bound [S][C].

Reference: SPEC-methods §4.2, ``get_best_networks`` [S][C:tstandley/taskgrouping main.cpp].
Given candidate costs ``c`` [n] (SNT) and losses ``L`` [n, k] (∞ where a network does not solve
a task), find the set S of networks with Σ c ≤ budget that BETTER prefers, where S's score on
task t is ``min_{n∈S} L(n, t)``.

The search is the paper's recursion: keep the candidates that fit the remaining budget and
improve at least one task of the running solution (FILTER), order them by their largest
single-task improvement (SORT, ascending, stable [pymtl]) and expand from the most promising
down, each child seeing only the candidates not yet expanded at its level. BETTER(A, B) keeps A
only when A is *strictly* better, so ties go to the later solution; an empty A always loses.
∞ becomes a large constant (99 as in [C], raised to 2·k·max loss when losses are
that large [pymtl]) so that solutions leaving a task uncovered lose to complete ones.

BETTER is a parameter of the compiled kernel [pymtl]: the default is the sum rule; hard
per-task requirements ``max_loss`` (task -> highest acceptable loss) make every solution that
meets them, and solves every task, beat every solution that does not, the sum rule deciding
within each class (without requirements this is exactly the sum rule, since an uncovered task
already costs more than all covered ones). A
Python callable BETTER runs in the slower :func:`pymtl.taskgroups.reference.select_reference`.

Implementation [pymtl]: the recursion runs as an explicit depth-first stack. The fold of BETTER
over a node and its children's results equals "the last solution, in depth-first pre-order, of
the best value", so one global incumbent replaced by every visited solution that is not
strictly worse gives the paper's answer, ties included. Prunes (``prune=True``, the default;
none of them changes a result, ties included, which the tests check against ``prune=False``
and the recursive reference):

* SPEC §4.2's bound: a node's subtree is cut when even ``Σ_t min(r_t, m_t)`` (m_t: best loss
  on t among the node's remaining candidates) is strictly worse than the incumbent; float sums
  are monotone in every term, so the cut is exact.
* the subset bound of :mod:`pymtl.taskgroups._bound` (k <= 12): the best completion of the
  running solution with *any* candidates within the remaining budget, by a dynamic program
  over task subsets built once per call. It makes 10 tasks and 1,033 candidates tractable.
* the search starts from a greedy solution's value as the incumbent (a real solution: any
  solution as good is still visited and replaces it).

Costs within 1e-9 SNT of the budget fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pymtl.errors import PymtlError
from pymtl.taskgroups._bound import MAX_TASKS, cost_grid, subset_table
from pymtl.taskgroups._kernels import search

__all__ = [
    "BUDGET_TOL",
    "PAPER_BIG",
    "SelectionError",
    "big_constant",
    "default_budgets",
    "requirement_vector",
    "select_many",
    "select_networks",
]

PAPER_BIG = 99.0
"""The paper's stand-in for an infinite loss [C:tstandley/taskgrouping]."""
BUDGET_TOL = 1e-9
"""A network fits when its cost is at most the remaining budget plus this (SNT) [pymtl]."""


class SelectionError(PymtlError, ValueError):
    """Bad input to a selection: budgets, costs, losses or requirements."""


def big_constant(loss: NDArray[np.float64]) -> float:
    """The stand-in for ∞: 99, or 2·k·(largest finite loss) when k·that reaches 99 [pymtl]."""
    finite = loss[np.isfinite(loss)]
    top = float(finite.max()) if finite.size else 0.0
    k = loss.shape[1]
    return PAPER_BIG if k * top < PAPER_BIG else 2.0 * k * top


def default_budgets(k: int, step: float = 0.5) -> list[float]:
    """``1, 1 + step, …, k`` SNT: the paper's budgets for k tasks [S]."""
    count = math.floor((k - 1) / step + 1e-9) + 1
    return [1.0 + i * step for i in range(count)]


def requirement_vector(tasks: Sequence[str], max_loss: Mapping[str, float] | None) -> Any:
    """[k] highest acceptable loss per task (``inf``: no requirement)."""
    req = np.full(len(tasks), np.inf)
    for task, bound in (max_loss or {}).items():
        if task not in tasks:
            raise SelectionError(
                f"requirement on unknown task {task!r}; expected one of {list(tasks)}"
            )
        if not isinstance(bound, (int, float)) or math.isnan(bound):
            raise SelectionError(f"requirement {task} <= {bound!r} is not a number")
        req[list(tasks).index(task)] = float(bound)
    return req


def _check_arrays(cost: ArrayLike, loss: ArrayLike, budgets: Sequence[float]) -> tuple[Any, Any]:
    c = np.ascontiguousarray(cost, dtype=np.float64)
    L = np.ascontiguousarray(loss, dtype=np.float64)
    if L.ndim != 2 or c.shape != (L.shape[0],) or L.shape[0] == 0:
        raise SelectionError(
            f"expected cost [n] and loss [n, k] with n >= 1 (got shapes {c.shape} and {L.shape})"
        )
    if not np.all(np.isfinite(c) & (c > 0)):
        raise SelectionError(f"costs must be finite and > 0 (got {c.tolist()})")
    if np.any(np.isnan(L)) or np.any(L < 0):
        raise SelectionError("losses must be >= 0 or inf (not solved); got NaN or a negative")
    for b in budgets:
        if not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0):
            raise SelectionError(f"a budget must be a finite number > 0 SNT (got {b!r})")
    return c, L


def _tables(c: Any, L: Any, big: float, req: Any, budget: float) -> tuple[Any, Any, float]:
    """``(D, D_req, q)`` of :mod:`pymtl.taskgroups._bound`, or 1×1 dummies when k or the
    grid makes the table too costly (the search then uses SPEC's prune only)."""
    k = L.shape[1]
    levels = budget / cost_grid(c, budget) + 1
    if k > MAX_TASKS or 3**k / 2 * levels * min(levels, len(np.unique(c))) > 3e8:
        return np.zeros((1, 1)), np.zeros((1, 1)), 1.0
    solves = np.less(L, big)
    D, q = subset_table(c, L, budget, solves)
    if np.all(np.isinf(req)):
        return D, D, q
    return D, subset_table(c, L, budget, solves & np.less_equal(L, req[None, :]))[0], q


def select_many(
    cost: ArrayLike,
    loss: ArrayLike,
    budgets: Sequence[float],
    *,
    max_loss: ArrayLike | None = None,
    prune: bool = True,
) -> list[tuple[NDArray[np.int64], int]]:
    """The networks Standley's branch and bound picks within each budget (SPEC §4.2).

    Args:
        cost: [n] cost of each candidate in SNT (> 0).
        loss: [n, k] loss of candidate i on task t, ``inf`` where i does not solve t.
        budgets: total costs allowed, in SNT.
        max_loss: optional [k] highest acceptable loss per task (``inf``: none); solutions that
            meet every requirement beat those that do not.
        prune: use the admissible cuts (SPEC's bound and the subset bound of
            :mod:`pymtl.taskgroups._bound`) and start each search from the best of a greedy
            solution and the smaller budgets' solutions; never changes the result. False runs
            the paper's search as it is.

    Returns:
        Per budget ``(indices, visited)``: the chosen candidates in the order they were added
        (empty when no candidate fits), and how many solutions the search visited.
    """
    c, L = _check_arrays(cost, loss, budgets)
    big = big_constant(L)
    L = np.where(np.isinf(L), big, L)
    req = np.full(L.shape[1], np.inf) if max_loss is None else np.asarray(max_loss, np.float64)
    if req.shape != (L.shape[1],) or np.any(np.isnan(req)):
        raise SelectionError(f"max_loss must be [{L.shape[1]}] numbers (got {req!r})")
    if not budgets:
        return []
    dummy = np.zeros((1, 1))
    tables = _tables(c, L, big, req, max(budgets)) if prune else (dummy, dummy, 1.0)
    req = np.minimum(req, L[np.less(L, big)].max(initial=0.0))  # and every task covered
    return _each_budget(c, L, budgets, (big, prune), req, tables)


def _each_budget(
    c: Any, L: Any, budgets: Sequence[float], setup: tuple[float, bool], req: Any, tables: Any
) -> list[tuple[NDArray[np.int64], int]]:
    """One search per budget, smallest first: each starts from the best solution of the
    smaller budgets (it fits), which only makes the prunes bite earlier."""
    big, prune = setup
    out: dict[int, tuple[NDArray[np.int64], int]] = {}
    known: list[tuple[float, bool, float]] = []  # (budget, feasible, total) solved so far
    for i in sorted(range(len(budgets)), key=lambda i: budgets[i]):
        b = float(budgets[i])
        seed = min(((not ok, total) for _, ok, total in known), default=(True, np.inf))
        chosen, visited, ok, total = search(
            c, L, (b, big, prune, not seed[0], seed[1]), req, tables
        )
        known.append((b, ok, total))
        out[i] = (chosen, int(visited))
    return [out[i] for i in range(len(budgets))]


def select_networks(
    cost: ArrayLike,
    loss: ArrayLike,
    budget: float,
    *,
    max_loss: ArrayLike | None = None,
    prune: bool = True,
) -> tuple[NDArray[np.int64], int]:
    """:func:`select_many` for one budget: ``(indices, visited)``.

    Example:
        >>> inf = float("inf")
        >>> idx, _ = select_networks([0.5, 0.5, 1.0], [[0.2, inf], [inf, 0.3], [0.25, 0.2]], 1.0)
        >>> idx.tolist()
        [2]
    """
    return select_many(cost, loss, [budget], max_loss=max_loss, prune=prune)[0]
