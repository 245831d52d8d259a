"""CAGrad: SPEC-methods §2.10, the §2.18 vectors, and the exactness of the dual solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.cagrad import CAGrad, CAGradConfig, cagrad_dual, cagrad_objective
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]


def _weights(J, device="cpu", **options):
    J = torch.as_tensor(J, dtype=torch.float64, device=device)
    T = J.shape[0]
    balancer = CAGrad([f"t{i}" for i in range(T)], **options)
    return balancer(torch.ones(T, dtype=torch.float64, device=device), gram=J @ J.T)


def _random_gram(seed, T, P):
    J = np.random.default_rng(seed).normal(size=(T, P))
    return J @ J.T


def _optimality_gap(G, w, c):
    """First-order condition on the simplex: w's mass lies where ∇f is smallest (g_w ≠ 0)."""
    b = np.full(G.shape[0], 1 / G.shape[0])
    grad = G @ b + c * math.sqrt(b @ G @ b) * (G @ w) / math.sqrt(w @ G @ w)
    return float(grad[w > 1e-12].max() - grad.min())


def test_conformance():
    check_balancer(CAGrad)
    check_balancer(CAGrad, config=CAGradConfig(c=0.5, rescale=2, reduction="mean"))


@pytest.mark.parametrize(("J", "star"), [(J_A, 0), (J_B, 1)], ids=["A", "B"])
def test_reference_vectors(J, star, device):
    """§2.18 (c = 0.5, rescale 1, mean convention): w* = e₁ (A) and e₂ (B), exactly."""
    J64 = torch.tensor(J, dtype=torch.float64)
    T = J64.shape[0]
    g0_norm, gw_norm = J64.mean(0).norm().item(), J64[star].norm().item()
    expected = torch.full((T,), 1 / T, dtype=torch.float64)
    expected[star] += 0.5 * g0_norm / (gw_norm + 1e-8)
    expected /= 1.25
    table = {0: [0.6, 0.4], 1: [0.266667, 0.408088, 0.266667]}[star]
    out = _weights(J, device, c=0.5, reduction="mean")
    torch.testing.assert_close(out.shared.cpu(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        out.shared.cpu(), torch.tensor(table, dtype=torch.float64), atol=1e-6, rtol=0
    )
    d = J64.T @ out.shared.cpu()
    torch.testing.assert_close(d, J64.T @ expected, rtol=1e-4, atol=0)
    assert out.task.tolist() == pytest.approx([1 / T] * T)


def test_sum_reduction_and_rescale():
    mean = _weights(J_B, c=0.4, rescale=0, reduction="mean").shared
    for rescale, divisor in ((0, 1.0), (1, 1.16), (2, 1.4)):
        out = _weights(J_B, c=0.4, rescale=rescale)
        torch.testing.assert_close(out.shared, 3 * mean / divisor)
        assert out.task.tolist() == [1.0, 1.0, 1.0]


def test_c_zero_is_equal_weighting():
    out = _weights(J_B, c=0.0)
    assert out.shared.tolist() == [1.0, 1.0, 1.0]


@settings(max_examples=50, deadline=None)
@given(
    T=st.integers(2, 7),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**31 - 1),
    c=st.floats(0.05, 0.95),
)
def test_dual_is_optimal(T, extra, seed, c):
    G = _random_gram(seed, T, T + extra)
    w = cagrad_dual(G, c)
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    scale = float(np.diag(G).max())
    assert _optimality_gap(G, w, c) <= 1e-9 * scale
    rng = np.random.default_rng(seed)
    others = np.vstack(
        [np.eye(T), rng.dirichlet(np.ones(T), 300), rng.dirichlet(np.full(T, 0.2), 300)]
    )
    best = min(cagrad_objective(G, v, c) for v in others)
    assert cagrad_objective(G, w, c) <= best + 1e-12 * scale


@pytest.mark.parametrize(("T", "P"), [(12, 30), (40, 64), (40, 10)])
def test_many_tasks(T, P):
    G = _random_gram(T * P, T, P) + 0.5  # a shared component: conflicts and agreement
    for c in (0.2, 0.4, 0.8):
        w = cagrad_dual(G, c)
        assert _optimality_gap(G, w, c) <= 1e-9 * float(np.diag(G).max())


def test_permutation_equivariance_and_scale_invariance():
    G = torch.from_numpy(_random_gram(3, 5, 8))
    losses = torch.ones(5, dtype=torch.float64)
    balancer = CAGrad([f"t{i}" for i in range(5)])
    w = balancer(losses, gram=G).shared
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(balancer(losses, gram=G[perm][:, perm]).shared, w[perm])
    torch.testing.assert_close(balancer(losses, gram=100.0 * G).shared, w, rtol=1e-7, atol=0)


def test_zero_in_the_hull_with_large_c_gives_the_mean_gradient():
    # g1 + g2 + g3 = 0 and g0 ≠ 0: with c ≥ 1 the dual is minimised at g_w = 0 (f = 0)
    J = torch.tensor([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    w_star = cagrad_dual((J @ J.T).numpy(), 1.5)
    assert float(w_star @ (J @ J.T).numpy() @ w_star) <= 1e-12
    out = _weights(J, c=1.5)
    torch.testing.assert_close(out.shared, torch.full((4,), 1 / 3.25, dtype=torch.float64))


def test_opposite_gradients():
    out = _weights([[1.0, 2.0], [-1.0, -2.0]])  # g0 = 0: d = g0
    torch.testing.assert_close(out.shared, torch.full((2,), 1 / 1.16, dtype=torch.float64))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"c": -0.1}, r"balancer 'cagrad': 'c' must be a number >= 0 \(got -0.1\)"),
        ({"rescale": 3}, r"'rescale' must be in \(0, 1, 2\)"),
        ({"reduction": "none"}, r"'reduction' must be in \('sum', 'mean'\)"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        CAGrad(["a", "b"], **options)


def test_train_step():
    tasks = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))
    torch.manual_seed(0)
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    model = HardSharing(tasks, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
    }
    result = TrainStep(model, tasks, CAGrad(["seg", "depth"]))(batch)
    assert (result.weights.shared > 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
