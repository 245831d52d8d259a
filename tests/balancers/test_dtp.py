"""Dynamic task prioritisation: hand-computed focal weights, the KPI moving average and clamp,
both KPI sources, SPEC's batch KPIs per task kind, state round trip, one training step."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.architectures.hps import HardSharing
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.balancers.dtp import (
    DynamicTaskPrioritization,
    DynamicTaskPrioritizationConfig,
    batch_kpis,
    task_kpi,
)
from pymtl.config import BackboneSection
from pymtl.engine.step import TrainStep
from pymtl.errors import PymtlError
from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    MultiLabelTask,
    NormalsTask,
    RegressionTask,
    SaliencyTask,
    SegmentationTask,
)
from pymtl.testing import check_balancer

F64 = torch.float64


def _focal(k, gamma=1.0):
    return -((1 - k) ** gamma) * math.log(k)


def test_conformance():
    check_balancer(DynamicTaskPrioritization)
    check_balancer(
        DynamicTaskPrioritization,
        config=DynamicTaskPrioritizationConfig(gamma=2.0, gammas={"seg": 0.5}, smoothing=0.5),
    )


def test_hand_computed_focal_weights():
    b = DynamicTaskPrioritization(["a", "b", "c"], kpi="batch", gamma=2.0, gammas={"c": 0.0})
    b.observe_kpis(torch.tensor([0.2, 0.6, 0.95]))
    out = b(torch.ones(3, dtype=F64))
    expected = [_focal(0.2, 2.0), _focal(0.6, 2.0), _focal(0.95, 0.0)]
    torch.testing.assert_close(out.shared, torch.tensor(expected, dtype=F64))
    assert torch.equal(out.shared, out.task)


def test_moving_average_nan_and_unmeasured_tasks():
    b = DynamicTaskPrioritization(["a", "b", "c"], kpi="batch", smoothing=0.9)
    b.observe_kpis(torch.tensor([0.5, math.nan, math.nan]))  # the first KPI is taken as is
    w = b(torch.ones(3, dtype=F64)).shared
    torch.testing.assert_close(w, torch.tensor([_focal(0.5), 1.0, 1.0], dtype=F64))
    b.observe_kpis(torch.tensor([0.8, 0.3, math.nan]))
    w = b(torch.ones(3, dtype=F64)).shared
    kbar = 0.9 * 0.8 + 0.1 * 0.5
    torch.testing.assert_close(w, torch.tensor([_focal(kbar), _focal(0.3), 1.0], dtype=F64))
    assert b.measured.tolist() == [True, True, False]


def test_kpis_are_clamped():
    b = DynamicTaskPrioritization(["a", "b"], kpi="batch", eps=0.01)
    b.observe_kpis(torch.tensor([0.0, 1.0]))
    w = b(torch.ones(2, dtype=F64)).shared
    torch.testing.assert_close(w, torch.tensor([_focal(0.01), _focal(0.99)], dtype=F64))
    assert torch.isfinite(w).all()


def test_loss_kpi_is_exp_of_minus_loss_and_smoothed():
    b = DynamicTaskPrioritization(["a", "b"], smoothing=0.9)
    w1 = b(torch.tensor([0.5, 2.0], dtype=F64)).shared
    k1 = [math.exp(-0.5), math.exp(-2.0)]
    torch.testing.assert_close(w1, torch.tensor([_focal(k) for k in k1], dtype=F64))
    w2 = b(torch.tensor([1.0, 0.1], dtype=F64)).shared
    k2 = [0.9 * math.exp(-1.0) + 0.1 * k1[0], 0.9 * math.exp(-0.1) + 0.1 * k1[1]]
    torch.testing.assert_close(w2, torch.tensor([_focal(k) for k in k2], dtype=F64))


def test_batch_kpi_must_be_given_every_step():
    b = DynamicTaskPrioritization(["a", "b"], kpi="batch")
    with pytest.raises(PymtlError, match=r"kpi='batch': no KPIs were given for this step"):
        b(torch.ones(2))
    b.observe_kpis(torch.tensor([0.5, 0.5]))
    b(torch.ones(2))
    with pytest.raises(PymtlError, match=r"observe_kpis\(batch_kpis\(tasks, outputs, batch\)\)"):
        b(torch.ones(2))
    with pytest.raises(ValueError, match=r"KPIs must have shape \(2,\) for tasks \('a', 'b'\)"):
        b.observe_kpis(torch.ones(3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kpi": "metric"}, r"'kpi' must be in \('loss', 'batch'\)"),
        ({"gamma": -1.0}, r"'gamma' must be finite and >= 0 \(got -1.0\)"),
        ({"gammas": {"seg": float("nan")}}, r"gammas\['seg'\] must be finite and >= 0"),
        ({"smoothing": 0.0}, r"'smoothing' must be in \(0, 1\] \(got 0.0\)"),
        ({"eps": 0.5}, r"'eps' must be in \(0, 0.5\) \(got 0.5\)"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        DynamicTaskPrioritizationConfig(**options)


def test_gammas_for_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match=r"unknown task\(s\) sge; expected a subset of seg, depth"):
        DynamicTaskPrioritization(["seg", "depth"], gammas={"sge": 2.0})


def test_state_round_trip():
    b = DynamicTaskPrioritization(["a", "b", "c"])
    b(torch.tensor([0.3, 1.0, 3.0]))
    fresh = DynamicTaskPrioritization(["a", "b", "c"])
    fresh.load_state_dict(b.state_dict())
    x = torch.tensor([0.2, 0.4, 0.6])
    assert torch.equal(fresh(x).shared, b(x).shared)
    assert set(b.state_dict()) == {"kpi_ema", "measured"}


@settings(max_examples=40, deadline=None)
@given(
    k=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2),
    gamma=st.floats(0.0, 5.0),
)
def test_worse_kpi_gets_no_smaller_weight(k, gamma):
    b = DynamicTaskPrioritization(["a", "b"], kpi="batch", gamma=gamma)
    b.observe_kpis(torch.tensor(k, dtype=F64))
    w = b(torch.ones(2, dtype=F64)).shared
    assert (w > 0).all()
    lo, hi = (0, 1) if k[0] <= k[1] else (1, 0)
    assert w[lo] >= w[hi]


# --- SPEC's batch KPIs ---------------------------------------------------------------------------


def test_segmentation_pixel_accuracy_ignores_void_and_unlabelled():
    task = SegmentationTask(name="seg", num_classes=2)
    pred = torch.zeros(2, 2, 1, 3)
    pred[:, 1, 0, :2] = 1.0  # predicted classes per image: [1, 1, 0]
    target = torch.tensor([[[1, 0, -1]], [[0, 0, 0]]])
    assert task_kpi(task, pred, target).item() == pytest.approx(2 / 5)  # 1 of 2 + 1 of 3
    assert task_kpi(task, pred, target, torch.tensor([True, False])).item() == pytest.approx(1 / 2)
    assert math.isnan(task_kpi(task, pred, target, torch.tensor([False, False])).item())


def test_depth_delta1():
    task = DepthTask(name="depth")
    target = torch.tensor([1.0, 2.0, 4.0, 0.0, 1.0]).view(1, 1, 1, 5)  # 0 is invalid
    pred = torch.tensor([1.2, 2.6, 3.3, 9.0, -1.0]).view(1, 1, 1, 5)
    # ratios 1.2 ✓, 1.3 ✗, 1.21 ✓, (invalid), negative prediction ✗
    assert task_kpi(task, pred, target).item() == pytest.approx(2 / 4)


def test_normals_within_22_5_degrees():
    task = NormalsTask(name="normals")
    angles = torch.tensor([0.0, 20.0, 25.0, 90.0])
    rad = torch.deg2rad(angles)
    pred = torch.stack([torch.cos(rad), torch.sin(rad), torch.zeros(4)]).mul(3.0).view(1, 3, 1, 4)
    target = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 1, 4).clone()
    target[..., 3] = 0.0  # no label
    assert task_kpi(task, pred, target).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("cls", [EdgeTask, SaliencyTask])
def test_binary_f1_at_half(cls):
    task = cls(name="b")
    pred = torch.tensor([2.0, 1.0, -1.0, 3.0, -2.0, 5.0]).view(1, 1, 1, 6)  # logits
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 255.0]).view(1, 1, 1, 6)  # 255: ignored
    # TP 2, FP 1, FN 1 → F1 = 4 / 6
    assert task_kpi(task, pred, target).item() == pytest.approx(4 / 6)
    empty = torch.zeros(1, 1, 1, 6)
    assert task_kpi(task, -torch.ones(1, 1, 1, 6), empty).item() == 1.0  # nothing to find


def test_image_level_accuracy():
    cls = ClassificationTask(name="cls", num_classes=3)
    pred = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert task_kpi(cls, pred, torch.tensor([1, 1, -1])).item() == pytest.approx(1 / 2)
    ml = MultiLabelTask(name="attr", num_labels=2)
    target = torch.tensor([[1.0, 0.0], [math.nan, 1.0]])
    assert task_kpi(ml, torch.tensor([[1.0, 1.0], [0.0, -1.0]]), target).item() == pytest.approx(
        1 / 3
    )


def test_regression_has_no_batch_kpi():
    with pytest.raises(ValueError, match=r"no batch KPI for task 'count' of kind 'regression'"):
        task_kpi(RegressionTask(name="count"), torch.zeros(2, 1), torch.zeros(2, 1))


def test_batch_kpis_in_task_order():
    tasks = (ClassificationTask(name="cls", num_classes=2), DepthTask(name="depth"))
    outputs = {"cls": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "depth": torch.ones(2, 1, 1, 1)}
    batch = {"cls": torch.tensor([0, 1]), "depth": torch.ones(2, 1, 1, 1)}
    batch["depth.mask"] = torch.tensor([False, False])
    kpis = batch_kpis(tasks, outputs, batch)
    assert kpis.dtype == F64
    assert kpis[0].item() == 0.5
    assert math.isnan(kpis[1].item())


# --- the training step ---------------------------------------------------------------------------


def _model_and_batch():
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
    return tasks, model, batch


def test_one_training_step_with_loss_kpis():
    tasks, model, batch = _model_and_batch()
    balancer = DynamicTaskPrioritization(["seg", "depth"])
    result = TrainStep(model, tasks, balancer)(batch)
    expected = [_focal(math.exp(-L)) for L in result.losses.tolist()]
    torch.testing.assert_close(result.weights.shared, torch.tensor(expected, dtype=F64))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)


def test_one_training_step_with_batch_kpis_given_by_the_caller():
    tasks, model, batch = _model_and_batch()
    balancer = DynamicTaskPrioritization(["seg", "depth"], kpi="batch")
    with torch.no_grad():
        kpis = batch_kpis(tasks, model(batch["image"]), batch)
    balancer.observe_kpis(kpis)
    result = TrainStep(model, tasks, balancer)(batch)
    k = kpis.clamp(0.01, 0.99)
    torch.testing.assert_close(result.weights.shared, -(1 - k) * k.log())
