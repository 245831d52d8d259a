"""The compiled branch and bound of :mod:`pymtl.taskgroups.select` [S][C][pymtl].

Reference: SPEC-methods §4.2 (``get_best_networks`` [S][C:tstandley/taskgrouping main.cpp]);
the search, its order and BETTER are explained in :mod:`pymtl.taskgroups.select`, the subset
bound in :mod:`pymtl.taskgroups._bound`.

Every compiled function that calls another compiled function lives in this one module:
numba's on-disk cache (``cache=True``) only notices edits to the file of the function it
compiled, so a callee in another module could be served stale from the cache.

Arrays: ``cost`` [n] SNT; ``loss`` [n, k] with ∞ already replaced by the large constant;
``req`` [k] highest acceptable loss per task (∞: none); ``r`` [k] running per-task score.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["search"]


@numba.njit(cache=True, nogil=True)
def _better(a_ok: bool, a_total: float, b_ok: bool, b_total: float) -> bool:  # pragma: no cover
    """Whether solution A is strictly better than B (feasibility first, then the sum)."""
    if a_ok != b_ok:
        return a_ok
    return a_total < b_total


@numba.njit(cache=True, nogil=True)
def _expand(src: Any, node: Any, lists: Any, level: int, r: Any) -> int:  # pragma: no cover
    """FILTER and SORT the candidates ``src`` for the node at ``level`` (running score ``r``),
    writing them to ``lists[level]`` in ascending heuristic order; returns their count."""
    cost, loss, budget_left = node
    k = loss.shape[1]
    keep = np.empty(src.shape[0], np.int64)
    h = np.empty(src.shape[0], np.float64)
    count = 0
    for i in src:
        if cost[i] > budget_left + 1e-9:
            continue
        best = -np.inf
        for t in range(k):
            best = max(best, r[t] - loss[i, t])
        if best > 0.0:  # improves at least one task: not dominated by r
            keep[count] = i
            h[count] = best
            count += 1
    _merge_sort(h[:count], keep[:count], lists[level])
    return count


@numba.njit(cache=True, nogil=True)
def _merge_sort(key: Any, items: Any, out: Any) -> None:  # pragma: no cover
    """``out[:m] = items`` ordered by ``key`` ascending, equal keys in input order (a stable
    bottom-up merge sort; ``key`` and ``items`` are overwritten)."""
    m = key.shape[0]
    merged_key, merged = np.empty(m), np.empty(m, np.int64)
    width = 1
    while width < m:
        for lo in range(0, m, 2 * width):
            mid, hi = min(lo + width, m), min(lo + 2 * width, m)
            i, j = lo, mid
            for o in range(lo, hi):
                if j >= hi or (i < mid and key[i] <= key[j]):  # ties: the left run first
                    merged_key[o], merged[o] = key[i], items[i]
                    i += 1
                else:
                    merged_key[o], merged[o] = key[j], items[j]
                    j += 1
        for o in range(m):
            key[o], items[o] = merged_key[o], merged[o]
        width *= 2
    for o in range(m):
        out[o] = items[o]


@numba.njit(cache=True, nogil=True)
def _cut(loss: Any, items: Any, r: Any, req: Any, incumbent: Any) -> bool:  # pragma: no cover
    """SPEC §4.2's prune: no solution below a node (running score ``r``, candidates ``items``)
    can win against the incumbent ``(feasible, total)`` when Σ_t min(r_t, m_t) is worse."""
    inc_ok, inc_total = incumbent
    total = 0.0
    can_ok = True
    for t in range(loss.shape[1]):
        m = r[t]
        for i in items:
            m = min(m, loss[i, t])
        total += m
        if m > req[t]:
            can_ok = False
    if inc_ok and not can_ok:
        return True
    return (inc_ok or not can_ok) and total > inc_total


@numba.njit(cache=True, nogil=True)
def _add(r: Any, loss_j: Any, req: Any, out: Any) -> tuple[bool, float]:  # pragma: no cover
    """Score of the running solution plus network j into ``out``; returns (feasible, total)."""
    total, ok = 0.0, True
    for t in range(r.shape[0]):
        out[t] = min(r[t], loss_j[t])
        total += out[t]
        ok = ok and out[t] <= req[t]
    return ok, total


@numba.njit(cache=True, nogil=True)
def _greedy(cost: Any, loss: Any, budget: float, req: Any, big: float) -> Any:  # pragma: no cover
    """(feasible, total) of a greedy solution: add the affordable network that gives the best
    solution while that is strictly better. Only a starting incumbent for the prune."""
    k = loss.shape[1]
    r, trial = np.full(k, big), np.empty(k)
    ok, total, left = False, np.inf, budget
    while True:
        pick, pick_ok, pick_total = -1, ok, total
        for i in range(loss.shape[0]):
            if cost[i] <= left + 1e-9:
                i_ok, i_total = _add(r, loss[i], req, trial)
                if _better(i_ok, i_total, pick_ok, pick_total):
                    pick, pick_ok, pick_total = i, i_ok, i_total
        if pick < 0:
            return ok, total
        _add(r, loss[pick], req, r)
        ok, total, left = pick_ok, pick_total, left - cost[pick]


@numba.njit(cache=True, nogil=True)
def _subset_bound(D: Any, r: Any, level: int, must: int, sums: Any) -> float:  # pragma: no cover
    """``min over P ⊇ must of (Σ_{t∉P} r_t + D[P])`` at ``level``, from the table of
    :func:`pymtl.taskgroups._bound.subset_table`; ``sums`` is a [2^k] buffer. (No NaN can
    occur: inputs are checked.)"""
    full = D.shape[1]
    row = D[min(level, D.shape[0] - 1)]
    sums[0] = 0.0
    half = 1
    for t in range(r.shape[0]):  # sums[Q] = Σ_{t∈Q} r_t, doubling the filled prefix
        rt = r[t]
        for Q in range(half):
            sums[Q | half] = sums[Q] + rt
        half <<= 1
    best = np.inf
    if must == 0:
        for Q in range(full):
            best = min(best, sums[Q] + row[Q])
    else:
        for Q in range(full):
            if Q & must == 0:
                best = min(best, sums[Q] + row[Q])
    return best


@numba.njit(cache=True, nogil=True)
def _subset_cut(
    tables: Any, r: Any, left: float, req: Any, incumbent: Any
) -> bool:  # pragma: no cover
    """The subset bound of :mod:`pymtl.taskgroups._bound` against the incumbent."""
    D, Dreq, q, sums = tables
    inc_ok, inc_total = incumbent
    level = int((left + 1e-9) / q + 1e-6)  # rounded up a little (a relaxation); >= 0
    limit = inc_total + 1e-9 * (1.0 + abs(inc_total))
    must = 0
    for t in range(r.shape[0]):
        if r[t] > req[t]:
            must |= 1 << t
    feasible: float = _subset_bound(Dreq, r, level, must, sums)
    if inc_ok:
        return bool(feasible > limit)
    return bool(feasible == np.inf and _subset_bound(D, r, level, 0, sums) > limit)


@numba.njit(cache=True, nogil=True)
def _start(cost: Any, loss: Any, setup: Any, req: Any) -> tuple[bool, float]:  # pragma: no cover
    """The first incumbent's (feasible, total): none without prunes (an empty incumbent loses
    to anything); else the better of the seed and a greedy solution."""
    budget, big, prune, seed_ok, seed_total = setup
    if not prune:
        return False, np.inf
    ok, total = _greedy(cost, loss, budget, req, big)
    if _better(seed_ok, seed_total, ok, total):
        return seed_ok, seed_total
    return ok, total


@numba.njit(cache=True, nogil=True)
def search(cost: Any, loss: Any, setup: Any, req: Any, tables: Any) -> Any:  # pragma: no cover
    """The depth-first branch and bound; returns (chosen indices, solutions visited, and
    the best solution's (feasible, total)). ``setup`` = (budget, big, prune, and the
    (feasible, total) of a known solution within the budget to start from, (False, ∞) if
    none)."""
    budget, big, prune = setup[0], setup[1], setup[2]
    n, cmin = loss.shape[0], cost.min()
    depth = min(n, int((budget + 1e-9) / cmin) + 1) + 2  # most networks a solution can hold
    lists, pos = np.empty((depth, n), np.int64), np.zeros(depth, np.int64)
    r, left = np.full((depth, loss.shape[1]), big), np.zeros(depth)
    sel, best = np.empty(depth, np.int64), np.empty(depth, np.int64)
    best_len, visited = 0, 0
    best_ok, best_total = _start(cost, loss, setup, req)
    subset = (tables[0], tables[1], tables[2], np.empty(tables[0].shape[1]))
    use_subset = prune and tables[0].shape[1] > 1
    left[0], d = budget, 0
    pos[0] = _expand(np.arange(n), (cost, loss, budget), lists, d, r[0])
    while d >= 0:
        if pos[d] == 0:
            d -= 1
            continue
        pos[d] -= 1
        j = lists[d, pos[d]]
        sel[d], left[d + 1] = j, left[d] - cost[j]
        ok, total = _add(r[d], loss[j], req, r[d + 1])
        visited += 1
        if not _better(best_ok, best_total, ok, total):
            for i in range(d + 1):
                best[i] = sel[i]
            best_len, best_ok, best_total = d + 1, ok, total
        if left[d + 1] < cmin - 1e-9 or (
            use_subset and _subset_cut(subset, r[d + 1], left[d + 1], req, (best_ok, best_total))
        ):
            continue
        count = _expand(lists[d, : pos[d]], (cost, loss, left[d + 1]), lists, d + 1, r[d + 1])
        items = lists[d + 1, :count]
        if count > 0 and not (prune and _cut(loss, items, r[d + 1], req, (best_ok, best_total))):
            pos[d + 1] = count
            d += 1
    return best[:best_len], visited, best_ok, best_total
