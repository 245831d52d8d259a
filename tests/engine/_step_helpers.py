"""Shared pieces of the TrainStep tests: a tiny fp64 ``hps`` model, hand-made batches,
test-only balancers with fixed weights, and gradients computed independently with autograd."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from pymtl import Balancer, Needs, Weights
from pymtl.architectures.hps import HardSharing
from pymtl.architectures.stl import SingleTask
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.config import BackboneSection
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask

TASKS = (
    SegmentationTask(name="seg", num_classes=3),
    DepthTask(name="depth"),
    ClassificationTask(name="cls", num_classes=4),
)
NAMES = [t.name for t in TASKS]
W = [0.5, 2.0, 1.5]  # shared weights w
S = [1.0, 0.25, 3.0]  # task-specific weights s
GRADIENT_MODES = [Needs.GRAM, Needs.JACOBIAN]
REPRESENTATION_MODES = [Needs.REPRESENTATION_GRAM, Needs.REPRESENTATION_JACOBIAN]


@attrs.frozen(kw_only=True)
class _NoOptions:
    """No options."""


class _Constant(Balancer):
    """Test-only: fixed ``w`` and ``s``, records every input it receives [pymtl]."""

    name = "test_constant"
    Config = _NoOptions

    def __init__(
        self, tasks: Sequence[str], *, w: Sequence[float], s: Sequence[float] | None = None
    ) -> None:
        super().__init__(tasks)
        self.w = torch.tensor(w, dtype=torch.float64)
        self.s = self.w if s is None else torch.tensor(s, dtype=torch.float64)
        self.seen: list[dict[str, Tensor | None]] = []

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        self.seen.append({"losses": losses.clone(), "gram": gram, "jacobian": jacobian})
        return Weights(shared=self.w.to(losses), task=self.s.to(losses))


def _balancer(needs: Needs, w: Sequence[float] = W, s: Sequence[float] | None = None) -> _Constant:
    cls = type(
        f"_{needs.name.title()}", (_Constant,), {"needs": needs, "name": f"test_{needs.value}"}
    )
    return cls(NAMES, w=w, s=s)


class _Learnable(_Constant):
    """Test-only: constant weights plus an auxiliary loss on its own parameter [pymtl]."""

    name = "test_learnable"

    def __init__(self, tasks: Sequence[str], *, needs: Needs) -> None:
        super().__init__(tasks, w=W)  # w = s: valid in every mode
        self.needs = needs  # type: ignore[misc]
        self.sigma = nn.Parameter(torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))

    def compute(self, losses: Tensor, *, gram: Tensor | None, jacobian: Tensor | None) -> Weights:
        weights = super().compute(losses, gram=gram, jacobian=jacobian)
        return attrs.evolve(weights, aux_loss=(self.sigma**2).sum())


def _backbone() -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))


def _model(cls: type[HardSharing] | type[SingleTask] = HardSharing) -> Any:
    torch.manual_seed(0)
    net = cls(TASKS, 3, backbone=_backbone(), head_channels=4, head_rates=(2,))
    return net.double().train()


def _batch() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1)
    seg = torch.randint(0, 3, (2, 16, 16), generator=gen)
    seg[0, :3] = -1  # ignored pixels
    return {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": seg,
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
        "depth.mask": torch.tensor([True, False]),  # the second sample has no depth label
        "cls": torch.tensor([1, 3]),
    }


def _losses(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> list[Tensor]:
    return [t.loss(outputs[t.name], batch[t.name], batch.get(f"{t.name}.mask")) for t in TASKS]


def _flat(grads: Sequence[Tensor]) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _jacobian(losses: Sequence[Tensor], wrt: Sequence[Tensor]) -> Tensor:
    """[T, P]: one row per loss, the flattened gradient w.r.t. ``wrt``."""
    return torch.stack([_flat(torch.autograd.grad(L, wrt, retain_graph=True)) for L in losses])


def _own_grads(ref: Any, losses: Sequence[Tensor], s: Sequence[float]) -> dict[int, Tensor]:
    """``s_t ∇θ_t L_t`` keyed by the position of each task parameter in ``parameters()``."""
    index = {id(p): i for i, p in enumerate(ref.parameters())}
    out = {}
    for t, (name, loss) in enumerate(zip(NAMES, losses, strict=True)):
        params = list(ref.task_parameters(name))
        for p, g in zip(params, torch.autograd.grad(loss, params, retain_graph=True), strict=True):
            out[index[id(p)]] = s[t] * g
    return out


def _assert_task_grads(model: Any, expected: dict[int, Tensor]) -> None:
    params = list(model.parameters())
    for i, g in expected.items():
        torch.testing.assert_close(params[i].grad, g, msg=lambda m, i=i: f"parameter {i}: {m}")
