"""Checks of a candidate document (the plain-dict form of a candidate file) [pymtl].

Reference: the format is described in :mod:`pymtl.taskgroups.candidates`. Every check raises
:class:`CandidateFormatError` naming the source, the candidate (index from 0 and name), what
is wrong, what was given and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pymtl.errors import DataFormatError

__all__ = [
    "FORMAT",
    "VERSION",
    "CandidateFormatError",
    "check_candidate",
    "check_header",
    "default_name",
]

FORMAT = "pymtl-group-candidates"
"""Value of the top-level ``format`` key of every candidate file."""
VERSION = 1
"""The one version of the format this pymtl reads and writes."""

_TOP = {"format", "version", "tasks", "splits", "candidate"}
_ENTRY = {"name", "tasks", "width", "cost", "loss", "info"}


class CandidateFormatError(DataFormatError):
    """A candidate file or document does not hold a valid candidate set."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value: Any, what: str, where: str) -> tuple[str, ...]:
    """A non-empty list of distinct non-empty strings."""
    if not isinstance(value, list) or not value:
        raise CandidateFormatError(
            f"{where}: '{what}' must be a non-empty list of names (got {value!r})"
        )
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        raise CandidateFormatError(
            f"{where}: '{what}' must hold non-empty strings (got {bad[0]!r} in {value!r})"
        )
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise CandidateFormatError(f"{where}: '{what}' lists {twice} more than once ({value!r})")
    return tuple(value)


def _no_extra(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise CandidateFormatError(
            f"{where}: unknown key(s) {extra}; expected only {sorted(allowed)}"
        )


def check_header(doc: Any, source: str) -> tuple[tuple[str, ...], tuple[str, ...], list[Any]]:
    """``(tasks, splits, candidate tables)`` of a document whose top level is valid."""
    if not isinstance(doc, Mapping):
        raise CandidateFormatError(f"{source}: expected a table at the top, got {doc!r:.80}")
    _no_extra(doc, _TOP, f"{source}, top level")
    if doc.get("format") != FORMAT:
        raise CandidateFormatError(
            f"{source}: 'format' is {doc.get('format')!r}; expected format = {FORMAT!r} "
            "(is this a candidate file written by `pymtl group train`?)"
        )
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise CandidateFormatError(
            f"{source}: unsupported 'version' {version!r}; this pymtl reads version {VERSION}"
        )
    tasks = _names(doc.get("tasks"), "tasks", source)
    splits = _names(doc.get("splits"), "splits", source)
    entries = doc.get("candidate")
    if not isinstance(entries, list) or not entries:
        raise CandidateFormatError(
            f"{source}: no [[candidate]] table (got {entries!r:.80}); expected one per network"
        )
    return tasks, splits, entries


def _positive(entry: Mapping[str, Any], key: str, default: Any, where: str) -> float:
    value = entry.get(key, default)
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise CandidateFormatError(
            f"{where}: '{key}' must be a finite number > 0 (got {value!r}); e.g. 1.0 for a "
            "full-size encoder, 0.5 for a half-size one"
        )
    return float(value)


def _losses(value: Any, tasks: tuple[str, ...], split: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != len(tasks):
        got = f"{len(value)} values" if isinstance(value, list) else repr(value)
        raise CandidateFormatError(
            f"{where}: loss.{split} has {got}; expected a list of {len(tasks)} losses, one per "
            f"task of the candidate, in its order {list(tasks)}"
        )
    for task, x in zip(tasks, value, strict=True):
        if not _number(x) or not math.isfinite(x) or x < 0:
            raise CandidateFormatError(
                f"{where}: loss.{split} of task {task!r} is {x!r}; expected a finite number >= 0"
            )
    return tuple(float(x) for x in value)


def _entry_tasks(entry: Mapping[str, Any], tasks: tuple[str, ...], where: str) -> tuple[str, ...]:
    if "tasks" not in entry:
        raise CandidateFormatError(f"{where}: no 'tasks'; expected the tasks this network solves")
    own = _names(entry["tasks"], "tasks", where)
    unknown = [t for t in own if t not in tasks]
    if unknown:
        raise CandidateFormatError(
            f"{where}: unknown task(s) {unknown}; expected tasks of the file: {list(tasks)}"
        )
    return own


def _loss_table(
    entry: Mapping[str, Any], own: tuple[str, ...], splits: tuple[str, ...], label: str
) -> dict[str, tuple[float, ...]]:
    loss = entry.get("loss")
    if not isinstance(loss, Mapping):
        raise CandidateFormatError(
            f"{label}: 'loss' must be a table split = [losses] for splits {list(splits)} "
            f"(got {loss!r:.80})"
        )
    missing = [s for s in splits if s not in loss]
    if missing:
        raise CandidateFormatError(
            f"{label}: missing split(s) {missing} in 'loss'; the file declares {list(splits)}"
        )
    _no_extra(loss, set(splits), f"{label}, 'loss' (splits are declared at the top)")
    return {s: _losses(loss[s], own, s, label) for s in splits}


def check_candidate(
    entry: Any, index: int, header: tuple[tuple[str, ...], tuple[str, ...]], source: str
) -> dict[str, Any]:
    """The keyword arguments of one :class:`~pymtl.taskgroups.candidates.Candidate`."""
    tasks, splits = header
    named = isinstance(entry, Mapping) and isinstance(entry.get("name"), str)
    label = f"{source}: candidate {index}" + (f" {entry['name']!r}" if named else "")
    label += " (counting [[candidate]] tables from 0)"
    if not isinstance(entry, Mapping):
        raise CandidateFormatError(f"{label} is {entry!r:.80}, not a table")
    _no_extra(entry, _ENTRY, label)
    own = _entry_tasks(entry, tasks, label)
    width = _positive(entry, "width", 1.0, label)
    cost = _positive(entry, "cost", width, label)
    name = entry.get("name", default_name(own, width))
    if not isinstance(name, str) or not name:
        raise CandidateFormatError(f"{label}: 'name' must be a non-empty string (got {name!r})")
    losses = _loss_table(entry, own, splits, label)
    info = entry.get("info", {})
    if not isinstance(info, Mapping):
        raise CandidateFormatError(f"{label}: 'info' must be a table (got {info!r:.80})")
    out = {"name": name, "tasks": own, "width": width, "cost": cost}
    return out | {"losses": losses, "info": dict(info)}


def default_name(tasks: tuple[str, ...], width: float) -> str:
    """``"+".join(tasks)``, with ``@width`` appended unless the width is 1 [pymtl]."""
    base = "+".join(tasks)
    return base if width == 1.0 else f"{base}@{width:g}"
