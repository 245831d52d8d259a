"""The plugin registry: every architecture, balancer, distillation loss and dataset pymtl can
use comes from here, built-ins included.

Built-ins are the modules in :data:`BUILTIN_PLUGINS`, registered through the same hooks as
third-party plugins. Third-party plugins are entry points in the group ``pymtl``; each is loaded
on its own, so a broken one is reported (entry point, distribution, version, exception) and the
rest still load. ``PYMTL_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry-point loading off and
``PYMTL_DISABLED_PLUGINS=a,b`` blocks entry points by name.

The registry is built by :func:`get_registry`, never at import time, so a plugin installed
while a process runs is seen by the next call.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
from collections.abc import Iterator
from typing import Any

import attrs
import pluggy

import pymtl
from pymtl import hookspecs
from pymtl.architectures.base import Architecture
from pymtl.backbones.base import Backbone
from pymtl.balancers.base import Balancer
from pymtl.component import Component, component_problems, summary
from pymtl.data.base import Dataset
from pymtl.distillation.base import DistillationLoss
from pymtl.errors import PluginError, UnknownComponentError

__all__ = [
    "BUILTIN_PLUGINS",
    "ENV_DISABLED_PLUGINS",
    "ENV_DISABLE_AUTOLOAD",
    "KINDS",
    "Entry",
    "LoadFailure",
    "Registry",
    "get_registry",
]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "pymtl.balancers.ew",
    "pymtl.balancers.fixed",
    "pymtl.balancers.uw",
    "pymtl.balancers.gradnorm",
    "pymtl.balancers.dwa",
    "pymtl.balancers.rlw",
    "pymtl.balancers.dtp",
    "pymtl.balancers.mgda",
    "pymtl.balancers.imtl",
    "pymtl.balancers.aligned_mtl",
    "pymtl.balancers.upgrad",
    "pymtl.balancers.pcgrad",
    "pymtl.balancers.gradvac",
    "pymtl.balancers.cagrad",
    "pymtl.balancers.nash_mtl",
    "pymtl.balancers.famo",
    "pymtl.balancers.graddrop",
    "pymtl.balancers.db_mtl",
    "pymtl.architectures.hps",
    "pymtl.architectures.stl",
    "pymtl.architectures.cross_stitch",
    "pymtl.architectures.sluice",
    "pymtl.architectures.nddr",
    "pymtl.architectures.mtan",
    "pymtl.architectures.branched",
    "pymtl.architectures.padnet",
    "pymtl.architectures.papnet",
    "pymtl.architectures.mtinet",
    "pymtl.architectures.jtrl",
    "pymtl.backbones.convnet",
    "pymtl.backbones.hrnet",
    "pymtl.backbones.lenet",
    "pymtl.backbones.resnet",
    "pymtl.backbones.segnet",
    "pymtl.distillation.kd4mtl",
    "pymtl.distillation.kdam",
    "pymtl.distillation.bam",
    "pymtl.distillation.hinton_kd",
    "pymtl.data.synthetic.dataset",
    "pymtl.data.nyuv2",
    "pymtl.data.cityscapes",
    "pymtl.data.pascal_mt",
    "pymtl.data.nyud_mt",
    "pymtl.data.taskonomy",
    "pymtl.data.multi_mnist",
    "pymtl.data.celeba",
    "pymtl.data.decathlon",
)
"""Modules holding pymtl's own components, registered exactly like third-party plugins."""

ENV_DISABLE_AUTOLOAD = "PYMTL_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLED_PLUGINS = "PYMTL_DISABLED_PLUGINS"


@attrs.frozen
class Kind:
    """One kind of component: its name, registration hook and base class."""

    name: str
    hook: str
    base: type[Component]


KINDS: tuple[Kind, ...] = (
    Kind("architecture", "pymtl_register_architectures", Architecture),
    Kind("backbone", "pymtl_register_backbones", Backbone),
    Kind("balancer", "pymtl_register_balancers", Balancer),
    Kind("distillation_loss", "pymtl_register_distillation_losses", DistillationLoss),
    Kind("dataset", "pymtl_register_datasets", Dataset),
)
_KIND_BY_NAME = {k.name: k for k in KINDS}


@attrs.frozen
class LoadFailure:
    """A plugin that could not be loaded or whose registrations were refused."""

    plugin: str
    distribution: str
    version: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from {self.distribution} {self.version}: {self.error}"


@attrs.frozen
class Entry:
    """One registered component and where it came from."""

    kind: str
    name: str
    cls: type[Any]
    plugin: str
    distribution: str
    version: str

    @property
    def summary(self) -> str:
        return summary(self.cls)

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version} ({self.cls.__module__}.{self.cls.__qualname__})"

    def as_dict(self) -> dict[str, str]:
        """The JSON form printed by ``pymtl plugins --format json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "summary": self.summary,
        }


@attrs.frozen
class Registry:
    """Every component, by kind and name, plus the plugins that failed to load."""

    components: dict[str, dict[str, Entry]]
    failures: tuple[LoadFailure, ...]

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        """Entries in kind order, then by name."""
        for k in KINDS:
            if kind is None or kind == k.name:
                yield from sorted(self.components[k.name].values(), key=lambda e: e.name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def get(self, kind: str, name: str) -> type[Any]:
        """The class registered as ``name`` for ``kind``; a clear error if there is none."""
        table = self._table(kind)
        if name in table:
            return table[name].cls
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        available = ", ".join(sorted(table)) or "(none registered)"
        msg = f"unknown {kind} {name!r}{hint} (available: {available})"
        if self.failures:
            msg += "; plugins that failed to load: " + "; ".join(map(str, self.failures))
        raise UnknownComponentError(msg)

    def _table(self, kind: str) -> dict[str, Entry]:
        if kind not in self.components:
            raise ValueError(
                f"unknown component kind {kind!r}; expected one of {', '.join(_KIND_BY_NAME)}"
            )
        return self.components[kind]


def _dist_info(ep: md.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


_HOOK_NAMES = tuple(k.hook for k in KINDS)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` whose name is no pymtl hook (a typo, usually)."""
    return [
        attr
        for attr in dir(plugin)
        if attr.startswith("pymtl_")
        and attr not in _HOOK_NAMES
        and pm.parse_hookimpl_opts(plugin, attr) is not None
    ]


def _load_entry_points(
    pm: pluggy.PluginManager, failures: list[LoadFailure], sources: dict[str, tuple[str, str]]
) -> None:
    # Our own loop instead of pm.load_setuptools_entrypoints(): that one stops at the first
    # plugin whose import raises, and silently skips an entry-point name already taken.
    for ep in md.entry_points(group=hookspecs.PROJECT):
        dist, version = _dist_info(ep)
        if pm.is_blocked(ep.name):
            continue
        if pm.has_plugin(ep.name):
            other = sources.get(ep.name, ("?", "?"))
            failures.append(
                LoadFailure(
                    ep.name,
                    dist,
                    version,
                    f"entry-point name already taken by {other[0]} {other[1]}",
                )
            )
            continue
        try:
            plugin = ep.load()
            unknown = _unknown_hooks(pm, plugin)
            if unknown:
                raise PluginError(
                    f"implements unknown hook(s) {', '.join(unknown)}; "
                    f"known hooks: {', '.join(_HOOK_NAMES)}"
                )
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # isolate broken plugins: report by name, keep loading
            failures.append(LoadFailure(ep.name, dist, version, f"{type(exc).__name__}: {exc}"))
            continue
        sources[ep.name] = (dist, version)


def _collect(
    pm: pluggy.PluginManager, sources: dict[str, tuple[str, str]], failures: list[LoadFailure]
) -> dict[str, dict[str, Entry]]:
    components: dict[str, dict[str, Entry]] = {k.name: {} for k in KINDS}
    for kind in KINDS:
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            plugin = impl.plugin_name
            dist, version = sources.get(plugin, ("pymtl", pymtl.__version__))
            try:
                classes = impl.function()
                entries = _validated(kind, classes, plugin, dist, version)
            except Exception as exc:
                failures.append(
                    LoadFailure(plugin, dist, version, f"{kind.hook}: {type(exc).__name__}: {exc}")
                )
                continue
            for entry in entries:
                if entry.name in components[kind.name]:
                    first = components[kind.name][entry.name]
                    raise PluginError(
                        f"{kind.name} name {entry.name!r} is registered twice: by "
                        f"{first.provider} and by {entry.provider}"
                    )
                components[kind.name][entry.name] = entry
    return components


def _validated(kind: Kind, classes: Any, plugin: str, dist: str, version: str) -> list[Entry]:
    if not isinstance(classes, (list, tuple)):
        raise TypeError(f"must return a list of classes, got {type(classes).__name__}")
    entries = []
    for cls in classes:
        problems = component_problems(cls, kind.base)
        if problems:
            raise TypeError("; ".join(problems))
        entries.append(Entry(kind.name, cls.name, cls, plugin, dist, version))
    return entries


def get_registry(*, autoload: bool | None = None) -> Registry:
    """Build the registry: built-ins, then (unless disabled) entry-point plugins.

    Args:
        autoload: load entry points of group ``pymtl``; default: unless
            ``PYMTL_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value.

    Raises:
        PluginError: two plugins register the same component name.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for blocked in os.environ.get(ENV_DISABLED_PLUGINS, "").split(","):
        if blocked.strip():
            pm.set_blocked(blocked.strip())
    for modname in BUILTIN_PLUGINS:  # dotted names never clash with entry-point names
        pm.register(importlib.import_module(modname), name=modname)
    failures: list[LoadFailure] = []
    sources: dict[str, tuple[str, str]] = {}
    if autoload is None:
        autoload = not os.environ.get(ENV_DISABLE_AUTOLOAD)
    if autoload:
        _load_entry_points(pm, failures, sources)
    pm.check_pending()
    components = _collect(pm, sources, failures)
    return Registry(components=components, failures=tuple(failures))
