"""Task groupings: which tasks share an encoder in a ``branched`` network [S][pymtl].

Reference: SPEC-methods §1.7 and §4 (Standley et al., ICML 2020 [S]). A grouping is a set of
networks, each a group of tasks decoded from one encoder of a given width (1.0 = full size,
0.5 = Standley's "half-size" network); a task may be in several groups, and ``choose`` says
which group's prediction is the task's output (Standley's min rule picks the group with the
lowest validation loss; without an entry, the first group listing the task [pymtl]).

The file format [pymtl] — written by ``pymtl group select``, trained by
``pymtl train --arch branched --grouping FILE``::

    [[group]]
    tasks = ["semseg", "depth"]
    width = 1.0
    [[group]]
    tasks = ["normals"]
    width = 0.5
    [choose]      # optional: which group decodes a task that several groups contain
    semseg = 0

Groups are numbered from 0 in file order. Read with :func:`read_grouping`, write with
:func:`write_grouping`; every error names the file, what is wrong and what is expected.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from pymtl.errors import ConfigError

__all__ = ["Group", "Grouping", "read_grouping", "write_grouping"]

_EXAMPLE = '[[group]] tables such as: tasks = ["semseg", "depth"], width = 1.0'


def _check_tasks(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("'tasks' is empty; expected at least one task name")
    if not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'tasks' must be non-empty strings (got {list(value)!r})")
    twice = sorted({t for t in value if value.count(t) > 1})
    if twice:
        raise ValueError(f"'tasks' lists {twice} more than once (got {list(value)!r})")


def _check_width(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"'width' must be a number > 0, e.g. 1.0 or 0.5 (got {value!r})")


def _to_tasks(value: Any) -> Any:
    if isinstance(value, str):  # a bare string would become a tuple of letters
        return value
    return tuple(value) if isinstance(value, (list, tuple)) else value


@attrs.frozen(kw_only=True)
class Group:
    """One network of a grouping: the tasks its encoder serves, and the encoder's width factor.

    Attributes:
        tasks: task names, each once, at least one.
        width: factor on the backbone's ``width`` option (1.0 full size, 0.5 half size).
    """

    tasks: tuple[str, ...] = attrs.field(converter=_to_tasks, validator=_check_tasks)
    width: float = attrs.field(default=1.0, validator=_check_width)


def _to_group_tuple(value: Iterable[Group]) -> tuple[Group, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Grouping:
    """A list of :class:`Group` s plus ``choose``: task name -> index of the group that decodes
    it (tasks left out: the first group listing them).

    Raises:
        ValueError: no group, or a ``choose`` entry names a group that does not exist or does not
            contain that task.
    """

    groups: tuple[Group, ...] = attrs.field(converter=_to_group_tuple)
    choose: dict[str, int] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        if not self.groups:
            raise ValueError(f"there is no group; expected {_EXAMPLE}")
        for task, k in self.choose.items():
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.groups):
                raise ValueError(
                    f"choose.{task} = {k!r} is not a group index; expected an integer in "
                    f"[0, {len(self.groups) - 1}]"
                )
            if task not in self.groups[k].tasks:
                holders = [i for i, g in enumerate(self.groups) if task in g.tasks]
                raise ValueError(
                    f"choose.{task} = {k} points at group {k}, which does not contain "
                    f"{task!r} (its tasks: {list(self.groups[k].tasks)}); groups with "
                    f"{task!r}: {holders or 'none'}"
                )

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task of the grouping, in order of first appearance."""
        return tuple(dict.fromkeys(t for g in self.groups for t in g.tasks))

    def chosen(self, task: str) -> int:
        """Index of the group whose prediction is ``task``'s output."""
        if task in self.choose:
            return self.choose[task]
        for k, group in enumerate(self.groups):
            if task in group.tasks:
                return k
        raise KeyError(f"task {task!r} is in no group (tasks: {list(self.tasks)})")

    def check_tasks(self, tasks: Sequence[str], *, where: str = "grouping") -> None:
        """Raise :class:`ConfigError` unless the groups use exactly ``tasks`` (the dataset's):
        no unknown task, and every task in at least one group."""
        unknown = [t for t in self.tasks if t not in tasks]
        if unknown:
            raise ConfigError(
                f"{where}: unknown task(s) {unknown}; expected the dataset's tasks {list(tasks)}"
            )
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ConfigError(
                f"{where}: task(s) {missing} are in no group; every task must be decoded by at "
                f"least one group (groups: {[list(g.tasks) for g in self.groups]})"
            )

    @classmethod
    def from_document(cls, doc: Any, *, source: str = "grouping document") -> Grouping:
        """A grouping from the plain-dict form of the file (see the module docstring).

        Raises:
            ConfigError: naming ``source``, what is wrong and what is expected.
        """
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{source}: expected a table, got {type(doc).__name__}")
        _no_extra(doc, {"group", "choose"}, source, "the top level")
        tables = doc.get("group")
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"{source}: no [[group]] table (got {tables!r}); expected {_EXAMPLE}")
        groups = [_group(table, k, source) for k, table in enumerate(tables)]
        choose = doc.get("choose", {})
        if not isinstance(choose, Mapping):
            raise ConfigError(f"{source}: [choose] must be a table task = group index")
        try:
            return cls(groups=groups, choose=choose)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_document(self) -> dict[str, Any]:
        """The plain-dict form :meth:`from_document` reads (``choose`` left out when empty)."""
        doc: dict[str, Any] = {
            "group": [{"tasks": list(g.tasks), "width": float(g.width)} for g in self.groups]
        }
        if self.choose:
            doc["choose"] = dict(self.choose)
        return doc


def _no_extra(table: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(
            f"{source}: unknown key(s) {extra} in {where}; expected only {sorted(allowed)}"
        )


def _group(table: Any, k: int, source: str) -> Group:
    where = f"[[group]] {k} (groups count from 0)"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: {where} is {table!r}, not a table; expected {_EXAMPLE}")
    _no_extra(table, {"tasks", "width"}, source, where)
    if "tasks" not in table:
        raise ConfigError(f"{source}: {where} has no 'tasks'; expected {_EXAMPLE}")
    tasks = table["tasks"]
    if not isinstance(tasks, list):
        raise ConfigError(f"{source}: {where}: 'tasks' must be a list of names (got {tasks!r})")
    try:
        return Group(tasks=tuple(tasks), width=table.get("width", 1.0))
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def read_grouping(path: str | Path, *, tasks: Sequence[str] | None = None) -> Grouping:
    """Read a grouping file; with ``tasks``, also check it uses exactly those tasks.

    Raises:
        ConfigError: the file is missing, is not TOML, or does not hold a valid grouping.
    """
    path = Path(path)
    source = f"grouping file {str(path)!r}"
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{source} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    grouping = Grouping.from_document(doc, source=source)
    if tasks is not None:
        grouping.check_tasks(tasks, where=source)
    return grouping


def write_grouping(grouping: Grouping, path: str | Path, comment: str = "") -> None:
    """Write ``grouping`` to ``path`` as TOML, ``comment`` (one or more lines) on top as
    ``#`` lines; :func:`read_grouping` reads back an equal grouping."""
    head = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    Path(path).write_text(head + tomli_w.dumps(grouping.to_document()), encoding="utf-8")
