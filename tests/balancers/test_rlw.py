"""Random loss weighting: weights on the simplex, reproducible from the seed and across a state
round trip, independent of the global RNG, and distributed as the chosen law."""

import pytest
import torch

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.rlw import RandomLossWeighting, RandomLossWeightingConfig
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

DISTRIBUTIONS = ["normal", "uniform", "dirichlet", "bernoulli"]
TASKS = ["a", "b", "c"]


def _draws(b, n):
    return torch.stack([b(torch.ones(b.num_tasks, dtype=torch.float64)).shared for _ in range(n)])


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_conformance(distribution):
    check_balancer(RandomLossWeighting, config=RandomLossWeightingConfig(distribution=distribution))


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_weights_are_on_the_simplex(distribution):
    w = _draws(RandomLossWeighting(TASKS, distribution=distribution), 200)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(200, dtype=torch.float64))
    if distribution == "bernoulli":  # each task on or off; never all off
        on = (w > 0).sum(dim=1, keepdim=True)
        torch.testing.assert_close(w, (w > 0) / on.double())
        assert (on >= 1).all()


def test_normal_is_softmax_of_a_seeded_standard_normal_draw():
    b = RandomLossWeighting(TASKS, seed=7)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        expected = torch.softmax(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        out = b(torch.ones(3))
        torch.testing.assert_close(out.shared, expected.float())
        assert torch.equal(out.shared, out.task)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_reproducible_from_the_seed_not_the_global_rng(distribution):
    torch.manual_seed(1)
    first = _draws(RandomLossWeighting(TASKS, distribution=distribution, seed=3), 20)
    torch.manual_seed(2)
    second = _draws(RandomLossWeighting(TASKS, distribution=distribution, seed=3), 20)
    other = _draws(RandomLossWeighting(TASKS, distribution=distribution, seed=4), 20)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_state_round_trip_continues_the_sequence(distribution):
    b = RandomLossWeighting(TASKS, distribution=distribution, seed=5)
    _draws(b, 7)
    fresh = RandomLossWeighting(TASKS, distribution=distribution, seed=99)  # seed overridden
    fresh.load_state_dict(b.state_dict())
    assert torch.equal(_draws(fresh, 5), _draws(b, 5))


def test_state_dict_holds_the_generator_state():
    b = RandomLossWeighting(TASKS)
    before = b.state_dict()["rng_state"].clone()
    b(torch.ones(3))
    assert before.dtype == torch.uint8
    assert not torch.equal(before, b.state_dict()["rng_state"])


@pytest.mark.parametrize(
    ("distribution", "variance"),
    [("uniform", None), ("dirichlet", 1 / 18), ("normal", None), ("bernoulli", None)],
)
def test_mean_weight_is_one_over_T(distribution, variance):
    w = _draws(RandomLossWeighting(TASKS, distribution=distribution, seed=11), 3000)
    torch.testing.assert_close(
        w.mean(dim=0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0
    )
    if variance is not None:  # Dirichlet(1, 1, 1) marginals are Beta(1, 2): variance 2/36
        assert w.var(dim=0).tolist() == pytest.approx([variance] * 3, abs=0.006)


def test_normal_log_ratios_have_variance_two():
    """log(w_i / w_j) = ε_i − ε_j with ε ~ N(0, I): mean 0, variance 2."""
    w = _draws(RandomLossWeighting(TASKS, seed=12), 3000)
    d = (w[:, 0] / w[:, 1]).log()
    assert abs(d.mean().item()) < 0.1
    assert d.var().item() == pytest.approx(2.0, rel=0.1)


def test_weights_follow_the_losses_dtype_and_device(device):
    b = RandomLossWeighting(TASKS).to(device)
    out = b(torch.ones(3, dtype=torch.float16, device=device))
    assert out.shared.dtype == torch.float16
    assert out.shared.device.type == device


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("distribution", "gauss", r"'distribution' must be in \('normal', 'uniform'"),
        ("seed", -1, r"'seed' must be an integer in \[0, 2\*\*63\) \(got -1\)"),
        ("seed", 1.5, r"'seed' must be an integer"),
    ],
)
def test_invalid_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        RandomLossWeightingConfig(**{field: value})


def test_one_training_step_applies_the_drawn_weights():
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
    result = TrainStep(model, tasks, RandomLossWeighting(["seg", "depth"], seed=2))(batch)
    expected = RandomLossWeighting(["seg", "depth"], seed=2)(torch.ones(2, dtype=torch.float64))
    assert torch.equal(result.weights.shared, expected.shared)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)
