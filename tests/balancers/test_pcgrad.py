"""PCGrad: SPEC-methods §2.8, the §2.18 vectors, and the Gram form against plain projections."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.cagrad import CAGrad
from pymtl.balancers.gradvac import GradVac
from pymtl.balancers.nash_mtl import NashMTL
from pymtl.balancers.pcgrad import PCGrad, PCGradConfig, TaskOrder, pcgrad_weights
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]


def _gram(J, device="cpu"):
    J = torch.as_tensor(J, dtype=torch.float64, device=device)
    return J @ J.T


def _names(T):
    return [f"t{i}" for i in range(T)]


def _projected(J, orders):
    """Alg. 1 on the gradient vectors themselves: Σ_i pc_i."""
    d = torch.zeros(J.shape[1], dtype=J.dtype)
    for i, order in enumerate(orders):
        pc = J[i].clone()
        for j in order:
            dot = pc @ J[j]
            if dot < 0:
                pc = pc - dot / (J[j] @ J[j]) * J[j]
        d += pc
    return d


def test_conformance():
    check_balancer(PCGrad)
    check_balancer(PCGrad, config=PCGradConfig(reduction="mean", order="identity", seed=3))


@pytest.mark.parametrize(
    ("J", "expected"), [(J_A, [2.0, 1.5]), (J_B, [2.0, 2.75, 32.0 / 21.0])], ids=["A", "B"]
)
def test_reference_vectors(J, expected, device):
    T = len(J)
    losses = torch.ones(T, dtype=torch.float64, device=device)
    out = PCGrad(_names(T), order="identity")(losses, gram=_gram(J, device))
    assert out.shared.device == losses.device
    torch.testing.assert_close(out.shared.cpu(), torch.tensor(expected, dtype=torch.float64))
    assert out.task.tolist() == [1.0] * T


def test_case_a_update_and_any_order():
    J = torch.tensor(J_A, dtype=torch.float64)
    for seed in range(3):  # with two tasks every order is the same
        w = PCGrad(["a", "b"], seed=seed)(torch.ones(2, dtype=torch.float64), gram=J @ J.T).shared
        torch.testing.assert_close(J.T @ w, torch.tensor([0.5, 1.5], dtype=torch.float64))


def test_mean_reduction_divides_w_and_s():
    G = _gram(J_B)
    out = PCGrad(_names(3), order="identity", reduction="mean")(torch.ones(3), gram=G)
    torch.testing.assert_close(
        out.shared, torch.tensor([2.0, 2.75, 32 / 21], dtype=torch.float32) / 3
    )
    torch.testing.assert_close(out.task, torch.full((3,), 1 / 3))
    assert out.shared.dtype == torch.float32


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 6),
    P=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_gram_form_equals_sequential_projection(T, P, seed, data):
    J = torch.randn(T, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    orders = [data.draw(st.permutations([j for j in range(T) if j != i])) for i in range(T)]
    w = pcgrad_weights(J @ J.T, torch.tensor(orders))
    expected = _projected(J, orders)
    torch.testing.assert_close(J.T @ w, expected, rtol=1e-9, atol=1e-9 * (1 + expected.abs().max()))


def test_balancer_uses_its_seeded_orders():
    J = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    G, losses = J @ J.T, torch.ones(4, dtype=torch.float64)
    balancer, twin = PCGrad(_names(4), seed=11), TaskOrder(4, seed=11)
    for _ in range(4):
        orders = twin.draw()
        expected = _projected(J, orders)
        torch.testing.assert_close(J.T @ balancer(losses, gram=G).shared, expected)


def test_orders_are_permutations_and_depend_on_the_seed():
    draws = {seed: TaskOrder(5, seed=seed).draw() for seed in range(6)}
    for orders in draws.values():
        assert [sorted(o) for o in orders] == [[j for j in range(5) if j != i] for i in range(5)]
    assert len({str(o) for o in draws.values()}) > 1
    again = TaskOrder(5, seed=3)
    assert again.draw() == draws[3]
    assert TaskOrder(5, order="identity").draw()[2] == [0, 1, 3, 4]


def _old_draw(generator, T):
    """The orders as the balancer drew them before they became a tensor: one randperm of the
    T - 1 other tasks per task, mapped onto their indices."""
    others = [[j for j in range(T) if j != i] for i in range(T)]
    perms = [torch.randperm(T - 1, generator=generator).tolist() for _ in range(T)]
    return [[others[i][k] for k in perm] for i, perm in enumerate(perms)]


@pytest.mark.parametrize("T", [1, 2, 3, 7])
def test_draw_tensor_keeps_the_generator_semantics(T):
    order, twin = TaskOrder(T, seed=5), TaskOrder(T, seed=5)
    generator = torch.Generator().manual_seed(5)
    for _ in range(3):
        drawn = order.draw_tensor()
        assert drawn.dtype == torch.int64
        assert drawn.shape == (T, T - 1)
        assert drawn.tolist() == _old_draw(generator, T)
        assert twin.draw() == drawn.tolist()  # same seed, same draws (every rank)
    assert torch.equal(order.rng_state, generator.get_state())  # the buffer follows the draws
    identity = TaskOrder(T, order="identity").draw_tensor()
    assert identity.tolist() == [[j for j in range(T) if j != i] for i in range(T)]


def test_state_round_trip_resumes_the_order_sequence():
    J = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    G, losses = J @ J.T, torch.ones(5, dtype=torch.float64)
    b = PCGrad(_names(5), seed=7)
    for _ in range(3):
        b(losses, gram=G)
    assert set(b.state_dict()) == {"order.rng_state"}
    fresh = PCGrad(_names(5), seed=7)
    fresh.load_state_dict(copy.deepcopy(b.state_dict()))
    unrestored = PCGrad(_names(5), seed=7)
    nexts = [(b(losses, gram=G).shared, fresh(losses, gram=G).shared) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in nexts)
    restarted = [unrestored(losses, gram=G).shared for _ in range(4)]
    assert not all(torch.equal(x, y) for (x, _), y in zip(nexts, restarted, strict=True))


def test_zero_gradient_is_not_a_projection_target():
    G = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 2.0]], dtype=torch.float64)
    w = PCGrad(_names(3), order="identity")(torch.ones(3, dtype=torch.float64), gram=G).shared
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[[0, 2]], torch.tensor([2.0, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("cls", [PCGrad, GradVac, CAGrad, NashMTL], ids=lambda c: c.name)
def test_non_finite_gram_is_refused(cls):
    G = torch.tensor([[1.0, float("nan")], [float("nan"), 2.0]])
    with pytest.raises(
        ValueError, match=rf"balancer '{cls.name}': the Gram matrix .* must be finite"
    ):
        cls(["a", "b"])(torch.ones(2), gram=G)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": "shuffled"}, r"'order' must be in \('random', 'identity'\)"),
        ({"reduction": "max"}, r"'reduction' must be in \('sum', 'mean'\)"),
        ({"seed": -1}, r"balancer 'pcgrad': 'seed' must be an integer in \[0, 2\*\*63\)"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        PCGradConfig(**options)
    with pytest.raises(ValueError, match=message):
        PCGrad(["a", "b"], **options)


TASKS = (
    SegmentationTask(name="seg", num_classes=3),
    DepthTask(name="depth"),
    ClassificationTask(name="cls", num_classes=4),
)


def _flat_grad(loss, wrt):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, wrt, retain_graph=True)])


def test_train_step_applies_the_projected_gradient():
    torch.manual_seed(0)
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    model = HardSharing(TASKS, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
        "cls": torch.tensor([1, 3]),
    }
    ref = copy.deepcopy(model)
    out = ref(batch["image"])
    shared = list(ref.shared_parameters())
    J = torch.stack([_flat_grad(t.loss(out[t.name], batch[t.name]), shared) for t in TASKS])
    TrainStep(model, TASKS, PCGrad([t.name for t in TASKS], order="identity"))(batch)
    got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    torch.testing.assert_close(got, _projected(J, TaskOrder(3, order="identity").draw()))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
