"""What the training step adds to the task losses besides the balancer: deep-supervision
outputs, an architecture's regulariser, and MGDA-UB's batch-summed representation Gram."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from pymtl import Needs
from pymtl.architectures.base import aux_key
from pymtl.architectures.hps import HardSharing
from pymtl.engine.step import TrainStep
from tests.engine._step_helpers import (
    NAMES,
    TASKS,
    S,
    W,
    _balancer,
    _batch,
    _jacobian,
    _losses,
    _model,
)


class _DeepSupervised(HardSharing):
    """Test-only: hps that, in training mode, adds a second ("initial") prediction per task."""

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        out = super().decode(z, size)
        if self.training:
            out.update({aux_key(n, "initial"): 0.5 * y for n, y in list(out.items())})
        return out


def test_deep_supervision_adds_to_its_tasks_loss():
    model, batch = _model(_DeepSupervised).train(), _batch()
    step = TrainStep(model, TASKS, _balancer(Needs.LOSSES))
    outputs = model(batch["image"])
    assert sorted(outputs) == sorted(NAMES + [f"{n}/initial" for n in NAMES])
    got = step.losses(outputs, batch)
    plain = {k: v for k, v in outputs.items() if "/" not in k}
    halves = {k: 0.5 * v for k, v in plain.items()}
    expected = torch.stack(_losses(plain, batch)) + torch.stack(_losses(halves, batch))
    torch.testing.assert_close(got, expected)


def test_outputs_naming_no_task_are_refused():
    model, batch = _model(), _batch()
    outputs = dict(model(batch["image"]))
    step = TrainStep(model, TASKS, _balancer(Needs.LOSSES))
    with pytest.raises(ValueError, match=r"'edges/initial'.*neither a task"):
        step.losses({**outputs, "edges/initial": outputs["depth"]}, batch)
    del outputs["depth"]
    with pytest.raises(ValueError, match="no output for task 'depth'"):
        step.losses(outputs, batch)


class _Penalised(HardSharing):
    """Test-only: hps with a regulariser 3·Σθ on its first backbone parameter."""

    def regularizer(self) -> Tensor | None:
        return 3.0 * next(self.backbone.parameters()).sum()


@pytest.mark.parametrize("needs", [Needs.LOSSES, Needs.GRAM])
def test_architecture_regularizer_adds_its_gradient(needs):
    batch = _batch()
    plain, penalised = _model(), _model(_Penalised)
    for model in (plain, penalised):
        TrainStep(model, TASKS, _balancer(needs, w=W, s=W))(batch)
    first = [next(m.backbone.parameters()).grad for m in (plain, penalised)]
    torch.testing.assert_close(first[1], first[0] + 3.0)
    rest = zip(list(plain.parameters())[1:], list(penalised.parameters())[1:], strict=True)
    assert all(torch.equal(a.grad, b.grad) for a, b in rest)


def test_sum_batch_representation_gram_sums_over_the_batch_first():
    model, batch = _model(), _batch()
    ref = copy.deepcopy(model)
    x = batch["image"]
    z = ref.encode(x)
    JZ = _jacobian(_losses(ref.decode(z, x.shape[-2:]), batch), [z])
    summed = JZ.reshape(3, x.shape[0], -1).sum(dim=1)  # [T, |z|]
    balancer = _balancer(Needs.REPRESENTATION_GRAM, w=W, s=S)
    balancer.rep_reduce = "sum_batch"
    TrainStep(model, TASKS, balancer)(batch)
    torch.testing.assert_close(balancer.seen[0]["gram"], summed @ summed.T)
