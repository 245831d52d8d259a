"""MTI-Net (``mtinet``): the FPM mask (stated semantics and the MTL-PyTorch grouping) on
hand-made tensors, the FPM formula, refusals, per-scale deep supervision, the width cap, the
parameter partition, conformance on convnet and hrnet, registration, training steps [pymtl]."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from pymtl.architectures import mtinet
from pymtl.architectures._distill import FPM
from pymtl.architectures.base import split_outputs
from pymtl.architectures.mtinet import MTINet, MTINetConfig
from pymtl.backbones.convnet import ConvNetConfig
from pymtl.backbones.hrnet import HRNetConfig
from pymtl.backbones.resnet import ResNetConfig
from pymtl.config import BackboneSection, resolve_config
from pymtl.errors import ConfigError
from pymtl.plugins import BUILTIN_PLUGINS, get_registry
from pymtl.tasks import ClassificationTask, DepthTask, RegressionTask, SegmentationTask
from pymtl.testing import check_architecture

TINY = BackboneSection(name="convnet", options=ConvNetConfig(width=4))
HRNET = BackboneSection(
    name="hrnet", options=HRNetConfig(width=4, blocks=1, modules=(1, 1, 1), stem_width=8)
)
TASKS = (
    SegmentationTask(name="seg", num_classes=3),
    DepthTask(name="depth", mean=2.0),
    RegressionTask(name="count", dims=2, mean=(0.5, -1.5)),
)


def _net(**options: object) -> MTINet:
    torch.manual_seed(0)
    return MTINet(TASKS, backbone=options.pop("backbone", TINY), **options)


# --- the FPM -----------------------------------------------------------------------------------

LN3 = math.log(3.0)
# two tasks a, b with C = 2 channels each; concat channels [a0, a1, b0, b1]
S = torch.tensor([0.0, LN3, 0.0, 0.0]).reshape(1, 4, 1, 1)


def test_fpm_mask_is_a_softmax_over_tasks_per_channel():
    mask = FPM(["a", "b"], 2).mask(S).flatten()
    # channel 0: softmax(0, 0) = (1/2, 1/2); channel 1: softmax(ln 3, 0) = (3/4, 1/4)
    assert torch.allclose(mask, torch.tensor([0.5, 0.75, 0.5, 0.25]))
    s = torch.randn(2, 3 * 5, 4, 4)
    sums = FPM(["a", "b", "c"], 5).mask(s).reshape(2, 3, 5, 4, 4).sum(dim=1)
    assert torch.allclose(sums, torch.ones_like(sums))


def test_fpm_parity_grouping_softmaxes_consecutive_channels():
    mask = FPM(["a", "b"], 2, consecutive=True).mask(S).flatten()
    # groups (a0, a1) and (b0, b1): softmax(0, ln 3) = (1/4, 3/4), softmax(0, 0) = (1/2, 1/2)
    assert torch.allclose(mask, torch.tensor([0.25, 0.75, 0.5, 0.5]))
    s = torch.randn(2, 3 * 5, 4, 4)
    sums = FPM(["a", "b", "c"], 5, consecutive=True).mask(s).reshape(2, 5, 3, 4, 4).sum(dim=2)
    assert torch.allclose(sums, torch.ones_like(sums))


def test_fpm_output_with_a_uniform_mask():
    # f's last conv at zero gives S = 0, a mask of 1/T, so Ψ = Φ / T and out_t = SE_t(R) + F_t
    fpm = FPM(["a", "b", "c"], 4).eval()
    last = fpm.f[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    feats = {t: torch.randn(2, 4, 3, 3) for t in "abc"}
    out = fpm(feats)
    with torch.no_grad():
        r = fpm.reduce(torch.cat([feats[t] for t in "abc"], dim=1) / 3)
    for t in "abc":
        assert torch.allclose(out[t] - feats[t], fpm.se[t](r), atol=1e-6)
    assert len(fpm.f[0].conv1.weight) == 3  # TC/4 = 12/4


# --- refusals ----------------------------------------------------------------------------------


def test_single_scale_backbone_is_refused():
    lenet = BackboneSection(name="lenet", options=None)
    with pytest.raises(
        ConfigError,
        match=r"^architecture 'mtinet' needs a multi-scale backbone \(multi_scale\(\) with at "
        r"least 2 scales\); got backbone 'lenet' with 1 scale; expected one of hrnet, ",
    ):
        MTINet(TASKS, backbone=lenet)
    shallow = BackboneSection(name="convnet", options=ConvNetConfig(width=4, depth=1))
    with pytest.raises(ConfigError, match=r"got backbone 'convnet' with 1 scale"):
        MTINet(TASKS, backbone=shallow)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": -1}, r"^architecture 'mtinet': 'channels' must be an integer >= 0"),
        ({"mtl_pytorch_channel_grouping": 1}, r"^architecture 'mtinet': .*must be <class 'bool'>"),
        ({"attention_source": "x"}, r"^architecture 'mtinet': 'attention_source' must be in"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        MTINet(TASKS, backbone=TINY, **options)


def test_only_image_level_tasks_are_refused():
    with pytest.raises(ConfigError, match=r"'mtinet' distils between dense tasks; got only"):
        MTINet([ClassificationTask(name="cls", num_classes=4)], backbone=TINY)


# --- deep supervision, width cap, partition ----------------------------------------------------


def test_deep_supervision_keys_per_scale_in_training_only():
    net, x = _net(), torch.randn(2, 3, 16, 16)
    dense = [f"{t}/scale{s}" for t in ("seg", "depth") for s in range(3)]
    assert sorted(net.train()(x)) == sorted(["seg", "depth", "count", *dense])
    assert sorted(net.eval()(x)) == ["count", "depth", "seg"]


def test_backbone_widths_by_default_and_capped_on_request():
    assert _net().widths == (4, 8, 16)
    assert all(isinstance(p, nn.Identity) for p in _net().project)
    resnet = BackboneSection(name="resnet18", options=ResNetConfig(width=4))
    capped = _net(backbone=resnet, channels=8)
    assert capped.backbone.scale_channels == (4, 8, 16, 32)
    assert capped.widths == (4, 8, 8, 8)
    assert [isinstance(p, nn.Identity) for p in capped.project] == [True, True, False, False]
    assert capped.fpm["3"].reduce.conv2.out_channels == 8


def _ids(params: Iterator[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


def test_partition_shares_everything_that_mixes_tasks():
    net = _net()
    shared = _ids(net.backbone.parameters()) | _ids(net.fpm.parameters())
    for heads in net.initial:
        shared |= _ids(heads.blocks.parameters())
    assert _ids(net.shared_parameters()) == shared
    own = _ids(net.heads["depth"].parameters())
    for heads, distill in zip(net.initial, net.distill, strict=True):
        own |= _ids(heads.predictors["depth"].parameters()) | _ids(distill.sa["depth"].parameters())
    assert _ids(net.task_parameters("depth")) == own
    assert _ids(net.task_parameters("count")) == _ids(net.image_heads["count"].parameters())
    assert sorted(net.fpm) == ["1", "2"]  # every scale but the finest


class _GreedySE(MTINet):
    """MTI-Net that wrongly gives each task the FPMs' SE_t [pymtl]."""

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        se = _ids(p for fpm in self.fpm.values() for p in fpm.se.parameters())
        return (p for p in super().shared_parameters() if id(p) not in se)

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from super().task_parameters(task)
        if task in self.heads:
            for fpm in self.fpm.values():
                yield from fpm.se[task].parameters()


def test_fpm_se_blocks_must_be_shared():
    config = MTINetConfig(backbone=TINY)
    with pytest.raises(AssertionError, match=r"output '\w+' changes when task_parameters"):
        check_architecture(_GreedySE, config=config, size=(16, 16))


@pytest.mark.parametrize(
    "options",
    [
        {"backbone": TINY},
        {"backbone": TINY, "attention_source": "receiver", "mtl_pytorch_channel_grouping": True},
        {"backbone": HRNET, "channels": 6},
    ],
)
def test_conformance_with_tiny_options(options):
    check_architecture(MTINet, config=MTINetConfig(**options), size=(24, 40))


# --- registration and training -----------------------------------------------------------------


def test_registered_through_its_hook(monkeypatch):
    module = "pymtl.architectures.mtinet"
    if module not in BUILTIN_PLUGINS:
        monkeypatch.setattr("pymtl.plugins.BUILTIN_PLUGINS", (*BUILTIN_PLUGINS, module))
    registry = get_registry(autoload=False)
    assert registry.get("architecture", "mtinet") is MTINet
    assert mtinet.pymtl_register_architectures() == [MTINet]
    doc = {"arch": {"name": "mtinet", "mtl_pytorch_channel_grouping": True}}
    options = resolve_config(doc, registry).arch.options
    assert options == MTINetConfig(mtl_pytorch_channel_grouping=True)


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
        assert [len(grouped[t]) for t in net.tasks] == [4, 4, 1]  # final + 3 scales
        losses = {t.name: [t.loss(y, targets[t.name]) for y in grouped[t.name]] for t in TASKS}
        total = torch.stack([v for ls in losses.values() for v in ls]).sum()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
        aux.append(float(sum(v.detach() for t in ("seg", "depth") for v in losses[t][1:])))
    assert totals[-1] < 0.85 * totals[0]
    assert aux[-1] < 0.85 * aux[0]  # the per-scale predictions learn too
