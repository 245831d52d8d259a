"""Dynamic Weight Average: w = 1 in the first two epochs, hand-computed weights from given epoch
means, the epoch roll-over, state round trips in the middle of an epoch, the window variant."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.dwa import DynamicWeightAverage, DynamicWeightAverageConfig
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_balancer

F64 = torch.float64


def _dwa(newer, older, tau=2.0):
    """T·softmax((newer/older)/τ), written out with math."""
    e = [math.exp(n / o / tau) for n, o in zip(newer, older, strict=True)]
    return [len(e) * x / sum(e) for x in e]


def _run_epoch(b, steps, epoch):
    weights = [b(torch.tensor(losses, dtype=F64)).shared for losses in steps]
    b.on_epoch_end(epoch)
    return weights


def test_conformance():
    check_balancer(DynamicWeightAverage)
    check_balancer(DynamicWeightAverage, config=DynamicWeightAverageConfig(window=2))


def test_first_two_epochs_are_equal_weights_then_hand_computed():
    b = DynamicWeightAverage(["a", "b", "c"])
    epoch0 = [[1.0, 2.0, 4.0], [3.0, 2.0, 2.0]]  # means 2, 2, 3
    epoch1 = [[1.0, 3.0, 1.0], [1.0, 1.0, 2.0], [1.0, 2.0, 0.0]]  # means 1, 2, 1
    for epoch, steps in enumerate([epoch0, epoch1], start=1):
        for w in _run_epoch(b, steps, epoch):
            assert torch.equal(w, torch.ones(3, dtype=F64))
    expected = torch.tensor(_dwa([1.0, 2.0, 1.0], [2.0, 2.0, 3.0]), dtype=F64)
    for losses in ([9.0, 0.1, 5.0], [0.0, 7.0, 1.0]):  # constant within the epoch
        out = b(torch.tensor(losses, dtype=F64))
        torch.testing.assert_close(out.shared, expected)
        assert torch.equal(out.shared, out.task)
    assert out.shared.sum().item() == pytest.approx(3.0)


def test_on_epoch_end_rolls_the_statistics():
    b = DynamicWeightAverage(["a", "b"])
    _run_epoch(b, [[1.0, 2.0], [3.0, 4.0]], 1)
    assert b.epoch_means.tolist() == [[0.0, 0.0], [2.0, 3.0]]
    assert b.epoch_sum.tolist() == [0.0, 0.0]
    assert int(b.epoch_steps) == 0
    _run_epoch(b, [[1.0, 1.0]], 2)
    assert b.epoch_means.tolist() == [[2.0, 3.0], [1.0, 1.0]]
    _run_epoch(b, [[0.5, 2.0], [1.5, 2.0]], 3)
    assert b.epoch_means.tolist() == [[1.0, 1.0], [1.0, 2.0]]
    assert int(b.epochs_seen) == 3
    w = b(torch.tensor([1.0, 1.0], dtype=F64)).shared
    torch.testing.assert_close(w, torch.tensor(_dwa([1.0, 2.0], [1.0, 1.0]), dtype=F64))


def test_epoch_without_steps_changes_nothing():
    b = DynamicWeightAverage(["a", "b"])
    _run_epoch(b, [[1.0, 2.0]], 1)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    b.on_epoch_end(2)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_state_round_trip_in_the_middle_of_an_epoch():
    b = DynamicWeightAverage(["a", "b", "c"], temperature=1.5)
    gen = torch.Generator().manual_seed(3)
    epochs = [[torch.rand(3, generator=gen, dtype=F64) + 0.1 for _ in range(4)] for _ in range(4)]
    for e in (0, 1):
        _run_epoch(b, [x.tolist() for x in epochs[e]], e + 1)
    for x in epochs[2][:2]:
        b(x)
    fresh = DynamicWeightAverage(["a", "b", "c"], temperature=1.5)
    fresh.load_state_dict(b.state_dict())
    for model in (b, fresh):
        for x in epochs[2][2:]:
            model(x)
        model.on_epoch_end(3)
    for x in epochs[3]:
        assert torch.equal(fresh(x).shared, b(x).shared)
    means = [torch.stack(epochs[e]).mean(dim=0).tolist() for e in (1, 2)]
    torch.testing.assert_close(
        b(epochs[3][0]).shared, torch.tensor(_dwa(means[1], means[0], 1.5), dtype=F64)
    )


def test_window_variant_hand_computed():
    b = DynamicWeightAverage(["a", "b"], window=2)
    steps = [[1.0, 4.0], [3.0, 4.0], [1.0, 1.0], [1.0, 3.0], [2.0, 3.0]]
    weights = [b(torch.tensor(x, dtype=F64)).shared for x in steps]
    for w in weights[:3]:  # fewer than 2n = 4 steps seen
        assert torch.equal(w, torch.ones(2, dtype=F64))
    torch.testing.assert_close(weights[3], torch.tensor(_dwa([1.0, 2.0], [2.0, 4.0]), dtype=F64))
    torch.testing.assert_close(weights[4], torch.tensor(_dwa([1.5, 3.0], [2.0, 2.5]), dtype=F64))
    b.on_epoch_end(1)  # the window variant ignores epochs
    assert int(b.epochs_seen) == 0


def test_zero_mean_loss_stays_finite():
    b = DynamicWeightAverage(["a", "b"])
    for epoch in (1, 2):
        _run_epoch(b, [[0.0, 1.0]], epoch)
    w = b(torch.tensor([0.0, 1.0], dtype=F64)).shared
    torch.testing.assert_close(w, torch.tensor(_dwa([0.0, 1.0], [1.0, 1.0]), dtype=F64))


@settings(max_examples=30, deadline=None)
@given(
    means=st.lists(
        st.lists(st.floats(0.01, 100.0), min_size=4, max_size=4), min_size=2, max_size=2
    ),
    tau=st.floats(0.1, 10.0),
    perm_seed=st.integers(0, 1000),
)
def test_sum_positivity_and_permutation_equivariance(means, tau, perm_seed):
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(perm_seed))
    names = ["a", "b", "c", "d"]
    b = DynamicWeightAverage(names, temperature=tau)
    p = DynamicWeightAverage([names[i] for i in perm], temperature=tau)
    for epoch, m in enumerate(means, start=1):
        x = torch.tensor(m, dtype=F64)
        b(x), p(x[perm])
        b.on_epoch_end(epoch), p.on_epoch_end(epoch)
    x = torch.ones(4, dtype=F64)
    w, wp = b(x).shared, p(x).shared
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(4.0)
    torch.testing.assert_close(wp, w[perm])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", 0.0, r"'temperature' must be finite and > 0 \(got 0.0\)"),
        ("temperature", float("inf"), r"'temperature' must be finite and > 0"),
        ("window", -1, r"'window' must be an integer >= 0 \(0: epoch means\) \(got -1\)"),
    ],
)
def test_invalid_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        DynamicWeightAverageConfig(**{field: value})


def test_one_training_step_is_finite():
    tasks = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))
    torch.manual_seed(0)
    backbone = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=2))
    model = HardSharing(tasks, 3, backbone=backbone, head_channels=4, head_rates=(2,)).double()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 3, 16, 16, generator=gen, dtype=F64),
        "seg": torch.randint(0, 3, (2, 16, 16), generator=gen),
        "depth": torch.rand(2, 1, 16, 16, generator=gen, dtype=F64) + 0.5,
    }
    balancer = DynamicWeightAverage(["seg", "depth"])
    step = TrainStep(model, tasks, balancer)
    for epoch in (1, 2):
        step(batch)
        balancer.on_epoch_end(epoch)
    result = step(batch)
    assert torch.isfinite(result.weights.shared).all()
    assert result.weights.shared.sum().item() == pytest.approx(2.0)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch.testing.assert_close(balancer.epoch_sum, result.losses)
