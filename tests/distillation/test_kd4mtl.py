import math

import pytest
import torch

from pymtl.component import component_problems
from pymtl.distillation.base import DistillationLoss, Signals, TeacherKind
from pymtl.distillation.kd4mtl import (
    KD4MTL,
    KD4MTLConfig,
    feature_distance,
    pymtl_register_distillation_losses,
)
from pymtl.errors import ConfigError, PymtlError
from pymtl.tasks import DepthTask, SegmentationTask

EPS = 1e-6
TASKS = [SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth")]


def signals(feats: dict[str, list[torch.Tensor]]) -> Signals:
    return Signals(features=feats, outputs={})


def shared(*maps: torch.Tensor) -> Signals:
    """A multi-task student: every task maps to the same feature tensors."""
    return signals({t.name: list(maps) for t in TASKS})


def test_component_and_registration():
    assert component_problems(KD4MTL, DistillationLoss) == []
    assert pymtl_register_distillation_losses() == [KD4MTL]
    assert KD4MTL.teacher is TeacherKind.SINGLE_TASK
    assert KD4MTL(TASKS, channels=(4,)).layers == ("last",)
    assert KD4MTL(TASKS, layers="mid+last", adaptor="none").layers == ("mid", "last")


def test_distance_hand_pair_both_normalisations():
    a = torch.tensor([3.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)
    b = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    na, nb = math.sqrt(25 + EPS), math.sqrt(1 + EPS)
    expected = (3 / na - 1 / nb) ** 2 + (4 / na) ** 2  # ≈ 0.8
    for normalize in ("per_pixel", "per_map"):  # one position: the same
        assert feature_distance(a, b, normalize).item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.8, abs=1e-5)


def test_distance_per_map_differs_from_per_pixel():
    a = torch.tensor([3.0, 4.0], dtype=torch.float64).view(1, 1, 1, 2)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64).view(1, 1, 1, 2)
    pix = ((3 / math.sqrt(9 + EPS) - 1 / math.sqrt(1 + EPS)) ** 2) / 2
    pix += ((4 / math.sqrt(16 + EPS) - 1 / math.sqrt(1 + EPS)) ** 2) / 2
    na, nb = math.sqrt(25 + EPS), math.sqrt(2 + EPS)
    whole = ((3 / na - 1 / nb) ** 2 + (4 / na - 1 / nb) ** 2) / 2
    assert feature_distance(a, b, "per_pixel").item() == pytest.approx(pix, rel=1e-12)
    assert feature_distance(a, b, "per_map").item() == pytest.approx(whole, rel=1e-12)
    with pytest.raises(ValueError, match="per_pixel"):
        feature_distance(a, b, "per_channel")


@pytest.mark.parametrize("layers", ["last", "mid+last"])
def test_identity_adaptor_identical_features_give_zero(layers):
    loss = KD4MTL(TASKS, adaptor="none", layers=layers)
    maps = [torch.randn(2, 4, 3, 3) for _ in loss.layers]
    out = loss(shared(*maps), shared(*[m.clone() for m in maps]), {}, 0.0)
    assert torch.equal(out, torch.zeros(2))
    assert loss.optimizer_groups() == []


def test_linear_adaptor_is_applied_per_task(device):
    loss = KD4MTL(TASKS, channels=(2,), weights={"depth": 3.0}).to(device)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(2, 2, 1, 1)
    with torch.no_grad():
        loss.adaptors[0][0].weight.copy_(swap)  # seg: swaps the two channels
        loss.adaptors[1][0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))  # depth: identity
    z = torch.randn(2, 2, 3, 3, device=device)
    t = torch.randn(2, 2, 3, 3, device=device)
    out = loss(shared(z), signals({"seg": [t], "depth": [t]}), {}, 0.0)
    assert out[0].item() == pytest.approx(feature_distance(z.flip(1), t).item(), rel=1e-5)
    assert out[1].item() == pytest.approx(3 * feature_distance(z, t).item(), rel=1e-5)


def test_gradients_reach_adaptors_and_student_never_teacher():
    loss = KD4MTL(TASKS, adaptor="nonlinear", layers="mid+last", channels=(3, 2))
    mid, last = (
        torch.randn(2, 3, 2, 2, requires_grad=True),
        torch.randn(2, 2, 4, 4, requires_grad=True),
    )
    frozen = [torch.randn(2, 3, 2, 2), torch.randn(2, 2, 4, 4)]
    leaky = [
        torch.randn(2, 3, 2, 2, requires_grad=True),
        torch.randn(2, 2, 4, 4, requires_grad=True),
    ]
    before = [f.clone() for f in frozen]
    out = loss(shared(mid, last), signals({"seg": frozen, "depth": leaky}), {}, 0.0)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert mid.grad is not None
    assert last.grad is not None
    assert all(t.grad is None for t in leaky)  # detached by the loss
    for t, b in zip(frozen, before, strict=True):
        assert not t.requires_grad
        assert torch.equal(t, b)


def test_optimizer_groups():
    loss = KD4MTL(TASKS, layers="mid+last", channels=(8, 4))
    (group,) = loss.optimizer_groups()
    assert group["lr"] == 0.1
    assert group["weight_decay"] == 5e-4
    assert {id(p) for p in group["params"]} == {id(p) for p in loss.parameters()}
    assert len(group["params"]) == 4  # 2 tasks × 2 layers, one bias-free conv each
    other = KD4MTL(TASKS, adaptor="nonlinear", adaptor_lr=0.01, adaptor_weight_decay=0.0)
    other.build_adaptors([8])
    (group,) = other.optimizer_groups()
    assert (group["lr"], group["weight_decay"], len(group["params"])) == (0.01, 0.0, 4)
    shapes = sorted(tuple(p.shape) for p in group["params"])
    assert shapes == [(8, 16, 1, 1)] * 2 + [(16, 8, 1, 1)] * 2


def test_xavier_normal_init():
    loss = KD4MTL(TASKS[:1], channels=(128,))
    w = loss.adaptors[0][0].weight
    assert w.shape == (128, 128, 1, 1)
    assert loss.adaptors[0][0].bias is None
    assert w.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)


def test_state_dict_round_trip():
    a = KD4MTL(TASKS, layers="mid+last", channels=(3, 2))
    b = KD4MTL(TASKS, layers="mid+last")
    b.build_adaptors([3, 2])
    s, t = (
        shared(torch.randn(1, 3, 2, 2), torch.randn(1, 2, 4, 4)),
        shared(torch.randn(1, 3, 2, 2), torch.randn(1, 2, 4, 4)),
    )
    assert not torch.equal(a(s, t, {}, 0.0), b(s, t, {}, 0.0))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(s, t, {}, 0.0), b(s, t, {}, 0.0))


def test_mismatched_shapes_are_refused():
    loss = KD4MTL(TASKS, channels=(4,))
    s, t = shared(torch.randn(2, 4, 8, 8)), shared(torch.randn(2, 4, 4, 4))
    with pytest.raises(
        ValueError, match=r"task 'seg', layer 'last'.*\(2, 4, 8, 8\).*\(2, 4, 4, 4\)"
    ):
        loss(s, t, {}, 0.0)
    with pytest.raises(ValueError, match=r"5 channels; the adaptors were built for 4"):
        loss(shared(torch.randn(1, 5, 2, 2)), shared(torch.randn(1, 5, 2, 2)), {}, 0.0)
    with pytest.raises(ValueError, match=r"one map per layer \('last',\) \(got 2\)"):
        loss(shared(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)), t, {}, 0.0)


def test_unbuilt_adaptors_are_an_error():
    loss = KD4MTL(TASKS)
    z = shared(torch.randn(1, 4, 2, 2))
    with pytest.raises(PymtlError, match=r"adaptors are not built; call build_adaptors"):
        loss(z, z, {}, 0.0)
    with pytest.raises(PymtlError, match=r"adaptors are not built"):
        loss.optimizer_groups()
    with pytest.raises(ValueError, match=r"one channel count per layer"):
        loss.build_adaptors([4, 4])
    loss.build_adaptors([4])
    loss.build_adaptors([4])  # same channels: nothing to do
    assert len(list(loss.parameters())) == 2
    with pytest.raises(PymtlError, match=r"cannot rebuild them for \(8,\)"):
        loss.build_adaptors([8])


def test_image_level_features():
    loss = KD4MTL(TASKS, channels=(6,))
    out = loss(shared(torch.randn(4, 6)), shared(torch.randn(4, 6)), {}, 0.0)
    assert out.shape == (2,)
    assert bool(torch.isfinite(out).all())


def test_config_checks():
    with pytest.raises(
        ConfigError, match=r"unknown task\(s\) sge; expected a subset of seg, depth"
    ):
        KD4MTL(TASKS, weights={"sge": 1.0})
    with pytest.raises(ValueError, match=r"'adaptor' must be in"):
        KD4MTLConfig(adaptor="conv3")
    with pytest.raises(ValueError, match=r"'adaptor_lr' must be finite and in \(0, inf\]"):
        KD4MTLConfig(adaptor_lr=0.0)
    with pytest.raises(ValueError, match=r"weight 'seg' must be a finite number >= 0"):
        KD4MTLConfig(weights={"seg": -1.0})
    with pytest.raises(ValueError, match=r"'channels' must be a list of integers > 0"):
        KD4MTLConfig(channels=(0,))
    loss = KD4MTL.from_config(KD4MTLConfig(channels=[16], normalize="per_map"), tasks=TASKS)
    assert isinstance(loss, KD4MTL)
    assert loss.channels == (16,)
    assert loss.normalize == "per_map"
