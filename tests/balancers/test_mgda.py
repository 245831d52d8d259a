"""MGDA and MGDA-UB: SPEC-methods §2.7 and the §2.18 reference vectors (Cases A and B)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.base import Needs
from pymtl.balancers.mgda import MGDA, MGDAConfig, MGDAUpperBound
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]
GRID = st.integers(-4, 4).map(lambda k: k / 2)
FLOATS = st.one_of(st.just(0.0), st.floats(1e-3, 3), st.floats(-3, -1e-3))


def _gram(J):
    J = torch.as_tensor(J, dtype=torch.float64)
    return J @ J.T


def _weights(G, losses=None, cls=MGDA, **options):
    T = G.shape[0]
    losses = torch.ones(T, dtype=torch.float64) if losses is None else losses
    return cls([f"t{i}" for i in range(T)], **options)(losses, gram=G).shared


@st.composite
def jacobians(draw, min_tasks=1, max_tasks=4, max_dim=4):
    T = draw(st.integers(min_tasks, max_tasks))
    P = draw(st.integers(1, max_dim))
    return torch.from_numpy(draw(arrays(np.float64, (T, P), elements=st.one_of(GRID, FLOATS))))


def _assert_kkt(G, w, tol=1e-9):
    """w on the simplex; (Gw)_t = wᵀGw on the support and ≥ it elsewhere (testing note 1)."""
    scale = max(G.diagonal().max().item(), 1e-300)
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    c, Gw = w @ G @ w, G @ w
    assert (Gw[w > 0] - c).abs().max().item() <= tol * scale
    assert (Gw - c).min().item() >= -tol * scale


def test_conformance():
    check_balancer(MGDA)
    check_balancer(MGDAUpperBound)
    for norm in ("l2", "loss", "loss+"):
        check_balancer(MGDA, config=MGDAConfig(norm=norm, apply="normalized", reduction="sum"))


@pytest.mark.parametrize(
    ("J", "expected"), [(J_A, [0.6, 0.4]), (J_B, [39 / 101, 44 / 101, 18 / 101])], ids=["A", "B"]
)
def test_reference_vectors(J, expected):
    G = _gram(J)
    w = _weights(G)
    _assert_kkt(G, w, tol=1e-12)
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    Gw = G @ w  # Case B: Gw is constant on the (full) support
    torch.testing.assert_close(Gw, torch.full_like(Gw, (w @ Gw).item()), rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(jacobians())
def test_kkt_conditions_on_random_gram(J):
    G = J @ J.T
    _assert_kkt(G, _weights(G))


@settings(max_examples=50, deadline=None)
@given(jacobians(), st.integers(0, 2**32 - 1))
def test_objective_not_above_vertices_or_random_simplex_points(J, seed):
    G = J @ J.T
    w = _weights(G)
    best = (w @ G @ w).item()
    slack = 1e-12 * max(G.diagonal().max().item(), 1e-300)
    assert best <= G.diagonal().min().item() + slack  # every vertex e_t
    points = torch.distributions.Dirichlet(torch.ones(J.shape[0], dtype=torch.float64))
    torch.manual_seed(seed)
    for c in points.sample((20,)):
        assert best <= (c @ G @ c).item() + slack


@settings(max_examples=50, deadline=None)
@given(jacobians(min_tasks=2, max_tasks=2))
def test_two_tasks_match_the_closed_form(J):
    """The reference's two-task solution, with exact 1/0 in place of its 0.999/0.001 clamps."""
    G = J @ J.T
    v11, v12, v22 = G[0, 0].item(), G[0, 1].item(), G[1, 1].item()
    assume(v11 + v22 - 2 * v12 > 1e-6 * max(v11, v22))  # distinct gradients: w is unique
    gamma = 1.0 if v12 >= v11 else 0.0 if v12 >= v22 else (v22 - v12) / (v11 + v22 - 2 * v12)
    w = _weights(G)
    assert w[0].item() == pytest.approx(gamma, abs=1e-9)


def test_non_unique_weights_give_the_unique_point():
    """T > P (testing note 1): many w are optimal; d = Jᵀw is not."""
    J = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    w = _weights(J @ J.T)
    _assert_kkt(J @ J.T, w)
    torch.testing.assert_close(J.T @ w, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    J = torch.tensor([[2.0, 1.0], [2.0, -1.0], [2.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    w = _weights(J @ J.T)  # (2, 0) = mean of the first two = the third
    expected = torch.tensor([2.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(J.T @ w, expected, rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(jacobians(min_tasks=2, max_dim=5), st.randoms(use_true_random=False))
def test_permutation_equivariance(J, rnd):
    G = J @ J.T
    assume(torch.linalg.eigvalsh(G).min() > 1e-4 * G.diagonal().max())  # unique w
    perm = list(range(J.shape[0]))
    rnd.shuffle(perm)
    torch.testing.assert_close(_weights(G[perm][:, perm]), _weights(G)[perm], rtol=0, atol=1e-9)


def test_l2_normalisation():
    """Case A normalised: unit gradients at 135°, so c = (½, ½) by symmetry."""
    G = _gram(J_A)
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(_weights(G, norm="l2"), half)
    norms = torch.tensor([1.0, math.sqrt(2)], dtype=torch.float64)
    torch.testing.assert_close(_weights(G, norm="l2", apply="normalized"), half / norms)


@settings(max_examples=30, deadline=None)
@given(jacobians(min_tasks=2), st.lists(st.floats(0.1, 10), min_size=4, max_size=4))
def test_l2_normalisation_ignores_gradient_scales(J, scales):
    assume((J.norm(dim=1) > 0).all())
    D = torch.diag(torch.tensor(scales[: J.shape[0]], dtype=torch.float64))
    G, G_scaled = J @ J.T, D @ J @ J.T @ D
    assume(torch.linalg.eigvalsh(G / torch.outer(G.diagonal(), G.diagonal()).sqrt()).min() > 1e-4)
    torch.testing.assert_close(
        _weights(G_scaled, norm="l2"), _weights(G, norm="l2"), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize(
    ("norm", "n"), [("loss", [1.0, 2.0]), ("loss+", [1.0, 2.0 * math.sqrt(2)])]
)
def test_loss_normalisations(norm, n):
    """G̃ = D⁻¹GD⁻¹ for two tasks, solved by the two-task formula."""
    G, losses = _gram(J_A), torch.tensor([1.0, 2.0], dtype=torch.float64)
    v11, v12, v22 = 1 / n[0] ** 2, -1 / (n[0] * n[1]), 2 / n[1] ** 2
    gamma = (v22 - v12) / (v11 + v22 - 2 * v12)
    w = _weights(G, losses, norm=norm)
    torch.testing.assert_close(w, torch.tensor([gamma, 1 - gamma], dtype=torch.float64))
    w = _weights(G, losses, norm=norm, apply="normalized", reduction="sum")
    expected = 2 * torch.tensor([gamma / n[0], (1 - gamma) / n[1]], dtype=torch.float64)
    torch.testing.assert_close(w, expected)


def test_output_scale_and_task_weights():
    G = _gram(J_B)
    out = MGDA(["a", "b", "c"], reduction="sum")(torch.ones(3, dtype=torch.float64), gram=G)
    torch.testing.assert_close(out.shared, 3 * torch.tensor([39, 44, 18.0]).double() / 101)
    assert torch.equal(out.task, out.shared)  # w = s = c: the official code's Σ c_t L_t


def test_zero_gradients_give_uniform_weights():
    w = _weights(torch.zeros(3, 3, dtype=torch.float64))
    torch.testing.assert_close(w, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_invalid_normalisers_and_options_are_refused():
    G, losses = _gram(J_A), torch.tensor([1.0, -0.5], dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"'mgda': norm='loss' needs finite, non-negative .*t1=-0.5"
    ):
        _weights(G, losses, norm="loss")
    with pytest.raises(ValueError, match=r"'norm' must be in"):
        MGDAConfig(norm="l1")
    with pytest.raises(ValueError, match=r"'reduction' must be in"):
        MGDA(["a"], reduction="max")


def test_apply_option_leaves_module_apply_intact():
    b = MGDA(["a", "b"], apply="normalized")
    assert b.apply(lambda module: None) is b  # nn.Module.apply, not the option
    assert "apply='normalized'" in repr(b)


def test_upper_bound_solves_the_same_problem_on_the_representation():
    assert MGDAUpperBound.needs is Needs.REPRESENTATION_GRAM
    G = _gram(J_B)
    torch.testing.assert_close(_weights(G, cls=MGDAUpperBound), _weights(G))


@pytest.mark.parametrize("cls", [MGDA, MGDAUpperBound])
def test_weights_follow_the_losses_device(cls, device):
    G, losses = _gram(J_B), torch.tensor([1.0, 2.0, 0.5])
    b = cls(["a", "b", "c"], norm="loss+")
    out = b(losses.to(device), gram=G.to(device))
    assert out.shared.device.type == device
    assert out.shared.dtype == torch.float32
    torch.testing.assert_close(out.shared.cpu(), b(losses, gram=G).shared)


def test_state_round_trip():
    b = MGDA(["a", "b", "c"], norm="l2")
    fresh = MGDA(["a", "b", "c"], norm="l2")
    fresh.load_state_dict(b.state_dict())
    G, losses = _gram(J_B), torch.ones(3, dtype=torch.float64)
    assert torch.equal(fresh(losses, gram=G).shared, b(losses, gram=G).shared)


TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))


def _train_step(balancer):
    torch.manual_seed(0)
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    model = HardSharing(TASKS, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
    }
    result = TrainStep(model, TASKS, balancer)(batch)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    return result


@pytest.mark.parametrize("cls", [MGDA, MGDAUpperBound])
def test_train_step(cls):
    w = _train_step(cls(["seg", "depth"])).weights.shared
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(1.0)


def test_upper_bound_rep_reduce_option():
    assert MGDAUpperBound(["a", "b"]).rep_reduce == "whole_batch"
    assert MGDAUpperBound(["a", "b"], rep_reduce="sum_batch").rep_reduce == "sum_batch"
    assert "rep_reduce='sum_batch'" in repr(MGDAUpperBound(["a", "b"], rep_reduce="sum_batch"))
    with pytest.raises(ValueError, match="rep_reduce"):
        MGDAUpperBound(["a", "b"], rep_reduce="mean_batch")
    check_balancer(MGDAUpperBound, config=MGDAUpperBound.Config(rep_reduce="sum_batch"))
