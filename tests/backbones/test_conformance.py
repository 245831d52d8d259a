"""Every registered backbone against the contract of pymtl.backbones.base: conformance, declared
shapes and strides, gradients, and weights files (.pt and .safetensors) through ``from_config``."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import torch
from safetensors.torch import save_file

from pymtl.backbones.base import Backbone, build_backbone
from pymtl.config import BackboneSection
from pymtl.errors import ConfigError
from pymtl.plugins import get_registry
from pymtl.testing import check_component

# name -> (tiny Config options, input channels, input H×W); names not listed use Config()
TINY: dict[str, tuple[dict[str, Any], int, tuple[int, int]]] = {
    "convnet": ({"width": 4, "depth": 2}, 3, (20, 27)),
    "hrnet": ({"width": 4, "blocks": 1, "modules": (1, 1, 1), "stem_width": 8}, 3, (32, 41)),
    "lenet": ({"width": 2, "features": 6}, 1, (28, 28)),
    "resnet18": ({"width": 4}, 3, (40, 33)),
    "resnet34": ({"width": 4}, 3, (40, 33)),
    "resnet50": ({"width": 4}, 3, (40, 33)),
    "segnet": ({"width": 2}, 3, (32, 45)),
}
NAMES = [e.name for e in get_registry(autoload=False).entries("backbone")]


def _setup(name: str) -> tuple[type[Backbone], Any, torch.Tensor]:
    cls = get_registry(autoload=False).get("backbone", name)
    options, cin, (h, w) = TINY.get(name, ({}, 3, (64, 64)))
    return cls, cls.Config(**options), torch.randn(2, cin, h, w)


def _expected_size(size: int, stride: int) -> int:
    return 1 if stride == 0 else math.ceil(size / stride)


def _fits(got: tuple[int, ...], size: tuple[int, ...], stride: int) -> bool:
    """A map at ``stride`` of an input of ``size``: ⌊size/s⌋ (pooling) or ⌈size/s⌉ (strided conv);
    1×1 for stride 0 (image-level)."""
    if stride == 0:
        return tuple(got) == (1, 1)
    return all(n // stride <= g <= math.ceil(n / stride) for g, n in zip(got, size, strict=True))


def test_every_builtin_backbone_is_registered():
    assert set(TINY) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_conformance_and_forward(name, device):
    cls, config, x = _setup(name)
    check_component(cls, Backbone)
    net = cls.from_config(config, in_channels=x.shape[1]).to(device)
    y = net(x.to(device))
    s = net.output_stride
    assert y.shape == (
        2,
        net.out_channels,
        _expected_size(x.shape[2], s),
        _expected_size(x.shape[3], s),
    )
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_multi_scale_matches_declared_channels_and_strides(name):
    cls, config, x = _setup(name)
    net = cls.from_config(config, in_channels=x.shape[1])
    maps = net.multi_scale(x)
    assert len(maps) == len(net.scale_channels) == len(net.scale_strides)
    assert net.scale_strides == tuple(sorted(net.scale_strides)), "fine to coarse"
    for m, c, s in zip(maps, net.scale_channels, net.scale_strides, strict=True):
        assert m.shape[:2] == (2, c)
        assert _fits(m.shape[2:], x.shape[2:], s), f"{name}: {tuple(m.shape)} at stride {s}"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name, device):
    cls, config, x = _setup(name)
    net = cls.from_config(config, in_channels=x.shape[1]).to(device).train()
    y = net(x.to(device))
    (y * torch.randn_like(y)).sum().backward()
    for key, p in net.named_parameters():
        assert p.grad is not None, f"{name}: {key} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {key} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {key} has an all-zero gradient"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip_through_from_config(name, suffix, tmp_path):
    cls, config, x = _setup(name)
    net = cls.from_config(config, in_channels=x.shape[1])
    net.train()(x)  # move the BatchNorm statistics away from their initial values
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    fresh = cls.from_config(attrs.evolve(config, weights=str(path)), in_channels=x.shape[1])
    with torch.no_grad():
        assert torch.equal(net.eval()(x), fresh.eval()(x))


@pytest.mark.parametrize("name", NAMES)
def test_weights_of_another_width_are_refused(name, tmp_path):
    cls, config, x = _setup(name)
    if not hasattr(config, "width"):
        pytest.skip(f"{name} has no 'width' option to build a mismatched file from")
    other = cls.from_config(attrs.evolve(config, width=2 * config.width), in_channels=x.shape[1])
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ConfigError, match=r"does not fit .*shape mismatches"):
        cls.from_config(attrs.evolve(config, weights=str(path)), in_channels=x.shape[1])


@pytest.mark.parametrize("name", NAMES)
def test_build_backbone_from_a_section(name):
    cls, config, x = _setup(name)
    net = build_backbone(BackboneSection(name=name, options=config), in_channels=x.shape[1])
    assert type(net) is cls
    assert net.in_channels == x.shape[1]
