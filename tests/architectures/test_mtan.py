"""MTAN (``mtan``): masks of ones give the shared path, masks in (0, 1), stage shapes on convnet
and resnet18, the ResNet refinement, refusals, the parameter partition, conformance [pymtl]."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pymtl import plugins
from pymtl.architectures.mtan import MTAN, Attention, _fit
from pymtl.backbones.convnet import ConvNet
from pymtl.backbones.hrnet import HRNet
from pymtl.backbones.resnet import Bottleneck, ResNet18
from pymtl.backbones.segnet import SegNet
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.tasks import DepthTask, SegmentationTask
from pymtl.testing import check_architecture, default_tasks

TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth", mean=1.0))
LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _convnet(**options: Any) -> BackboneSection:
    return BackboneSection(name="convnet", options=ConvNet.Config(width=4, **options))


def _resnet(width: int = 4) -> BackboneSection:
    return BackboneSection(name="resnet18", options=ResNet18.Config(width=width))


def _net(backbone: BackboneSection, **options: Any) -> MTAN:
    torch.manual_seed(0)
    return MTAN(TASKS, backbone=backbone, head_channels=4, **options).eval()


def _saturate(net: MTAN) -> None:
    """Every mask to exactly 1: the last BN of each attention outputs its bias, σ(30) = 1.0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, Attention):
                bn = module.body[4]
                bn.weight.zero_()
                bn.bias.fill_(30.0)


@pytest.mark.parametrize(
    ("backbone", "size"), [(_convnet(), (32, 32)), (_resnet(), (64, 64))], ids=["convnet", "resnet"]
)
def test_masks_of_ones_give_the_shared_path(backbone, size):
    net = _net(backbone)
    _saturate(net)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
        z = net.backbone(x)  # the hps path: every head on the shared backbone output
        for t in net.tasks:
            assert torch.allclose(out[t], net.heads[t](z, size), atol=1e-6), t
            assert all(torch.equal(m, torch.ones_like(m)) for m in net.masks(x)[t])


def test_masks_are_strictly_between_zero_and_one():
    net = _net(_convnet())
    with torch.no_grad():
        masks = net.masks(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    for per_task in masks.values():
        for m in per_task:
            assert m.min() > 0
            assert m.max() < 1
            assert m.std() > 0  # not a constant


def test_stage_shapes_on_convnet():
    net = _net(_convnet())
    assert net.stage_names == ("down0", "down1", "down2", "up1", "up0")
    # attention input: before channels, doubled after the first stage (concat with p)
    assert [a.body[0].in_channels for a in net.attention["seg"]] == [4, 16, 32, 48, 24]
    assert [a.body[0].out_channels for a in net.attention["seg"]] == [4, 8, 16, 8, 4]  # mid = out
    refine_out = [r[0].out_channels for r in net.refine]
    assert refine_out == [8, 16, 24, 12]  # before channels of the next stage
    with torch.no_grad():
        masks = net.masks(torch.randn(2, 3, 32, 32))["depth"]
    shapes = [tuple(m.shape) for m in masks]
    assert shapes == [(2, 4, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4), (2, 8, 8, 8), (2, 4, 16, 16)]


def test_stage_shapes_and_bottleneck_refinement_on_resnet():
    net = _net(_resnet(), stages=LAYERS)
    assert net.stage_names == LAYERS
    assert [a.body[0].out_channels for a in net.attention["seg"]] == [1, 2, 4, 8]  # mid = C/4
    assert all(isinstance(r, Bottleneck) for r in net.refine)
    assert [(r.conv1.in_channels, r.conv3.out_channels) for r in net.refine] == [
        (4, 8),
        (8, 16),
        (16, 32),
    ]
    with torch.no_grad():
        masks = net.masks(torch.randn(2, 3, 64, 64))["seg"]
    assert [tuple(m.shape) for m in masks] == [
        (2, 4, 16, 16),
        (2, 8, 8, 8),
        (2, 16, 4, 4),
        (2, 32, 2, 2),
    ]


def test_attention_mid_option():
    out = _net(_resnet(), stages=LAYERS, attention_mid="out")
    assert [a.body[0].out_channels for a in out.attention["seg"]] == [4, 8, 16, 32]
    quarter = _net(_convnet(), stages=("down1", "down2"), attention_mid="quarter")
    assert [a.body[0].out_channels for a in quarter.attention["seg"]] == [2, 4]


def test_resize_pools_on_resnet_and_interpolates_otherwise():
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    ref = torch.zeros(1, 2, 2, 2)
    assert torch.equal(_fit(x, ref, pool=True), F.max_pool2d(x, 2))
    assert torch.equal(_fit(x, ref, pool=False), F.interpolate(x, size=(2, 2), mode="bilinear"))
    assert _fit(x, x, pool=True) is x


def test_stage_subset_reads_its_last_stage():
    net = _net(_convnet(), stages=("down2", "down1"))  # walk order wins
    assert net.stage_names == ("down1", "down2")
    assert net.heads["depth"].branches[0][0].in_channels == 16  # down2's after channels
    y = net(torch.randn(1, 3, 24, 40))
    assert y["depth"].shape == (1, 1, 24, 40)


def test_refuses_a_backbone_without_stages():
    hrnet = BackboneSection(name="hrnet", options=HRNet.Config(width=2, stem_width=4))
    with pytest.raises(
        ConfigError,
        match=r"^architecture 'mtan' needs a backbone it can walk stage by stage; backbone "
        r"'hrnet' has no stages \(expected one of: convnet, lenet, resnet18, resnet34, resnet50, "
        r"segnet\)$",
    ):
        MTAN(TASKS, backbone=hrnet)


def test_refuses_unknown_stage_names():
    with pytest.raises(
        ConfigError,
        match=r"^architecture 'mtan': unknown stage\(s\) \['layer1'\] of backbone 'convnet' in "
        r"'stages'; available stages: down0, down1, down2, up1, up0$",
    ):
        MTAN(TASKS, backbone=_convnet(), stages=("down0", "layer1"))


def test_refuses_resnet_widths_the_bottleneck_cannot_reach():
    with pytest.raises(ConfigError, match=r"into stage 'layer1' needs its 2 channels to be a mul"):
        MTAN(TASKS, backbone=_resnet(width=2))  # stem attended: layer1 has 2 channels


def test_partition_and_gradients_of_one_task():
    net = _net(_convnet()).train()
    ids = {id(p) for p in net.shared_parameters()}
    expected = {id(p) for m in (net.backbone, net.refine) for p in m.parameters()}
    assert ids == expected
    for t in net.tasks:
        own = {id(p) for m in (net.attention[t], net.heads[t]) for p in m.parameters()}
        assert {id(p) for p in net.task_parameters(t)} == own
    assert MTAN.has_shared_representation is False
    net(torch.randn(2, 3, 32, 32))["depth"].mean().backward()
    assert all(p.grad is None for p in net.task_parameters("seg"))
    assert all(p.grad is not None for p in net.attention["depth"].parameters())
    assert all(p.grad is not None for p in net.refine.parameters())


def test_training_steps_reduce_the_loss():
    net = _net(_convnet()).train()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    target = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(4)) + 0.5
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = TASKS[1].loss(net(x)["depth"], target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("backbone", "stages", "size"),
    [
        (_convnet(), (), (24, 40)),
        (_resnet(), LAYERS, (32, 32)),
        (BackboneSection(name="segnet", options=SegNet.Config(width=2)), (), (32, 32)),
    ],
    ids=["convnet", "resnet18", "segnet"],
)
def test_conformance(backbone, stages, size):
    config = MTAN.Config(backbone=backbone, head_channels=4, head_rates=(2,), stages=stages)
    check_architecture(MTAN, config=config, size=size)


@pytest.fixture
def registry(monkeypatch):
    """The registry with ``mtan`` among the built-ins (until the lead lists it there)."""
    extra = tuple(m for m in ("pymtl.architectures.mtan",) if m not in plugins.BUILTIN_PLUGINS)
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", plugins.BUILTIN_PLUGINS + extra)
    return plugins.get_registry(autoload=False)


def test_config_from_a_run_document(registry):
    doc = {
        "arch": {
            "name": "mtan",
            "stages": ["layer3", "layer4"],
            "attention_mid": "out",
            "backbone": {"name": "resnet18", "width": 4},
        }
    }
    options = resolve_config(doc, registry).arch.options
    assert options.stages == ("layer3", "layer4")
    net = MTAN.from_config(options, tasks=default_tasks())
    assert net.stage_names == ("layer3", "layer4")
    assert isinstance(net.refine[0], nn.Module)
    doc["arch"]["attention_mid"] = "half"
    with pytest.raises(ConfigError, match=r"attention_mid"):
        resolve_config(doc, registry)
