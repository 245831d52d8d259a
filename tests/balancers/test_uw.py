"""Uncertainty weighting: hand-computed weights and objective, the stationary point of σ̃, the
loss-based initialisation, state round trip, and one real training step."""

import copy
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.uw import UncertaintyWeighting, UncertaintyWeightingConfig
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer


def test_conformance():
    check_balancer(UncertaintyWeighting)
    check_balancer(UncertaintyWeighting, config=UncertaintyWeightingConfig(init="loss"))
    check_balancer(
        UncertaintyWeighting,
        config=UncertaintyWeightingConfig(sigma0=0.0, classification_form=("seg",)),
    )


def test_default_init_is_mtan_minus_half():
    b = UncertaintyWeighting(["a", "b"])
    assert b.sigma.tolist() == [-0.5, -0.5]
    out = b(torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(
        out.shared, torch.full((2,), 0.5 * math.exp(0.5), dtype=torch.float64)
    )


def test_hand_computed_weights_and_objective():
    b = UncertaintyWeighting(["a", "b", "c"], sigma0=0.3, classification_form=["b"])
    with torch.no_grad():
        b.sigma.copy_(torch.tensor([0.3, -1.0, 2.0]))
    L = [2.0, 0.5, 3.0]
    out = b(torch.tensor(L, dtype=torch.float64))
    a = [0.5, 1.0, 0.5]  # b uses the classification form e^{−σ̃} L + ½σ̃
    sigma = [0.3, -1.0, 2.0]
    w = [a_t * math.exp(-s) for a_t, s in zip(a, sigma, strict=True)]
    aux = sum(w_t * L_t + 0.5 * s for w_t, L_t, s in zip(w, L, sigma, strict=True))
    torch.testing.assert_close(out.shared, torch.tensor(w, dtype=torch.float64), rtol=1e-6, atol=0)
    assert torch.equal(out.shared, out.task)
    assert out.aux_loss is not None
    assert out.aux_loss.dtype == torch.float64
    assert out.aux_loss.item() == pytest.approx(aux, rel=1e-6)
    assert not out.shared.requires_grad  # the network sees constant weights


def _sigma_grad(sigma0: float, loss: float, *, classification: bool = False) -> float:
    b = UncertaintyWeighting(["t"], sigma0=sigma0, classification_form=["t"] * classification)
    b(torch.tensor([loss], dtype=torch.float64)).aux_loss.backward()
    return float(b.sigma.grad)


@pytest.mark.parametrize("classification", [False, True])
def test_gradient_matches_theory_and_vanishes_at_log_loss(classification):
    a, L = (1.0 if classification else 0.5), 3.0
    for sigma in (-1.0, 0.0, 2.5):
        expected = 0.5 - a * math.exp(-sigma) * L  # d/dσ̃ of a e^{−σ̃} L + ½σ̃
        assert _sigma_grad(sigma, L, classification=classification) == pytest.approx(
            expected, rel=1e-5
        )
    star = math.log(2 * a * L)  # log L for the regression form
    assert _sigma_grad(star, L, classification=classification) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    sigma0=st.floats(-3.0, 3.0),
    loss=st.floats(0.05, 20.0),
    lr=st.floats(1e-3, 0.5),
)
def test_one_sgd_step_moves_sigma_towards_log_loss(sigma0, loss, lr):
    """The objective is convex in σ̃ with minimum σ* = log L: a gradient step always moves
    towards σ*, and gets closer when lr times the largest curvature ½e^{−σ̃}L between σ̃ and
    σ* is below 2 (no overshoot)."""
    star = math.log(loss)
    assume(abs(sigma0 - star) > 1e-3)
    b = UncertaintyWeighting(["t"], sigma0=sigma0).double()
    opt = torch.optim.SGD(b.parameters(), lr=lr)
    b(torch.tensor([loss], dtype=torch.float64)).aux_loss.backward()
    opt.step()
    after = b.sigma.item()
    assert (after - sigma0) * (star - sigma0) > 0  # it moved towards σ* = log L
    if lr * 0.5 * math.exp(-min(sigma0, star)) * loss < 2:
        assert abs(after - star) < abs(sigma0 - star)


def test_repeated_steps_converge_to_weight_one_over_two_losses():
    L = torch.tensor([0.2, 1.0, 5.0], dtype=torch.float64)
    b = UncertaintyWeighting(["a", "b", "c"]).double()
    opt = torch.optim.SGD(b.parameters(), lr=1.0)
    for _ in range(60):
        opt.zero_grad()
        b(L).aux_loss.backward()
        opt.step()
    torch.testing.assert_close(b.sigma.detach(), L.log(), atol=1e-6, rtol=0)
    torch.testing.assert_close(b(L).shared, 1 / (2 * L), rtol=1e-5, atol=0)


def test_loss_init_starts_at_the_stationary_point():
    b = UncertaintyWeighting(["a", "b", "c"], init="loss", sigma0=-0.5, classification_form=["b"])
    first = torch.tensor([4.0, 0.25, 0.0], dtype=torch.float64)  # c has no labels in batch 1
    out = b(first)
    torch.testing.assert_close(
        b.sigma.detach(), torch.tensor([math.log(4.0), math.log(0.5), -0.5]), rtol=1e-6, atol=0
    )
    assert b.initialised.tolist() == [True, True, False]
    torch.testing.assert_close(out.shared[:2], torch.tensor([0.125, 2.0], dtype=torch.float64))
    out.aux_loss.backward()
    torch.testing.assert_close(b.sigma.grad[:2], torch.zeros(2), atol=1e-6, rtol=0)
    with torch.no_grad():
        b.sigma[0] = 1.0  # as if trained: a later step must not re-initialise a or b
    b(torch.tensor([9.0, 9.0, 2.0], dtype=torch.float64))
    assert b.sigma[0].item() == 1.0
    assert b.sigma[2].item() == pytest.approx(math.log(2.0))
    assert b.initialised.tolist() == [True, True, True]


def test_state_round_trip_keeps_sigma_and_initialisation():
    b = UncertaintyWeighting(["a", "b"], init="loss")
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    b(torch.tensor([2.0, 0.5])).aux_loss.backward()
    opt.step()
    fresh = UncertaintyWeighting(["a", "b"], init="loss")
    fresh.load_state_dict(b.state_dict())
    losses = torch.tensor([7.0, 0.1])  # would re-initialise if the flags were lost
    assert torch.equal(fresh(losses).shared, b(losses).shared)
    assert set(b.state_dict()) == {"sigma", "initialised"}


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match=r"'init' must be in \('constant', 'loss'\)"):
        UncertaintyWeightingConfig(init="first")
    with pytest.raises(ValueError, match=r"'sigma0' must be a finite number \(got nan\)"):
        UncertaintyWeightingConfig(sigma0=float("nan"))
    with pytest.raises(TypeError, match=r"'classification_form' must be a list of task names"):
        UncertaintyWeightingConfig(classification_form="seg")
    with pytest.raises(TypeError, match=r"'classification_form' must be a list of task names"):
        UncertaintyWeighting(["seg"], classification_form="seg")
    with pytest.raises(ValueError, match=r"unknown task\(s\) sge; expected a subset of seg, depth"):
        UncertaintyWeighting(["seg", "depth"], classification_form=["sge"])


def test_one_training_step_trains_network_and_sigma():
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
    ref = copy.deepcopy(model)
    balancer = UncertaintyWeighting(["seg", "depth"], sigma0=0.2).double()
    result = TrainStep(model, tasks, balancer)(batch)
    out = ref(batch["image"])
    L = torch.stack([t.loss(out[t.name], batch[t.name]) for t in tasks])
    w = 0.5 * math.exp(-0.2)
    expected = torch.autograd.grad(w * L.sum(), list(ref.parameters()))
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    torch.testing.assert_close(balancer.sigma.grad, 0.5 - w * L.detach())
    assert torch.isfinite(result.weights.shared).all()
