"""A second admissible prune for the branch and bound: best completion over task subsets [pymtl].

Reference: SPEC-methods §4.2 asks for an admissible lower-bound prune that must not change
results; this is pymtl's stronger one, for k <= :data:`MAX_TASKS` tasks.

Every solution's score is a partition of the tasks into blocks, each served by one network
(a task takes its best network; redundant networks can be dropped). So the best total for the
task subset P with at most b budget, using *any* candidates,

    D[P, b] = min over blocks Q ∋ min(P), Q ⊆ P, networks n ⊇ Q with cost c_n <= b of
              Σ_{t∈Q} L(n, t) + D[P \\ Q, b − c_n],      D[∅, ·] = 0,

is a dynamic program over the 2^k subsets and the budget on a grid of ``q`` SNT (costs rounded
down to the grid, budgets up: a relaxation, so still a lower bound). Below a node with running
score r and remaining budget B, any solution's total is at least
``min_P (Σ_{t∉P} r_t + D[P, B])`` (P: the tasks its added networks improve). With requirements,
a feasible completion uses only (network, task) pairs within them and must improve every task
that r violates, which gives a second table. The search prunes only when a bound exceeds the
incumbent by more than a relative 1e-9 (float sums taken in another order), so no solution that
could win or tie is ever cut.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_LEVELS", "MAX_TASKS", "cost_grid", "subset_table"]

MAX_TASKS = 12
"""The subset table is built only up to this many tasks (3^k work, 2^k entries per level)."""
MAX_LEVELS = 128
"""Most budget levels of the table; costs off the grid are rounded down to it."""


def cost_grid(cost: NDArray[np.float64], budget: float) -> float:
    """The grid step: the largest ``min(cost) / j`` (j <= 8) that every cost is a multiple
    of, if that gives at most :data:`MAX_LEVELS` levels up to ``budget``; else
    ``budget / MAX_LEVELS`` (costs then rounded down to it)."""
    for j in range(1, 9):
        q = float(cost.min()) / j
        steps = cost / q
        if np.all(np.abs(steps - np.round(steps)) < 1e-9 * np.maximum(1.0, steps)):
            if budget / q <= MAX_LEVELS:
                return q
            break
    return budget / MAX_LEVELS


def _levels(values: Any, q: float, slack: float) -> Any:
    return np.floor(np.asarray(values) / q + slack).astype(np.int64)


def subset_table(
    cost: NDArray[np.float64], loss: NDArray[np.float64], budget: float, solves: Any
) -> tuple[NDArray[np.float64], float]:
    """``(table, q)``: ``table[b, Q]`` = the module docstring's D[P, b] for P the complement
    of Q (the tasks kept at r), [levels + 1, 2^k], using the (network, task) pairs where
    ``solves`` [n, k] is True; q the grid step in SNT."""
    q = cost_grid(cost, budget)
    top = int(_levels(budget, q, 1e-6))
    net_level = _levels(cost, q, 1e-9)
    D = _table(net_level, loss, solves, top)  # [P, level]
    return np.ascontiguousarray(D[::-1].T), q  # [level, complement of P]


@numba.njit(cache=True, nogil=True)
def _table(net_level: Any, loss: Any, solves: Any, top: int) -> Any:  # pragma: no cover
    n, k = loss.shape
    full = 1 << k
    W = np.full((full, top + 1), np.inf)
    for i in range(n):
        lv = net_level[i]
        mask = 0
        for t in range(k):
            if solves[i, t]:
                mask |= 1 << t
        if lv > top or mask == 0:
            continue
        sub = mask
        while sub > 0:
            v = 0.0
            for t in range(k):
                if sub >> t & 1:
                    v += loss[i, t]
            W[sub, lv] = min(W[sub, lv], v)
            sub = (sub - 1) & mask
    return _combine(W, top)


@numba.njit(cache=True, nogil=True)
def _combine(W: Any, top: int) -> Any:  # pragma: no cover
    """The DP over subsets P (increasing, so P \\ Q is done) and blocks Q ∋ lowest bit of P."""
    full = W.shape[0]
    used = np.zeros(top + 1, np.int64)  # the levels some network has, first
    n_used = 0
    for lv in range(top + 1):
        for Q in range(full):
            if W[Q, lv] < np.inf:
                used[n_used] = lv
                n_used += 1
                break
    D = np.full((full, top + 1), np.inf)
    for b in range(top + 1):
        D[0, b] = 0.0
    for P in range(1, full):
        low = P & -P
        rest = P ^ low
        s = rest
        while True:
            Q = low | s
            R = P ^ Q
            for lv in used[:n_used]:
                w = W[Q, lv]
                if w < np.inf:
                    for b in range(lv, top + 1):
                        D[P, b] = min(D[P, b], w + D[R, b - lv])
            if s == 0:
                break
            s = (s - 1) & rest
    return D
