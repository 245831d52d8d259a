"""Nash-MTL: SPEC-methods §2.13, the §2.18 vectors and note 4 (fixed point, clip, 0 in the hull)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.nash_mtl import NashMTL, NashMTLConfig, NoBargainingSolutionError, nash_alpha
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]
ALPHA = {"A": [1.847759, 1.306563], "B": [3.284372, 3.783609, 1.607419]}


def _gram(J, device="cpu"):
    J = torch.as_tensor(J, dtype=torch.float64, device=device)
    return J @ J.T


def _names(T):
    return [f"t{i}" for i in range(T)]


def _ones(T, device="cpu"):
    return torch.ones(T, dtype=torch.float64, device=device)


def _well_conditioned(seed, T):
    """G = J Jᵀ with J [T, T + 3] of rows with norms spread over two decades."""
    rng = np.random.default_rng(seed)
    J = rng.normal(size=(T, T + 3)) * np.exp(rng.uniform(-2.3, 2.3, size=(T, 1)))
    return J @ J.T


def test_conformance():
    check_balancer(NashMTL)
    config = NashMTLConfig(max_norm=0.0, update_weights_every=2, on_degenerate="previous")
    check_balancer(NashMTL, config=config)


@pytest.mark.parametrize(("case", "J"), [("A", J_A), ("B", J_B)])
def test_reference_vectors(case, J, device):
    T, G = len(J), _gram(J, device)
    alpha = torch.tensor(ALPHA[case], dtype=torch.float64)
    out = NashMTL(_names(T), max_norm=0.0)(_ones(T, device), gram=G)
    assert out.shared.device == G.device
    torch.testing.assert_close(out.shared.cpu(), alpha, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.task.cpu(), alpha, atol=1e-6, rtol=0)
    clipped = NashMTL(_names(T))(_ones(T, device), gram=G)  # max_norm = 1: α / (√T + 1e-6)
    torch.testing.assert_close(
        clipped.shared.cpu(), alpha / (math.sqrt(T) + 1e-6), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(clipped.task.cpu(), alpha, atol=1e-6, rtol=0)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(2, 10), seed=st.integers(0, 2**31 - 1))
def test_fixed_point(T, seed):
    G = _well_conditioned(seed, T)
    balancer = NashMTL(_names(T), max_norm=0.0)
    alpha = balancer(_ones(T), gram=torch.from_numpy(G)).shared.numpy()
    assert (alpha > 0).all()
    np.testing.assert_allclose(alpha * (G @ alpha), 1.0, rtol=0, atol=1e-9)
    assert float(alpha @ G @ alpha) == pytest.approx(T, rel=1e-9)  # ‖Jᵀα‖ = √T (note 4)
    np.testing.assert_array_equal(balancer.alpha.numpy(), alpha)


def test_scale_and_permutation():
    G = _well_conditioned(7, 4)
    alpha, ok = nash_alpha(G, np.ones(4), niter=20)
    assert ok
    scaled, ok = nash_alpha(1e-6 * G, np.ones(4), niter=20)
    assert ok
    np.testing.assert_allclose(scaled, alpha * 1e3, rtol=1e-9)
    perm = [2, 0, 3, 1]
    permuted, ok = nash_alpha(G[np.ix_(perm, perm)], np.ones(4), niter=20)
    assert ok
    np.testing.assert_allclose(permuted, alpha[perm], rtol=1e-9)


def test_too_few_iterations_keep_the_iterate_and_warm_start_finishes():
    G = torch.from_numpy(_well_conditioned(3, 6))
    balancer = NashMTL(_names(6), niter=1, max_norm=0.0)
    first = balancer(_ones(6), gram=G).shared.numpy()
    residual = np.abs(first * (G.numpy() @ first) - 1).max()
    assert residual > 1e-9  # one damped Newton step: not there yet
    assert (first > 0).all()
    for _ in range(10):
        alpha = balancer(_ones(6), gram=G).shared.numpy()
    np.testing.assert_allclose(alpha * (G.numpy() @ alpha), 1.0, atol=1e-9, rtol=0)


def test_update_weights_every():
    balancer = NashMTL(["a", "b"], max_norm=0.0, update_weights_every=2)
    first = balancer(_ones(2), gram=_gram(J_A)).shared
    other = _gram([[2.0, 0.0], [0.0, 1.0]])
    assert torch.equal(balancer(_ones(2), gram=other).shared, first)  # step 1: reused
    torch.testing.assert_close(
        balancer(_ones(2), gram=other).shared, _ones(2) / other.diag().sqrt()
    )
    assert int(balancer.step) == 3


def test_state_round_trip():
    G = torch.from_numpy(_well_conditioned(5, 3))
    b = NashMTL(_names(3), niter=2, update_weights_every=2)
    for _ in range(3):
        b(_ones(3), gram=G)
    assert set(b.state_dict()) == {"alpha", "step"}
    fresh = NashMTL(_names(3), niter=2, update_weights_every=2)
    fresh.load_state_dict(copy.deepcopy(b.state_dict()))
    for _ in range(3):
        assert torch.equal(fresh(_ones(3), gram=G).shared, b(_ones(3), gram=G).shared)


@pytest.mark.parametrize(
    ("G", "message"),
    [
        (
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]],
            r"the gradient of task\(s\) depth is zero",
        ),
        (
            [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            r"combined with u = \(seg=0.5, depth=0.5, normals=0\) have squared norm",
        ),
    ],
    ids=["zero-gradient", "opposite-gradients"],
)
def test_zero_in_the_convex_hull(G, message):
    G = torch.tensor(G, dtype=torch.float64)
    tasks = ["seg", "depth", "normals"]
    with pytest.raises(NoBargainingSolutionError, match=r"0 lies in the convex hull.*" + message):
        NashMTL(tasks)(_ones(3), gram=G)
    balancer = NashMTL(tasks, max_norm=0.0, on_degenerate="previous")
    balancer.alpha.fill_(0.5)
    with pytest.warns(RuntimeWarning, match=r"reusing the previous step's α"):
        out = balancer(_ones(3), gram=G)
    assert out.shared.tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"niter": 0}, r"balancer 'nash_mtl': 'niter' must be an integer >= 1 \(got 0\)"),
        ({"update_weights_every": 1.5}, r"'update_weights_every' must be an integer >= 1"),
        ({"max_norm": -1.0}, r"'max_norm' must be a finite number >= 0 \(got -1.0\)"),
        ({"on_degenerate": "ignore"}, r"'on_degenerate' must be in \('raise', 'previous'\)"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        NashMTL(["a", "b"], **options)


def test_train_step_clips_the_shared_gradient():
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
    balancer = NashMTL(["seg", "depth"])
    result = TrainStep(model, tasks, balancer)(batch)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    shared = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    assert shared.norm().item() == pytest.approx(1.0, abs=1e-5)  # ‖Jᵀα‖ = √2 > max_norm
    torch.testing.assert_close(result.weights.task, balancer.alpha)
