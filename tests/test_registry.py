"""Every registered component passes its kind's conformance checks; hooks are documented."""

import inspect

import pytest

from pymtl import hookspecs
from pymtl.errors import UnknownComponentError
from pymtl.plugins import BUILTIN_PLUGINS, KINDS, Registry, get_registry
from pymtl.testing import REFERENCE_PATTERN, check_balancer, check_component

REGISTRY = get_registry(autoload=False)
ENTRIES = list(REGISTRY.entries())


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}-{e.name}")
def test_component_conformance(entry):
    kind = next(k for k in KINDS if k.name == entry.kind)
    check_component(entry.cls, kind.base)
    if entry.kind == "balancer":
        check_balancer(entry.cls)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}-{e.name}")
def test_builtins_come_from_builtin_plugins(entry):
    assert entry.plugin in BUILTIN_PLUGINS
    assert entry.distribution == "pymtl"


def test_builtin_balancers():
    assert {"ew", "fixed"} <= set(REGISTRY.names("balancer"))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_hook_is_documented(kind):
    fn = getattr(hookspecs, kind.hook)
    doc = inspect.getdoc(fn)
    assert doc
    assert "Example" in doc
    assert REFERENCE_PATTERN.search(inspect.getdoc(hookspecs))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        UnknownComponentError,
        match=r"unknown balancer 'fixd'; did you mean 'fixed'\? \(available: .*\bew\b.*\bfixed\b",
    ):
        REGISTRY.get("balancer", "fixd")


def test_unknown_name_with_nothing_close():
    with pytest.raises(UnknownComponentError, match=r"unknown architecture 'qqq' \(available: "):
        REGISTRY.get("architecture", "qqq")


def test_kind_with_nothing_registered():
    empty = Registry(components={k.name: {} for k in KINDS}, failures=())
    with pytest.raises(UnknownComponentError, match=r"\(available: \(none registered\)\)"):
        empty.get("architecture", "hps")


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown component kind 'optimizer'"):
        REGISTRY.get("optimizer", "adam")


def test_registry_is_built_per_call():
    assert get_registry(autoload=False) is not REGISTRY
