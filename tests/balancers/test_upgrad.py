"""UPGrad: SPEC-methods §2.15 and the §2.18 reference vectors (Cases A and B, note 3)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.upgrad import UPGrad, UPGradConfig, upgrad_weights
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]
GRID = st.integers(-4, 4).map(lambda k: k / 2)
FLOATS = st.one_of(st.floats(-3, -0.05), st.floats(0.05, 3))
MIXED = st.one_of(GRID, FLOATS)


@st.composite
def jacobians(draw, max_tasks=4, max_dim=4, elements=MIXED):
    T = draw(st.integers(1, max_tasks))
    P = draw(st.integers(1, max_dim))
    J = torch.from_numpy(draw(arrays(np.float64, (T, P), elements=elements)))
    assume((J @ J.T).trace() > 1e-3)
    return J


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def _weights(G, **options):
    T = G.shape[0]
    return UPGrad([f"t{i}" for i in range(T)], **options)(torch.ones(T).double(), gram=G).shared


def dual_cone_projection(J, g):
    """argmin ‖x − g‖ s.t. Jx ≥ 0, in the primal: the best feasible face over every active set."""
    best, best_x = np.inf, None
    for k in range(len(J) + 1):
        for A in itertools.combinations(range(len(J)), k):
            JA = J[list(A)]
            mu = torch.linalg.lstsq(JA @ JA.T, (JA @ g)[:, None]).solution[:, 0] if k else None
            x = g - JA.T @ mu if k else g.clone()
            distance = (x - g).norm().item()
            if (J @ x >= -1e-9).all() and distance < best:
                best, best_x = distance, x
    return best_x


def test_conformance():
    check_balancer(UPGrad)
    check_balancer(UPGrad, config=UPGradConfig(norm_eps=0.0, reg_eps=0.0, reduction="sum"))


@pytest.mark.parametrize(
    ("J", "expected", "shift"),
    [(J_A, [1.0, 0.75], 1.5e-4), (J_B, [1.1, 1.313725, 0.584314], 1.6e-3)],
    ids=["A", "B"],
)
def test_reference_vectors(J, expected, shift):
    G = _t(J) @ _t(J).T
    exact = _weights(G, reg_eps=0.0)  # the vectors hold without regularisation
    torch.testing.assert_close(exact, _t(expected), rtol=0, atol=1e-6)
    moved = (_weights(G) - exact).abs().max().item()  # note 3: eps = 1e-4 moves them
    assert moved == pytest.approx(shift, rel=0.1)


@settings(max_examples=50, deadline=None)
@given(jacobians())
def test_aggregate_does_not_conflict_with_any_task(J):
    G = J @ J.T
    w = _weights(G, reg_eps=0.0)
    scale = G.diagonal().max().item()
    assert ((G @ w) >= -1e-9 * scale * w.abs().sum()).all()  # ⟨Jᵀw, g_i⟩ = (Gw)_i ≥ 0
    reg = 1e-4
    w = _weights(G, reg_eps=reg)  # KKT of the ridge QP: G w ≥ −ε tr(G) w
    assert ((G @ w) >= -reg * G.trace() * w - 1e-9 * scale).all()


@settings(max_examples=40, deadline=None)
@given(jacobians(max_tasks=3, max_dim=3))
def test_gram_form_matches_the_primal_projection(J):
    """d = Σ_t (1/T) π(g_t), π the projection onto the dual cone {x : Jx ≥ 0} (torchjd)."""
    T = len(J)
    expected = sum(dual_cone_projection(J, g) for g in J) / T
    d = J.T @ _weights(J @ J.T, reg_eps=0.0)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-7 * J.abs().max().item())


@settings(max_examples=30, deadline=None)
@given(jacobians(elements=FLOATS), st.floats(1e-2, 1e2), st.randoms(use_true_random=False))
def test_scale_invariance_and_permutation_equivariance(J, k, rnd):
    G = J @ J.T
    assume(torch.linalg.eigvalsh(G).min() > 1e-3 * G.diagonal().max())  # unique v_t
    w = _weights(G)
    torch.testing.assert_close(_weights(k * G), w)
    perm = list(range(len(J)))
    rnd.shuffle(perm)
    torch.testing.assert_close(_weights(G[perm][:, perm]), w[perm])


def test_tiny_trace_gives_the_preference():
    G = 1e-6 * _t(J_B) @ _t(J_B).T  # tr G < norm_eps: Ĝ = 0 (note 3), so v_t = e_t / T
    for reg in (0.0, 1e-4):
        torch.testing.assert_close(_weights(G, reg_eps=reg), torch.full((3,), 1 / 3).double())


def test_sum_reduction_scales_by_the_number_of_tasks():
    G = _t(J_B) @ _t(J_B).T
    torch.testing.assert_close(_weights(G, reduction="sum"), 3 * _weights(G))
    out = UPGrad(["a", "b", "c"])(torch.ones(3).double(), gram=G)
    assert torch.equal(out.task, torch.ones(3).double())


def test_direct_function_matches_the_balancer():
    G = _t(J_A) @ _t(J_A).T
    w = upgrad_weights(G, torch.full((2,), 0.5).double(), norm_eps=1e-4, reg_eps=0.0)
    torch.testing.assert_close(w, _t([1.0, 0.75]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reg_eps": -1.0}, r"'reg_eps' must be finite and >= 0 \(got -1.0\)"),
        ({"norm_eps": float("nan")}, r"'norm_eps' must be finite and >= 0 \(got nan\)"),
        ({"reduction": "max"}, r"'reduction' must be in"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        UPGrad(["a", "b"], **options)
    with pytest.raises(TypeError, match=r"'reg_eps' must be a number \(got '1'\)"):
        UPGradConfig(reg_eps="1")


def test_weights_follow_the_losses_device(device):
    G, losses = _t(J_B) @ _t(J_B).T, torch.ones(3)
    b = UPGrad(["a", "b", "c"])
    out = b(losses.to(device), gram=G.to(device))
    assert out.shared.device.type == device
    assert out.shared.dtype == torch.float32
    torch.testing.assert_close(out.shared.cpu(), b(losses, gram=G).shared)


def test_state_round_trip():
    b, fresh = UPGrad(["a", "b", "c"]), UPGrad(["a", "b", "c"])
    fresh.load_state_dict(b.state_dict())
    G, losses = _t(J_B) @ _t(J_B).T, torch.ones(3, dtype=torch.float64)
    assert torch.equal(fresh(losses, gram=G).shared, b(losses, gram=G).shared)


TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))


def test_train_step():
    torch.manual_seed(0)
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    model = HardSharing(TASKS, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64) + 0.5,
    }
    result = TrainStep(model, TASKS, UPGrad(["seg", "depth"]))(batch)
    assert (result.weights.shared > 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
