"""Cross-stitch networks (SPEC-methods §1.3): α = identity gives independent networks, the unit
formula on hand-made tensors, α shapes and inits, lr groups, stage selection and refusals, the
parameter partition, training [pymtl]."""

from __future__ import annotations

import pytest
import torch

from pymtl import plugins
from pymtl.architectures.cross_stitch import CrossStitch, CrossStitchUnit
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask
from pymtl.testing import check_architecture

TINY = BackboneSection(name="convnet", options=ConvNetConfig(width=4))
TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth", mean=1.0))
THREE = (*TASKS, ClassificationTask(name="cls", num_classes=2))


def _net(tasks=TASKS, **options) -> CrossStitch:
    torch.manual_seed(0)
    return CrossStitch(tasks, backbone=TINY, head_channels=4, **options)


def _independent(net: CrossStitch, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each task's own backbone copy and head, run alone (single-task networks)."""
    return {t: net.heads[t](net.backbones[t](x), x.shape[-2:]) for t in net.tasks}


def test_identity_alpha_equals_independent_networks():
    net = _net().eval()
    x = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        mixed = net(x)
        alone = _independent(net, x)
        assert not torch.allclose(mixed["seg"], alone["seg"], atol=1e-4)  # the init does mix
        for unit in net.units.values():
            unit.alpha.copy_(torch.eye(2)[:, :, None].expand_as(unit.alpha))
        out = net(x)
    for t in net.tasks:
        assert torch.allclose(out[t], alone[t], atol=1e-6)


@pytest.mark.parametrize("granularity", ["channel", "scalar"])
def test_unit_mixes_hand_made_tensors(granularity):
    unit = CrossStitchUnit(2, 2, granularity=granularity, init="balanced_rows")
    x1, x2 = torch.ones(1, 2, 1, 1), torch.full((1, 2, 1, 1), 2.0)
    y1, y2 = unit([x1, x2])
    assert torch.allclose(y1, torch.full_like(x1, 0.9 + 0.2))
    assert torch.allclose(y2, torch.full_like(x1, 0.1 + 1.8))
    if granularity == "channel":
        with torch.no_grad():
            unit.alpha[0, 1] = torch.tensor([0.0, 1.0])  # channel 1 of task 0 takes all of x2
        y1, _ = unit([x1, x2])
        assert y1.flatten().tolist() == pytest.approx([0.9, 0.9 + 2.0])


def test_channel_and_scalar_alpha_shapes_and_balanced_rows_init():
    channel, scalar = _net(THREE), _net(THREE, granularity="scalar")
    expected = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    assert [s.name for s in channel.stage_shapes] == ["down0", "down1", "down2", "up1", "up0"]
    for s in channel.stage_shapes:
        alpha = channel.units[s.name].alpha
        assert alpha.shape == (3, 3, s.after_channels)
        assert torch.allclose(alpha, expected[:, :, None].expand_as(alpha))
        assert torch.allclose(scalar.units[s.name].alpha, expected)
    assert torch.allclose(expected.sum(dim=1), torch.ones(3))  # rows sum to 1


def test_mtl_pytorch_init_puts_0_1_off_the_diagonal():
    net = _net(THREE, granularity="scalar", init="mtl_pytorch")
    expected = torch.full((3, 3), 0.1).fill_diagonal_(0.9)
    for unit in net.units.values():
        assert torch.equal(unit.alpha.detach(), expected)


def test_lr_groups_hold_exactly_the_alphas():
    net = _net(lr_multiplier=10.0)
    [(mult, params)] = net.lr_groups()
    assert mult == 10.0
    assert [id(p) for p in params] == [id(u.alpha) for u in net.units.values()]
    assert _net().lr_groups()[0][0] == 100.0


def test_partition_follows_the_last_mixing_point():
    net = _net(stages=("down1",))
    assert list(net.units) == ["down1"]
    for t in net.tasks:
        copy = dict(net.backbones[t].named_parameters())
        after = {n for n in copy if n.startswith(("down.2.", "up."))}  # run after down1 only
        own = {id(p) for p in net.task_parameters(t)}
        assert {n for n, p in copy.items() if id(p) in own} == after
    shared = {id(p) for p in net.shared_parameters()}
    assert id(net.units["down1"].alpha) in shared
    every = _net()  # mixing after the last stage too: only the heads are task-specific
    for t in every.tasks:
        assert {id(p) for p in every.task_parameters(t)} == {
            id(p) for p in every.heads[t].parameters()
        }
    assert CrossStitch.has_shared_representation is False


def test_unknown_stage_names_are_refused_with_the_backbone_stages():
    with pytest.raises(
        ConfigError,
        match=r"'cross_stitch': unknown stage\(s\) \['layer1'\] in option 'stages' for backbone "
        r"'convnet'; expected names among its stages \['down0', 'down1', 'down2', 'up1', 'up0'\]",
    ):
        _net(stages=("down0", "layer1"))


def test_a_backbone_without_stages_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"architecture 'cross_stitch': backbone 'hrnet' has no sequential stages to walk.*"
        r"such as convnet, resnet18/34/50, segnet or lenet",
    ):
        CrossStitch(TASKS, backbone=BackboneSection(name="hrnet"))


def test_training_outputs_have_the_eval_keys():
    net = _net(THREE)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert sorted(net.train()(x)) == sorted(net.eval()(x)) == ["cls", "depth", "seg"]


def test_adam_steps_reduce_the_summed_loss():
    net = _net().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = {"seg": torch.randint(0, 3, (4, 16, 16), generator=gen)}
    targets["depth"] = torch.rand(4, 1, 16, 16, generator=gen) + 0.5
    groups = [{"params": p, "lr": 1e-2 * m} for m, p in net.lr_groups()]
    special = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in net.parameters() if id(p) not in special]
    opt = torch.optim.Adam([{"params": rest}, *groups], lr=1e-2)
    losses = []
    for _ in range(6):
        out = net(x)
        loss = sum(t.loss(out[t.name], targets[t.name]) for t in TASKS)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("stages", [(), ("down1",)])
def test_check_architecture(stages):
    config = CrossStitch.Config(backbone=TINY, head_channels=4, stages=stages)
    check_architecture(CrossStitch, config=config, size=(24, 40))


def test_registered_and_configured_by_name(monkeypatch):
    module = "pymtl.architectures.cross_stitch"
    if module not in plugins.BUILTIN_PLUGINS:
        monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module))
    registry = plugins.get_registry(autoload=False)
    assert registry.get("architecture", "cross_stitch") is CrossStitch
    doc = {"arch": {"name": "cross_stitch", "granularity": "scalar", "stages": ["down0"]}}
    options = resolve_config(doc, registry).arch.options
    assert options == CrossStitch.Config(granularity="scalar", stages=("down0",))
