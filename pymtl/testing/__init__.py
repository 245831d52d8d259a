"""Conformance checks that pymtl's own tests and plugin packages reuse.

A plugin package tests its components with one line each::

    from pymtl.testing import check_architecture, check_balancer
    def test_conformance():
        check_balancer(GeometricLoss)
        check_architecture(MyNet, config=MyNet.Config(width=4))

Each check raises ``AssertionError`` with the component's name and what failed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import cattrs
import torch

from pymtl.architectures.base import Architecture, split_outputs
from pymtl.balancers.base import Balancer, Needs, Weights
from pymtl.component import Component, component_problems
from pymtl.tasks.base import (
    ClassificationTask,
    DepthTask,
    NormalsTask,
    RegressionTask,
    SegmentationTask,
    Task,
)

__all__ = [
    "REFERENCE_PATTERN",
    "check_architecture",
    "check_balancer",
    "check_component",
    "default_tasks",
]

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


def _inputs(balancer: Balancer, T: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random inputs for what ``balancer`` needs: J [T, 16] (for representation balancers the
    gradient of a Z [2, 8]), its Gram (two [T, T] blocks for grouped balancers)."""
    J = torch.randn(T, 16, generator=gen, dtype=torch.float64)
    inputs: dict[str, torch.Tensor] = {}
    if balancer.wants_representation:
        inputs["representation"] = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    if balancer.needs in (Needs.GRAM, Needs.REPRESENTATION_GRAM, Needs.LAYER_GRAM):
        if balancer.groups != "whole_model":
            inputs["gram"] = torch.stack([J[:, :6] @ J[:, :6].T, J[:, 6:] @ J[:, 6:].T])
        else:
            inputs["gram"] = J @ J.T
    if balancer.needs in (Needs.JACOBIAN, Needs.REPRESENTATION_JACOBIAN):
        inputs["jacobian"] = J
    return inputs


def check_balancer(
    cls: type[Balancer],
    *,
    config: Any = None,
    tasks: Sequence[str] = ("seg", "depth", "normal"),
    steps: int = 3,
) -> None:
    """Check a balancer class against the contract of :mod:`pymtl.balancers.base`.

    Builds it from ``config`` (default: ``cls.Config()``) and, for ``steps`` steps, checks that
    it returns finite [T] weights (or [K, T] for grouped balancers) on the losses' dtype and
    device, a finite ``direct`` update of the right size if any, leaves its inputs untouched,
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
        inputs = _inputs(balancer, T, gen)
        out = balancer(losses, **inputs)
        where = f"balancer {cls.name!r} step {step}"
        assert isinstance(out, Weights), f"{where}: returned {type(out).__name__}, expected Weights"
        grouped = balancer.groups != "whole_model"
        for field in ("shared", "task"):
            w = getattr(out, field)
            assert isinstance(w, torch.Tensor), f"{where}: {field} is a {type(w).__name__}"
            shapes = [(T,), (2, T)] if grouped and field == "shared" else [(T,)]
            assert w.shape in shapes, (
                f"{where}: {field} has shape {tuple(w.shape)}, expected one of {shapes}"
            )
            assert w.dtype == losses.dtype, (
                f"{where}: {field} dtype {w.dtype} != losses' {losses.dtype}"
            )
            assert torch.isfinite(w).all(), f"{where}: {field} is not finite: {w}"
        if out.aux_loss is not None:
            assert out.aux_loss.dim() == 0, f"{where}: aux_loss must be a scalar"
        if out.direct is not None:
            assert out.direct.shape == (16,), (
                f"{where}: direct has shape {tuple(out.direct.shape)}, expected (16,) "
                "(one entry per column of J)"
            )
            assert torch.isfinite(out.direct).all(), f"{where}: direct is not finite"
        assert losses.grad is None, f"{where}: the balancer must not call backward"
        assert torch.equal(losses.detach(), before), f"{where}: the balancer modified the losses"
    try:
        balancer(torch.ones(T + 1), **_inputs(balancer, T + 1, gen))
    except ValueError:
        pass
    else:
        raise AssertionError(f"balancer {cls.name!r}: accepted {T + 1} losses for {T} tasks")
    fresh = cls.from_config(config, tasks=tasks)
    fresh.load_state_dict(balancer.state_dict())


def default_tasks() -> tuple[Task, ...]:
    """The tasks :func:`check_architecture` uses unless told otherwise: dense (segmentation,
    depth, normals) and image-level (classification, regression) kinds, two with a head bias."""
    return (
        SegmentationTask(name="seg", num_classes=3),
        DepthTask(name="depth", mean=2.0),
        NormalsTask(name="normals"),
        ClassificationTask(name="cls", num_classes=4),
        RegressionTask(name="count", dims=2, mean=(0.5, -1.5)),
    )


def check_architecture(
    cls: type[Architecture],
    *,
    tasks: Sequence[Task] | None = None,
    config: Any = None,
    size: tuple[int, int] = (32, 32),
) -> None:
    """Check an architecture class against the contract of :mod:`pymtl.architectures.base`.

    Builds it from ``config`` (default: ``cls.Config()``) for ``tasks`` (default:
    :func:`default_tasks`) and checks, in eval mode on a [2, 3, *size] input: the outputs are
    keyed by exactly the task names (in training mode, plus deep-supervision keys
    ``TASK/TAG`` of the same shapes), dense ones [B, K, H, W] at the input size and image-level
    ones [B, K], all finite; every parameter is shared or owned by exactly one task; with a
    shared representation, ``decode(encode(x))`` equals ``forward(x)``; perturbing a task's own
    parameters changes its output and no other task's; and each ``head_bias()`` is the initial
    value of a parameter of the task that offsets its output one-to-one (the last layer's bias).
    """
    check_component(cls, Architecture)
    where = f"architecture {cls.name!r}"
    tasks = default_tasks() if tasks is None else tuple(tasks)
    config = default_config(cls) if config is None else config
    try:
        model = cls.from_config(config, tasks=tasks, in_channels=3)
    except Exception as exc:
        raise AssertionError(f"{where}: from_config({config!r}) failed: {exc!r}") from exc
    assert isinstance(model, cls), f"{where}: from_config built a {type(model).__name__}"
    model.eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    _check_outputs(where, tasks, out, x)
    owner = _check_partition(where, model)
    if cls.has_shared_representation:
        with torch.no_grad():
            again = model.decode(model.encode(x), x.shape[-2:])
        assert sorted(again) == sorted(out), f"{where}: decode(encode(x)) keys {sorted(again)}"
        for name, y in out.items():
            assert torch.allclose(again[name], y, rtol=1e-5, atol=1e-6), (
                f"{where}: decode(encode(x), size)[{name!r}] differs from forward(x)[{name!r}]"
            )
    _check_training_outputs(where, model, tasks, x, out)
    for task in tasks:
        _check_isolation(where, model, x, out, task.name, owner)
    for task in tasks:
        _check_head_bias(where, model, x, task)


def _check_outputs(where: str, tasks: Sequence[Task], out: Any, x: torch.Tensor) -> None:
    assert isinstance(out, Mapping), f"{where}: forward returned a {type(out).__name__}, not a dict"
    names = sorted(t.name for t in tasks)
    assert sorted(out) == names, f"{where}: forward returned keys {sorted(out)}, expected {names}"
    B, (H, W) = x.shape[0], x.shape[-2:]
    for task in tasks:
        y = out[task.name]
        expected = (B, task.channels, H, W) if task.dense else (B, task.channels)
        assert tuple(y.shape) == expected, (
            f"{where}: output {task.name!r} ({task.kind}) has shape {tuple(y.shape)} for an "
            f"input of shape {tuple(x.shape)}, expected {expected}"
        )
        assert torch.isfinite(y).all(), f"{where}: output {task.name!r} is not finite"


def _check_training_outputs(
    where: str,
    model: Architecture,
    tasks: Sequence[Task],
    x: torch.Tensor,
    out: Mapping[str, torch.Tensor],
) -> None:
    """In training mode: the task keys, plus deep-supervision keys ``TASK/TAG`` shaped like
    their task's output, all finite."""
    trained = copy.deepcopy(model).train()
    with torch.no_grad():
        train_out = trained(x)
    try:
        grouped = split_outputs(train_out, [t.name for t in tasks])
    except ValueError as exc:
        raise AssertionError(f"{where}: in training mode, {exc}") from exc
    for name, ys in grouped.items():
        for y in ys:
            assert y.shape == out[name].shape, (
                f"{where}: in training mode, a deep-supervision output of {name!r} has shape "
                f"{tuple(y.shape)}, expected the task's output shape {tuple(out[name].shape)}"
            )
            assert torch.isfinite(y).all(), f"{where}: training-mode output of {name!r} not finite"


def _check_partition(where: str, model: Architecture) -> dict[int, str]:
    """Parameter id -> "" (shared) or its task's name; every parameter exactly once."""
    names = {id(p): n for n, p in model.named_parameters()}
    owner: dict[int, str] = {}
    groups = [("", "shared_parameters()", model.shared_parameters())] + [
        (t, f"task_parameters({t!r})", model.task_parameters(t)) for t in model.tasks
    ]
    for key, label, params in groups:
        for p in params:
            assert id(p) in names, (
                f"{where}: {label} yields a parameter of shape {tuple(p.shape)} that is not "
                "in model.parameters()"
            )
            if id(p) in owner:
                other = owner[id(p)]
                first = f"task_parameters({other!r})" if other else "shared_parameters()"
                raise AssertionError(
                    f"{where}: parameter {names[id(p)]!r} is yielded by both {first} and {label}"
                    " (each parameter must be shared or belong to exactly one task, once)"
                )
            owner[id(p)] = key
    missing = [n for i, n in names.items() if i not in owner]
    assert not missing, (
        f"{where}: parameters neither in shared_parameters() nor in any task_parameters(): "
        + ", ".join(missing)
    )
    return owner


def _check_isolation(
    where: str,
    model: Architecture,
    x: torch.Tensor,
    out: Mapping[str, torch.Tensor],
    task: str,
    owner: Mapping[int, str],
) -> None:
    """Perturb one task's own parameters: its output changes, every other output does not."""
    own = {i for i, o in owner.items() if o == task}
    if not own:
        return
    moved = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p, q in zip(model.parameters(), moved.parameters(), strict=True):
            if id(p) in own:
                q.add_(torch.randn(q.shape, generator=gen, dtype=q.dtype).to(q.device))
        after = moved(x)
    for name, y in out.items():
        same = torch.allclose(after[name], y, rtol=1e-5, atol=1e-6)
        if name == task:
            assert not same, (
                f"{where}: perturbing task_parameters({task!r}) leaves its output as is"
            )
        else:
            assert same, (
                f"{where}: output {name!r} changes when task_parameters({task!r}) change; a "
                "parameter used by several tasks belongs in shared_parameters()"
            )


def _grad_or_zero(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``dy/dp``, zeros when ``y`` does not depend on ``p`` (a head unused in eval mode)."""
    (g,) = torch.autograd.grad(y, p, retain_graph=True, allow_unused=True)
    return torch.zeros_like(p) if g is None else g


def _check_head_bias(where: str, model: Architecture, x: torch.Tensor, task: Task) -> None:
    """Some parameter of ``task`` starts at ``head_bias()`` and shifts the output by itself."""
    bias = task.head_bias()
    if bias is None:
        return
    bias = bias.reshape(-1)
    found = [
        p
        for p in model.task_parameters(task.name)
        if p.numel() == bias.numel() and torch.equal(p.detach().reshape(-1).cpu(), bias.to(p.dtype))
    ]
    assert found, (
        f"{where}: task {task.name!r}: no parameter of task_parameters() starts at head_bias() = "
        f"{bias.tolist()} (the last layer's bias must be initialised from it)"
    )
    y = model(x)[task.name]
    means = y.transpose(0, 1).reshape(task.channels, -1).mean(dim=1)  # [K]
    eye = torch.eye(bias.numel(), dtype=y.dtype)
    for p in found:
        rows = [_grad_or_zero(m, p).reshape(-1) for m in means]
        if torch.allclose(torch.stack(rows).cpu(), eye, atol=1e-4):
            return
    raise AssertionError(
        f"{where}: task {task.name!r}: no parameter equal to head_bias() = {bias.tolist()} "
        "offsets the output one-to-one (d mean(output[:, k]) / d bias[j] must be the identity),"
        " so none is the last layer's bias"
    )
