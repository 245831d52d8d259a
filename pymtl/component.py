"""What every registered component has in common: a stable ``name``, a frozen attrs ``Config``,
and a ``from_config`` constructor.

The four kinds (architecture, balancer, distillation loss, dataset) each have a base class that
adds the kind's contract; see :mod:`pymtl.balancers.base` and its siblings.
"""

from __future__ import annotations

import re
from abc import ABC
from typing import Any, ClassVar

import attrs

__all__ = ["NAME_PATTERN", "Component", "component_problems", "summary"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
"""Component names are lower_snake: they appear on the command line and in config files."""


class Component(ABC):
    """Mixin of every component class.

    Class attributes every concrete component sets:

    * ``name`` — stable lower_snake identifier (never derived from ``__name__``);
    * ``Config`` — an ``@attrs.frozen(kw_only=True)`` class holding its options as plain data.

    ``kind`` is set by the base class of each kind (``"balancer"``, ...).
    """

    kind: ClassVar[str]
    name: ClassVar[str]
    Config: ClassVar[type[Any]]

    @classmethod
    def config_fields(cls, config: Any) -> dict[str, Any]:
        """``config``'s fields as keyword arguments, checked to be an instance of ``Config``."""
        if not isinstance(config, cls.Config):
            raise TypeError(
                f"{cls.kind} {cls.name!r}: expected a {cls.__name__}.Config, "
                f"got {type(config).__qualname__}"
            )
        return {f.name: getattr(config, f.name) for f in attrs.fields(type(config))}


def summary(cls: type) -> str:
    """First line of a class docstring (the one-line description shown by ``pymtl plugins``)."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def component_problems(cls: type, base: type[Component]) -> list[str]:
    """What is wrong with ``cls`` as a component of ``base``'s kind (empty list: nothing)."""
    if not isinstance(cls, type) or not issubclass(cls, base):
        return [f"{cls!r} is not a subclass of {base.__module__}.{base.__qualname__}"]
    problems = []
    name = cls.__dict__.get("name", getattr(cls, "name", None))
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{cls.__qualname__}.name must be a lower_snake string (got {name!r})")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and attrs.has(config)):
        problems.append(f"{cls.__qualname__}.Config must be an attrs class (got {config!r})")
    elif getattr(config.__setattr__, "__name__", "") != "_frozen_setattrs":
        problems.append(f"{cls.__qualname__}.Config must be frozen (@attrs.frozen)")
    if not summary(cls):
        problems.append(f"{cls.__qualname__} has no docstring")
    return problems
