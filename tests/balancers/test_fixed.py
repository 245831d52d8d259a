import pytest
import torch

from pymtl.balancers.fixed import FixedWeights, FixedWeightsConfig
from pymtl.testing import check_balancer


def test_conformance():
    check_balancer(FixedWeights)
    check_balancer(FixedWeights, config=FixedWeightsConfig(weights={"seg": 2.0}, default=0.5))


def test_survey_pascal_weights():
    tasks = ["semseg", "human_parts", "sal", "edge", "normals"]
    weights = {"semseg": 1, "human_parts": 2, "sal": 5, "edge": 50, "normals": 10}
    out = FixedWeights(tasks, weights=weights)(torch.ones(5))
    assert out.shared.tolist() == [1.0, 2.0, 5.0, 50.0, 10.0]
    assert torch.equal(out.shared, out.task)


def test_default_applies_to_unlisted_tasks():
    out = FixedWeights(["a", "b", "c"], weights={"b": 3.0}, default=0.25)(torch.ones(3))
    assert out.shared.tolist() == [0.25, 3.0, 0.25]


def test_weighted_gradient():
    theta = torch.tensor(1.5, requires_grad=True)
    losses = torch.stack([theta**2, theta])
    w = FixedWeights(["a", "b"], weights={"a": 0.5, "b": 4.0})(losses.detach()).shared
    (w * losses).sum().backward()
    assert theta.grad.item() == pytest.approx(0.5 * 2 * 1.5 + 4.0)


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match=r"unknown task\(s\) sge; expected a subset of seg, depth"):
        FixedWeights(["seg", "depth"], weights={"sge": 2.0})


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_weight_is_refused(bad):
    with pytest.raises(ValueError, match=r"weight 'seg' must be finite and >= 0"):
        FixedWeightsConfig(weights={"seg": bad})
    with pytest.raises(ValueError, match=r"weight 'default' must be finite and >= 0"):
        FixedWeightsConfig(default=bad)


def test_weights_are_in_state_dict():
    b = FixedWeights(["a", "b"], weights={"a": 7.0})
    assert b.state_dict()["lam"].tolist() == [7.0, 1.0]


def test_wrong_number_of_losses():
    with pytest.raises(
        ValueError, match=r"losses must have shape \(2,\) for tasks \('a', 'b'\), got \(3,\)"
    ):
        FixedWeights(["a", "b"])(torch.ones(3))
