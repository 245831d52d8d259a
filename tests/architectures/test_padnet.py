"""PAD-Net (``padnet``) and the shared blocks of pymtl.architectures._distill: the message
formula on hand-made tensors, attention sources, deep supervision, image-level tasks, the
parameter partition, refusals, registration, and a few training steps [pymtl]."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from pymtl.architectures import padnet
from pymtl.architectures._distill import Distillation, FinalHead, InitialHeads, SEBlock
from pymtl.architectures.base import split_outputs
from pymtl.architectures.padnet import PADNet, PADNetConfig
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.plugins import BUILTIN_PLUGINS, get_registry
from pymtl.tasks import ClassificationTask, DepthTask, RegressionTask, SegmentationTask
from pymtl.testing import check_architecture

TINY = BackboneSection(name="convnet", options=ConvNetConfig(width=4))
TASKS = (
    SegmentationTask(name="seg", num_classes=3),
    DepthTask(name="depth", mean=2.0),
    RegressionTask(name="count", dims=2, mean=(0.5, -1.5)),
)


def _net(**options: object) -> PADNet:
    torch.manual_seed(0)
    return PADNet(TASKS, backbone=TINY, channels=8, **options)


def _set_center(conv: nn.Conv2d, value: float) -> None:
    """A 1-channel 3×3 conv that multiplies its input by ``value``."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = value


# --- the distillation message ------------------------------------------------------------------


@pytest.mark.parametrize("source", ["sender", "receiver"])
def test_message_on_a_hand_made_tensor(source):
    # SA(x) = Conv(x) ⊙ σ(Conv'(g)) with Conv = 2·x and Conv' = identity (centre taps only)
    distill = Distillation(["a", "b"], 1, attention_source=source)
    for k, l in (("a", "b"), ("b", "a")):
        _set_center(distill.sa[k][l].conv, 2.0)
        _set_center(distill.sa[k][l].gate, 1.0)
    ln3 = math.log(3.0)  # σ(ln 3) = 3/4, σ(0) = 1/2
    fa = torch.tensor([[1.0, 0.0], [0.0, -1.0]]).reshape(1, 1, 2, 2)
    fb = torch.tensor([[ln3, 0.0], [1.0, 0.0]]).reshape(1, 1, 2, 2)
    out = distill({"a": fa, "b": fb})
    if source == "sender":  # F_a^o = F_a + 2·F_b·σ(F_b)
        expected = [[1 + 1.5 * ln3, 0.0], [2 * torch.sigmoid(torch.tensor(1.0)).item(), -1.0]]
    else:  # F_a^o = F_a + 2·F_b·σ(F_a)
        expected = [[1 + 2 * ln3 * torch.sigmoid(torch.tensor(1.0)).item(), 0.0], [1.0, -1.0]]
    assert torch.allclose(out["a"].reshape(2, 2), torch.tensor(expected), atol=1e-6)


def test_receiver_and_sender_differ_with_the_same_weights():
    sender, receiver = _net(), _net(attention_source="receiver")
    receiver.load_state_dict(sender.state_dict())
    x = torch.randn(2, 3, 16, 16)
    a, b = sender.eval()(x), receiver.eval()(x)
    assert not torch.allclose(a["seg"], b["seg"])
    assert not torch.allclose(a["depth"], b["depth"])
    assert torch.equal(a["count"], b["count"])


def test_single_dense_task_receives_no_message():
    distill = Distillation(["a"], 4)
    f = torch.randn(1, 4, 3, 3)
    assert list(distill.parameters()) == []
    assert torch.equal(distill({"a": f})["a"], f)


# --- deep supervision, image-level tasks, partition ----------------------------------------


def test_deep_supervision_keys_in_training_only():
    net, x = _net(), torch.randn(2, 3, 16, 16)
    assert sorted(net.train()(x)) == ["count", "depth", "depth/initial", "seg", "seg/initial"]
    assert sorted(net.eval()(x)) == ["count", "depth", "seg"]


def test_initial_prediction_is_the_upsampled_initial_head():
    net, x = _net().train(), torch.randn(2, 3, 16, 16)
    out = net(x)
    z = net.backbone(x)  # BatchNorm in training mode: same batch, same statistics
    y0 = net.initial.predictors["depth"](net.initial.blocks["depth"](z))
    assert y0.shape[-2:] == (8, 8)
    up = nn.functional.interpolate(y0, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(out["depth/initial"], up, atol=1e-6)


def test_image_level_task_reads_the_backbone_only():
    net, x = _net().eval(), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)["count"]
        assert torch.equal(before, net.image_heads["count"](net.backbone(x), (16, 16)))
        for p in net.initial.blocks.parameters():
            p.add_(1.0)
        assert torch.equal(net(x)["count"], before)


def _ids(params: Iterator[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_partition_shares_backbone_and_initial_features():
    net = _net()
    shared = _ids(net.backbone.parameters()) | _ids(net.initial.blocks.parameters())
    assert _ids(net.shared_parameters()) == shared
    own = (
        _ids(net.initial.predictors["seg"].parameters())
        | _ids(net.distill.sa["seg"].parameters())
        | _ids(net.final["seg"].parameters())
    )
    assert _ids(net.task_parameters("seg")) == own
    assert len(list(net.distill.sa["seg"].parameters())) == 2  # SA_{seg,depth}: conv and gate
    assert _ids(net.task_parameters("count")) == _ids(net.image_heads["count"].parameters())


class _GreedyInitial(PADNet):
    """PAD-Net that wrongly gives each task its initial feature blocks [pymtl]."""

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        if task in self.initial.blocks:
            yield from self.initial.blocks[task].parameters()


def test_initial_feature_blocks_must_be_shared():
    config = PADNetConfig(backbone=TINY, channels=8)
    with pytest.raises(AssertionError, match=r"output '\w+' changes when task_parameters"):
        check_architecture(_GreedyInitial, config=config, size=(16, 16))


@pytest.mark.parametrize(
    "options",
    [{}, {"attention_source": "receiver", "multi_scale": True}, {"norm": "group"}],
)
def test_conformance_with_tiny_options(options):
    check_architecture(PADNet, config=PADNetConfig(backbone=TINY, channels=8, **options))


def test_multi_scale_concatenates_every_scale_at_the_finest():
    net = _net(multi_scale=True).eval()
    z = net.encode(torch.randn(1, 3, 16, 16))
    assert z.shape == (1, 4 + 8 + 16, 8, 8)


# --- refusals, registration, blocks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 6}, r"architecture 'padnet': 'channels' must be a multiple of 4.*got 6"),
        ({"attention_source": "both"}, r"architecture 'padnet': 'attention_source' must be in"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        PADNet(TASKS, backbone=TINY, **options)


def test_only_image_level_tasks_are_refused():
    with pytest.raises(ConfigError, match=r"'padnet' distils between dense tasks; got only"):
        PADNet([ClassificationTask(name="cls", num_classes=4)], backbone=TINY)


def test_registered_through_its_hook(monkeypatch):
    module = "pymtl.architectures.padnet"
    if module not in BUILTIN_PLUGINS:
        monkeypatch.setattr("pymtl.plugins.BUILTIN_PLUGINS", (*BUILTIN_PLUGINS, module))
    registry = get_registry(autoload=False)
    assert registry.get("architecture", "padnet") is PADNet
    assert padnet.pymtl_register_architectures() == [PADNet]
    doc = {"arch": {"name": "padnet", "channels": 8, "backbone": {"name": "convnet", "width": 4}}}
    options = resolve_config(doc, registry).arch.options
    assert options == PADNetConfig(backbone=TINY, channels=8)


def test_blocks_shapes_and_bias():
    task = DepthTask(name="depth", mean=2.0)
    heads = InitialHeads(5, [task], 8)
    final = FinalHead(8, task, channels=12)
    assert heads.predictors["depth"].bias.item() == 2.0
    assert final.classifier.bias.item() == 2.0
    feats = heads(torch.randn(2, 5, 4, 4))
    assert feats["depth"].shape == (2, 8, 4, 4)
    assert heads.predict(feats, (8, 8))["depth"].shape == (2, 1, 8, 8)
    assert final(feats["depth"], (9, 7)).shape == (2, 1, 9, 7)
    with pytest.raises(ValueError, match=r"multiple of 4 \(got 6\)"):
        InitialHeads(5, [task], 6)
    with pytest.raises(ValueError, match=r"for dense tasks; got image-level tasks \['cls'\]"):
        InitialHeads(5, [ClassificationTask(name="cls", num_classes=2)], 8)
    assert SEBlock(8).fc[0].out_features == 1  # 8 // 16 rounds up to one channel


# --- training ---------------------------------------------------------------------------------


def test_adam_steps_reduce_the_loss_with_deep_supervision(device):
    net = _net().train().to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=gen).to(device)
    targets = {
        "seg": torch.randint(0, 3, (4, 16, 16), generator=gen),
        "depth": torch.rand(4, 1, 16, 16, generator=gen) + 1.5,
        "count": torch.randn(4, 2, generator=gen),
    }
    targets = {k: v.to(device) for k, v in targets.items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals, aux = [], []
    for _ in range(6):
        grouped = split_outputs(net(x), net.tasks)
        assert [len(grouped[t]) for t in net.tasks] == [2, 2, 1]
        losses = {t.name: [t.loss(y, targets[t.name]) for y in grouped[t.name]] for t in TASKS}
        total = torch.stack([v for ls in losses.values() for v in ls]).sum()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
        aux.append(float(losses["seg"][1].detach() + losses["depth"][1].detach()))
    assert totals[-1] < 0.85 * totals[0]
    assert aux[-1] < 0.85 * aux[0]  # the initial predictions learn too
