"""Selection over budgets: which networks to train and deploy, with their losses [S][C][pymtl].

Reference: SPEC-methods §4.2–4.3 (Standley et al., ICML 2020 [S]). :func:`select` runs the
branch and bound of :func:`pymtl.taskgroups.select.select_networks` on one split's losses
("val" for the paper's optimal method, the early-stopping split for ESA, HOA predictions with
``hoa=True``) for each budget, and scores the chosen networks on another split ("test"), the
way Table 4 and Figure 5 of the paper are made: a chosen network is found in the scored set by
its task set and width (so also its cost), and each task takes the lowest scoring-split loss
among the chosen networks [C:tstandley/taskgrouping main.cpp]. ``deployed_loss`` is the
scoring-split loss of the network Standley's min rule picks for each task (lowest loss on the
selection split), i.e. what the grouping file deploys [pymtl].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from pymtl.architectures.grouping import Group, Grouping
from pymtl.taskgroups.candidates import Candidate, CandidateSet
from pymtl.taskgroups.hoa import hoa_candidates
from pymtl.taskgroups.select import (
    SelectionError,
    default_budgets,
    requirement_vector,
    select_many,
)

__all__ = ["STATUSES", "Selection", "method_label", "select"]

STATUSES = ("ok", "infeasible", "incomplete", "empty")
"""``ok``; ``infeasible``: no solution meets the requirements (the best one that does not is
kept); ``incomplete``: the budget cannot cover every task; ``empty``: no network fits."""


def _total(values: Iterable[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


@attrs.frozen(kw_only=True)
class Selection:
    """The networks picked for one budget, and their losses.

    Attributes:
        method: label of the run, see :func:`method_label` (``optimal``, ``esa``, ``hoa``).
        budget: SNT allowed.
        split: the split whose losses drove the selection.
        networks: the chosen networks, in candidate order.
        assignment: task -> index into ``networks`` of the network with its lowest ``split``
            loss (the first on ties): Standley's min rule.
        task_loss: task -> that ``split`` loss (``inf`` when no chosen network solves it).
        status: one of :data:`STATUSES`.
        hoa: whether ``split``'s losses of three-task-or-more networks are HOA predictions.
        requirements: task -> highest acceptable loss (empty: none).
        visited: solutions the search visited.
        score_split: the split the chosen networks are scored on, or None.
        score_loss: task -> lowest ``score_split`` loss among the chosen networks, or None
            when not scored (no score split, or a chosen network lacks it).
        deployed_loss: task -> ``score_split`` loss of its assigned network, or None.
    """

    method: str
    budget: float
    split: str
    networks: tuple[Candidate, ...]
    assignment: Mapping[str, int]
    task_loss: Mapping[str, float]
    status: str
    hoa: bool = False
    requirements: Mapping[str, float] = attrs.field(factory=dict)
    visited: int = 0
    score_split: str | None = None
    score_loss: Mapping[str, float] | None = None
    deployed_loss: Mapping[str, float] | None = None

    @property
    def cost(self) -> float:
        """Σ cost of the chosen networks (SNT)."""
        return _total(n.cost for n in self.networks)

    @property
    def total(self) -> float:
        """Σ_t selection-split loss (``inf`` if a task is uncovered)."""
        return _total(self.task_loss.values())

    @property
    def score_total(self) -> float | None:
        """Σ_t ``score_loss`` (Table 4's number), or None."""
        return None if self.score_loss is None else _total(self.score_loss.values())

    @property
    def deployed_total(self) -> float | None:
        """Σ_t ``deployed_loss``, or None."""
        return None if self.deployed_loss is None else _total(self.deployed_loss.values())

    @property
    def message(self) -> str:
        """One line saying what the status means for this budget."""
        head = f"{self.method}, budget {self.budget:g} SNT"
        if self.status == "empty":
            return f"{head}: no candidate network fits the budget (the cheapest costs more)"
        if self.status == "incomplete":
            missing = [t for t, v in self.task_loss.items() if math.isinf(v)]
            return f"{head}: no solution within the budget solves every task (left out: {missing})"
        if self.status == "infeasible":
            req = self.requirements
            unmet = {t: self.task_loss[t] for t, b in req.items() if self.task_loss[t] > b}
            reqs = ", ".join(f"{t}<={b:g}" for t, b in req.items())
            best = ", ".join(f"{t} = {v:.4g}" for t, v in unmet.items())
            return f"{head}: no solution meets the requirements ({reqs}); best found: {best}"
        names = ", ".join(n.name for n in self.networks)
        return f"{head}: {names} (cost {self.cost:g}, {self.split} total {self.total:.4f})"

    def to_grouping(self) -> Grouping:
        """The grouping file's content: one group per chosen network (its tasks and width),
        ``choose`` = :attr:`assignment`.

        Raises:
            SelectionError: the status is not ``ok`` (:attr:`message` says why).
        """
        if self.status != "ok":
            raise SelectionError(f"no grouping to write: {self.message}")
        groups = [Group(tasks=n.tasks, width=n.width) for n in self.networks]
        choose: Any = dict(self.assignment)  # attrs' dict converter defeats mypy's inference
        return Grouping(groups=groups, choose=choose)


def method_label(split: str, hoa: bool) -> str:
    """``hoa`` with HOA; else ``optimal`` for the ``val`` split, the split's name otherwise
    (``esa`` for the early-stopping losses)."""
    return "hoa" if hoa else ("optimal" if split == "val" else split)


class _Run(NamedTuple):
    method: str
    split: str
    max_loss: dict[str, float]


def _build(sel_set: CandidateSet, indices: Sequence[int], budget: float, run: _Run) -> Selection:
    split, req = run.split, run.max_loss
    networks = tuple(sel_set.candidates[i] for i in sorted(indices))
    assignment: dict[str, int] = {}
    task_loss: dict[str, float] = {}
    for t in sel_set.tasks:
        losses = [n.loss(split, t) for n in networks]
        best = min(losses, default=math.inf)
        task_loss[t] = best
        if math.isfinite(best):
            assignment[t] = losses.index(best)
    if not networks:
        status = "empty"
    elif any(math.isinf(v) for v in task_loss.values()):
        status = "incomplete"
    elif any(task_loss[t] > b for t, b in req.items()):
        status = "infeasible"
    else:
        status = "ok"
    return Selection(
        method=run.method,
        budget=budget,
        split=split,
        networks=networks,
        assignment=assignment,
        task_loss=task_loss,
        status=status,
        requirements=req,
    )


def _score(sel: Selection, scored: CandidateSet, split: str) -> Selection:
    """``sel`` with its scoring-split losses, when every chosen network has them."""
    found = [scored.find(n.tasks, n.width) for n in sel.networks]
    if not found or any(c is None for c in found):
        return attrs.evolve(sel, score_split=split)
    nets = [c for c in found if c is not None]
    score = {t: min(c.loss(split, t) for c in nets) for t in scored.tasks}
    deployed = {t: nets[sel.assignment[t]].loss(split, t) for t in sel.assignment}
    if len(deployed) != len(scored.tasks):
        deployed = {}
    return attrs.evolve(sel, score_split=split, score_loss=score, deployed_loss=deployed or None)


def select(
    candidates: CandidateSet,
    budgets: Sequence[float] | None = None,
    *,
    split: str = "val",
    score_split: str | None = None,
    hoa: bool = False,
    max_loss: Mapping[str, float] | None = None,
) -> list[Selection]:
    """Run the selection for each budget (default ``1, 1.5, …, k``).

    Args:
        candidates: the candidate set (also the one scored).
        budgets: SNT budgets, each > 0.
        split: losses the selection uses ("val"; the early-stopping split for ESA).
        score_split: split to score the chosen networks on ("test"), or None.
        hoa: select on HOA predictions from ``split`` (SPEC §4.3).
        max_loss: hard requirements task -> highest acceptable ``split`` loss.

    Example:
        >>> sels = select(cset, [1, 1.5], split="val", score_split="test")  # doctest: +SKIP
        >>> [round(s.score_total, 3) for s in sels]  # doctest: +SKIP
        [0.503, 0.461]
    """
    if score_split is not None:
        candidates.check_split(score_split)
    sel_set = hoa_candidates(candidates, split) if hoa else candidates
    sel_set.check_split(split)
    req = requirement_vector(sel_set.tasks, max_loss)
    cost, loss = sel_set.costs(), sel_set.loss_matrix(split)
    run = _Run(method_label(split, hoa), split, dict(max_loss or {}))
    budgets = default_budgets(len(candidates.tasks)) if budgets is None else list(budgets)
    out = []
    for budget, (indices, visited) in zip(
        budgets, select_many(cost, loss, budgets, max_loss=req), strict=True
    ):
        sel = _build(sel_set, indices.tolist(), float(budget), run)
        sel = attrs.evolve(sel, visited=visited, hoa=hoa)
        out.append(sel if score_split is None else _score(sel, candidates, score_split))
    return out
