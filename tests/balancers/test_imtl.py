"""IMTL-G, IMTL-L and the hybrid IMTL: SPEC-methods §2.12 and the §2.18 reference vectors."""

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
from pymtl.balancers.imtl import IMTL, IMTLGradient, IMTLLoss, imtl_g_weights
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

J_A = [[1.0, 0.0], [-1.0, 1.0]]
J_B = [[1.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0], [0.5, -2.0, 1.0, 0.0]]
ENTRIES = st.one_of(st.floats(-3, -0.05), st.floats(0.05, 3))


@st.composite
def full_rank_jacobians(draw, max_tasks=4):
    """J [T, P] with T ≤ P and a well-conditioned Gram matrix (IMTL-G's setting)."""
    T = draw(st.integers(2, max_tasks))
    P = draw(st.integers(T, T + 2))
    J = torch.from_numpy(draw(arrays(np.float64, (T, P), elements=ENTRIES)))
    G = J @ J.T
    assume(torch.linalg.eigvalsh(G).min() > 1e-3 * G.diagonal().max())
    return J


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def paper_closed_form(J):
    """The paper's α from the gradients themselves: α₂.. = g₁Uᵀ(DUᵀ)⁻¹, α₁ = 1 − Σα₂.."""
    U = J / J.norm(dim=1, keepdim=True)
    D, Ud = J[:1] - J[1:], U[:1] - U[1:]
    rest = J[0] @ Ud.T @ torch.linalg.inv(D @ Ud.T)
    return torch.cat([1 - rest.sum().reshape(1), rest])


def test_conformance():
    for cls in (IMTL, IMTLGradient, IMTLLoss):
        check_balancer(cls)
    assert (IMTL.needs, IMTLGradient.needs, IMTLLoss.needs) == (
        Needs.GRAM,
        Needs.GRAM,
        Needs.LOSSES,
    )


@pytest.mark.parametrize(
    ("J", "expected", "atol"),
    [
        (J_A, [2 - math.sqrt(2), math.sqrt(2) - 1], 1e-12),
        (J_B, [0.374645, 0.439497, 0.185858], 1e-6),
    ],
    ids=["A", "B"],
)
def test_reference_vectors(J, expected, atol):
    J = _t(J)
    w = IMTLGradient([f"t{i}" for i in range(len(J))])(torch.ones(len(J)).double(), gram=J @ J.T)
    torch.testing.assert_close(w.shared, _t(expected), rtol=0, atol=atol)
    assert torch.equal(w.task, torch.ones_like(w.task))
    if len(J) == 2:  # SPEC: both projections equal 0.1716 = 3 − 2√2
        projections = (J / J.norm(dim=1, keepdim=True)) @ (J.T @ w.shared)
        torch.testing.assert_close(projections, torch.full((2,), 3 - 2 * math.sqrt(2)).double())


@settings(max_examples=50, deadline=None)
@given(full_rank_jacobians())
def test_equal_projections_on_unit_gradients(J):
    w = imtl_g_weights(J @ J.T)
    assert w.sum().item() == pytest.approx(1.0)
    projections = (J / J.norm(dim=1, keepdim=True)) @ (J.T @ w)
    torch.testing.assert_close(projections, projections.mean().expand_as(projections))


@settings(max_examples=50, deadline=None)
@given(full_rank_jacobians())
def test_gram_form_matches_the_papers_closed_form(J):
    D = J[:1] - J[1:]
    U = J[:1] / J[0].norm() - J[1:] / J[1:].norm(dim=1, keepdim=True)
    assume(torch.linalg.svdvals(D @ U.T).min() > 1e-6)
    torch.testing.assert_close(imtl_g_weights(J @ J.T), paper_closed_form(J))


@settings(max_examples=30, deadline=None)
@given(full_rank_jacobians(), st.lists(st.floats(0.1, 10), min_size=4, max_size=4))
def test_gradient_scales_change_only_the_length_of_the_update(J, scales):
    """Unit gradients do not see per-task scales: the aggregate keeps its line (Jᵀv, v = G⁺n,
    is invariant; only the normaliser Σα = 1, whose sign can change, rescales it)."""
    c = _t(scales[: len(J)])
    d = J.T @ imtl_g_weights(J @ J.T)
    J_scaled = c[:, None] * J
    d_scaled = J_scaled.T @ imtl_g_weights(J_scaled @ J_scaled.T)
    cosine = d @ d_scaled / (d.norm() * d_scaled.norm())
    assert abs(cosine.item()) == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(imtl_g_weights(7.0 * J @ J.T), imtl_g_weights(J @ J.T))


@settings(max_examples=30, deadline=None)
@given(full_rank_jacobians(), st.randoms(use_true_random=False))
def test_permutation_equivariance(J, rnd):
    T = len(J)
    perm = list(range(T))
    rnd.shuffle(perm)
    G, losses = J @ J.T, torch.rand(T, dtype=torch.float64) + 0.1
    scales = torch.linspace(-0.5, 0.5, T)
    for cls in (IMTLGradient, IMTL, IMTLLoss):
        b, b_perm = cls([f"t{i}" for i in range(T)]), cls([f"t{i}" for i in perm])
        if cls is not IMTLGradient:
            b.log_scale.data.copy_(scales)
            b_perm.log_scale.data.copy_(scales[perm])
        out, out_perm = b(losses, gram=G), b_perm(losses[perm], gram=G[perm][:, perm])
        torch.testing.assert_close(out_perm.shared, out.shared[perm])
        torch.testing.assert_close(out_perm.task, out.task[perm])


def test_zero_gradients_give_zero_weights():
    assert torch.equal(imtl_g_weights(torch.zeros(3, 3).double()), torch.zeros(3).double())


def test_loss_balance_weights_and_aux_gradient():
    b = IMTLLoss(["a", "b"])
    b.log_scale.data.copy_(torch.tensor([0.5, -1.0]))
    losses = _t([2.0, 0.25])
    out = b(losses)
    scale = torch.exp(_t([0.5, -1.0]))
    torch.testing.assert_close(out.shared, scale)
    assert out.task is out.shared  # w = s: one backward of Σ e^{s_t} L_t suffices
    assert not out.shared.requires_grad
    out.aux_loss.backward()
    torch.testing.assert_close(b.log_scale.grad.double(), scale * losses - 1)  # ∂(e^s L − s)/∂s


def test_hybrid_is_imtl_g_on_the_scaled_gradients():
    J, s = _t(J_B), torch.tensor([0.3, -0.7, 1.1])
    b = IMTL(["a", "b", "c"])
    b.log_scale.data.copy_(s)
    losses = _t([1.0, 2.0, 0.5])
    out = b(losses, gram=J @ J.T)
    e = s.double().exp()
    J_scaled = e[:, None] * J  # gradients of e^{s_t} L_t
    alpha = paper_closed_form(J_scaled)
    torch.testing.assert_close(J.T @ out.shared, J_scaled.T @ alpha)  # the same update
    torch.testing.assert_close(out.shared, alpha * e)
    torch.testing.assert_close(out.task, e)
    out.aux_loss.backward()
    torch.testing.assert_close(b.log_scale.grad.double(), e * losses - 1)


@pytest.mark.parametrize("cls", [IMTL, IMTLGradient, IMTLLoss])
def test_weights_follow_the_losses_device(cls, device):
    G, losses = _t(J_B) @ _t(J_B).T, torch.tensor([1.0, 2.0, 0.5])
    b = cls(["a", "b", "c"])
    expected = b(losses, gram=G)
    out = b.to(device)(losses.to(device), gram=G.to(device))
    for field in ("shared", "task"):
        value = getattr(out, field)
        assert value.device.type == device
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.cpu(), getattr(expected, field))


@pytest.mark.parametrize("cls", [IMTL, IMTLLoss])
def test_state_round_trip(cls):
    b = cls(["a", "b", "c"])
    b.log_scale.data.copy_(torch.tensor([0.2, -0.4, 0.9]))
    fresh = cls(["a", "b", "c"])
    fresh.load_state_dict(b.state_dict())
    losses, G = _t([1.0, 2.0, 0.5]), _t(J_B) @ _t(J_B).T
    out, again = b(losses, gram=G), fresh(losses, gram=G)
    assert torch.equal(out.shared, again.shared)
    assert torch.equal(out.task, again.task)
    assert torch.equal(out.aux_loss, again.aux_loss)


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


@pytest.mark.parametrize("cls", [IMTL, IMTLGradient, IMTLLoss])
def test_train_step(cls):
    balancer = cls(["seg", "depth"])
    result = _train_step(balancer)
    assert torch.isfinite(result.weights.shared).all()
    if cls is not IMTLGradient:  # s = 0: ∂aux/∂s_t = L_t − 1
        torch.testing.assert_close(balancer.log_scale.grad.double(), result.losses - 1)
