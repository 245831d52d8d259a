"""One training step of gradient balancers, per gradient-engine mode, against equal weights.

Cases (``CASES``): ``hps`` on one batch of ``synthetic`` images with the six tasks of the
``standard`` preset, (a) the default ``convnet`` backbone at 64×64, batch 32, and (b) a
``resnet18`` backbone at 128×128, batch 8. Adam, constant LR, CPU.

Implementations (one benchmark group per case and balancer; ``ew`` is in every group):

* ``ew``: equal weights, one backward (the floor every balancer is compared with);
* ``sequential``, ``batched``, ``gram``: pymtl's :class:`~pymtl.engine.step.TrainStep` with
  ``grad_mode`` set so (see :mod:`pymtl.engine.gradients`) for ``pcgrad``, ``mgda`` and
  ``nash_mtl``;
* ``loop``: the way MTL libraries commonly do it: T ``loss_t.backward(retain_graph=True)``
  calls, each followed by copying the shared parameters' ``.grad`` into row t of a [T, P]
  buffer (and zeroing them), the balancer in vector space (PCGrad's pairwise projections over
  the rows; for MGDA and Nash-MTL pymtl's ``gram`` op and T×T solver, so only the gradient
  handling differs: with an fp32 ``J @ J.T`` their weights differ from pymtl's by more than
  the check's tolerance on resnet18), then ``Jᵀ w`` written back into ``.grad``.

Each timed call is a full step: zero the gradients, forward, losses, gradients, balancer,
``optimizer.step()``.

**Correctness, in both modes**: from the same initial model and balancer state, the first
step's shared gradients of every implementation must equal ``sequential``'s to 1e-4 relative
(in norm): the T×T solvers see Gram matrices summed in different orders.

Run: ``pytest bench/bench_engine.py --benchmark-only --benchmark-columns=min,median,rounds``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from pymtl.config import resolve_config
from pymtl.engine import build
from pymtl.engine.step import TrainStep, zero_grad
from pymtl.ops import gram
from pymtl.plugins import get_registry

TASKS = ("semseg", "depth", "normals", "edges", "parts", "count")
CASES = {
    "convnet-64px-B32": {"backbone": {"name": "convnet"}, "size": 64, "batch": 32, "rounds": 5},
    "resnet18-128px-B8": {"backbone": {"name": "resnet18"}, "size": 128, "batch": 8, "rounds": 3},
}
BALANCERS = ("pcgrad", "mgda", "nash_mtl")
IMPLS = ("ew", "sequential", "batched", "gram", "loop")
REGISTRY = get_registry(autoload=False)


def _setup(case: str, balancer: str) -> tuple[Any, Any, dict[str, Tensor]]:
    spec = CASES[case]
    doc = {
        "seed": 0,
        "dataset": {
            "name": "synthetic",
            "image_size": spec["size"],
            "train_size": spec["batch"],
            "tasks": list(TASKS),
        },
        "arch": {"name": "hps", "backbone": spec["backbone"]},
        "balancer": {"name": balancer, **({"order": "identity"} if balancer == "pcgrad" else {})},
        "train": {"batch_size": spec["batch"], "schedule": "constant"},
    }
    config = resolve_config(doc, REGISTRY)
    dataset = build.build_dataset(config, REGISTRY, "train")
    batch = torch.utils.data.default_collate([dataset[i] for i in range(spec["batch"])])
    torch.manual_seed(0)
    model = build.build_model(config, REGISTRY, dataset).train()
    return config, (dataset, model), batch


def _losses(tasks: Any, out: dict[str, Tensor], batch: dict[str, Tensor]) -> list[Tensor]:
    return [t.loss(out[t.name], batch[t.name], batch.get(f"{t.name}.mask")) for t in tasks]


def _pcgrad_rows(J: Tensor) -> Tensor:
    """PCGrad in vector space, tasks in ascending order: d = Σ_i pc_i."""
    d = torch.zeros_like(J[0])
    for i in range(J.shape[0]):
        pc = J[i].clone()
        for j in range(J.shape[0]):
            if j == i:
                continue
            dot = pc @ J[j]
            if dot < 0:
                pc -= dot / (J[j] @ J[j]) * J[j]
        d += pc
    return d


def _runner(impl: str, case: str, name: str) -> tuple[Callable[[], None], Any]:
    config, (dataset, model), batch = _setup(case, "ew" if impl == "ew" else name)
    balancer = build.build_balancer(config, REGISTRY, dataset)
    optimizer, _ = build.build_optimizer(config, model, balancer, total_steps=100)
    if impl != "loop":
        mode = "auto" if impl == "ew" else impl
        step = TrainStep(model, dataset.tasks, balancer, grad_mode=mode)

        def run() -> None:
            zero_grad(model)
            step(batch)
            optimizer.step()

        return run, model
    shared = list(model.shared_parameters())

    def run_loop() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = _losses(dataset.tasks, model(batch["image"]), batch)
        rows = []
        for loss in losses:
            loss.backward(retain_graph=True)
            rows.append(torch.cat([p.grad.reshape(-1) for p in shared]))
            for p in shared:
                p.grad = None
        J = torch.stack(rows)
        if name == "pcgrad":
            d = _pcgrad_rows(J)
        else:
            w = balancer(torch.stack(losses).detach(), gram=gram(J)).shared
            d = w.to(J) @ J
        offset = 0
        for p in shared:
            p.grad = d[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        optimizer.step()

    return run_loop, model


def _shared_grads(model: Any) -> Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", BALANCERS)
@pytest.mark.parametrize("case", list(CASES))
def test_step(benchmark, case: str, name: str, impl: str) -> None:
    if benchmark.disabled and case != "convnet-64px-B32":
        pytest.skip("the resnet18 case is timed only (its first-step check costs minutes on CPU)")
    benchmark.group = f"train step hps {case} {name}"
    benchmark.extra_info.update(impl=impl, case=case, balancer=name)
    run, model = _runner(impl, case, name)
    if impl != "ew":
        reference, ref_model = _runner("sequential", case, name)
        reference()
        run()
        got, want = _shared_grads(model), _shared_grads(ref_model)
        error = float((got - want).norm() / want.norm())
        assert error < 1e-4, f"{impl}: shared gradient differs from sequential's by {error:.2e}"
        run, model = _runner(impl, case, name)  # time from the initial state again
    rounds = CASES[case]["rounds"]
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
