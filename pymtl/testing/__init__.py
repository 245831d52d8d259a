"""Conformance checks that pymtl's own tests and plugin packages reuse.

A plugin package tests its components with one line each::

    from pymtl.testing import check_balancer
    def test_conformance():
        check_balancer(GeometricLoss)

Each check raises ``AssertionError`` with the component's name and what failed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import cattrs
import torch

from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.component import Component, component_problems

__all__ = ["REFERENCE_PATTERN", "check_balancer", "check_component"]

REFERENCE_PATTERN = re.compile(r"\[(S|P|R|pymtl|C:[^\]]+)\]|Reference:")
"""A docstring cites its source with a provenance tag ([S], [C:repo], ...) or 'Reference:'."""


def check_component(cls: type[Any], base: type[Component]) -> None:
    """Check the contract every component shares: name, frozen ``Config``, documented source.

    Also checks that the default ``Config`` round-trips through its plain-data form.
    """
    problems = component_problems(cls, base)
    assert not problems, f"{cls!r}: " + "; ".join(problems)
    for where, doc in (("class", cls.__doc__), ("module", _module_doc(cls))):
        assert doc, f"{cls.kind} {cls.name!r}: the {where} has no docstring"
        assert REFERENCE_PATTERN.search(doc), (
            f"{cls.kind} {cls.name!r}: the {where} docstring must cite its source with a "
            "provenance tag ([S], [P], [R], [pymtl], [C:repo]) or 'Reference:'"
        )
    config = default_config(cls)
    conv = _converter()
    again = conv.structure(conv.unstructure(config), cls.Config)
    assert again == config, (
        f"{cls.kind} {cls.name!r}: Config does not round-trip: {again!r} != {config!r}"
    )


def _converter() -> cattrs.Converter:
    """The run-document converter over the installed components (nested sections resolve)."""
    from pymtl.config import converter
    from pymtl.plugins import get_registry

    return converter(get_registry())


def _module_doc(cls: type[Any]) -> str | None:
    import sys

    module = sys.modules.get(cls.__module__)
    return module.__doc__ if module is not None else None


def default_config(cls: type[Any]) -> Any:
    """``cls.Config()``; every option must have a default so the component works out of the box."""
    try:
        return cls.Config()
    except TypeError as exc:
        raise AssertionError(f"{cls.kind} {cls.name!r}: Config() needs arguments: {exc}") from exc


def _inputs(needs: Needs, T: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    J = torch.randn(T, 16, generator=gen, dtype=torch.float64)
    if needs in (Needs.GRAM, Needs.REPRESENTATION_GRAM):
        return {"gram": J @ J.T}
    if needs in (Needs.JACOBIAN, Needs.REPRESENTATION_JACOBIAN):
        return {"jacobian": J}
    return {}


def check_balancer(
    cls: type[Balancer],
    *,
    config: Any = None,
    tasks: Sequence[str] = ("seg", "depth", "normal"),
    steps: int = 3,
) -> None:
    """Check a balancer class against the contract of :mod:`pymtl.balancers.base`.

    Builds it from ``config`` (default: ``cls.Config()``) and, for ``steps`` steps, checks that
    it returns finite [T] weights on the losses' dtype and device, leaves its inputs untouched,
    never calls ``backward``, rejects losses of the wrong shape, and that its ``state_dict``
    loads into a fresh instance.
    """
    check_component(cls, Balancer)
    config = default_config(cls) if config is None else config
    balancer = cls.from_config(config, tasks=tasks)
    T = len(tasks)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        losses = (torch.rand(T, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
        before = losses.detach().clone()
        inputs = _inputs(cls.needs, T, gen)
        out = balancer(losses, **inputs)
        where = f"balancer {cls.name!r} step {step}"
        assert isinstance(out, Weights), f"{where}: returned {type(out).__name__}, expected Weights"
        for field in ("shared", "task"):
            w = getattr(out, field)
            assert isinstance(w, torch.Tensor), f"{where}: {field} is a {type(w).__name__}"
            assert w.shape == (T,), f"{where}: {field} has shape {tuple(w.shape)}, expected ({T},)"
            assert w.dtype == losses.dtype, (
                f"{where}: {field} dtype {w.dtype} != losses' {losses.dtype}"
            )
            assert torch.isfinite(w).all(), f"{where}: {field} is not finite: {w}"
        if out.aux_loss is not None:
            assert out.aux_loss.dim() == 0, f"{where}: aux_loss must be a scalar"
        assert losses.grad is None, f"{where}: the balancer must not call backward"
        assert torch.equal(losses.detach(), before), f"{where}: the balancer modified the losses"
    try:
        balancer(torch.ones(T + 1), **_inputs(cls.needs, T + 1, gen))
    except ValueError:
        pass
    else:
        raise AssertionError(f"balancer {cls.name!r}: accepted {T + 1} losses for {T} tasks")
    fresh = cls.from_config(config, tasks=tasks)
    fresh.load_state_dict(balancer.state_dict())
