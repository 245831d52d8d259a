"""Sluice networks (SPEC-methods §1.4): G = 1 with identity α and one-hot β gives independent
networks, subspace mixing on hand-made tensors, the reference inits, the orthogonality
regulariser's value, lr groups, refusals, the partition, training [pymtl]."""

from __future__ import annotations

import pytest
import torch

from pymtl import plugins
from pymtl.architectures.sluice import Sluice, SluiceUnit, layer_beta, sluice_alpha
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.tasks import ClassificationTask, DepthTask, SegmentationTask
from pymtl.testing import check_architecture

TINY = BackboneSection(name="convnet", options=ConvNetConfig(width=4))
TASKS = (SegmentationTask(name="seg", num_classes=3), DepthTask(name="depth", mean=1.0))


def _net(tasks=TASKS, **options) -> Sluice:
    torch.manual_seed(0)
    return Sluice(tasks, backbone=TINY, head_channels=4, **options)


def test_one_subspace_identity_alpha_and_last_layer_beta_equal_independent_networks():
    net = _net(subspaces=1).eval()
    x = torch.randn(2, 3, 20, 28)
    with torch.no_grad():
        alone = {t: net.heads[t](net.backbones[t](x), x.shape[-2:]) for t in net.tasks}
        assert not torch.allclose(net(x)["seg"], alone["seg"], atol=1e-4)  # the init does mix
        for unit in net.units.values():
            unit.alpha.copy_(torch.eye(2))
        for stitch in net.layer_stitch.values():
            stitch.beta.copy_(torch.eye(len(stitch.beta))[-1])
        out = net(x)
    for t in net.tasks:
        assert torch.allclose(out[t], alone[t], atol=1e-6)


def test_unit_mixes_channel_subspaces_of_hand_made_tensors():
    unit = SluiceUnit(2, 2, "balanced")  # rows/columns (task, subspace): 0 = (0,0) … 3 = (1,1)
    with torch.no_grad():
        unit.alpha.copy_(torch.eye(4)[[3, 0, 1, 2]])  # (0,0)<-(1,1), (0,1)<-(0,0), …
    x0 = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)  # subspaces [1, 2] and [3, 4]
    x1 = torch.tensor([5.0, 6.0, 7.0, 8.0]).view(1, 4, 1, 1)
    y0, y1 = unit([x0, x1])
    assert y0.flatten().tolist() == [7.0, 8.0, 1.0, 2.0]
    assert y1.flatten().tolist() == [3.0, 4.0, 5.0, 6.0]


def test_alpha_inits_follow_the_reference():
    assert torch.allclose(sluice_alpha(2, 2, "balanced"), torch.full((4, 4), 0.25))
    one = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    assert torch.allclose(sluice_alpha(3, 1, "imbalanced"), one)
    pattern = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0]])
    assert torch.allclose(sluice_alpha(2, 2, "imbalanced"), 0.05 + 0.9 * pattern)
    net = _net()
    for s in net.stage_shapes:
        assert torch.allclose(net.units[s.name].alpha, 0.05 + 0.9 * pattern)


def test_beta_inits_over_the_selected_stages_and_the_output():
    assert torch.allclose(layer_beta(4, "balanced"), torch.full((4,), 0.25))
    assert torch.allclose(layer_beta(3, "imbalanced"), torch.tensor([0.05, 0.05, 0.9]))
    net = _net(stages=("down0", "down2"), beta_init="imbalanced")
    stitch = net.layer_stitch["seg"]  # layers: down0 (4 ch), down2 (16 ch), the output (4 ch)
    assert torch.allclose(stitch.beta, torch.tensor([0.05, 0.05, 0.9]))
    assert [type(p).__name__ for p in stitch.proj] == ["Identity", "Conv2d", "Identity"]
    assert stitch.proj[1].weight.shape == (4, 16, 1, 1)
    assert len(_net().layer_stitch["depth"].beta) == 5  # down0..2, up1, up0 = the output


def test_orthogonality_regulariser_on_hand_made_weights():
    net = _net(stages=("down0",), lambda_orth=0.5)
    with torch.no_grad():
        for t in net.tasks:
            net.backbones[t].down[0][1][0].weight.zero_()  # down0's last conv: [4, 4, 3, 3]
        w = net.backbones["seg"].down[0][1][0].weight.view(4, -1)
        w[0, 0] = 1.0  # subspace 1: rows 0, 1; subspace 2: rows 2, 3
        w[1, 1] = 2.0
        w[2, 0], w[2, 1] = 1.0, 1.0  # W1 W2ᵀ = [[1, 0], [2, 0]]
    reg = net.regularizer()
    assert reg.item() == pytest.approx(0.5 * (1 + 4))
    reg.backward()
    assert net.backbones["seg"].down[0][1][0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        w[2, 0] = 0.0
        w[2, 1] = 0.0
        w[3, 2] = 5.0  # orthogonal to rows 0 and 1
    assert net.regularizer().item() == 0.0
    assert _net().regularizer() is None  # lambda_orth = 0 by default
    assert _net(subspaces=1, lambda_orth=1.0).regularizer() is None  # no pair of subspaces


def test_subspaces_must_divide_every_selected_width():
    with pytest.raises(
        ConfigError,
        match=r"'sluice': subspaces = 16 does not divide the width of stage\(s\) "
        r"\[\('down0', 4\), \('up1', 8\)\]",
    ):
        _net(stages=("down0", "down2", "up1"), subspaces=16)
    assert _net(stages=("down2",), subspaces=16).subspaces == 16
    with pytest.raises(ValueError, match=r"'subspaces' must be an integer >= 1 \(got 0\)"):
        Sluice.Config(subspaces=0)


def test_lr_groups_hold_exactly_alpha_and_beta():
    net = _net(lr_multiplier=50.0)
    [(mult, params)] = net.lr_groups()
    expected = [u.alpha for u in net.units.values()] + [s.beta for s in net.layer_stitch.values()]
    assert mult == 50.0
    assert [id(p) for p in params] == [id(p) for p in expected]


def test_partition_gives_beta_and_projections_to_their_task():
    net = _net(stages=("down1", "down2"))
    for t in net.tasks:
        own = {id(p) for p in net.task_parameters(t)}
        assert {id(p) for p in net.layer_stitch[t].parameters()} <= own
        copy = dict(net.backbones[t].named_parameters())
        assert {n for n, p in copy.items() if id(p) in own} == {
            n for n in copy if n.startswith("up.")
        }
    shared = {id(p) for p in net.shared_parameters()}
    assert {id(u.alpha) for u in net.units.values()} <= shared


def test_unknown_stages_and_stageless_backbones_are_refused():
    with pytest.raises(ConfigError, match=r"'sluice': unknown stage\(s\) \['fc'\]"):
        _net(stages=("fc",))
    with pytest.raises(ConfigError, match=r"'sluice': backbone 'hrnet' has no sequential stages"):
        Sluice(TASKS, backbone=BackboneSection(name="hrnet"))


def test_training_outputs_have_the_eval_keys():
    tasks = (*TASKS, ClassificationTask(name="cls", num_classes=2))
    net = _net(tasks)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert sorted(net.train()(x)) == sorted(net.eval()(x)) == ["cls", "depth", "seg"]


def test_adam_steps_reduce_the_summed_loss_with_the_regulariser():
    net = _net(lambda_orth=1e-3).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen)
    targets = {"seg": torch.randint(0, 3, (4, 16, 16), generator=gen)}
    targets["depth"] = torch.rand(4, 1, 16, 16, generator=gen) + 0.5
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        out = net(x)
        loss = sum(t.loss(out[t.name], targets[t.name]) for t in TASKS) + net.regularizer()
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("stages", [(), ("down0", "down2")])
def test_check_architecture(stages):
    config = Sluice.Config(backbone=TINY, head_channels=4, stages=stages)
    check_architecture(Sluice, config=config, size=(24, 40))


def test_registered_and_configured_by_name(monkeypatch):
    module = "pymtl.architectures.sluice"
    if module not in plugins.BUILTIN_PLUGINS:
        monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, module))
    registry = plugins.get_registry(autoload=False)
    assert registry.get("architecture", "sluice") is Sluice
    doc = {"arch": {"name": "sluice", "subspaces": 4, "lambda_orth": 0.1}}
    options = resolve_config(doc, registry).arch.options
    assert options == Sluice.Config(subspaces=4, lambda_orth=0.1)
