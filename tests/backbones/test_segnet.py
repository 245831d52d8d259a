"""SegNet (MTAN / KD4MTL layout): full-resolution output, scales, stage trace, key names."""

from __future__ import annotations

import pytest
import torch

from pymtl.backbones.segnet import SegNet


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (33, 45), (47, 70)])
def test_full_resolution_output_and_pooled_scales(size):
    net = SegNet(width=2)
    h, w = size
    x = torch.randn(2, 3, h, w)
    assert net(x).shape == (2, 2, h, w)
    assert net.out_channels == 2
    assert net.output_stride == 1
    assert net.scale_channels == (2, 2, 4, 8, 16, 16)
    for m, s in zip(net.multi_scale(x), net.scale_strides, strict=True):
        assert m.shape[2:] == (h // s, w // s)  # 2×2 max-pools floor odd sizes
    assert net.scale_strides == (1, 2, 4, 8, 16, 32)


def test_trace_exposes_every_stage_and_forward_is_its_last_decoder_output():
    net = SegNet(width=2).eval()
    x = torch.randn(1, 3, 64, 32)
    t = net.trace(x)
    widths = [2, 4, 8, 16, 16]
    for j in range(5):
        assert t.enc_first[j].shape == t.enc_last[j].shape == (1, widths[j], 64 >> j, 32 >> j)
        assert t.unpooled[j].shape == (1, widths[j], 64 >> j, 32 >> j)  # unpooled to stage size
        assert t.dec_last[j].shape[2:] == (64 >> j, 32 >> j)
    assert t.bottleneck.shape == (1, 16, 2, 1)
    # max-unpooling leaves 3 of every 4 positions at zero
    assert (t.unpooled[4] == 0).float().mean() >= 0.75
    torch.testing.assert_close(net(x), t.dec_last[0])


def test_mtan_module_names_and_parameter_count():
    with torch.device("meta"):
        net = SegNet()
    keys = set(net.state_dict())
    assert {
        "encoder_block.0.0.weight",
        "encoder_block.4.1.running_var",
        "conv_block_enc.1.0.weight",
        "conv_block_enc.2.1.0.weight",
        "decoder_block.4.0.bias",
        "conv_block_dec.4.1.0.weight",
        "conv_block_dec.0.0.weight",
    } <= keys
    assert "conv_block_enc.1.1.0.weight" not in keys  # stages 0-1 have a single extra conv
    assert net.encoder_block[4][0].weight.shape == (512, 512, 3, 3)
    assert net.decoder_block[1][0].weight.shape == (64, 128, 3, 3)
    # MTAN's single-task NYUv2 SegNet (13-class head: 3×3 64->64 and 1×1 64->13 convs) has
    # 24,981,069 parameters; the backbone is that minus the head's
    head = 64 * 64 * 9 + 64 + 64 * 13 + 13
    assert sum(p.numel() for p in net.parameters()) == 24_981_069 - head


def test_xavier_init_with_zero_biases():
    net = SegNet(width=4)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 26
    assert all(torch.all(c.bias == 0) for c in convs)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_small_inputs_and_bad_width_are_refused():
    with pytest.raises(ValueError, match=r"segnet.*\(31, 64\) is too small; expected at least 32"):
        SegNet(width=2)(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r"segnet.*'width' must be an integer >= 1 \(got -1\)"):
        SegNet(width=-1)
