import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymtl.component import component_problems
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.distillation.kdam import (
    KDAM,
    KDAMConfig,
    cs_divergence,
    pymtl_register_distillation_losses,
)
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, DepthTask, MultiLabelTask, SegmentationTask

LN3 = math.log(3.0)
SEG, DEPTH = SegmentationTask(name="seg", num_classes=2), DepthTask(name="depth")

entries = st.one_of(st.just(0.0), st.floats(1e-6, 1e3))
vectors = st.lists(entries, min_size=1, max_size=12)


def t64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def outputs(**maps: torch.Tensor) -> Signals:
    return Signals(features={}, outputs=maps)


def test_component_and_registration():
    assert component_problems(KDAM, DistillationLoss) == []
    assert pymtl_register_distillation_losses() == [KDAM]
    assert KDAM.teacher is TeacherKind.MULTI_TASK
    assert KDAM([SEG]).layers == ()
    assert "reconstructed" in KDAM.__doc__
    assert "not numerically faithful" in KDAM.__doc__


def test_cs_hand_value():
    assert cs_divergence(t64(1, 0), t64(1, 1)).item() == pytest.approx(0.5 * math.log(2), rel=1e-12)
    assert cs_divergence(t64(1, 2, 3), t64(2, 4, 6)).item() == 0.0


@settings(max_examples=60, deadline=None)
@given(p=vectors, q=vectors, c=st.floats(1e-3, 1e3))
def test_cs_properties(p, q, c):
    n = min(len(p), len(q))
    p, q = t64(*p[:n]), t64(*q[:n])
    d = cs_divergence(p, q)
    assert d.item() >= 0.0
    assert torch.equal(d, cs_divergence(q, p))  # symmetric, exactly
    assert cs_divergence(p, c * q).item() == pytest.approx(d.item(), rel=1e-9, abs=1e-12)
    assert cs_divergence(p, c * p).item() == pytest.approx(0.0, abs=1e-12)
    if p.dot(q) > 0:  # the exact value, −log cos
        cos = p.dot(q).item() / math.sqrt(p.dot(p).item() * q.dot(q).item())
        assert d.item() == pytest.approx(max(0.0, -math.log(cos)), abs=1e-9)


def test_cs_zero_only_for_proportional():
    assert cs_divergence(t64(1, 2), t64(1, 2.001)).item() > 0
    assert cs_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() > 20  # finite
    assert math.isfinite(cs_divergence(torch.zeros(3), torch.ones(3)).item())


def test_cs_dim_and_float32_precision():
    p, q = torch.rand(4, 5), torch.rand(4, 5)
    assert torch.allclose(cs_divergence(p, q, dim=0), cs_divergence(p.T, q.T, dim=1))
    assert cs_divergence(p, 7.0 * p).abs().max().item() < 1e-6
    tiny = torch.tensor([1e-30, 2e-30, 3e-30])
    assert cs_divergence(tiny, 2 * tiny).item() < 1e-6  # no underflow of the squares


def toy(depth_student=(0.0, 0.0), seg_teacher_pixel=(0.0, LN3)):
    """B=1, H=1, W=2: seg (K=2), depth; student probabilities all ½."""
    zs_seg = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    zt_seg = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    zt_seg[0, :, 0, 0] = t64(*seg_teacher_pixel)  # pixel 0: (¼, ¾); pixel 1: (½, ½)
    zs_depth = t64(*depth_student).view(1, 1, 1, 2)
    zt_depth = t64(0.0, LN3).view(1, 1, 1, 2)  # spatial softmax: (¼, ¾)
    return outputs(seg=zs_seg, depth=zs_depth), outputs(seg=zt_seg, depth=zt_depth)


# hand values of the toy (see the module docstring of pymtl.distillation.kdam):
INTRA_SEG = 0.25 * (math.log(10 / 9) + math.log(26 / 25))  # classes 0 and 1
INTRA_DEPTH = 0.5 * math.log(5 / 4)
INTER = 0.5 * math.log(19 / 16)  # v_S·v_T = ½, |v_S|² = ½, |v_T|² = 38/64


def test_two_task_toy_hand_values():
    student, teacher = toy()
    out = KDAM([SEG, DEPTH])(student, teacher, {}, 0.0)
    expected = [INTRA_SEG + INTER / 2, INTRA_DEPTH + INTER / 2]
    assert out.tolist() == pytest.approx(expected, rel=1e-12)


def test_weights_and_lambdas_and_exact_split():
    student, teacher = toy()
    loss = KDAM([SEG, DEPTH], weights={"seg": 2.0}, lambda_intra=0.5, lambda_inter=3.0)
    out = loss(student, teacher, {}, 0.0)
    assert out.tolist() == pytest.approx(
        [INTRA_SEG + 1.5 * INTER, 0.5 * INTRA_DEPTH + 1.5 * INTER], rel=1e-12
    )
    inter_only = KDAM([SEG, DEPTH], lambda_intra=0.0, lambda_inter=3.0)(student, teacher, {}, 0.0)
    assert inter_only[0] == inter_only[1]
    assert inter_only.sum().item() == 3.0 * cs_divergence(*_v(student, teacher)).item()


def _v(student: Signals, teacher: Signals) -> tuple[torch.Tensor, torch.Tensor]:
    def v(s: Signals) -> torch.Tensor:
        seg = torch.softmax(s.outputs["seg"], 1).flatten() / 2
        depth = torch.softmax(s.outputs["depth"].flatten(), 0) / math.sqrt(2)
        return torch.cat([seg, depth])

    return v(student), v(teacher)


def test_inter_term_is_averaged_over_the_batch():
    (s1, t1), (s2, _) = toy(), toy(depth_student=(1.0, 2.0))
    cat = {k: torch.cat([s1.outputs[k], s2.outputs[k]]) for k in ("seg", "depth")}
    teach = {"seg": torch.cat([t1.outputs["seg"], s2.outputs["seg"]])}
    teach["depth"] = torch.cat([t1.outputs["depth"], s2.outputs["depth"]])  # sample 2: S = T
    out = KDAM([SEG, DEPTH], lambda_intra=0.0)(outputs(**cat), outputs(**teach), {}, 0.0)
    assert out.sum().item() == pytest.approx(INTER / 2, rel=1e-12)


def test_temperature_divides_the_logits():
    student, teacher = toy()
    scaled = [outputs(**{k: 2 * v for k, v in s.outputs.items()}) for s in (student, teacher)]
    a = KDAM([SEG, DEPTH], tau=2.0)(*scaled, {}, 0.0)
    assert torch.allclose(a, KDAM([SEG, DEPTH])(student, teacher, {}, 0.0), rtol=1e-12)


def test_image_level_tasks():
    cls, ml = ClassificationTask(name="cls", num_classes=3), MultiLabelTask(name="ml", num_labels=2)
    zs, zt = torch.randn(4, 3), torch.randn(4, 3)
    student = outputs(cls=zs, ml=torch.randn(4, 2))
    teacher = outputs(cls=zt, ml=torch.randn(4, 2))
    out = KDAM([cls, ml])(student, teacher, {}, 0.0)
    ps, pt = torch.softmax(zs, 1), torch.softmax(zt, 1)
    intra = cs_divergence(ps.T, pt.T).mean()  # class k over the batch
    inter = cs_divergence(ps, pt).mean()  # the multi-label task has no term
    assert torch.allclose(out, torch.stack([intra + inter / 2, inter / 2]))
    with pytest.raises(ConfigError, match=r"none of the tasks ml has class probabilities"):
        KDAM([ml])


def test_gradients_and_detached_teacher(device):
    zs = torch.randn(2, 2, 3, 3, device=device, requires_grad=True)
    zt = torch.randn(2, 2, 3, 3, device=device, requires_grad=True)
    ds, dt = (torch.randn(2, 1, 3, 3, device=device, requires_grad=True) for _ in range(2))
    out = KDAM([SEG, DEPTH])(outputs(seg=zs, depth=ds), outputs(seg=zt, depth=dt), {}, 0.0)
    out.sum().backward()
    assert zs.grad is not None
    assert ds.grad is not None
    assert zs.grad.abs().sum() > 0
    assert zt.grad is None
    assert dt.grad is None


def test_errors():
    with pytest.raises(ConfigError, match=r"unknown task\(s\) normals"):
        KDAM([SEG], weights={"normals": 1.0})
    with pytest.raises(ValueError, match=r"'tau' must be finite and in \(0, inf\]"):
        KDAMConfig(tau=0.0)
    s, t = outputs(seg=torch.randn(1, 2, 4, 4)), outputs(seg=torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"output of task 'seg': student \(1, 2, 4, 4\), teacher"):
        KDAM([SEG])(s, t, {}, 0.0)
