"""One training step: pymtl's :class:`~pymtl.engine.step.TrainStep` against a hand-written loop.

The case: ``hps`` (default ``convnet`` backbone, ASPP heads) with equal weights (``ew``) on one
batch of 32 ``synthetic`` 64×64 images with the tasks semseg, depth, normals and count, Adam,
on the CPU. One group, two implementations that do the same maths on models with identical
weights:

* ``pymtl``: the components built by :mod:`pymtl.engine.build` from a resolved run config,
  stepped as the training loop steps them: ``zero_grad(model); zero_grad(balancer);
  step(batch); optimizer.step(); scheduler.step()`` (constant LR schedule, so the scheduler
  leaves the LR alone);
* ``manual``: a deep copy of the same model with its own, identical Adam, and the loop one
  writes without a framework: ``opt.zero_grad(set_to_none=True); out = model(x)``; the four
  losses written with ``torch.nn.functional`` (cross-entropy with ``ignore_index``, masked L1,
  1 − cosine similarity over pixels with a target normal, cross-entropy); their sum;
  ``loss.backward(); opt.step()``.

**Correctness, in both modes** (``--benchmark-disable`` included): before timing, each
implementation takes one step from the same initial state; the per-task losses, the gradients,
the updated parameters and the BatchNorm buffers of the two models must agree to within float
rounding (``RTOL``, ``ATOL``), and the last timed step must have lowered the batch's loss.

``extra_info`` holds impl, the case, the thread count and, once both have run (timed only),
``ratio_pymtl_to_manual``: pymtl's min time over manual's. ``bench/conftest.py`` adds the
inverse per group to the saved JSON (``ratio_min_to_pymtl``).

Threads: torch is pinned to ``THREADS`` = 2 intra-op threads in this module (the 2-core
machine the README's tables come from), whatever the machine, so the figures compare.

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

from pymtl.config import RunConfig, resolve_config
from pymtl.engine import build
from pymtl.engine.data import loader
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.plugins import get_registry

THREADS = 2
ROUNDS, WARMUP = 10, 2
BATCH, IMAGE_SIZE = 32, 64
TASKS = ("semseg", "depth", "normals", "count")
IMPLS = ["pymtl", "manual"]
GROUP = f"train step hps+ew synthetic {IMAGE_SIZE}px B{BATCH} cpu"

# Same maths, different reduction orders (cross_entropy's ignore_index mean vs a masked mean,
# cosine_similarity vs normalize): differences are float rounding, ~1e-7 relative. A wrong
# loss or weight moves shared parameters by ~lr = 1e-3 and gradients by far more than this.
RTOL, ATOL = 1e-4, 1e-6


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
    model: nn.Module
    make_step: Callable[[nn.Module], tuple[Callable[[], Tensor], torch.optim.Optimizer]]


@dataclasses.dataclass
class Runner:
    """One implementation: its model, optimiser and step (returning the [T] task losses)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], Tensor]
    first: dict[str, Tensor] = dataclasses.field(default_factory=dict)


def _manual_losses(out: dict[str, Tensor], batch: dict[str, Tensor]) -> list[Tensor]:
    """The four task losses, as one writes them by hand (same definitions as the tasks)."""
    semseg = F.cross_entropy(out["semseg"], batch["semseg"], ignore_index=-1)
    target = batch["depth"]
    valid = (target != 0).float()  # DepthTask: invalid_value 0 (targets here are finite)
    depth = ((out["depth"] - target).abs() * valid).sum() / valid.sum().clamp_min(1)
    target = batch["normals"]
    valid = (target.norm(dim=1) > 0).float()  # NormalsTask: a zero target normal is unlabelled
    cosine = F.cosine_similarity(out["normals"], target, dim=1)
    normals = ((1 - cosine) * valid).sum() / valid.sum().clamp_min(1)
    count = F.cross_entropy(out["count"], batch["count"], ignore_index=-1)
    return [semseg, depth, normals, count]


def _manual(case: Case) -> Runner:
    model = copy.deepcopy(case.model)
    t = case.config.train
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    x = case.batch["image"]

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        parts = _manual_losses(out, case.batch)
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

    def make_step(net: nn.Module) -> tuple[Callable[[], Tensor], torch.optim.Optimizer]:
        balancer = build.build_balancer(config, registry, dataset)
        optimizer, scheduler = build.build_optimizer(config, net, balancer, total_steps=1)
        train_step = TrainStep(net, dataset.tasks, balancer)  # type: ignore[arg-type]

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
    """Both implementations after one (untimed) step from the same initial state."""
    made = {"pymtl": _pymtl(case), "manual": _manual(case)}
    for runner in made.values():
        runner.first = _snapshot(runner, runner.step())
    return made


def _hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    group = optimizer.param_groups[0]
    return {k: v for k, v in group.items() if k not in ("params", "initial_lr")}


def _check_same_step(mine: Runner, other: Runner) -> None:
    """One step from the same state gave the same losses, gradients, weights and buffers."""
    assert _hyperparameters(mine.optimizer) == _hyperparameters(other.optimizer)
    assert mine.first.keys() == other.first.keys()
    for key, value in mine.first.items():
        torch.testing.assert_close(
            value, other.first[key], rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{k}: {m}"
        )


_mins: dict[str, float] = {}
_infos: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("impl", IMPLS)
def test_train_step(benchmark: Any, runners: dict[str, Runner], impl: str) -> None:
    mine, other = runners[impl], runners[IMPLS[1 - IMPLS.index(impl)]]
    _check_same_step(mine, other)

    benchmark.group = GROUP
    benchmark.extra_info.update(
        impl=impl, arch="hps", backbone="convnet", balancer="ew", tasks=list(TASKS),
        batch=BATCH, image_size=IMAGE_SIZE, optimizer="adam", threads=THREADS,
    )  # fmt: skip
    losses = benchmark.pedantic(mine.step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert losses.shape == (len(TASKS),) and bool(torch.isfinite(losses).all())
    first = mine.first["losses"]
    assert float(losses.sum()) < float(first.sum()), f"{impl}: steps on one batch did not lower its loss"

    if not benchmark.disabled:
        _mins[impl] = benchmark.stats.stats.min
        _infos[impl] = benchmark.extra_info
        if _mins.keys() == set(IMPLS):
            ratio = round(_mins["pymtl"] / _mins["manual"], 4)
            for info in _infos.values():
                info["ratio_pymtl_to_manual"] = ratio
