"""One training step: pymtl's :class:`~pymtl.engine.step.TrainStep` against a hand-written loop.

The case: ``hps`` (default ``convnet`` backbone, ASPP heads) with equal weights (``ew``) on one
batch of 32 ``synthetic`` 64×64 images with the tasks semseg, depth, normals and count, Adam,
on the CPU. One group; every implementation does the same maths on a model with the same
initial weights:

* ``pymtl``: the components built by :mod:`pymtl.engine.build` from a resolved run config,
  stepped as the training loop steps them: ``zero_grad(model); zero_grad(balancer);
  step(batch); optimizer.step(); scheduler.step()`` (constant LR schedule);
* ``manual``: a deep copy of the same model with its own, identical Adam, and the loop one
  writes without a framework: ``opt.zero_grad(set_to_none=True); out = model(x)``; the four
  losses written with ``torch.nn.functional`` and plain tensor ops (cross-entropy with
  ``ignore_index``, masked L1, masked 1 − cosine, cross-entropy), summed;
  ``loss.backward(); opt.step()``. The normals' norms are square roots of sums of squares;
* ``manual_fcos``: ``manual`` with the normals written the usual way, ``F.cosine_similarity``
  and ``target.norm(dim=1) > 0``. On the CPU, torch's norm over the 3-channel dim of
  [B, 3, H, W] is a slow, unvectorised reduction (~10 ms here against ~0.1 ms for the sum of
  squares; pytorch/pytorch#34279), and this variant computes three such norms per step.

``manual`` is the baseline of the ratio: the same work done by hand, without that detour.

**Correctness, in both modes** (``--benchmark-disable`` included): each implementation took
one step from the same initial state (``runners``). Its per-task losses, gradients, updated
weights and BatchNorm buffers must match ``pymtl``'s (``pymtl``'s are checked against
``manual``'s) to within float rounding (``RTOL``, ``ATOL``, ``GRAD_FLOOR``), and the timed
steps, all on that batch, must have lowered its loss.

``extra_info`` holds impl, the case, the thread count and, timed only, once ``pymtl`` and
``manual`` have both run, ``ratio_pymtl_to_manual`` (pymtl's min time over manual's).
``bench/conftest.py`` adds per-group ``ratio_min_to_pymtl`` (the inverse) to the saved JSON.

Threads: torch is pinned to ``THREADS`` = 2 intra-op threads in this module, on any machine,
so the figures compare with the README's (a 2-core machine).

Run: ``pytest bench/bench_train_step.py --benchmark-only --benchmark-columns=min,median,rounds``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.architectures.base import Architecture
from pymtl.config import RunConfig, resolve_config
from pymtl.engine import build
from pymtl.engine.data import loader
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.plugins import get_registry

THREADS = 2
ROUNDS, WARMUP = 20, 3
BATCH, IMAGE_SIZE = 32, 64
TASKS = ("semseg", "depth", "normals", "count")
IMPLS = ["pymtl", "manual", "manual_fcos"]
GROUP = f"train step hps+ew synthetic {IMAGE_SIZE}px B{BATCH} cpu"

# Same maths, different reduction orders (cross_entropy's ignore_index mean vs a masked mean,
# cosine_similarity vs normalize): losses, gradients and updated weights differ by float
# rounding only (measured: 1.2e-7 on losses, up to 3e-7 on gradients of up to 0.09, 1.2e-7 on
# weights), against ~1e-2 relative for a wrong loss or task weight.
RTOL, ATOL = 1e-4, 1e-6
# Adam's first step moves each weight by lr·g/(|g| + eps), eps = 1e-8: where |g| is within a
# few eps of 0 it turns rounding-level gradient differences into visible weight differences
# (up to 8e-5 = 0.08 lr measured). Weights are compared tightly where |g| >= GRAD_FLOOR (>= 95%
# of them; 99.6% here) and elsewhere only within 2 lr (both updates are at most lr).
GRAD_FLOOR = 1e-6


def _document() -> dict[str, Any]:
    """The run config (a fresh dict: ``resolve_config`` fills defaults in place)."""
    return {
        "seed": 0,
        "dataset": {
            "name": "synthetic",
            "image_size": IMAGE_SIZE,
            "train_size": BATCH,
            "tasks": list(TASKS),
        },
        "arch": {"name": "hps"},
        "balancer": {"name": "ew"},
        "train": {"batch_size": BATCH, "optimizer": "adam", "schedule": "constant"},
    }


@dataclasses.dataclass
class Case:
    """The shared inputs: config, the batch and the initial model both implementations copy."""

    config: RunConfig
    batch: dict[str, Tensor]
    model: Architecture
    make_step: Callable[[Architecture], tuple[Callable[[], Tensor], torch.optim.Optimizer]]


Cosine = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclasses.dataclass
class Runner:
    """One implementation: its model, optimiser and step (returning the [T] task losses)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], Tensor]
    first: dict[str, Tensor] = dataclasses.field(default_factory=dict)


def _cosine_sumsq(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """[B, H, W] cosine of pred and the unit target normal, and where the target is labelled;
    the norms as square roots of sums of squares (fast on the CPU, see the module docstring)."""
    valid = (target * target).sum(dim=1) > 0  # NormalsTask: a zero target normal is unlabelled
    norm = (pred * pred).sum(dim=1).sqrt().clamp_min(1e-12)  # F.normalize's eps
    return (pred * target).sum(dim=1) / norm, valid


def _cosine_functional(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The same with ``torch.norm`` and ``F.cosine_similarity`` (the usual way to write it)."""
    return F.cosine_similarity(pred, target, dim=1), target.norm(dim=1) > 0


COSINES = {"manual": _cosine_sumsq, "manual_fcos": _cosine_functional}


def _manual_losses(
    out: dict[str, Tensor], batch: dict[str, Tensor], cosine: Cosine
) -> list[Tensor]:
    """The four task losses as one writes them by hand, with the tasks' definitions."""
    semseg = F.cross_entropy(out["semseg"], batch["semseg"], ignore_index=-1)
    target = batch["depth"]
    valid = (target != 0).float()  # DepthTask: invalid_value 0 (targets here are finite)
    depth = ((out["depth"] - target).abs() * valid).sum() / valid.sum().clamp_min(1)
    cos, labelled = cosine(out["normals"], batch["normals"])
    valid = labelled.float()
    normals = ((1 - cos) * valid).sum() / valid.sum().clamp_min(1)
    count = F.cross_entropy(out["count"], batch["count"], ignore_index=-1)
    return [semseg, depth, normals, count]


def _manual(case: Case, cosine: Cosine) -> Runner:
    model = copy.deepcopy(case.model)
    t = case.config.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    x = case.batch["image"]

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        parts = _manual_losses(out, case.batch, cosine)
        loss = parts[0] + parts[1] + parts[2] + parts[3]
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        return torch.stack(parts).detach()

    return Runner(model, opt, step)


def _pymtl(case: Case) -> Runner:
    model = copy.deepcopy(case.model)
    step, opt = case.make_step(model)
    return Runner(model, opt, step)


def _snapshot(runner: Runner, losses: Tensor) -> dict[str, Tensor]:
    """Losses, gradients, parameters and buffers after a step (copies)."""
    out = {"losses": losses.clone()}
    for name, p in runner.model.named_parameters():
        out[f"param {name}"] = p.detach().clone()
        if p.grad is not None:
            out[f"grad {name}"] = p.grad.clone()
    for name, b in runner.model.named_buffers():
        out[f"buffer {name}"] = b.clone()
    return out


@pytest.fixture(autouse=True, scope="module")
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def case(_threads: None) -> Case:
    registry = get_registry(autoload=False)
    config = resolve_config(_document(), registry)
    torch.manual_seed(config.seed)
    dataset = build.build_dataset(config, registry, "train")
    batch = next(iter(loader(dataset, [list(range(BATCH))])))
    model = build.build_model(config, registry, dataset)
    model.train()

    def make_step(net: Architecture) -> tuple[Callable[[], Tensor], torch.optim.Optimizer]:
        balancer = build.build_balancer(config, registry, dataset)
        optimizer, scheduler = build.build_optimizer(config, net, balancer, total_steps=1)
        train_step = TrainStep(net, dataset.tasks, balancer)

        def step() -> Tensor:  # pymtl.engine.loop's step, without logging
            zero_grad(net)
            zero_grad(balancer)
            result = train_step(batch)
            optimizer.step()
            scheduler.step()
            return result.losses

        return step, optimizer

    return Case(config=config, batch=batch, model=model, make_step=make_step)


@pytest.fixture(scope="module")
def runners(case: Case) -> dict[str, Runner]:
    """Every implementation after one (untimed) step from the same initial state."""
    made = {"pymtl": _pymtl(case)} | {k: _manual(case, fn) for k, fn in COSINES.items()}
    for runner in made.values():
        runner.first = _snapshot(runner, runner.step())
    return made


def _hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    group = optimizer.param_groups[0]
    return {k: v for k, v in group.items() if k not in ("params", "initial_lr")}


def _assert_close(value: Tensor, ref: Tensor, key: str) -> None:
    def msg(detail: str) -> str:
        return f"{key}: {detail}"

    torch.testing.assert_close(value, ref, rtol=RTOL, atol=ATOL, msg=msg)


def _check_same_step(mine: Runner, other: Runner, *, lr: float) -> None:
    """One step from the same state gave the same losses, gradients, weights and buffers."""
    assert _hyperparameters(mine.optimizer) == _hyperparameters(other.optimizer)
    assert mine.first.keys() == other.first.keys()
    checked = total = 0
    for key, value in mine.first.items():
        kind, _, name = key.partition(" ")
        ref = other.first[key]
        if kind != "param":
            _assert_close(value, ref, key)
            continue
        steady = other.first[f"grad {name}"].abs() >= GRAD_FLOOR
        _assert_close(value[steady], ref[steady], key)
        assert ((value - ref).abs() <= 2 * lr).all(), f"{key}: weights differ by more than 2 lr"
        checked, total = checked + int(steady.sum()), total + value.numel()
    assert checked >= 0.95 * total, f"only {checked} of {total} weights have |grad| >= floor"


_mins: dict[str, float] = {}
_infos: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark: Any, case: Case, runners: dict[str, Runner], impl: str) -> None:
    mine, reference = runners[impl], runners["manual" if impl == "pymtl" else "pymtl"]
    benchmark.group = GROUP
    benchmark.extra_info.update(
        impl=impl, arch="hps", backbone="convnet", balancer="ew", tasks=list(TASKS),
        batch=BATCH, image_size=IMAGE_SIZE, optimizer="adam", threads=THREADS,
    )  # fmt: skip
    losses = benchmark.pedantic(mine.step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    if not benchmark.disabled:
        _mins[impl] = benchmark.stats.stats.min
        _infos[impl] = benchmark.extra_info
        if {"pymtl", "manual"} <= _mins.keys():
            ratio = round(_mins["pymtl"] / _mins["manual"], 4)
            for info in _infos.values():
                info["ratio_pymtl_to_manual"] = ratio

    _check_same_step(mine, reference, lr=case.config.train.lr)
    assert losses.shape == (len(TASKS),)
    assert bool(torch.isfinite(losses).all())
    first = float(mine.first["losses"].sum())
    assert float(losses.sum()) < first, f"{impl}: steps on one batch did not lower its loss"
