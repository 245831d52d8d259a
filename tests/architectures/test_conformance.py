"""Every registered architecture against the contract of pymtl.architectures.base, the specific
promises of ``hps`` and ``stl``, and ``check_architecture`` itself catching broken ones [pymtl]."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import pytest
import torch
from torch import Tensor, nn

from pymtl.architectures.heads import ASPPHead, ImageHead
from pymtl.architectures.hps import HardSharing
from pymtl.architectures.stl import SingleTask
from pymtl.config import resolve_config
from pymtl.plugins import get_registry
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask
from pymtl.testing import check_architecture, default_tasks

NAMES = [e.name for e in get_registry(autoload=False).entries("architecture")]
TINY_OPTIONS: dict[str, Any] = {"head_channels": 4, "backbone": {"name": "convnet", "width": 4}}


def _tiny(name: str) -> Any:
    """A small Config of a registered architecture: tiny heads on a width-4 convnet (the options
    of :data:`TINY_OPTIONS` that its Config has), built the way a run document is."""
    registry = get_registry(autoload=False)
    fields = {f.name for f in attrs.fields(registry.get("architecture", name).Config)}
    options = {k: v for k, v in TINY_OPTIONS.items() if k in fields}
    return resolve_config({"arch": {"name": name, **options}}, registry).arch.options


def test_every_builtin_architecture_is_registered():
    assert {"hps", "stl"} <= set(NAMES)


# architectures defined for a fixed kind of task set (the default mixes 3 dense and 2 image tasks)
TASKS: dict[str, tuple[Any, ...]] = {
    "jtrl": (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth", mean=2.0)),
}


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("name", NAMES)
def test_conformance(name, size):
    cls = get_registry(autoload=False).get("architecture", name)
    check_architecture(cls, config=_tiny(name), size=size, tasks=TASKS.get(name))


# --- hps ---------------------------------------------------------------------------------------


def test_hps_shares_exactly_the_backbone():
    net = HardSharing.from_config(_tiny("hps"), tasks=default_tasks())
    assert [id(p) for p in net.shared_parameters()] == [id(p) for p in net.backbone.parameters()]
    assert len(list(net.shared_parameters())) > 0
    assert net.has_shared_representation


def test_hps_head_per_task_kind():
    net = HardSharing.from_config(_tiny("hps"), tasks=default_tasks())
    kinds = {name: type(head) for name, head in net.heads.items()}
    assert kinds == {
        "seg": ASPPHead,
        "depth": ASPPHead,
        "normals": ASPPHead,
        "cls": ImageHead,
        "count": ImageHead,
    }
    for name in net.tasks:
        ids = {id(p) for p in net.task_parameters(name)}
        assert ids == {id(p) for p in net.heads[name].parameters()}


def test_hps_encode_is_the_backbone_output():
    net = HardSharing.from_config(_tiny("hps"), tasks=default_tasks()).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.encode(x), net.backbone(x))


# --- stl ---------------------------------------------------------------------------------------


def _stl() -> SingleTask:
    tasks = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth"))
    return SingleTask.from_config(_tiny("stl"), tasks=tasks)  # type: ignore[return-value]


def test_stl_shares_nothing():
    net = _stl()
    assert list(net.shared_parameters()) == []
    assert SingleTask.has_shared_representation is False


def test_stl_encode_and_decode_refuse_with_a_clear_message():
    net = _stl()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(NotImplementedError, match=r"'stl' has no single shared representation"):
        net.encode(x)
    with pytest.raises(NotImplementedError, match=r"'stl' has no single shared representation"):
        net.decode(torch.zeros(1, 4, 8, 8), (16, 16))


def test_stl_gradients_of_one_task_touch_only_its_network():
    net = _stl()
    out = net(torch.randn(2, 3, 16, 16))
    target = torch.randint(0, 3, (2, 16, 16))
    net.task_specs[0].loss(out["seg"], target).backward()
    seg = {id(p) for p in net.task_parameters("seg")}
    for p in net.parameters():
        if id(p) in seg:
            assert p.grad is not None
            assert torch.isfinite(p.grad).all()
        else:
            assert p.grad is None
    assert any(p.grad.abs().sum() > 0 for p in net.task_parameters("seg"))


def test_stl_networks_are_separate_copies():
    net = _stl()
    seg, depth = net.nets["seg"], net.nets["depth"]
    assert type(seg.backbone) is type(depth.backbone)
    assert not {id(p) for p in seg.parameters()} & {id(p) for p in depth.parameters()}


# --- check_architecture catches broken architectures -------------------------------------------
# Each subclass breaks one promise; the check must name the architecture and that promise.


class _Overlapping(HardSharing):
    """hps whose first task also claims the backbone [pymtl]."""

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        if task == self.tasks[0]:
            yield from self.backbone.parameters()


class _Unclaimed(HardSharing):
    """hps that forgets its backbone [pymtl]."""

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())


class _Swapped(HardSharing):
    """hps that hands each task the next task's head [pymtl]."""

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        i = self.tasks.index(task)
        return self.heads[self.tasks[(i + 1) % len(self.tasks)]].parameters()


class _Leaky(HardSharing):
    """hps whose segmentation output also reads the depth head [pymtl]."""

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        out = super().decode(z, size)
        out["seg"] = out["seg"] + out["depth"].mean()
        return out


class _LowResolution(HardSharing):
    """hps whose dense outputs stay at the feature resolution [pymtl]."""

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        return super().decode(z, z.shape[-2:])


class _Inconsistent(HardSharing):
    """hps whose forward is not decode(encode(x)) [pymtl]."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {k: v + 1 for k, v in super().forward(x).items()}


class _MissingTask(HardSharing):
    """hps that drops its last task's output [pymtl]."""

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        out = super().decode(z, size)
        del out[self.tasks[-1]]
        return out


class _NoHeadBias(HardSharing):
    """hps that re-initialises every head's last bias to zero [pymtl]."""

    def __init__(self, tasks: Sequence[Any], in_channels: int = 3, **options: Any) -> None:
        super().__init__(tasks, in_channels, **options)
        with torch.no_grad():
            for head in self.heads.values():
                last = head.classifier if isinstance(head, ASPPHead) else head.out
                last.bias.zero_()


class _BiasNotLast(HardSharing):
    """hps that keeps head_bias in a parameter that only scales the output [pymtl]."""

    def __init__(self, tasks: Sequence[Any], in_channels: int = 3, **options: Any) -> None:
        super().__init__(tasks, in_channels, **options)
        with torch.no_grad():
            self.heads["depth"].classifier.bias.zero_()
        self.scale = nn.ParameterDict({"depth": nn.Parameter(torch.tensor([2.0]))})

    def decode(self, z: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        out = super().decode(z, size)
        out["depth"] = out["depth"] * self.scale["depth"]
        return out

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        if task == "depth":
            yield self.scale["depth"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (_Overlapping, r"'hps'.* yielded by both shared_parameters\(\) and task_parameters\('seg'"),
        (_Unclaimed, r"'hps'.* neither in shared_parameters\(\) nor in any task_parameters"),
        (_Swapped, r"'hps'.* perturbing task_parameters\('seg'\) leaves its output as is"),
        (_Leaky, r"'hps'.* output 'seg' changes when task_parameters\('depth'\) change"),
        (_LowResolution, r"'hps'.* output 'seg' \(segmentation\) has shape \(2, 3, 16, 16\)"),
        (_Inconsistent, r"'hps'.* decode\(encode\(x\), size\)\['seg'\] differs from forward"),
        (_MissingTask, r"'hps'.* forward returned keys .*, expected "),
        (_NoHeadBias, r"'hps'.* task 'depth': no parameter of task_parameters\(\) starts at"),
        (_BiasNotLast, r"'hps'.* task 'depth': no parameter equal to head_bias\(\) = \[2.0\] off"),
    ],
)
def test_check_architecture_names_the_broken_promise(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_architecture(broken, config=_tiny("hps"))


def test_check_architecture_uses_the_given_tasks():
    tasks = [ClassificationTask(name="digit", num_classes=10)]
    check_architecture(HardSharing, config=_tiny("hps"), tasks=tasks, size=(16, 16))
