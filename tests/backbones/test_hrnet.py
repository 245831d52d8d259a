"""HRNet: four branches at strides 4-32, HRNet-V2 concatenation, W18-small-v2 structure."""

from __future__ import annotations

import math

import pytest
import torch

from pymtl.backbones.hrnet import HRNet

TINY = {"width": 4, "blocks": 1, "modules": (1, 1, 1), "stem_width": 8}


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (8, 8), (3, 5)])
def test_branches_and_concatenated_output_for_several_sizes(size):
    net = HRNet(**TINY)
    h, w = size
    x = torch.randn(2, 3, h, w)
    maps = net.multi_scale(x)
    assert net.scale_channels == (4, 8, 16, 32)
    assert net.scale_strides == (4, 8, 16, 32)
    for m, c, s in zip(maps, net.scale_channels, net.scale_strides, strict=True):
        assert m.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
    y = net(x)
    assert net.out_channels == 60
    assert net.output_stride == 4
    assert y.shape == (2, 60, math.ceil(h / 4), math.ceil(w / 4))


def test_forward_is_the_branches_upsampled_and_concatenated():
    net = HRNet(**TINY).eval()
    x = torch.randn(1, 3, 64, 48)
    maps, y = net.multi_scale(x), net(x)
    torch.testing.assert_close(y[:, :4], maps[0])
    up = torch.nn.functional.interpolate(maps[3], size=(16, 12), mode="bilinear")
    torch.testing.assert_close(y[:, 28:], up)


def test_default_is_hrnet_w18_small_v2():
    with torch.device("meta"):
        net = HRNet()
    assert net.scale_channels == (18, 36, 72, 144)
    assert net.out_channels == 270
    assert [len(getattr(net, f"stage{k}")) for k in (2, 3, 4)] == [1, 3, 2]
    assert len(net.layer1) == 2
    assert net.layer1[-1].conv3.out_channels == 256
    assert all(len(b) == 2 for b in net.stage4[1].branches)
    keys = set(net.state_dict())
    assert {
        "conv2.weight",
        "layer1.0.downsample.0.weight",
        "transition1.0.0.weight",
        "transition1.1.0.0.weight",
        "transition3.3.0.0.weight",
        "stage2.0.branches.1.1.conv2.weight",
        "stage4.1.fuse_layers.0.3.0.weight",
        "stage4.1.fuse_layers.3.0.2.0.weight",
    } <= keys
    # published HRNetV2-W18-Small-v2 segmentation model: 3.9M parameters with its head
    # (1×1 conv 270->270 with bias, BN, 1×1 conv to 19 classes)
    head = 270 * 270 + 270 + 2 * 270 + 270 * 19 + 19
    assert abs(sum(p.numel() for p in net.parameters()) + head - 3.9e6) < 0.05e6


def test_full_w18_is_a_configuration():
    with torch.device("meta"):
        net = HRNet(blocks=4, modules=(1, 4, 3))
    assert [len(getattr(net, f"stage{k}")) for k in (2, 3, 4)] == [1, 4, 3]
    assert len(net.layer1) == 4
    assert len(net.stage3[0].branches[2]) == 4


def test_every_branch_reaches_every_output_branch():
    # one exchange unit per stage still mixes all resolutions: the coarsest output depends on
    # the finest input region and vice versa through the fusion paths
    net = HRNet(**TINY).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    maps = net.multi_scale(x)
    grad = torch.autograd.grad(maps[3][0, :, 0, 0].sum(), x)[0]
    assert grad[..., :32, :32].abs().sum() > 0
    grad = torch.autograd.grad(net.multi_scale(x)[0][0, :, 0, 0].sum(), x)[0]
    assert grad[..., 32:, 32:].abs().sum() > 0  # via the coarse branches' large receptive field


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modules": (1, 2)}, r"hrnet.*'modules' must be 3 integers >= 1.*\(1, 2\)"),
        ({"modules": (1, 0, 1)}, r"'modules' must be 3 integers >= 1"),
        ({"blocks": 0}, r"hrnet.*'blocks' must be an integer >= 1 \(got 0\)"),
        ({"width": 2.5}, r"'width' must be an integer >= 1 \(got 2.5\)"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        HRNet(**{**TINY, **options})
