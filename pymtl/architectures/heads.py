"""Task heads, chosen by task kind [pymtl].

* Dense tasks: an ASPP-style head (Chen et al., "Rethinking Atrous Convolution for Semantic
  Image Segmentation", 2017 [P]) — parallel 1×1 and dilated 3×3 branches plus image pooling,
  concatenated, fused by a 1×1 conv, then a 3×3 conv and the 1×1 classifier — whose output is
  upsampled bilinearly to the input resolution.
* Image-level tasks: global average pooling and a linear layer.

The last layer's bias starts at the task's ``head_bias()`` (dataset statistics: regression
heads start at the data mean), so early training does not spend steps learning an offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pymtl.backbones._common import make_norm
from pymtl.tasks.base import Task

__all__ = ["ASPPHead", "ImageHead", "make_head"]


def _conv_bn_relu(
    cin: int, cout: int, k: int, dilation: int = 1, norm: str = "batch"
) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        make_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


def _init_bias(layer: nn.Conv2d | nn.Linear, task: Task) -> None:
    bias = task.head_bias()
    if bias is None or layer.bias is None:
        return
    if bias.numel() != layer.bias.numel():
        raise ValueError(
            f"task {task.name!r}: head_bias has {bias.numel()} values for {layer.bias.numel()} "
            "output channels"
        )
    with torch.no_grad():
        layer.bias.copy_(bias.reshape(-1).to(layer.bias))


class ASPPHead(nn.Module):
    """ASPP-style dense head: [B, C, h, w] features -> [B, K, H, W] task output [P]."""

    def __init__(
        self,
        in_channels: int,
        task: Task,
        *,
        channels: int = 64,
        rates: Sequence[int] = (6, 12),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1, norm=norm)]
            + [_conv_bn_relu(in_channels, channels, 3, r, norm=norm) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)
        )
        self.fuse = _conv_bn_relu(channels * (len(rates) + 2), channels, 1, norm=norm)
        self.refine = _conv_bn_relu(channels, channels, 3, norm=norm)
        self.classifier = nn.Conv2d(channels, task.channels, 1)
        _init_bias(self.classifier, task)

    def forward(self, z: Tensor, size: Sequence[int]) -> Tensor:
        pooled = self.pool(z).expand(-1, -1, *z.shape[-2:])
        y = self.fuse(torch.cat([b(z) for b in self.branches] + [pooled], dim=1))
        y = self.classifier(self.refine(y))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        out: Tensor = y
        return out


class ImageHead(nn.Module):
    """Image-level head: global average pooling, then linear -> [B, K] [pymtl]."""

    def __init__(self, in_channels: int, task: Task, *, hidden: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            layers += [nn.Linear(in_channels, hidden), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden or in_channels, task.channels)
        _init_bias(self.out, task)

    def forward(self, z: Tensor, size: Sequence[int]) -> Tensor:
        out: Tensor = self.out(self.body(z))
        return out


def make_head(
    in_channels: int, task: Task, *, channels: int, rates: Sequence[int], norm: str = "batch"
) -> ASPPHead | ImageHead:
    """The head for ``task``'s kind: ASPP for dense tasks, pooling + linear otherwise."""
    if task.dense:
        return ASPPHead(in_channels, task, channels=channels, rates=rates, norm=norm)
    return ImageHead(in_channels, task)
