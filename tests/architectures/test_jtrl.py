"""JTRL (``jtrl``): refusals, the alternating state sequence, the TAM gate, shapes, the
partition, and training [pymtl]."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pymtl.architectures.base import split_outputs
from pymtl.architectures.jtrl import JTRL, JTRLConfig, TaskAttention, _State
from pymtl.backbones.convnet import ConvNet
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, DepthTask, NormalsTask, SegmentationTask
from pymtl.tasks.base import Task
from pymtl.testing import check_architecture

DEPTH = DepthTask(name="depth", mean=2.0)
SEG = SegmentationTask(name="seg", num_classes=3)
TASKS = (DEPTH, SEG)


def _convnet(depth: int = 3) -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNet.Config(width=4, depth=depth))


def _net(**options: object) -> JTRL:
    torch.manual_seed(0)
    return JTRL(TASKS, backbone=_convnet(), head_channels=4, **options)  # type: ignore[arg-type]


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "got"),
    [((DEPTH,), "1: 'depth'"), ((DEPTH, SEG, NormalsTask(name="n")), "3: 'depth', 'seg', 'n'")],
)
def test_refuses_other_than_two_tasks(tasks: tuple[Task, ...], got: str) -> None:
    message = (
        f"architecture 'jtrl' needs exactly 2 dense tasks (got {got}); its alternating task "
        "recursion cannot be extended beyond two tasks (SPEC-methods §1.10)"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        JTRL(tasks, backbone=_convnet())


def test_refuses_an_image_level_task() -> None:
    message = (
        "architecture 'jtrl' needs exactly 2 dense tasks, but task 'cls' is image-level "
        "(classification); expected two dense tasks such as depth and segmentation"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        JTRL((DEPTH, ClassificationTask(name="cls", num_classes=4)), backbone=_convnet())


def test_refuses_a_single_scale_backbone() -> None:
    with pytest.raises(ConfigError) as info:
        JTRL(TASKS, backbone=_convnet(depth=1))  # one scale at stride 2
    assert str(info.value) == (
        "architecture 'jtrl' needs a multi-scale backbone (at least 2 multi_scale maps), but "
        "backbone 'convnet' has 1; backbones that work: convnet (depth >= 2), resnet18, "
        "resnet34, resnet50, segnet, hrnet"
    )


def test_refuses_more_scales_than_the_backbone_has() -> None:
    with pytest.raises(ConfigError) as info:
        JTRL(TASKS, backbone=_convnet(), scales=4)
    assert str(info.value) == (
        "architecture 'jtrl': scales = 4, but backbone 'convnet' has 3 scales (strides 2, 4, "
        "8); expected 0 (all, at most 4) or 1..3"
    )


def test_options_are_validated() -> None:
    with pytest.raises(
        ValueError, match=re.escape("'scales' must be an integer in [0, 8] (got 9)")
    ):
        JTRLConfig(scales=9)
    with pytest.raises(ConfigError) as info:
        JTRL(TASKS, backbone=_convnet(), head_norm="layer")
    assert str(info.value) == (
        "architecture 'jtrl': 'head_norm' must be one of 'batch', 'group' (got 'layer')"
    )


# --- the state sequence ----------------------------------------------------------------------


def test_states_alternate_coarse_to_fine_with_deep_supervision() -> None:
    net = _net().train()
    sizes: list[tuple[int, ...]] = []
    for state in net.states:
        state.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    out = net(torch.randn(2, 3, 32, 32))
    assert net.num_scales == 3
    assert net.state_tasks() == ["depth", "seg"] * 3
    assert list(out) == [
        "depth/state0",
        "seg/state1",
        "depth/state2",
        "seg/state3",
        "depth",
        "seg",
    ]
    assert sizes == [(4, 4), (4, 4), (8, 8), (8, 8), (16, 16), (16, 16)]  # strides 8, 4, 2
    grouped = split_outputs(out, net.tasks)
    assert [len(v) for v in grouped.values()] == [3, 3]


def test_eval_returns_the_task_keys_only_and_scales_option_counts_pairs() -> None:
    net = _net(scales=2).eval()
    assert len(net.states) == 4
    with torch.no_grad():
        assert list(net(torch.randn(1, 3, 32, 32))) == ["depth", "seg"]
    net.train()
    assert list(net(torch.randn(2, 3, 32, 32))) == ["depth/state0", "seg/state1", "depth", "seg"]


def test_experience_grows_and_the_first_state_is_ungated() -> None:
    net = _net()
    # state k of pair p concatenates p earlier same-task states (4 ch each) with the backbone
    # feature of its scale (16, 8, 4 channels coarsest first)
    states = [s for s in net.states if isinstance(s, _State)]
    assert len(states) == 6
    projections = [s.project[0] for s in states]
    assert [p.in_channels for p in projections if isinstance(p, nn.Conv2d)] == [
        16,
        16,
        12,
        12,
        12,
        12,
    ]
    tams = [s.tam for s in states]
    assert tams[0].gate is None
    assert all(t.gate is not None for t in tams[1:])


# --- the TAM -------------------------------------------------------------------------------


def _tam(gate_bias: float) -> TaskAttention:
    tam = TaskAttention(2, gated=True).eval()
    attend_out = tam.attend[-1]
    assert isinstance(attend_out, nn.Conv2d)
    assert tam.gate is not None
    assert tam.gate.bias is not None
    assert attend_out.bias is not None
    with torch.no_grad():
        tam.gate.weight.zero_()
        tam.gate.bias.fill_(gate_bias)
        attend_out.weight.zero_()  # m = σ(0) = 1/2 everywhere
        attend_out.bias.zero_()
    return tam


def test_tam_with_gate_one_ignores_b() -> None:
    tam = _tam(100.0)  # γ = σ(100) = 1 in floating point
    a = torch.tensor([[[[1.0, -2.0, 3.0]], [[0.5, 0.0, -1.0]]]])  # [1, 2, 1, 3]
    with torch.no_grad():
        y1 = tam(a, torch.randn(1, 2, 1, 3))
        y2 = tam(a, torch.randn(1, 2, 1, 3))
    expected = torch.tensor([[[[1.5, -3.0, 4.5]], [[0.75, 0.0, -1.5]]]])  # u + u·m, u = a
    assert torch.equal(y1, expected)
    assert torch.equal(y2, expected)


def test_tam_gate_mixes_a_and_b() -> None:
    a, b = torch.ones(1, 2, 3, 3), torch.full((1, 2, 3, 3), 3.0)
    with torch.no_grad():
        assert torch.allclose(_tam(-100.0)(a, b), 1.5 * b)  # γ = 0: only b
        assert torch.allclose(_tam(0.0)(a, b), 1.5 * 2.0 * torch.ones(1, 2, 3, 3))  # γ = 1/2


def test_gated_tam_needs_b() -> None:
    with pytest.raises(ValueError, match="needs the other task's state b"):
        TaskAttention(2)(torch.zeros(1, 2, 2, 2))


# --- shapes, partition, conformance ----------------------------------------------------------


@pytest.mark.parametrize("size", [(17, 23), (33, 29), (9, 12)])
def test_shapes_at_odd_input_sizes(size: tuple[int, int]) -> None:
    net = _net().train()
    out = net(torch.randn(2, 3, *size))
    for key, y in out.items():
        assert y.shape == (2, 1 if key.startswith("depth") else 3, *size)


def test_partition_shares_all_but_the_prediction_convs_and_the_last_state() -> None:
    net = _net()
    shared = {id(p) for p in net.shared_parameters()}
    expected = {id(p) for p in net.backbone.parameters()}
    for state in net.states[:-1]:
        expected |= {id(p) for p in state.parameters()}
    assert shared == expected
    depth = {id(p) for p in net.task_parameters("depth")}
    assert depth == {id(p) for k in (0, 2, 4) for p in net.heads[k].parameters()}
    seg = {id(p) for p in net.task_parameters("seg")}
    last = {id(p) for p in net.states[-1].parameters()}
    assert seg == last | {id(p) for k in (1, 3, 5) for p in net.heads[k].parameters()}


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_check_architecture(size: tuple[int, int]) -> None:
    config = JTRLConfig(head_channels=4, backbone=_convnet())
    check_architecture(JTRL, tasks=TASKS, config=config, size=size)


def test_check_architecture_on_a_resnet() -> None:
    section = BackboneSection(name="resnet18", options=None)
    check_architecture(
        JTRL, tasks=(SEG, DEPTH), config=JTRLConfig(head_channels=4, backbone=section)
    )


def test_adam_steps_reduce_the_summed_loss_with_aux_losses() -> None:
    net = _net().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = {
        "depth": torch.rand(4, 1, 16, 16, generator=gen) + 1.5,
        "seg": torch.randint(0, 3, (4, 16, 16), generator=gen),
    }
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(8):
        grouped = split_outputs(net(x), net.tasks)
        assert [len(v) for v in grouped.values()] == [3, 3]
        total = sum(t.loss(y, targets[t.name]) for t in TASKS for y in grouped[t.name])
        assert isinstance(total, torch.Tensor)
        opt.zero_grad()
        total.backward()  # type: ignore[no-untyped-call]
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.8 * totals[0], totals
