"""Benchmarks of task-grouping selection (``pymtl group select``, SPEC-methods §4.2).

What is timed: :func:`pymtl.taskgroups.select.select_many` over every budget 1, 1.5, …, k SNT
(one call: the subset table of the prune is built once, then one branch and bound per budget).

* ``k5``: Standley et al.'s setting 1 (tests/taskgroups/fixtures, SPEC Appendix A), 36
  candidates, val losses. ``pymtl`` is the default search (prunes on); ``spec`` the paper's
  search without any prune (same results, checked).
* ``k10``: 10 tasks, every one of the 1,023 task subsets on a full-size encoder (cost 1) plus
  10 half-size single-task networks (cost 0.5): 1,033 candidates, 19 budgets. Synthetic
  losses, seed 0: per task a base loss ~ U(0.03, 0.2); a network's loss on t is
  ``base_t · (1 + 0.02 (|n| − 1)) · (1 − mean_{u∈n, u≠t} a_tu) · exp(0.03 z)`` with pairwise
  affinities a ~ N(0, 0.08) and z ~ N(0, 1) per (network, task); half-size networks get
  ``1.05 · base_t · exp(0.03 z)``. Only ``pymtl``: without the prunes the paper's search does
  not finish (budget 3 alone visits over 10^8 solutions).

Every body checks its result (so ``--benchmark-disable`` is a test): k5 gives Table 4's
optimal row on the test losses; k10's totals never increase with the budget, every choice
fits its budget, and at 10 SNT the total is Σ_t min_n L(n, t) (each task's best network).

    OMP_NUM_THREADS=1 .venv/bin/pytest bench/bench_group_select.py --benchmark-only \\
        -p no:cacheprovider
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pymtl.taskgroups import default_budgets, read_candidates
from pymtl.taskgroups.select import select_many

FIXTURE = Path(__file__).parent.parent / "tests" / "taskgroups" / "fixtures"
OPTIMAL = ["0.503", "0.461", "0.452", "0.446", "0.442", "0.439", "0.436", "0.436", "0.435"]


def synthetic(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(cost [n], loss [n, k])`` of the k10 case (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.03, 0.2, size=k)
    aff = rng.normal(0.0, 0.08, size=(k, k))
    costs, rows = [], []
    for t in range(k):
        row = np.full(k, np.inf)
        row[t] = 1.05 * base[t] * np.exp(0.03 * rng.standard_normal())
        costs.append(0.5)
        rows.append(row)
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            row = np.full(k, np.inf)
            for t in subset:
                gain = np.mean([aff[t, u] for u in subset if u != t]) if size > 1 else 0.0
                noise = np.exp(0.03 * rng.standard_normal())
                row[t] = base[t] * (1 + 0.02 * (size - 1)) * (1 - gain) * noise
            costs.append(1.0)
            rows.append(row)
    return np.array(costs), np.array(rows)


def _total(loss: np.ndarray, chosen: np.ndarray) -> float:
    return float(sum(loss[chosen].min(axis=0).tolist()))


@pytest.mark.parametrize("impl", ["pymtl", "spec"])
def test_select_k5(benchmark: Any, impl: str) -> None:
    cset = read_candidates(FIXTURE / "standley_setting1.toml")
    cost, val, test = cset.costs(), cset.loss_matrix("val"), cset.loss_matrix("test")
    budgets = default_budgets(5)
    benchmark.group = "group select k=5 (36 candidates, 9 budgets)"
    benchmark.extra_info.update(impl=impl, k=5, n=len(cost), budgets=len(budgets))
    results = benchmark(lambda: select_many(cost, val, budgets, prune=impl == "pymtl"))
    assert [f"{_total(test, chosen):.3f}" for chosen, _ in results] == OPTIMAL
    benchmark.extra_info["visited"] = sum(v for _, v in results)


def test_select_k10(benchmark: Any) -> None:
    cost, loss = synthetic(10)
    budgets = default_budgets(10)
    benchmark.group = "group select k=10 (1,033 candidates, 19 budgets)"
    benchmark.extra_info.update(impl="pymtl", k=10, n=len(cost), budgets=len(budgets))
    results = benchmark.pedantic(
        lambda: select_many(cost, loss, budgets), rounds=5, iterations=1, warmup_rounds=1
    )
    totals = [_total(loss, chosen) for chosen, _ in results]
    assert all(a >= b for a, b in itertools.pairwise(totals))
    for b, (chosen, _) in zip(budgets, results, strict=True):
        assert cost[chosen].sum() <= b + 1e-9
    assert totals[-1] == pytest.approx(float(loss.min(axis=0).sum()), rel=1e-12)
    benchmark.extra_info["visited"] = sum(v for _, v in results)
