"""LeNet: MGDA's MultiLeNet trunk for image-level tasks ([B, 50, 1, 1], output stride 0)."""

from __future__ import annotations

import pytest
import torch

from pymtl.backbones.lenet import LeNet


def test_mgda_layout_at_28_pixels():
    net = LeNet(1)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "conv1.weight": (10, 1, 5, 5),
        "conv1.bias": (10,),
        "conv2.weight": (20, 10, 5, 5),
        "conv2.bias": (20,),
        "fc.weight": (50, 320),
        "fc.bias": (50,),
    }
    y = net(torch.randn(3, 1, 28, 28))
    assert y.shape == (3, 50, 1, 1)
    assert net.output_stride == 0
    assert net.out_channels == 50
    assert torch.all(y >= 0)  # ReLU after fc


@pytest.mark.parametrize(("size", "flat"), [(36, 20 * 6 * 6), (32, 20 * 5 * 5), (16, 20)])
def test_other_input_sizes(size, flat):
    net = LeNet(3, input_size=size)
    assert net.fc.in_features == flat
    assert net(torch.randn(2, 3, size, size)).shape == (2, 50, 1, 1)


def test_dropout_only_in_training():
    net = LeNet(1, width=4, features=8)
    x = torch.randn(4, 1, 28, 28)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
    plain = LeNet(1, width=4, features=8, dropout=0.0)
    plain.load_state_dict(net.state_dict())
    torch.testing.assert_close(plain.train()(x), net.eval()(x))


def test_wrong_input_size_and_bad_options_are_refused():
    with pytest.raises(ValueError, match=r"lenet.*\(36, 36\).*built for 28×28.*input_size = 36"):
        LeNet(1)(torch.randn(1, 1, 36, 36))
    with pytest.raises(ValueError, match=r"lenet.*'input_size' must be >= 16.*\(got 15\)"):
        LeNet(1, input_size=15)
    with pytest.raises(ValueError, match=r"'dropout' must be a probability in \[0, 1\)"):
        LeNet(1, dropout=1.0)
