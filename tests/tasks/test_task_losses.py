"""Task losses on hand-computed cases; masks; head-bias initialisation."""

import math

import pytest
import torch

from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    PartsTask,
    RegressionTask,
    SaliencyTask,
    SegmentationTask,
)


def test_segmentation_cross_entropy_ignores_pixels():
    task = SegmentationTask(name="seg", num_classes=2, ignore_index=255)
    # logits favour class 0 by log(3): p0 = 3/4, p1 = 1/4 at every pixel
    pred = torch.zeros(1, 2, 1, 3)
    pred[:, 0] = math.log(3)
    target = torch.tensor([[[0, 1, 255]]])
    expected = (-math.log(0.75) - math.log(0.25)) / 2  # the ignored pixel does not count
    assert task.loss(pred, target).item() == pytest.approx(expected)


def test_unlabelled_samples_do_not_count():
    task = DepthTask(name="depth")
    pred = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[1.0, 3.0]]], [[[100.0, 100.0]]]])
    assert task.loss(pred, target, torch.tensor([True, False])).item() == pytest.approx(2.0)


def test_loss_with_no_valid_element_is_zero_and_differentiable():
    task = DepthTask(name="depth")
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = task.loss(pred, torch.zeros(1, 1, 2, 2))  # every pixel invalid (0)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_depth_l1_over_valid_pixels():
    task = DepthTask(name="depth", invalid_value=0.0)
    pred = torch.tensor([[[[1.0, 2.0, 5.0]]]])
    target = torch.tensor([[[[2.0, 0.0, float("nan")]]]])
    assert task.loss(pred, target).item() == pytest.approx(1.0)


def test_normals_cosine_and_l1():
    target = torch.zeros(1, 3, 1, 2)
    target[0, 2] = 1.0  # both pixels face the camera
    target[0, :, 0, 1] = 0.0  # second pixel invalid (zero vector)
    pred = torch.zeros(1, 3, 1, 2)
    pred[0, 0, 0, 0] = 2.0  # perpendicular, unnormalised
    pred[0, 2, 0, 1] = 1.0
    assert NormalsTask(name="n").loss(pred, target).item() == pytest.approx(1.0)  # 1 - cos 90°
    # L1 of (1, 0, 0) - (0, 0, 1) averaged over 3 channels
    assert NormalsTask(name="n", loss_type="l1").loss(pred, target).item() == pytest.approx(2 / 3)


def test_normals_ignore_value():
    task = NormalsTask(name="n", ignore_value=255.0)
    target = torch.full((1, 3, 1, 1), 255.0)
    assert not task.valid_mask(target).any()


def test_edge_fixed_pos_weight():
    task = EdgeTask(name="edge", pos_weight=0.95)
    pred = torch.zeros(1, 1, 1, 2)  # p = 0.5 everywhere: BCE = log 2 per pixel
    target = torch.tensor([[[[1.0, 0.0]]]])
    expected = (0.95 * math.log(2) + 0.05 * math.log(2)) / 2
    assert task.loss(pred, target).item() == pytest.approx(expected)


def test_saliency_automatic_weights_balance_classes():
    task = SaliencyTask(name="sal")
    pred = torch.zeros(1, 1, 1, 4)
    target = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])  # 1/4 positive
    # positive weight 3/4, negatives 1/4 each: (3/4 + 3 * 1/4) * log 2 / 4
    assert task.loss(pred, target).item() == pytest.approx(1.5 * math.log(2) / 4)
    ignored = torch.tensor([[[[1.0, 0.0, 255.0, 255.0]]]])
    assert task.valid_mask(ignored).sum() == 2


def test_image_level_tasks():
    cls = ClassificationTask(name="count", num_classes=3)
    logits = torch.zeros(2, 3)
    assert cls.loss(logits, torch.tensor([1, -1])).item() == pytest.approx(math.log(3))
    multi = MultiLabelTask(name="attr", num_labels=2)
    assert multi.loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(
        math.log(2)
    )
    reg = RegressionTask(name="r", dims=2)
    assert reg.loss(torch.zeros(1, 2), torch.tensor([[1.0, -3.0]])).item() == pytest.approx(2.0)


def test_head_bias_from_dataset_statistics():
    assert DepthTask(name="d", mean=2.5).head_bias().tolist() == [2.5]
    assert DepthTask(name="d").head_bias() is None
    assert RegressionTask(name="r", dims=2, mean=(1.0, 2.0)).head_bias().tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "task",
    [
        SegmentationTask(name="s", num_classes=3),
        PartsTask(name="p", num_classes=7),
        DepthTask(name="d"),
        NormalsTask(name="n"),
        EdgeTask(name="e"),
        SaliencyTask(name="sal"),
        ClassificationTask(name="c", num_classes=4),
        MultiLabelTask(name="m", num_labels=5),
        RegressionTask(name="r"),
    ],
    ids=lambda t: t.kind,
)
def test_primary_metric_exists_with_a_direction(task):
    metric = task.metric()
    assert task.primary in metric.higher_is_better


def test_bad_declarations():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationTask(name="s", num_classes=0)
    with pytest.raises(ValueError, match="loss_type"):
        NormalsTask(name="n", loss_type="cos")
