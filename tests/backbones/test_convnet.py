"""ConvNet: the small U-Net-style default backbone of the synthetic presets."""

from __future__ import annotations

import math

import pytest
import torch

from pymtl.backbones.convnet import ConvNet


def test_defaults():
    net = ConvNet()
    assert (net.out_channels, net.output_stride) == (16, 2)
    assert net.scale_channels == (16, 32, 64)
    assert net.scale_strides == (2, 4, 8)
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 16, 32, 32)


@pytest.mark.parametrize("output_stride", [1, 2])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_shapes_for_several_sizes(depth, output_stride):
    net = ConvNet(width=4, depth=depth, output_stride=output_stride)
    levels = ([4] if output_stride == 1 else []) + [4 * 2**k for k in range(depth)]
    assert net.scale_channels == tuple(levels)
    assert net.scale_strides == tuple(output_stride * 2**k for k in range(len(levels)))
    for h, w in [(64, 64), (33, 47), (5, 7), (1, 1)]:
        x = torch.randn(2, 3, h, w)
        s = output_stride
        assert net(x).shape == (2, 4, math.ceil(h / s), math.ceil(w / s))
        for m, c, s in zip(net.multi_scale(x), net.scale_channels, net.scale_strides, strict=True):
            assert m.shape == (2, c, math.ceil(h / s), math.ceil(w / s))


def test_decoder_fuses_every_encoder_stage():
    # up[k] takes the upsampled coarser level concatenated with the skip of level k
    net = ConvNet(width=4, depth=3, output_stride=1)
    assert [u[0].in_channels for u in net.up] == [4 + 4, 4 + 8, 8 + 16]
    assert [u[0].out_channels for u in net.up] == [4, 4, 8]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_stride": 4}, r"convnet': 'output_stride' must be one of 1, 2 \(got 4\)"),
        ({"depth": 7}, r"convnet': 'depth' must be an integer in \[1, 6\] \(got 7\)"),
        ({"depth": 0}, r"'depth' must be an integer in \[1, 6\] \(got 0\)"),
        ({"width": True}, r"'width' must be an integer >= 1 \(got True\)"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ConvNet(**options)
