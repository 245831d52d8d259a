"""GradNorm: the objective and its gradient by hand, renormalisation, the two L(0) options,
the layer choice, and the gradient norms of W against autograd through TrainStep."""

import copy

import pytest
import torch

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.gradnorm import GradNorm, GradNormConfig
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

F64 = torch.float64


def test_conformance():
    check_balancer(GradNorm)
    check_balancer(GradNorm, config=GradNormConfig(param="softmax", alpha=0.5))
    check_balancer(GradNorm, config=GradNormConfig(initial_loss="first_epoch_mean"))


def test_objective_and_weight_gradient_by_hand():
    b = GradNorm(["a", "b", "c"], alpha=2.0).double()
    with torch.no_grad():
        b.weights.copy_(torch.tensor([0.5, 1.0, 1.5], dtype=F64))  # sums to T: kept as is
    norms = torch.tensor([2.0, 1.0, 4.0], dtype=F64)
    gram = torch.diag(norms**2) + 0.3 * (1 - torch.eye(3, dtype=F64))  # off-diagonal: unused
    first = b(torch.tensor([2.0, 1.0, 4.0], dtype=F64), gram=gram)  # L(0)
    assert first.shared.tolist() == [0.5, 1.0, 1.5]
    b.zero_grad()
    out = b(torch.tensor([1.0, 1.0, 1.0], dtype=F64), gram=gram)
    # L̃ = (0.5, 1, 0.25), mean 7/12: r = (6/7, 12/7, 3/7); G = w·norm = (1, 1, 6), Ḡ = 8/3
    r = torch.tensor([6 / 7, 12 / 7, 3 / 7], dtype=F64)
    G = torch.tensor([1.0, 1.0, 6.0], dtype=F64)
    target = G.mean() * r**2.0
    assert out.aux_loss.item() == pytest.approx(float((G - target).abs().sum()), rel=1e-12)
    out.aux_loss.backward()
    torch.testing.assert_close(b.weights.grad, torch.sign(G - target) * norms)
    assert torch.equal(out.shared, out.task)
    assert not out.shared.requires_grad


def test_weights_are_renormalised_to_sum_to_T_and_stay_positive():
    b = GradNorm(["a", "b"]).double()
    with torch.no_grad():
        b.weights.copy_(torch.tensor([3.0, -1.0], dtype=F64))  # as if an optimiser step overshot
    out = b(torch.ones(2, dtype=F64), gram=torch.eye(2, dtype=F64))
    assert out.shared.sum().item() == pytest.approx(2.0)
    assert (out.shared > 0).all()
    torch.testing.assert_close(b.weights.detach(), out.shared)


def test_softmax_parametrisation():
    b = GradNorm(["a", "b", "c"], param="softmax").double()
    with torch.no_grad():
        b.weights.copy_(torch.tensor([0.0, 1.0, 2.0], dtype=F64))
    out = b(torch.ones(3, dtype=F64), gram=torch.eye(3, dtype=F64))
    torch.testing.assert_close(out.shared, 3 * torch.softmax(b.weights.detach(), 0))


def test_first_epoch_mean_uses_equal_weights_then_the_epoch_mean():
    b = GradNorm(["a", "b"], initial_loss="first_epoch_mean").double()
    gram = torch.diag(torch.tensor([1.0, 4.0], dtype=F64))
    for L in ([2.0, 4.0], [4.0, 0.0], [3.0, 2.0]):  # b has no labels in the second batch
        out = b(torch.tensor(L, dtype=F64), gram=gram)
        assert out.shared.tolist() == [1.0, 1.0]
        assert out.aux_loss is None
    b.on_epoch_end(1)
    torch.testing.assert_close(b.initial, torch.tensor([3.0, 3.0], dtype=F64))
    assert b(torch.tensor([3.0, 3.0], dtype=F64), gram=gram).aux_loss is not None


def test_unlabelled_task_waits_for_its_initial_loss():
    b = GradNorm(["a", "b"]).double()
    b(torch.tensor([2.0, 0.0], dtype=F64), gram=torch.eye(2, dtype=F64))
    assert b.initial[0].item() == 2.0
    assert torch.isnan(b.initial[1])
    b(torch.tensor([2.0, 5.0], dtype=F64), gram=torch.eye(2, dtype=F64))
    assert b.initial[1].item() == 5.0


def test_state_round_trip_keeps_initial_losses():
    b = GradNorm(["a", "b"]).double()
    b(torch.tensor([2.0, 3.0], dtype=F64), gram=torch.eye(2, dtype=F64))
    fresh = GradNorm(["a", "b"]).double()
    fresh.load_state_dict(b.state_dict())
    torch.testing.assert_close(fresh.initial, b.initial)


TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))


def _model() -> HardSharing:
    torch.manual_seed(0)
    tasks = TASKS
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    return HardSharing(tasks, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=F64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=F64) + 0.5,
    }


@pytest.mark.parametrize("layer", ["", "backbone.down.0.0.0.weight"])
def test_train_step_gives_the_norms_of_the_chosen_layer(layer):
    model, batch = _model(), _batch()
    shared = [(n, p) for n, p in model.named_parameters() if n.startswith("backbone")]
    name = layer or [n for n, p in shared if p.dim() > 1][-1]
    ref = copy.deepcopy(model)
    out = ref(batch["image"])
    tasks = TASKS
    losses = [t.loss(out[t.name], batch[t.name], None) for t in tasks]
    W = dict(ref.named_parameters())[name]
    norms = torch.stack([torch.autograd.grad(L, W, retain_graph=True)[0].norm() for L in losses])
    balancer = GradNorm([t.name for t in tasks], layer=layer).double()
    seen = []
    compute = balancer.compute
    balancer.compute = lambda losses, **kw: seen.append(kw["gram"]) or compute(losses, **kw)
    TrainStep(model, tasks, balancer)(batch)
    torch.testing.assert_close(seen[0].diagonal().sqrt(), norms)
    assert balancer.weights.grad is not None  # L_grad reached the weights


def test_unknown_layer_is_refused_with_the_choices():
    balancer = GradNorm(["seg", "depth"], layer="nope")
    with pytest.raises(ValueError, match=r"layer 'nope' is not a shared parameter; expected"):
        TrainStep(_model(), TASKS, balancer)
