"""Candidate networks of a task-grouping search and their per-task losses [S][pymtl].

Reference: SPEC-methods §4.1 (Standley et al., ICML 2020 [S]): a candidate network has an
inference cost in SNT (one full-size encoder = 1) and a loss per task it solves; the paper's
candidate set is every task subset on a full-size encoder plus one half-size single-task
network per task. ``pymtl group train`` writes these files; ``pymtl group select`` and
``pymtl group affinity`` read them (several shard files are merged by
:func:`pymtl.taskgroups.merge.merge_candidates`).

File format [pymtl], version 1, TOML (or the same structure as JSON, for a ``.json`` file)::

    format = "pymtl-group-candidates"
    version = 1
    tasks = ["s", "d", "n"]          # every task of the problem, each once
    splits = ["val", "test"]         # every candidate has losses for each of these

    [[candidate]]
    name = "s-half"                  # optional; default "+".join(tasks), "@width" if not 1
    tasks = ["s"]                    # the tasks this network solves (a subset of `tasks`)
    width = 0.5                      # encoder width factor, optional, default 1.0
    cost = 0.5                       # inference cost in SNT, optional, default = width
    loss = { val = [0.0802], test = [0.0774] }   # per split, one loss per task, in `tasks` order
    info = { run = "runs/s-half" }   # optional, free-form, carried through unread

A network is identified by its task set and width: two candidates with the same task set and
width are the same network (an error within a file; merged across files when they agree).
Losses are finite and >= 0; costs and widths finite and > 0.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import tomli_w
from numpy.typing import NDArray

from pymtl.taskgroups._document import (
    FORMAT,
    VERSION,
    CandidateFormatError,
    check_candidate,
    check_header,
    default_name,
)

__all__ = [
    "Candidate",
    "CandidateFormatError",
    "CandidateSet",
    "default_name",
    "read_candidates",
    "write_candidates",
]

NetworkKey = tuple[frozenset[str], float]


@attrs.frozen(kw_only=True)
class Candidate:
    """One trained (or predicted) network: its tasks, width, cost and losses per split.

    Attributes:
        name: a label, unique within its set.
        tasks: the tasks it solves, in the order of its loss lists.
        width: encoder width factor (1.0 full size, 0.5 half size).
        cost: inference cost in SNT.
        losses: split name -> one loss per task of ``tasks``.
        info: free-form data carried through (e.g. the run directory).
    """

    name: str
    tasks: tuple[str, ...]
    width: float
    cost: float
    losses: Mapping[str, tuple[float, ...]]
    info: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> NetworkKey:
        """``(task set, width)``: what makes two candidates the same network."""
        return frozenset(self.tasks), self.width

    def loss(self, split: str, task: str) -> float:
        """The loss on ``task`` in ``split``; ``inf`` when the network does not solve it."""
        if task not in self.tasks:
            return float("inf")
        return self.losses[split][self.tasks.index(task)]

    def to_entry(self) -> dict[str, Any]:
        """The ``[[candidate]]`` table of this network."""
        entry: dict[str, Any] = {"name": self.name, "tasks": list(self.tasks)}
        entry |= {"width": self.width, "cost": self.cost}
        entry["loss"] = {s: list(v) for s, v in self.losses.items()}
        if self.info:
            entry["info"] = dict(self.info)
        return entry


@attrs.frozen(kw_only=True)
class CandidateSet:
    """The tasks, splits and candidates of one or more candidate files (see the module
    docstring); build it with :meth:`from_document`, :meth:`from_entries`,
    :func:`read_candidates` or :func:`merge_candidates`, which validate everything."""

    tasks: tuple[str, ...]
    splits: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    source: str = "candidates"

    @classmethod
    def from_document(cls, doc: Any, *, source: str = "candidate document") -> CandidateSet:
        """A set from the plain-dict form of a file.

        Raises:
            CandidateFormatError: naming ``source``, the candidate, what is wrong and what is
                expected.
        """
        tasks, splits, entries = check_header(doc, source)
        candidates = [
            Candidate(**check_candidate(e, i, (tasks, splits), source))
            for i, e in enumerate(entries)
        ]
        _check_unique(candidates, source)
        return cls(tasks=tasks, splits=splits, candidates=tuple(candidates), source=source)

    @classmethod
    def from_entries(
        cls,
        tasks: Sequence[str],
        splits: Sequence[str],
        entries: Iterable[Mapping[str, Any]],
        *,
        source: str = "Python data",
    ) -> CandidateSet:
        """A set from Python data: ``entries`` are ``[[candidate]]`` tables as dicts.

        Example:
            >>> cs = CandidateSet.from_entries(["a", "b"], ["val"], [
            ...     {"tasks": ["a", "b"], "loss": {"val": [0.1, 0.2]}},
            ...     {"tasks": ["a"], "width": 0.5, "loss": {"val": [0.12]}}])
            >>> [c.name for c in cs.candidates]
            ['a+b', 'a@0.5']
        """
        doc = {"format": FORMAT, "version": VERSION, "tasks": list(tasks)}
        doc |= {"splits": list(splits), "candidate": [dict(e) for e in entries]}
        return cls.from_document(doc, source=source)

    def to_document(self) -> dict[str, Any]:
        """The plain-dict form :meth:`from_document` reads back to an equal set."""
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "tasks": list(self.tasks)}
        doc["splits"] = list(self.splits)
        doc["candidate"] = [c.to_entry() for c in self.candidates]
        return doc

    def costs(self) -> NDArray[np.float64]:
        """[n] inference cost of each candidate, in SNT."""
        return np.array([c.cost for c in self.candidates], dtype=np.float64)

    def loss_matrix(self, split: str) -> NDArray[np.float64]:
        """[n, k] loss of candidate i on task t in ``split``; ``inf`` where i does not solve t.

        Raises:
            CandidateFormatError: ``split`` is not one of the set's splits.
        """
        self.check_split(split)
        return np.array(
            [[c.loss(split, t) for t in self.tasks] for c in self.candidates], dtype=np.float64
        ).reshape(len(self.candidates), len(self.tasks))

    def check_split(self, split: str) -> None:
        """Raise :class:`CandidateFormatError` unless the set has losses for ``split``."""
        if split not in self.splits:
            raise CandidateFormatError(
                f"{self.source}: no split {split!r}; the candidates have losses for "
                f"{list(self.splits)}"
            )

    def find(self, tasks: Iterable[str], width: float) -> Candidate | None:
        """The candidate with this task set and width, or None."""
        key = (frozenset(tasks), float(width))
        return next((c for c in self.candidates if c.key == key), None)


def _check_unique(candidates: Sequence[Candidate], source: str) -> None:
    seen_name: dict[str, int] = {}
    seen_key: dict[NetworkKey, int] = {}
    for i, c in enumerate(candidates):
        if c.name in seen_name:
            raise CandidateFormatError(
                f"{source}: duplicate candidate name {c.name!r} (candidates {seen_name[c.name]} "
                f"and {i}, counting from 0); expected each name once"
            )
        if c.key in seen_key:
            j = seen_key[c.key]
            raise CandidateFormatError(
                f"{source}: duplicate candidate: {i} ({c.name!r}) and {j} "
                f"({candidates[j].name!r}) are both tasks {sorted(c.tasks)} at width "
                f"{c.width:g}; expected each network (task set, width) once"
            )
        seen_name[c.name], seen_key[c.key] = i, i


def read_candidates(path: str | Path) -> CandidateSet:
    """Read one candidate file (TOML, or JSON when the name ends in ``.json``).

    Raises:
        CandidateFormatError: the file is missing, unparsable or invalid (the message names
            the file and the candidate).
    """
    path = Path(path)
    source = f"candidate file {str(path)!r}"
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
        else:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CandidateFormatError(f"{source} does not exist") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise CandidateFormatError(f"{source} is not valid {kind}: {exc}") from None
    return CandidateSet.from_document(doc, source=source)


def write_candidates(candidates: CandidateSet, path: str | Path) -> Path:
    """Write a set as TOML (JSON when ``path`` ends in ``.json``); it reads back equal."""
    path = Path(path)
    doc = candidates.to_document()
    if path.suffix.lower() == ".json":
        text = json.dumps(doc, indent=1) + "\n"
    else:
        text = tomli_w.dumps(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
