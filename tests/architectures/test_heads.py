"""Task heads: output sizes, the upsampling, head-bias initialisation, the choice by task kind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pymtl.architectures.heads import ASPPHead, ImageHead, make_head
from pymtl.tasks import (
    ClassificationTask,
    DepthTask,
    NormalsTask,
    RegressionTask,
    SegmentationTask,
)

SEG = SegmentationTask(name="seg", num_classes=5)


@pytest.mark.parametrize(
    ("feature_size", "size"), [((8, 8), (16, 16)), ((5, 7), (17, 27)), ((6, 6), (6, 6))]
)
def test_aspp_output_is_at_the_requested_size(feature_size, size):
    head = ASPPHead(6, SEG, channels=4, rates=(1, 2))
    y = head(torch.randn(2, 6, *feature_size), size)
    assert y.shape == (2, 5, *size)


def _classifier_output(head: ASPPHead, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    seen = []
    handle = head.classifier.register_forward_hook(lambda m, i, o: seen.append(o))
    head(z, size)
    handle.remove()
    return seen[0]


def test_aspp_upsamples_bilinearly_and_only_when_needed():
    head = ASPPHead(6, SEG, channels=4, rates=(2,)).eval()
    z = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        logits = _classifier_output(head, z, (5, 7))
        assert torch.equal(head(z, (5, 7)), logits)
        expected = F.interpolate(logits, size=(11, 9), mode="bilinear", align_corners=False)
        assert torch.equal(head(z, (11, 9)), expected)


def test_aspp_branches_follow_the_rates():
    head = ASPPHead(6, SEG, channels=4, rates=(2, 3, 5))
    convs = [branch[0] for branch in head.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (3, 3), (5, 5)]
    assert head.fuse[0].in_channels == 4 * 5  # 1×1 + three atrous + image pooling
    assert head.classifier.out_channels == 5


def test_aspp_every_parameter_gets_a_gradient():
    head = ASPPHead(6, SEG, channels=4, rates=(2,)).train()
    y = head(torch.randn(2, 6, 6, 6), (12, 12))
    (y * torch.randn_like(y)).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_aspp_bias_starts_at_the_depth_mean():
    head = ASPPHead(6, DepthTask(name="depth", mean=2.0), channels=4, rates=(2,))
    assert torch.equal(head.classifier.bias, torch.tensor([2.0]))
    with torch.no_grad():  # with a zero classifier weight the output is the bias everywhere
        head.classifier.weight.zero_()
        y = head(torch.randn(2, 6, 5, 5), (13, 11))
    assert torch.allclose(y, torch.full((2, 1, 13, 11), 2.0))


def test_bias_is_left_alone_without_a_head_bias():
    torch.manual_seed(3)
    with_default = ASPPHead(6, DepthTask(name="depth"), channels=4, rates=(2,))
    torch.manual_seed(3)
    with_mean = ASPPHead(6, DepthTask(name="depth", mean=2.0), channels=4, rates=(2,))
    assert with_default.classifier.bias.item() != 2.0
    assert torch.equal(with_default.classifier.weight, with_mean.classifier.weight)
    fresh = nn.Conv2d(4, 1, 1)  # PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert with_default.classifier.bias.abs().item() <= 1 / fresh.in_channels**0.5


def test_image_head_output_and_bias():
    task = RegressionTask(name="count", dims=2, mean=(0.5, -1.5))
    head = ImageHead(6, task)
    assert torch.equal(head.out.bias, torch.tensor([0.5, -1.5]))
    y = head(torch.randn(3, 6, 5, 4), (20, 16))
    assert y.shape == (3, 2)
    with torch.no_grad():
        head.out.weight.zero_()
        assert torch.equal(head(torch.randn(3, 6, 5, 4), (20, 16)), torch.tensor([[0.5, -1.5]] * 3))


def test_image_head_pools_globally():
    head = ImageHead(6, ClassificationTask(name="cls", num_classes=4), hidden=8)
    z = torch.randn(2, 6, 5, 4)
    shuffled = z.flatten(2)[..., torch.randperm(20)].view_as(z)  # pixel order does not matter
    assert torch.allclose(head(z, (10, 8)), head(shuffled, (10, 8)), atol=1e-6)
    assert head(z, (10, 8)).shape == (2, 4)


def test_head_bias_of_the_wrong_size_names_the_task():
    task = RegressionTask(name="count", dims=2, mean=(1.0,))
    with pytest.raises(ValueError, match=r"task 'count': head_bias has 1 values for 2 output"):
        ImageHead(6, task)


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        (SEG, ASPPHead),
        (DepthTask(name="depth"), ASPPHead),
        (NormalsTask(name="normals"), ASPPHead),
        (ClassificationTask(name="cls", num_classes=4), ImageHead),
        (RegressionTask(name="count"), ImageHead),
    ],
)
def test_make_head_chooses_by_kind(task, kind):
    head = make_head(6, task, channels=4, rates=(3,))
    assert type(head) is kind
    if kind is ASPPHead:
        assert head.classifier.out_channels == task.channels
        assert head.branches[1][0].dilation == (3, 3)
        assert head.refine[0].out_channels == 4
    else:
        assert head.out.out_features == task.channels
