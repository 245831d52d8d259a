import pytest
import torch
import torch.nn.functional as F

from pymtl.component import component_problems
from pymtl.distillation.bam import BAM, BAMConfig, pymtl_register_distillation_losses
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.errors import ConfigError
from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    EdgeTask,
    NormalsTask,
    RegressionTask,
    SegmentationTask,
)

SEG = SegmentationTask(name="seg", num_classes=3, ignore_index=255)
DEPTH = DepthTask(name="depth")


def outputs(**maps: torch.Tensor) -> Signals:
    return Signals(features={}, outputs=maps)


def seg_batch(B: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 3, (B, 4, 4))
    y[:, 0, 0] = 255  # ignored pixels
    return torch.randn(B, 3, 4, 4, dtype=torch.float64), torch.randn(B, 3, 4, 4), y


def soft_ce(zs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_pixel = -(target * F.log_softmax(zs, dim=1)).sum(dim=1)
    return per_pixel[mask].mean()


def test_component_and_registration():
    assert component_problems(BAM, DistillationLoss) == []
    assert pymtl_register_distillation_losses() == [BAM]
    assert BAM.teacher is TeacherKind.SINGLE_TASK
    assert BAM([SEG]).layers == ()


def test_end_of_annealing_is_exactly_zero():
    normals = NormalsTask(name="normals")
    edge = EdgeTask(name="edge")
    zs, _, y = seg_batch()
    n = F.normalize(torch.randn(2, 3, 4, 4), dim=1)
    n[:, :, 0, 0] = 0.0
    e = (torch.rand(2, 1, 4, 4) > 0.5).float()
    e[:, :, 1, 1] = 255.0
    d = torch.rand(2, 1, 4, 4) + 0.5
    d[:, :, 2, 2] = 0.0
    student = outputs(seg=zs, depth=torch.randn(2, 1, 4, 4), normals=torch.randn(2, 3, 4, 4))
    student.outputs["edge"] = torch.randn(2, 1, 4, 4)
    teacher = outputs(**{k: torch.randn_like(v) for k, v in student.outputs.items()})
    batch = {"seg": y, "depth": d, "normals": n, "edge": e}
    out = BAM([SEG, DEPTH, normals, edge])(student, teacher, batch, 1.0)
    assert torch.equal(out, torch.zeros(4, dtype=out.dtype))


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_total_is_cross_entropy_against_the_mixed_target(lam):
    zs, zt, y = seg_batch()
    zs.requires_grad_(True)
    out = BAM([SEG])(outputs(seg=zs), outputs(seg=zt), {"seg": y}, lam)
    valid = y != 255
    total = SEG.loss(zs, y) + out[0]
    onehot = F.one_hot(torch.where(valid, y, 0), 3).permute(0, 3, 1, 2)
    mixed = lam * onehot + (1 - lam) * torch.softmax(zt, dim=1)
    assert total.item() == pytest.approx(soft_ce(zs, mixed, valid).item(), rel=1e-6)
    if lam == 0.0:  # pure teacher target
        teacher_ce = soft_ce(zs, torch.softmax(zt, dim=1), valid)
        assert total.item() == pytest.approx(teacher_ce.item(), rel=1e-6)
    out.sum().backward()
    assert zs.grad[:, :, 0, 0].abs().max() == 0  # ignored pixels masked out


def test_ignored_pixels_take_the_teacher_target():
    zs, zt, y = seg_batch()
    out = BAM([SEG], ignored="teacher")(outputs(seg=zs), outputs(seg=zt), {"seg": y}, 1.0)
    valid = y != 255
    per_pixel = torch.where(
        valid,
        F.cross_entropy(zs, torch.where(valid, y, 0), reduction="none"),
        -(torch.softmax(zt, 1) * F.log_softmax(zs, 1)).sum(1),
    )
    assert (SEG.loss(zs, y) + out[0]).item() == pytest.approx(per_pixel.mean().item(), rel=1e-9)


def test_regression_mixing_hand_check():
    y = torch.tensor([2.0, 0.0, 4.0]).view(1, 1, 1, 3)  # the middle pixel is invalid
    student = outputs(depth=torch.full((1, 1, 1, 3), 3.0))
    teacher = outputs(depth=torch.tensor([1.0, 5.0, 2.0]).view(1, 1, 1, 3))
    # ỹ = (1.5, ·, 3); task L1 vs ỹ = (1.5 + 0) / 2; true L1 = (1 + 1) / 2
    for loss, progress in ((BAM([DEPTH]), 0.5), (BAM([DEPTH], anneal=False), 0.9)):
        assert loss(student, teacher, {"depth": y}, progress).item() == pytest.approx(-0.25)
    l2 = BAM([DEPTH], regression_loss="l2", teacher_weight=0.5, anneal=False)
    assert l2(student, teacher, {"depth": y}, 0.0).item() == pytest.approx(1.125 - 1.0)
    teach = BAM([DEPTH], ignored="teacher")(student, teacher, {"depth": y}, 0.5)
    assert teach.item() == pytest.approx((1.5 + 2.0 + 0.0) / 3 - 1.0)  # pixel 2 vs teacher's 5


def test_normals_cosine_is_linear_in_the_target():
    normals = NormalsTask(name="normals")
    g = F.normalize(torch.randn(2, 3, 4, 4, dtype=torch.float64), dim=1)
    g[0, :, 0, 0] = 0.0
    zs, zt = torch.randn_like(g), torch.randn_like(g)
    out = BAM([normals])(outputs(normals=zs), outputs(normals=zt), {"normals": g}, 0.25)
    teacher_target = normals.loss(
        zs, torch.where(g.norm(dim=1, keepdim=True) > 0, F.normalize(zt, dim=1), g)
    )
    expected = 0.75 * (teacher_target - normals.loss(zs, g))
    assert out.item() == pytest.approx(expected.item(), rel=1e-9)


def test_unlabelled_samples_do_not_count():
    zs, zt, y = seg_batch()
    batch = {"seg": y, "seg.mask": torch.tensor([True, False])}
    loss = BAM([SEG], ignored="teacher")
    a = loss(outputs(seg=zs), outputs(seg=zt), batch, 0.5)
    zs2, zt2 = zs.clone(), zt.clone()
    zs2[1], zt2[1] = 10 * torch.randn(3, 4, 4), 10 * torch.randn(3, 4, 4)
    b = loss(outputs(seg=zs2), outputs(seg=zt2), batch, 0.5)
    assert a.item() == pytest.approx(b.item(), rel=1e-9)


def test_image_level_tasks_and_weights(device):
    cls = ClassificationTask(name="cls", num_classes=4)
    reg = RegressionTask(name="count")
    zs = torch.randn(3, 4, device=device, requires_grad=True)
    zt = torch.randn(3, 4, device=device, requires_grad=True)
    rs, rt = torch.randn(3, 1, device=device), torch.randn(3, 1, device=device)
    batch = {
        "cls": torch.tensor([0, 3, -1], device=device),
        "count": torch.randn(3, 1, device=device),
    }
    loss = BAM([cls, reg], weights={"cls": 2.0})
    out = loss(outputs(cls=zs, count=rs), outputs(cls=zt, count=rt), batch, 0.0)
    valid = batch["cls"] >= 0
    expected = soft_ce(zs, torch.softmax(zt, 1), valid) - cls.loss(zs, batch["cls"])
    assert out[0].item() == pytest.approx(2 * expected.item(), rel=1e-5)
    assert out[1].item() == pytest.approx(
        (rs - rt).abs().mean().item() - reg.loss(rs, batch["count"]).item(), rel=1e-5
    )
    out.sum().backward()
    assert zs.grad is not None
    assert zt.grad is None


def test_errors():
    with pytest.raises(ValueError, match=r"progress must be in \[0, 1\] \(got 1.5\)"):
        BAM([SEG])(
            outputs(seg=torch.zeros(1, 3, 1, 1)), outputs(seg=torch.zeros(1, 3, 1, 1)), {}, 1.5
        )
    with pytest.raises(ValueError, match=r"'teacher_weight' must be finite and in \[0, 1\]"):
        BAMConfig(teacher_weight=1.5)
    with pytest.raises(ValueError, match=r"'ignored' must be in"):
        BAMConfig(ignored="drop")
    with pytest.raises(ConfigError, match=r"unknown task\(s\) depht"):
        BAM([SEG, DEPTH], weights={"depht": 1.0})
    s, t = outputs(seg=torch.zeros(1, 3, 2, 2)), outputs(seg=torch.zeros(1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"student \(1, 3, 2, 2\), teacher \(1, 3, 1, 1\)"):
        BAM([SEG])(s, t, {"seg": torch.zeros(1, 2, 2, dtype=torch.long)}, 0.5)
