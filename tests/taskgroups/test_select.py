"""Branch-and-bound selection (SPEC-methods §4.2): the paper's Table 4 from Appendix A, and the
compiled search against brute force, the recursive reference and itself without prunes."""

from __future__ import annotations

import numpy as np
import pytest

from pymtl.taskgroups import (
    SelectionError,
    default_budgets,
    requirements_rule,
    select,
    select_brute_force,
    select_networks,
    select_reference,
)
from pymtl.taskgroups.select import big_constant, select_many

BUDGETS = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
# SPEC-methods §6.1 item 1 (paper Table 4), three decimals as printed.
OPTIMAL = ["0.503", "0.461", "0.452", "0.446", "0.442", "0.439", "0.436", "0.436", "0.435"]
ESA = ["0.503", "0.487", "0.467", "0.461", "0.457", "0.451", "0.451", "0.447", "0.447"]
# HOA: the paper prints 0.444 and 0.445 at budgets 4 and 4.5; SPEC's implementation (and this
# one) gives 0.441 and 0.446 there. Those two cells are known, unexplained deviations (the
# released files or tie-breaking may differ from the paper's run), so they are not asserted.
HOA = {
    1.0: "0.503",
    1.5: "0.461",
    2.0: "0.455",
    2.5: "0.451",
    3.0: "0.449",
    3.5: "0.445",
    5.0: "0.442",
}


def _row(sels):
    return [f"{s.score_total:.3f}" for s in sels]


def test_default_budgets():
    assert default_budgets(5) == BUDGETS
    assert default_budgets(1) == [1.0]
    assert default_budgets(3, step=1.0) == [1.0, 2.0, 3.0]


def test_table4_optimal(standley):
    sels = select(standley, split="val", score_split="test")
    assert [s.budget for s in sels] == BUDGETS
    assert _row(sels) == OPTIMAL
    assert all(s.status == "ok" and s.method == "optimal" for s in sels)


def test_table4_esa(standley):
    sels = select(standley, BUDGETS, split="esa", score_split="test")
    assert _row(sels) == ESA
    assert sels[0].method == "esa"


def test_table4_hoa(standley):
    sels = select(standley, list(HOA), split="val", score_split="test", hoa=True)
    assert dict(zip(HOA, _row(sels), strict=True)) == HOA


def test_small_budgets_pick_the_papers_networks(standley):
    one, one_half = select(standley, [1.0, 1.5], split="val", score_split="test")
    assert [n.name for n in one.networks] == ["sdnke"]
    assert {n.name for n in one_half.networks} == {"dnke", "s-half"}
    assert one_half.assignment["s"] == [n.name for n in one_half.networks].index("s-half")
    assert one_half.cost == 1.5


def test_optimal_against_brute_force(make_instance):
    checked = unique = 0
    for seed in range(120):
        cost, loss = make_instance(seed)
        for budget in (0.5, 1.0, 1.5, 2.0, 3.0):
            chosen, _ = select_networks(cost, loss, budget)
            best = select_brute_force(cost, loss, budget)
            if not best.optimal:
                assert chosen.size == 0
                continue
            big = big_constant(loss)
            score = np.where(np.isinf(loss), big, loss)[chosen].min(axis=0)
            assert sum(score.tolist()) == best.total, (seed, budget)
            assert tuple(sorted(chosen.tolist())) in best.optimal, (seed, budget)
            checked += 1
            unique += len(best.optimal) == 1
    assert checked > 400
    assert unique > 200


@pytest.mark.parametrize("ties", [False, True])
def test_prunes_change_nothing(make_instance, ties):
    """Same networks in the same order as the paper's recursion (ties included) and as the
    search without any prune."""
    for seed in range(150):
        cost, loss = make_instance(seed, ties=ties)
        budgets = [0.5, 1.0, 1.5, 2.0, 2.5, 3.5]
        fast = select_many(cost, loss, budgets)
        slow = select_many(cost, loss, budgets, prune=False)
        for b, (a, _), (p, _) in zip(budgets, fast, slow, strict=True):
            assert a.tolist() == p.tolist(), (seed, b)
            assert tuple(a.tolist()) == select_reference(cost, loss, b), (seed, b)


def test_prunes_change_nothing_off_grid_costs():
    """Costs that are not multiples of a common step use the rounded subset table."""
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        n, k = int(rng.integers(4, 10)), int(rng.integers(3, 6))
        loss = np.where(rng.random((n, k)) < 0.6, rng.integers(1, 9, (n, k)) / 8, np.inf)
        cost = rng.uniform(0.3, 1.2, n)
        for b in (0.7, 1.3, 2.2):
            a, _ = select_networks(cost, loss, b)
            assert a.tolist() == select_networks(cost, loss, b, prune=False)[0].tolist()
            best = select_brute_force(cost, loss, b)
            assert not best.optimal or tuple(sorted(a.tolist())) in best.optimal


def test_prune_visits_fewer(standley):
    cost, loss = standley.costs(), standley.loss_matrix("val")
    with_prune = [v for _, v in select_many(cost, loss, BUDGETS)]
    without = [v for _, v in select_many(cost, loss, BUDGETS, prune=False)]
    assert sum(with_prune) < sum(without) / 5


def test_requirements_honoured(make_instance):
    for seed in range(100):
        cost, loss = make_instance(seed, ties=seed % 2 == 0)
        req = np.full(loss.shape[1], np.inf)
        req[seed % loss.shape[1]] = 0.5
        for b in (1.0, 2.0):
            chosen, _ = select_networks(cost, loss, b, max_loss=req)
            best = select_brute_force(cost, loss, b, max_loss=req)
            if best.optimal:
                assert tuple(sorted(chosen.tolist())) in best.optimal, (seed, b)
            rule = requirements_rule(req, big=big_constant(loss))
            assert tuple(chosen.tolist()) == select_reference(cost, loss, b, better=rule)


def test_requirement_on_the_fixture(standley):
    (free,) = select(standley, [1.0], split="val")
    assert free.task_loss["s"] > 0.075
    low, high = select(standley, [1.0, 2.0], split="val", max_loss={"s": 0.075})
    assert low.status == "infeasible"
    assert "no solution meets the requirements" in low.message
    assert high.status == "ok"
    assert high.task_loss["s"] <= 0.075
    with pytest.raises(SelectionError, match="no grouping to write"):
        low.to_grouping()
    with pytest.raises(SelectionError, match="unknown task 'x'"):
        select(standley, [1.0], max_loss={"x": 0.1})


def test_large_losses_still_cover_every_task():
    """Losses far above the paper's 99 stand-in: the constant is raised, so incomplete
    solutions still lose."""
    cost = np.array([0.5, 0.5, 1.0])
    loss = np.array([[10.0, np.inf], [np.inf, 900.0], [400.0, 950.0]])
    assert big_constant(loss) > 2 * 950
    chosen, _ = select_networks(cost, loss, 1.0)
    assert sorted(chosen.tolist()) == [0, 1]
    assert select_brute_force(cost, loss, 1.0).optimal == ((0, 1),)


def test_nothing_fits_and_incomplete(standley):
    empty, small = select(standley, [0.4, 0.5], split="val")
    assert empty.status == "empty"
    assert not empty.networks
    assert small.status == "incomplete"
    assert "left out" in small.message


@pytest.mark.parametrize(
    ("cost", "loss", "budget", "match"),
    [
        ([1.0], [[0.1, 0.2]], 0.0, "budget must be a finite number > 0"),
        ([1.0], [[0.1, 0.2]], float("nan"), "budget must be a finite number > 0"),
        ([1.0, 1.0], [[0.1, 0.2]], 1.0, "expected cost \\[n\\] and loss \\[n, k\\]"),
        ([0.0], [[0.1, 0.2]], 1.0, "costs must be finite and > 0"),
        ([1.0], [[-0.1, 0.2]], 1.0, "losses must be >= 0 or inf"),
        ([1.0], [[float("nan"), 0.2]], 1.0, "losses must be >= 0 or inf"),
    ],
)
def test_bad_input(cost, loss, budget, match):
    with pytest.raises(SelectionError, match=match):
        select_networks(cost, loss, budget)


def test_many_tasks_without_the_subset_table():
    """Above 12 tasks the search runs with SPEC's prune only; still optimal."""
    rng = np.random.default_rng(7)
    cost = rng.choice([0.5, 1.0], size=9)
    loss = np.where(rng.random((9, 13)) < 0.7, rng.uniform(0.1, 1.0, (9, 13)), np.inf)
    for b in (2.0, 3.0, 4.0):
        chosen, _ = select_networks(cost, loss, b)
        best = select_brute_force(cost, loss, b)
        assert tuple(sorted(chosen.tolist())) in best.optimal
        assert chosen.tolist() == select_networks(cost, loss, b, prune=False)[0].tolist()
