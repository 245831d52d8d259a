"""ResNet-18/34/50: layout, output strides, DeepLab-style dilation, ImageNet key names."""

from __future__ import annotations

import math

import pytest
import torch

from pymtl.backbones.resnet import ResNet18, ResNet34, ResNet50
from pymtl.errors import ConfigError

CLASSES = [ResNet18, ResNet34, ResNet50]
SCALE_STRIDES = {32: (4, 8, 16, 32), 16: (4, 8, 16, 16), 8: (4, 8, 8, 8)}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
def test_shapes_and_strides_for_several_input_sizes(cls, output_stride):
    net = cls(width=4, output_stride=output_stride)
    e = cls.block.expansion
    assert net.out_channels == 32 * e
    assert net.output_stride == output_stride
    assert net.scale_channels == (4 * e, 8 * e, 16 * e, 32 * e)
    assert net.scale_strides == SCALE_STRIDES[output_stride]
    for h, w in [(64, 64), (65, 47), (33, 33)]:  # any size: every stride-2 step gives ⌈n/2⌉
        x = torch.randn(1, 3, h, w)
        assert net(x).shape[2:] == (math.ceil(h / output_stride), math.ceil(w / output_stride))
        for m, s in zip(net.multi_scale(x), net.scale_strides, strict=True):
            assert m.shape[2:] == (math.ceil(h / s), math.ceil(w / s))


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.name)
def test_dilated_net_is_the_plain_net_evaluated_densely(cls, output_stride):
    # "à trous": with the same weights, the dilated net's output subsampled by 32/s equals the
    # plain net's output exactly. This holds only if the conv that lost its stride keeps the
    # previous dilation and every later 3×3 conv gets the new one (the documented rule).
    plain = cls(width=4).double().eval()
    dilated = cls(width=4, output_stride=output_stride).double().eval()
    dilated.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 70, 53, dtype=torch.float64)
    step = 32 // output_stride
    with torch.no_grad():
        dense = dilated(x)
        assert dense.shape[2:] == (math.ceil(70 / output_stride), math.ceil(53 / output_stride))
        torch.testing.assert_close(dense[..., ::step, ::step], plain(x))
        assert dense.shape[2] > plain(x).shape[2]  # more positions, not an upsampled copy


def test_dilation_pattern_of_resnet18_and_resnet50_at_output_stride_8():
    r18 = ResNet18(width=4, output_stride=8)
    assert r18.layer3[0].conv1.stride == (1, 1)
    assert r18.layer3[0].conv1.dilation == (1, 1)
    assert r18.layer3[0].conv2.dilation == (2, 2)
    assert r18.layer3[1].conv1.dilation == (2, 2)
    assert r18.layer4[0].conv1.dilation == (2, 2)
    assert r18.layer4[1].conv2.dilation == (4, 4)
    assert r18.layer3[0].downsample[0].stride == (1, 1)
    r50 = ResNet50(width=4, output_stride=8)
    assert [b.conv2.dilation[0] for b in r50.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in r50.layer4] == [2, 4, 4]
    assert r50.layer2[0].conv2.stride == (2, 2)


def test_imagenet_key_names_and_parameter_counts():
    with torch.device("meta"):
        r18, r34, r50 = ResNet18(), ResNet34(), ResNet50()
    keys = set(r18.state_dict())
    assert {
        "conv1.weight",
        "bn1.running_var",
        "layer4.1.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
    } <= keys
    assert not any(k.startswith("fc.") for k in keys)
    assert {"layer4.2.conv3.weight", "layer1.0.downsample.1.running_mean"} <= set(r50.state_dict())
    # torchvision's ImageNet ResNets (11,689,512 / 21,797,672 / 25,557,032 parameters) minus
    # their classifier fc (512·1000 + 1000, resp. 2048·1000 + 1000)
    counts = [sum(p.numel() for p in n.parameters()) for n in (r18, r34, r50)]
    assert counts == [11_689_512 - 513_000, 21_797_672 - 513_000, 25_557_032 - 2_049_000]


def test_a_file_with_the_classifier_is_refused_until_fc_is_dropped(tmp_path):
    net = ResNet18(width=4)
    state = dict(net.state_dict(), **{"fc.weight": torch.zeros(10, 32), "fc.bias": torch.zeros(10)})
    torch.save(state, tmp_path / "with_fc.pt")
    config = ResNet18.Config(width=4, weights=str(tmp_path / "with_fc.pt"))
    with pytest.raises(ConfigError, match=r"2 unexpected .*fc\.bias"):
        ResNet18.from_config(config)
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, tmp_path / "bb.pt")
    loaded = ResNet18.from_config(ResNet18.Config(width=4, weights=str(tmp_path / "bb.pt")))
    assert torch.equal(loaded.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


def test_group_norm_and_other_input_channels():
    net = ResNet50(1, width=8, norm="group")
    assert isinstance(net.bn1, torch.nn.GroupNorm)
    assert net.bn1.num_groups == 8
    assert net.layer4[0].bn3.num_groups == 32  # 256 channels: the usual 32 groups
    assert not any("running_mean" in k for k in net.state_dict())
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 256, 1, 1)


def test_stages_compose_to_forward():
    net = ResNet34(width=4).eval()
    x = torch.randn(1, 3, 48, 40)
    y = x
    for stage in net.stages():
        y = stage(y)
    torch.testing.assert_close(y, net(x))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_stride": 12}, r"'output_stride' must be one of 8, 16, 32 \(got 12\)"),
        ({"output_stride": 8.0}, r"'output_stride' must be one of 8, 16, 32 \(got 8.0\)"),
        ({"norm": "layer"}, r"'norm' must be one of 'batch', 'group' \(got 'layer'\)"),
        ({"width": 0}, r"'width' must be an integer >= 1 \(got 0\)"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match="^backbone 'resnet18': " + message):
        ResNet18(**options)
    with pytest.raises(ValueError, match="^" + message):  # a config file: same message
        ResNet18.Config(**options)
