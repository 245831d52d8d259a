"""The stage walk of pymtl.backbones.base: every backbone with stages walks to exactly its
forward output, replacements flow on, lockstep and probe_stages read the walks [pymtl]."""

from __future__ import annotations

import pytest
import torch

from pymtl.backbones.base import drain, lockstep, probe_stages
from pymtl.errors import ConfigError
from pymtl.plugins import get_registry

SMALL = {
    "convnet": ({"width": 4}, (40, 24)),
    "resnet18": ({"width": 4}, (64, 48)),
    "resnet50": ({"width": 2, "output_stride": 8}, (40, 40)),
    "segnet": ({"width": 2}, (64, 32)),
    "lenet": ({"input_size": 28, "width": 2, "features": 6}, (28, 28)),
}


def _build(name: str, **options: object) -> torch.nn.Module:
    cls = get_registry(autoload=False).get("backbone", name)
    torch.manual_seed(0)
    return cls(3, **options).eval()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_walk_without_replacement_is_forward(name):
    options, size = SMALL[name]
    net = _build(name, **options)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(drain(net.walk(x)), net(x), atol=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_replacement_flows_on_and_lockstep_mixes(name):
    options, size = SMALL[name]
    net = _build(name, **options)
    x = torch.randn(2, 3, *size)
    seen: list[str] = []

    def halve_first(stages):
        seen.append(stages[0].name)
        assert len({s.after.shape for s in stages}) == 1
        return [s.after * 0.5 for s in stages] if len(seen) == 1 else None

    with torch.no_grad():
        a, b = lockstep([net.walk(x), net.walk(x)], halve_first)
        plain = net(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, plain)
    assert seen == [s.name for s in probe_stages(net, size)]


def test_probe_stages_reads_channels_and_strides():
    shapes = probe_stages(_build("convnet", width=4, depth=2), (32, 32))
    assert [(s.name, s.before_channels, s.after_channels, s.after_stride) for s in shapes] == [
        ("down0", 4, 4, 2.0),
        ("down1", 8, 8, 4.0),
        ("up0", 12, 4, 2.0),
    ]
    resnet = probe_stages(_build("resnet18", width=4), (64, 64))
    assert [s.name for s in resnet] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert [s.after_channels for s in resnet] == [4, 4, 8, 16, 32]
    assert resnet[-1].after_stride == 32.0


def test_lockstep_refuses_walks_of_different_backbones():
    x = torch.randn(1, 3, 32, 32)
    a, b = _build("convnet", width=4, depth=2), _build("convnet", width=4, depth=3)
    with (
        pytest.raises(ConfigError, match=r"lockstep: walks (disagree|have different)"),
        torch.no_grad(),
    ):
        lockstep([a.walk(x), b.walk(x)], lambda stages: None)


def test_backbone_without_stages_says_which_have_them():
    net = _build("hrnet")
    with pytest.raises(ConfigError, match=r"no sequential stages.*convnet"):
        drain(net.walk(torch.randn(1, 3, 32, 32)))
