"""NDDR-CNN (SPEC-methods §1.5): the initial layer is scalar cross-stitch 0.9/0.1 before BN/ReLU,
zero off-diagonal blocks reduce it to independent networks, BN settings, lr groups, ResNet
stages, refusals, training [pymtl]."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pymtl import plugins
from pymtl.architectures.cross_stitch import CrossStitchUnit
from pymtl.architectures.nddr import NDDR, NDDRUnit, nddr_weight
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.backbones.resnet import ResNetConfig
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask
from pymtl.testing import check_architecture

TINY = BackboneSection(name="convnet", options=ConvNetConfig(width=4))
RESNET = BackboneSection(name="resnet18", options=ResNetConfig(width=4))
TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth", mean=1.0))


def _net(tasks=TASKS, **options) -> NDDR:
    torch.manual_seed(0)
    return NDDR(tasks, backbone=options.pop("backbone", TINY), head_channels=4, **options)


def test_initial_weight_is_alpha_and_beta_identity_blocks():
    w = nddr_weight(3, 2, 1, alpha=0.9, beta=0.1)[:, :, 0, 0]
    expected = torch.tensor([[0.1, 0, 0.9, 0, 0.1, 0], [0, 0.1, 0, 0.9, 0, 0.1]])
    assert torch.allclose(w, expected)


def test_init_is_scalar_cross_stitch_before_bn_and_relu():
    xs = [torch.full((1, 2, 1, 2), v) for v in (1.0, -2.0, 4.0)]
    xs[0][0, 1, 0, 1] = 3.0
    nddr = NDDRUnit(3, 2, alpha=0.9, beta=0.1)
    stitch = CrossStitchUnit(3, 2, granularity="scalar", init="mtl_pytorch")
    cat = torch.cat(xs, dim=1)
    for t, y in enumerate(stitch(xs)):
        assert torch.allclose(nddr.layers[t][0](cat), y)
    assert torch.allclose(stitch(xs)[1], 0.1 * xs[0] + 0.9 * xs[1] + 0.1 * xs[2])


def test_layers_are_conv_without_bias_then_bn_momentum_0_05_then_relu():
    conv, bn, relu = NDDRUnit(2, 4, alpha=0.9, beta=0.1).layers[1]
    assert conv.bias is None
    assert conv.weight.shape == (4, 8, 1, 1)
    assert bn.momentum == 0.05
    assert torch.equal(bn.weight.detach(), torch.ones(4))
    assert torch.equal(bn.bias.detach(), torch.zeros(4))
    assert isinstance(relu, nn.ReLU)


def test_zero_off_diagonal_blocks_reduce_to_independent_networks():
    net = _net(init_alpha=1.0, init_beta=0.0).eval()
    for bn in net.units.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.eps = 0.0  # identity statistics (mean 0, var 1): BN is the identity
    x = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        out = net(x)
        alone = {t: net.heads[t](net.backbones[t](x), x.shape[-2:]) for t in net.tasks}
        mixed = _net().eval()(x)
    for t in net.tasks:  # convnet stages end in ReLU, so the NDDR ReLU changes nothing
        assert torch.allclose(out[t], alone[t], atol=1e-6)
    assert not torch.allclose(mixed["seg"], alone["seg"], atol=1e-4)


def test_lr_groups_hold_exactly_the_nddr_layers():
    net = _net(lr_multiplier=20.0)
    [(mult, params)] = net.lr_groups()
    assert mult == 20.0
    assert [id(p) for p in params] == [id(p) for p in net.units.parameters()]
    assert {id(p) for p in params} <= {id(p) for p in net.shared_parameters()}
    assert len(params) == 5 * 2 * 3  # stages × tasks × (conv weight, BN weight, BN bias)


def test_resnet_default_stages_are_the_stem_and_layer1_to_4():
    net = _net(backbone=RESNET)
    assert [s.name for s in net.stage_shapes] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert [s.after_channels for s in net.stage_shapes] == [4, 4, 8, 16, 32]
    for t in net.tasks:  # mixing after layer4: the whole copies are shared
        assert {id(p) for p in net.task_parameters(t)} == {id(p) for p in net.heads[t].parameters()}


def test_unknown_stages_and_stageless_backbones_are_refused():
    with pytest.raises(
        ConfigError, match=r"'nddr': unknown stage\(s\) \['down3'\] .* backbone 'convnet'"
    ):
        _net(stages=("down3",))
    with pytest.raises(ConfigError, match=r"'nddr': backbone 'hrnet' has no sequential stages"):
        NDDR(TASKS, backbone=BackboneSection(name="hrnet"))


def test_training_outputs_have_the_eval_keys():
    net = _net((*TASKS, ClassificationTask(name="cls", num_classes=2)))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert sorted(net.train()(x)) == sorted(net.eval()(x)) == ["cls", "depth", "seg"]


def test_adam_steps_reduce_the_summed_loss():
    net = _net().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = {"seg": torch.randint(0, 3, (4, 16, 16), generator=gen)}
    targets["depth"] = torch.rand(4, 1, 16, 16, generator=gen) + 0.5
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        out = net(x)
        loss = sum(t.loss(out[t.name], targets[t.name]) for t in TASKS)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize(
    ("backbone", "stages"), [(TINY, ()), (TINY, ("down0", "up1")), (RESNET, ())]
)
def test_check_architecture(backbone, stages):
    config = NDDR.Config(backbone=backbone, head_channels=4, stages=stages)
    check_architecture(NDDR, config=config, size=(32, 32))


def test_registered_and_configured_by_name(monkeypatch):
    module = "pymtl.architectures.nddr"
    if module not in plugins.BUILTIN_PLUGINS:
        monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module))
    registry = plugins.get_registry(autoload=False)
    assert registry.get("architecture", "nddr") is NDDR
    doc = {"arch": {"name": "nddr", "init_alpha": 1.0, "init_beta": 0.0}}
    options = resolve_config(doc, registry).arch.options
    assert options == NDDR.Config(init_alpha=1.0, init_beta=0.0)
