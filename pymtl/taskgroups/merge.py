"""Merge candidate files, e.g. one per shard of a job array, into one set [pymtl].

Reference: the candidate format of :mod:`pymtl.taskgroups.candidates` (SPEC-methods §4.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs

from pymtl.taskgroups.candidates import (
    Candidate,
    CandidateFormatError,
    CandidateSet,
    NetworkKey,
    _check_unique,
    read_candidates,
)

__all__ = ["merge_candidates"]


def merge_candidates(items: Iterable[str | Path | CandidateSet]) -> CandidateSet:
    """One set from several (e.g. one file per shard of a job array).

    The files must have the same tasks (the first file's order is kept). A network present in
    several files (same task set and width) is merged: its name and cost must agree, and so
    must its losses on every split both files have; it takes the splits of both. After merging,
    every candidate must have losses for every split of any file.

    Raises:
        CandidateFormatError: conflicting duplicates, different tasks, or a split missing.
    """
    sets = [c if isinstance(c, CandidateSet) else read_candidates(c) for c in items]
    if not sets:
        raise CandidateFormatError("merge_candidates: no candidate file given; expected >= 1")
    if len(sets) == 1:
        return sets[0]
    first = sets[0]
    merged: dict[NetworkKey, tuple[Candidate, str]] = {}
    for cs in sets:
        if set(cs.tasks) != set(first.tasks):
            raise CandidateFormatError(
                f"{cs.source} has tasks {list(cs.tasks)} but {first.source} has "
                f"{list(first.tasks)}; expected the same tasks in every file to merge"
            )
        for c in cs.candidates:
            old = merged.get(c.key)
            merged[c.key] = (c, cs.source) if old is None else (_merge_one(old, (c, cs.source)))
    splits = tuple(dict.fromkeys(s for cs in sets for s in cs.splits))
    _check_complete(merged.values(), splits)
    candidates = [c for c, _ in merged.values()]
    source = f"{len(sets)} merged files ({first.source}, …)"
    _check_unique(candidates, source)
    return CandidateSet(
        tasks=first.tasks, splits=splits, candidates=tuple(candidates), source=source
    )


def _check_complete(merged: Iterable[tuple[Candidate, str]], splits: tuple[str, ...]) -> None:
    for c, where in merged:
        missing = [s for s in splits if s not in c.losses]
        if missing:
            raise CandidateFormatError(
                f"after merging, candidate {c.name!r} (from {where}) has no losses for "
                f"split(s) {missing}; every candidate needs every split of the merged files "
                f"{list(splits)}"
            )


def _merge_one(old: tuple[Candidate, str], new: tuple[Candidate, str]) -> tuple[Candidate, str]:
    (a, where_a), (b, where_b) = old, new
    both = f"candidate {a.name!r} in {where_a} and {b.name!r} in {where_b}"
    what = f"tasks {sorted(a.tasks)}, width {a.width:g}"
    if a.name != b.name or a.cost != b.cost:
        raise CandidateFormatError(
            f"conflicting duplicate: {both} are the same network ({what}) with names "
            f"{a.name!r}/{b.name!r} and costs {a.cost:g}/{b.cost:g}; expected equal names and costs"
        )
    losses = dict(a.losses)
    for split, values in b.losses.items():
        mine = tuple(values[b.tasks.index(t)] for t in a.tasks)  # in a's task order
        if split in losses and losses[split] != mine:
            raise CandidateFormatError(
                f"conflicting duplicate: {both} ({what}) have different {split!r} losses "
                f"{list(losses[split])} and {list(mine)} (in task order {list(a.tasks)}); "
                "expected equal losses"
            )
        losses[split] = mine
    info = {**b.info, **a.info}
    return attrs.evolve(a, losses=losses, info=info), where_a
