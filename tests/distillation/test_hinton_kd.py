import math

import pytest
import torch
import torch.nn.functional as F

from pymtl.component import component_problems
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.distillation.hinton_kd import (
    HintonKD,
    HintonKDConfig,
    pymtl_register_distillation_losses,
    soft_kl,
)
from pymtl.errors import ConfigError
from pymtl.tasks import (
    ClassificationTask,
    DenseRegressionTask,
    DepthTask,
    EdgeTask,
    NormalsTask,
    SegmentationTask,
)

LN3 = math.log(3.0)
CLS = ClassificationTask(name="cls", num_classes=2)
SEG = SegmentationTask(name="seg", num_classes=3)


def outputs(**maps: torch.Tensor) -> Signals:
    return Signals(features={}, outputs=maps)


def test_component_and_registration():
    assert component_problems(HintonKD, DistillationLoss) == []
    assert pymtl_register_distillation_losses() == [HintonKD]
    assert HintonKD.teacher is TeacherKind.SINGLE_TASK
    assert HintonKD([CLS]).layers == ()
    loss = HintonKD([CLS])
    assert (loss.tau, loss.alpha) == (4.0, 0.9)


def test_soft_kl_hand_value():
    # τ = 2: teacher (0, 2 ln 3)/τ -> p_T = (¼, ¾); student 0 -> (½, ½)
    zt = torch.tensor([[0.0, 2 * LN3]], dtype=torch.float64)
    zs = torch.zeros(1, 2, dtype=torch.float64)
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert soft_kl(zs, zt, 2.0).item() == pytest.approx(4 * kl, rel=1e-12)  # = ln(27/16)
    assert 4 * kl == pytest.approx(math.log(27 / 16), rel=1e-12)


def test_additive_term_hand_value():
    zt = torch.tensor([[0.0, 2 * LN3]], dtype=torch.float64)
    zs = torch.zeros(1, 2, dtype=torch.float64)
    batch = {"cls": torch.tensor([1])}
    out = HintonKD([CLS], tau=2.0, alpha=1.0)(outputs(cls=zs), outputs(cls=zt), batch, 0.0)
    assert out.item() == pytest.approx(math.log(27 / 16) - math.log(2), rel=1e-12)


def test_total_is_the_hinton_mix():
    zs, zt = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))
    out = HintonKD([CLS], weights={"cls": 1.0})(outputs(cls=zs), outputs(cls=zt), {"cls": y}, 0.3)
    ce = F.cross_entropy(zs, y)
    kd = 16 * F.kl_div(
        F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1), reduction="batchmean"
    )  # τ² · KL averaged per sample
    total = ce + out[0]
    assert total.item() == pytest.approx((0.1 * ce + 0.9 * kd).item(), rel=1e-10)


def test_ignored_pixels_and_unlabelled_samples_are_excluded():
    zs, zt = (
        torch.randn(2, 3, 2, 2, dtype=torch.float64),
        torch.randn(2, 3, 2, 2, dtype=torch.float64),
    )
    y = torch.randint(0, 3, (2, 2, 2))
    y[0, 0, 0] = -1
    batch = {"seg": y, "seg.mask": torch.tensor([True, False])}
    zs.requires_grad_(True)
    out = HintonKD([SEG], alpha=0.5)(outputs(seg=zs), outputs(seg=zt), batch, 0.0)
    valid = (y != -1) & torch.tensor([True, False]).view(2, 1, 1)
    kd = soft_kl(zs, zt, 4.0)[valid].mean()
    ce = F.cross_entropy(zs, torch.where(y >= 0, y, 0), reduction="none")[valid].mean()
    assert out.item() == pytest.approx((0.5 * kd - 0.5 * ce).item(), rel=1e-10)
    out.backward()
    assert zs.grad[0, :, 0, 0].abs().max() == 0
    assert zs.grad[1].abs().max() == 0


def test_binary_task_is_two_class(device):
    edge = EdgeTask(name="edge", pos_weight=0.5)
    zs = torch.tensor([0.0, 1.0], device=device).view(1, 1, 1, 2)
    zt = torch.tensor([LN3, 1.0], device=device).view(1, 1, 1, 2)
    y = torch.tensor([1.0, 255.0], device=device).view(1, 1, 1, 2)  # pixel 1 ignored
    out = HintonKD([edge], tau=1.0, alpha=1.0)(outputs(edge=zs), outputs(edge=zt), {"edge": y}, 0.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # Bernoulli(¾) ‖ Bernoulli(½)
    bce = 0.5 * math.log(2.0)  # weight ½ on the positive pixel, p = ½
    assert out.item() == pytest.approx(kl - bce, rel=1e-6)


def test_regression_is_refused_by_default():
    with pytest.raises(ConfigError, match=r"task 'depth' is a 'depth' task \(regression\)") as err:
        HintonKD([CLS, DepthTask(name="depth")])
    assert 'regression = "l2"' in str(err.value)


def test_regression_l2_fallback():
    depth = DepthTask(name="depth")
    y = torch.tensor([2.0, 0.0, 4.0]).view(1, 1, 1, 3)  # middle pixel invalid
    zs = torch.full((1, 1, 1, 3), 3.0)
    zt = torch.tensor([1.0, 9.0, 2.0]).view(1, 1, 1, 3)
    loss = HintonKD([depth], regression="l2", alpha=0.5)
    out = loss(outputs(depth=zs), outputs(depth=zt), {"depth": y}, 0.0)
    assert out.item() == pytest.approx(0.5 * (4 + 1) / 2 - 0.5 * 1.0)
    normals = NormalsTask(name="normals")
    n = F.normalize(torch.randn(1, 3, 2, 2), dim=1)
    out = HintonKD([normals], regression="l2", alpha=1.0)(
        outputs(normals=n), outputs(normals=2 * n), {"normals": n}, 0.0
    )
    assert out.item() == pytest.approx(-normals.loss(n, n).item(), abs=1e-6)  # unit vectors: KD 0
    nan_target = torch.tensor([float("nan"), 1.0]).view(1, 1, 1, 2)
    dense = HintonKD([DenseRegressionTask(name="kp")], regression="l2")
    val = dense(
        outputs(kp=torch.zeros(1, 1, 1, 2)),
        outputs(kp=torch.ones(1, 1, 1, 2)),
        {"kp": nan_target},
        0.0,
    )
    assert val.item() == pytest.approx(0.9 * 1.0 - 0.9 * 1.0)


def test_teacher_is_detached():
    zs = torch.randn(2, 3, 2, 2, requires_grad=True)
    zt = torch.randn(2, 3, 2, 2, requires_grad=True)
    y = torch.randint(0, 3, (2, 2, 2))
    HintonKD([SEG])(outputs(seg=zs), outputs(seg=zt), {"seg": y}, 0.0).sum().backward()
    assert zs.grad is not None
    assert zt.grad is None


def test_config_checks():
    with pytest.raises(ValueError, match=r"'alpha' must be finite and in \[0, 1\]"):
        HintonKDConfig(alpha=1.1)
    with pytest.raises(ValueError, match=r"'tau' must be finite and in \(0, inf\]"):
        HintonKDConfig(tau=-1.0)
    with pytest.raises(ConfigError, match=r"unknown task\(s\) x"):
        HintonKD([CLS], weights={"x": 1.0})
    loss = HintonKD.from_config(HintonKDConfig(tau=2.0, weights={"cls": 0.5}), tasks=[CLS])
    assert isinstance(loss, HintonKD)
    assert loss.lam == (0.5,)
