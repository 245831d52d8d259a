"""Higher-Order Approximation: predict the losses of networks of three or more tasks from the
pair networks [S][C].

Reference: SPEC-methods §4.3 (Standley et al., ICML 2020 [S]; checked against
[C:tstandley/taskgrouping]). For a network n with |n| >= 3,
``L̂(n, t) = mean{ L(m, t) : m a 2-task network, m ⊂ n, t ∈ m }``; networks of one or two
tasks keep their own losses. Only O(k²) networks need training.

pymtl choices [pymtl]: the pairs averaged are those of n's width, summed in candidate order
then divided, as in [C]. Every network of three or more tasks in the
file is replaced by its prediction, and every task subset of three or more tasks that the file
lacks is added, at each width that has pair networks, so the selection sees the paper's full
candidate set C₀ even when only the pairs were trained (k <= :data:`MAX_TASKS`). An added
network's cost is the mean cost of its pairs; a network in the file keeps its own cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from pymtl.taskgroups.candidates import Candidate, CandidateSet, default_name
from pymtl.taskgroups.select import SelectionError

__all__ = ["MAX_TASKS", "hoa_candidates"]

MAX_TASKS = 12
"""HOA adds every missing task subset (2^k of them) only up to this many tasks."""


def _predict(
    tasks: Sequence[str], pairs: Sequence[Candidate], split: str, where: str
) -> tuple[float, ...]:
    """L̂(n, t) for each t of ``tasks`` from ``pairs`` (the pair networks of n's width)."""
    inside = [m for m in pairs if set(m.tasks) <= set(tasks)]
    out = []
    for t in tasks:
        total, count = 0.0, 0
        for m in inside:
            if t in m.tasks:
                total += m.loss(split, t)
                count += 1
        if count == 0:
            raise SelectionError(
                f"HOA cannot predict {where} on task {t!r}: no pair network of its width "
                f"contains {t!r} and lies inside {list(tasks)}; expected every pair network "
                "to be trained"
            )
        out.append(total / count)
    return tuple(out)


def _added(cset: CandidateSet, width: float, pairs: Sequence[Candidate]) -> list[Candidate]:
    """Networks for the task subsets of three or more tasks missing at ``width`` whose every
    task lies in one of their pairs (losses still empty)."""
    added = []
    taken = {c.name for c in cset.candidates}
    present = {c.key for c in cset.candidates}
    for size in range(3, len(cset.tasks) + 1):
        for subset in itertools.combinations(cset.tasks, size):
            inside = [m for m in pairs if set(m.tasks) <= set(subset)]
            covered = {t for m in inside for t in m.tasks}
            if (frozenset(subset), width) in present or covered != set(subset):
                continue
            cost = sum(m.cost for m in inside) / len(inside)
            name = default_name(subset, width)
            name = name if name not in taken else f"{name}~hoa"
            added.append(
                Candidate(name=name, tasks=subset, width=width, cost=cost, losses={}, info={})
            )
    return added


def _with_loss(c: Candidate, split: str, loss: tuple[float, ...], hoa: bool) -> Candidate:
    info = {**c.info, "hoa": True} if hoa else c.info
    return Candidate(
        name=c.name, tasks=c.tasks, width=c.width, cost=c.cost, losses={split: loss}, info=info
    )


def hoa_candidates(cset: CandidateSet, split: str = "val") -> CandidateSet:
    """A candidate set with one split, ``split``, where every network of three or more tasks
    holds its HOA prediction (SPEC §4.3); see the module docstring for what is added.

    Raises:
        SelectionError: a network's pairs are missing, or too many tasks to add subsets.
        CandidateFormatError: ``split`` is not in ``cset``.
    """
    cset.check_split(split)
    if len(cset.tasks) > MAX_TASKS:
        raise SelectionError(
            f"HOA enumerates every task subset; {len(cset.tasks)} tasks is more than "
            f"{MAX_TASKS} (2^k networks)"
        )
    widths = list(dict.fromkeys(c.width for c in cset.candidates if len(c.tasks) == 2))
    pairs = {w: [c for c in cset.candidates if len(c.tasks) == 2 and c.width == w] for w in widths}
    out: list[Candidate] = []
    for c in cset.candidates:
        if len(c.tasks) <= 2:
            out.append(_with_loss(c, split, c.losses[split], hoa=False))
        else:
            where = f"network {c.name!r} (width {c.width:g})"
            loss = _predict(c.tasks, pairs.get(c.width, []), split, where)
            out.append(_with_loss(c, split, loss, hoa=True))
    for w in widths:
        for c in _added(cset, w, pairs[w]):
            loss = _predict(c.tasks, pairs[w], split, f"network {c.name!r} (width {w:g})")
            out.append(_with_loss(c, split, loss, hoa=True))
    source = f"HOA predictions from {cset.source}"
    return CandidateSet(tasks=cset.tasks, splits=(split,), candidates=tuple(out), source=source)
