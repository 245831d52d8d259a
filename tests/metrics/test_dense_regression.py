import math

import pytest
import torch

from pymtl.metrics.dense_regression import DenseRegressionMetric
from pymtl.tasks.dense_regression import DenseRegressionTask

NAN = float("nan")


def _batch():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    target = torch.tensor([[[[2.0, NAN], [0.0, 4.0]]], [[[1.0, -1.0], [NAN, float("inf")]]]])
    return pred, target  # errors on valid pixels: -1, 3, 0 | -1, 1


def test_metric_values():
    m = DenseRegressionMetric()
    m.update(*_batch())
    out = m.compute()
    assert out["mae"] == pytest.approx((1 + 3 + 0 + 1 + 1) / 5)
    assert out["rmse"] == pytest.approx(math.sqrt((1 + 9 + 0 + 1 + 1) / 5))
    assert set(out) == set(DenseRegressionMetric.higher_is_better)
    assert not any(DenseRegressionMetric.higher_is_better.values())


def test_metric_pools_pixels_not_batches():
    pred, target = _batch()
    whole, split = DenseRegressionMetric(), DenseRegressionMetric()
    whole.update(pred, target)
    split.update(pred[1:], target[1:])
    split.update(pred[:1], target[:1])
    assert split.compute() == pytest.approx(whole.compute(), rel=1e-12)
    per_batch_mean = (4 / 3 + 2 / 2) / 2  # what averaging per-batch means would give
    assert whole.compute()["mae"] != pytest.approx(per_batch_mean)


def test_metric_labelled_reset_and_empty():
    m = DenseRegressionMetric()
    assert math.isnan(m.compute()["mae"])
    m.update(*_batch(), labelled=torch.tensor([False, True]))
    assert m.compute() == pytest.approx({"mae": 1.0, "rmse": 1.0})
    m.reset()
    assert math.isnan(m.compute()["rmse"])


def test_metric_rejects_bad_shapes():
    m = DenseRegressionMetric()
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 2, 2\) and \(1, 1, 2, 3\)"):
        m.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match=r"labelled must have shape \(1,\), got \(2,\)"):
        m.update(
            torch.zeros(1, 1, 2, 2),
            torch.zeros(1, 1, 2, 2),
            labelled=torch.ones(2, dtype=torch.bool),
        )


def test_task_loss_ignores_invalid_pixels_with_finite_gradient():
    task = DenseRegressionTask(name="keypoints2d")
    pred, target = _batch()
    pred.requires_grad_()
    loss = task.loss(pred, target)
    assert loss.item() == pytest.approx(6 / 5)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[0, 0, 0, 1] == 0  # NaN target: no gradient
    labelled = task.loss(pred, target, labelled=torch.tensor([True, False]))
    assert labelled.item() == pytest.approx(4 / 3)


def test_task_declaration():
    task = DenseRegressionTask(name="edges", dims=2, mean=(0.5, -1.0))
    assert (task.kind, task.channels, task.primary, task.dense) == (
        "dense_regression",
        2,
        "mae",
        True,
    )
    assert task.head_bias().tolist() == [0.5, -1.0]
    assert DenseRegressionTask(name="e").head_bias() is None
    assert isinstance(task.metric(), DenseRegressionMetric)
    assert task.primary in task.metric().compute()
    with pytest.raises(ValueError, match=r"task 'e': mean must have one value per channel \(1\)"):
        DenseRegressionTask(name="e", mean=(0.0, 1.0))
