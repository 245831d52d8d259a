"""Aligned-MTL: SPEC-methods §2.14 and the §2.18 reference vectors (Cases A and B)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.aligned_mtl import AlignedMTL, AlignedMTLConfig, aligned_mtl_weights
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]
ENTRIES = st.one_of(st.floats(-3, -0.05), st.floats(0.05, 3))


@st.composite
def full_rank_jacobians(draw, max_tasks=4):
    T = draw(st.integers(2, max_tasks))
    P = draw(st.integers(T, T + 2))
    J = torch.from_numpy(draw(arrays(np.float64, (T, P), elements=ENTRIES)))
    G = J @ J.T
    assume(torch.linalg.eigvalsh(G).min() > 1e-3 * G.diagonal().max())
    return J


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def _balance_matrix(G, scale="min"):
    """B [T, T], column t = B e_t."""
    eye = torch.eye(G.shape[0], dtype=torch.float64)
    return torch.stack([aligned_mtl_weights(G, e, scale=scale) for e in eye], dim=1)


def svd_update(J, p, sigma_sq, eps):
    """The aligned update from J directly: B J = σ U Wᵀ for J = U S Wᵀ (rank cut on S²)."""
    U, S, Wt = torch.linalg.svd(J, full_matrices=False)
    lam = S**2
    keep = lam > lam.max() * J.shape[0] * eps
    return sigma_sq**0.5 * Wt[keep].T @ (U[:, keep].T @ p)


def test_conformance():
    check_balancer(AlignedMTL)
    for scale in ("median", "rmse"):
        check_balancer(AlignedMTL, config=AlignedMTLConfig(scale=scale, reduction="mean"))


@pytest.mark.parametrize(
    ("J", "expected"),
    [(J_A, [1.105573, 0.829180]), (J_B, [1.021922, 1.161881, 0.545002])],
    ids=["A", "B"],
)
def test_reference_vectors(J, expected):
    J = _t(J)
    T = len(J)
    out = AlignedMTL([f"t{i}" for i in range(T)])(torch.ones(T).double(), gram=J @ J.T)
    torch.testing.assert_close(out.shared, _t(expected), rtol=0, atol=1e-6)
    assert torch.equal(out.task, torch.ones(T).double())


@settings(max_examples=50, deadline=None)
@given(full_rank_jacobians(), st.sampled_from(["min", "median", "rmse"]))
def test_aligned_gradients_are_orthogonal_with_equal_norms(J, scale):
    G = J @ J.T
    lam = torch.linalg.eigvalsh(G)  # ascending
    sigma_sq = {"min": lam[0], "median": lam[(len(lam) - 1) // 2], "rmse": lam.mean()}[scale]
    B = _balance_matrix(G, scale)
    eye = torch.eye(len(G), dtype=torch.float64)
    torch.testing.assert_close(B @ G @ B / sigma_sq, eye, rtol=0, atol=1e-8)


@settings(max_examples=50, deadline=None)
@given(full_rank_jacobians())
def test_gram_form_matches_the_svd_of_the_jacobian(J):
    p = torch.ones(len(J), dtype=torch.float64)
    d = J.T @ aligned_mtl_weights(J @ J.T, p)
    sigma_sq = torch.linalg.eigvalsh(J @ J.T)[0]
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(d, svd_update(J, p, sigma_sq, eps))


def test_median_is_the_lower_median():
    G = torch.diag(_t([1.0, 4.0, 9.0, 16.0]))
    B = _balance_matrix(G, "median")  # σ² = 4 (not 6.5): B = diag(2/√λ)
    torch.testing.assert_close(B, torch.diag(_t([2.0, 1.0, 2 / 3, 0.5])))
    torch.testing.assert_close(
        _balance_matrix(G, "rmse"), torch.diag(7.5**0.5 / G.diagonal() ** 0.5)
    )


def test_rank_cut_uses_the_input_dtype_epsilon():
    G = torch.diag(_t([1.0, 1e-9]))
    p = torch.ones(2, dtype=torch.float64)
    w64 = aligned_mtl_weights(G, p)  # both eigenvalues kept: σ = √1e-9
    torch.testing.assert_close(w64, _t([1e-9**0.5, 1.0]))
    w32 = aligned_mtl_weights(G.float(), p)  # 1e-9 < 2 · ε_fp32: rank 1, σ = 1
    torch.testing.assert_close(w32, _t([1.0, 0.0]))


def test_rank_deficient_gram_matches_the_svd():
    J = _t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # T > P: G has eigenvalues 0, 1, 3
    p = torch.ones(3, dtype=torch.float64)
    d = J.T @ aligned_mtl_weights((J @ J.T).float(), p)
    torch.testing.assert_close(d, svd_update(J, p, 1.0, torch.finfo(torch.float32).eps))


def test_zero_gram_falls_back_to_the_preference():
    out = AlignedMTL(["a", "b"], reduction="mean")(torch.ones(2), gram=torch.zeros(2, 2))
    torch.testing.assert_close(out.shared, torch.full((2,), 0.5))


@settings(max_examples=30, deadline=None)
@given(full_rank_jacobians(), st.floats(1e-3, 1e3), st.randoms(use_true_random=False))
def test_scale_invariance_and_permutation_equivariance(J, k, rnd):
    G, p = J @ J.T, torch.ones(len(J), dtype=torch.float64)
    w = aligned_mtl_weights(G, p)
    torch.testing.assert_close(aligned_mtl_weights(k * G, p), w)
    perm = list(range(len(J)))
    rnd.shuffle(perm)
    torch.testing.assert_close(aligned_mtl_weights(G[perm][:, perm], p), w[perm])


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match=r"'scale' must be in"):
        AlignedMTL(["a"], scale="max")
    with pytest.raises(ValueError, match=r"aligned_mtl: scale must be one of"):
        aligned_mtl_weights(torch.eye(2), torch.ones(2), scale="mean")


def test_weights_follow_the_losses_device(device):
    G, losses = _t(J_B) @ _t(J_B).T, torch.ones(3)
    b = AlignedMTL(["a", "b", "c"])
    out = b(losses.to(device), gram=G.to(device))
    assert out.shared.device.type == device
    assert out.shared.dtype == torch.float32
    torch.testing.assert_close(out.shared.cpu(), b(losses, gram=G).shared)


def test_state_round_trip():
    b, fresh = AlignedMTL(["a", "b", "c"]), AlignedMTL(["a", "b", "c"])
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
    result = TrainStep(model, TASKS, AlignedMTL(["seg", "depth"]))(batch)
    assert torch.isfinite(result.weights.shared).all()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
