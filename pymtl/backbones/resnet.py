"""ResNet-18/34/50 backbones (``resnet18``, ``resnet34``, ``resnet50``), optionally dilated.

Reference: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 [P] — the
ImageNet layout: 7×7 stride-2 stem conv, 3×3 stride-2 max-pool, four stages of residual blocks
(BasicBlock for 18/34, Bottleneck with the stride on its 3×3 conv for 50) at widths 64, 128,
256, 512 (×4 for Bottleneck). Dilation as DeepLab does it (Chen et al., TPAMI 2017 [P]) and
as the survey's dilated ResNet uses it (SPEC-methods §1 [C:MTL-PyTorch resnet_dilated.py]):
for output stride 16 (8), the stride of layer4 (layer3 and layer4) becomes 1; in a dilated
stage with dilation d, the 3×3 conv that had stride 2 gets dilation d/2 and every other 3×3
conv gets d (d = 2 for the first dilated stage, 4 for the second). With the same weights,
the dilated net read at every (32/s)-th position then equals the plain net exactly. Multi-grid
is not implemented.

State-dict keys follow the common ImageNet ResNet naming (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer3.0.downsample.0``, ... ``layer4``), so a converted torchvision
ImageNet file loads through ``weights`` once its classifier keys ``fc.weight`` and ``fc.bias``
are dropped (the backbone has no classifier and loading is strict)::

    state = torch.load("resnet50.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, "resnet50-bb.pt")

Such files need ``width = 64``, ``norm = "batch"`` and three input channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import attrs
from torch import Tensor, nn

from pymtl.backbones._common import (
    NORMS,
    checked,
    init_kaiming,
    make_norm,
    one_of,
    positive_int,
    weights_path,
)
from pymtl.backbones.base import Backbone, Stage, Walk, keep
from pymtl.hookspecs import hookimpl

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNet18", "ResNet34", "ResNet50"]

OUTPUT_STRIDES = (8, 16, 32)


@attrs.frozen(kw_only=True)
class ResNetConfig:
    """Options of ``resnet18``, ``resnet34`` and ``resnet50``.

    Attributes:
        output_stride: 32 (plain), 16 (layer4 dilated) or 8 (layer3 and layer4 dilated).
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, ``gcd(32, C)`` groups).
        width: channels of the stem and of layer1's blocks; stage k has ``width·2^(k-1)``
            (×4 at the output of a Bottleneck). 64 is the ImageNet network.
        weights: a local ``.pt`` / ``.pth`` / ``.safetensors`` state dict ("": random init).
    """

    output_stride: int = attrs.field(default=32, validator=one_of(*OUTPUT_STRIDES))
    norm: str = attrs.field(default="batch", validator=one_of(*NORMS))
    width: int = attrs.field(default=64, validator=positive_int)
    weights: str = attrs.field(default="", validator=weights_path)


def _conv3x3(cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _shortcut(cin: int, cout: int, stride: int, norm: str) -> nn.Sequential | None:
    """The 1×1 projection (key ``downsample``) when the residual changes shape, else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), make_norm(norm, cout))


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (ResNet-18/34) [P].

    ``first_dilation`` is the dilation of ``conv1`` (the conv that carries the stride), and
    ``dilation`` that of ``conv2``.
    """

    expansion: ClassVar[int] = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int = 1,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride=stride, dilation=first_dilation)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = make_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, planes, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        result: Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride), 1×1 expand ×4, with a residual (ResNet-50) [P].

    ``first_dilation`` is the dilation of ``conv2`` in a stage's first block; ``dilation`` is
    unused (the block has a single 3×3 conv), kept so both blocks share one signature.
    """

    expansion: ClassVar[int] = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int = 1,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride=stride, dilation=first_dilation)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = make_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        result: Tensor = self.relu(out + identity)
        return result


def _layers(
    block: type[BasicBlock | Bottleneck],
    depths: tuple[int, ...],
    width: int,
    *,
    output_stride: int,
    norm: str,
) -> tuple[list[nn.Sequential], tuple[int, ...]]:
    """layer1..layer4 and their strides; the last 1 (OS 16) or 2 (OS 8) stages dilate.

    In a dilated stage, the first block's formerly strided conv keeps the previous dilation
    (``first``) and every other 3×3 conv gets the stage's (``d``).
    """
    dilated = {32: 0, 16: 1, 8: 2}[output_stride]
    cin, d, stride_so_far = width, 1, 4
    layers, strides = [], []
    for k, n in enumerate(depths):
        dilate = k >= 4 - dilated
        first, stride = d, (1 if k == 0 or dilate else 2)
        d *= 2 if dilate else 1
        planes = width * 2**k
        blocks = [block(cin, planes, stride=stride, dilation=d, first_dilation=first, norm=norm)]
        cin = planes * block.expansion
        blocks += [
            block(cin, planes, dilation=d, first_dilation=d, norm=norm) for _ in range(n - 1)
        ]
        layers.append(nn.Sequential(*blocks))
        stride_so_far *= stride
        strides.append(stride_so_far)
    return layers, tuple(strides)


class ResNet(Backbone):
    """Shared implementation of the ResNet backbones (subclasses set ``block`` / ``depths``)."""

    Config = ResNetConfig
    block: ClassVar[type[BasicBlock | Bottleneck]]
    depths: ClassVar[tuple[int, int, int, int]]

    def __init__(
        self,
        in_channels: int = 3,
        *,
        output_stride: int = 32,
        norm: str = "batch",
        width: int = 64,
        weights: str = "",
    ) -> None:
        super().__init__(in_channels)
        checked(
            ResNetConfig,
            self.name,
            output_stride=output_stride,
            norm=norm,
            width=width,
            weights=weights,
        )
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, self._scale_strides = _layers(
            self.block, self.depths, width, output_stride=output_stride, norm=norm
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = width * 8 * self.block.expansion
        self.output_stride = output_stride
        init_kaiming(self)

    def stem(self, x: Tensor) -> Tensor:
        """conv1, bn1, ReLU and max-pool: [B, C_in, H, W] -> [B, width, H/4, W/4]."""
        out: Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return out

    def stages(self) -> list[Callable[[Tensor], Tensor]]:
        """The stem and layer1..layer4, in order: applying them in turn is :meth:`forward`.

        For architectures that work stage by stage (cross-stitch, NDDR, MTAN); each layer is
        an ``nn.Sequential`` of blocks, so ``layer[:-1]`` / ``layer[-1]`` split off its last
        block.
        """
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> Tensor:
        """Features [B, out_channels, ⌈H/s⌉, ⌈W/s⌉] with s = ``output_stride``."""
        for stage in self.stages():
            x = stage(x)
        return x

    has_stages = True

    def walk(self, x: Tensor) -> Walk:
        """Stages ``stem`` (before = after: conv1-bn1-ReLU-max-pool) and ``layer1``…``layer4``
        (before: the output of all but the layer's last block, as MTAN's ResNet version reads
        it [C:MTL-PyTorch])."""
        x = self.stem(x)
        x = keep((yield Stage("stem", x, x)), x)
        for k, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), 1):
            before = layer[:-1](x) if len(layer) > 1 else x
            x = layer[-1](before)
            x = keep((yield Stage(f"layer{k}", before, x)), x)
        return x

    def multi_scale(self, x: Tensor) -> list[Tensor]:
        """The outputs of layer1..layer4 (strides 4, 8, 16, 32 at output stride 32)."""
        x = self.stem(x)
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    @property
    def scale_channels(self) -> tuple[int, ...]:
        w, e = self.conv1.out_channels, self.block.expansion
        return tuple(w * 2**k * e for k in range(4))

    @property
    def scale_strides(self) -> tuple[int, ...]:
        return self._scale_strides


class ResNet18(ResNet):
    """ResNet-18 backbone (BasicBlock, 2-2-2-2), optionally dilated to output stride 16 or 8 [P].

    Reference: He et al., CVPR 2016; the survey's PASCAL-Context ResNet-18 setups dilate it to
    output stride 8 (SPEC-methods §1 [C:MTL-PyTorch]).

    Args:
        in_channels: input image channels.
        output_stride, norm, width, weights: see :class:`ResNetConfig`.

    Example:
        >>> import torch
        >>> net = ResNet18(width=8, output_stride=8)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 64, 8, 8])
    """

    name = "resnet18"
    block = BasicBlock
    depths = (2, 2, 2, 2)


class ResNet34(ResNet):
    """ResNet-34 backbone (BasicBlock, 3-4-6-3), optionally dilated to output stride 16 or 8 [P].

    Reference: He et al., CVPR 2016.

    Args:
        in_channels: input image channels.
        output_stride, norm, width, weights: see :class:`ResNetConfig`.

    Example:
        >>> ResNet34(width=8).out_channels
        64
    """

    name = "resnet34"
    block = BasicBlock
    depths = (3, 4, 6, 3)


class ResNet50(ResNet):
    """ResNet-50 backbone (Bottleneck, 3-4-6-3), optionally dilated to output stride 16 or 8 [P].

    Reference: He et al., CVPR 2016; the survey's NYUD-v2 setups use it dilated to output
    stride 8, with layer1..layer4 widths 256, 512, 1024, 2048 (SPEC-methods §1
    [C:MTL-PyTorch]).

    Args:
        in_channels: input image channels.
        output_stride, norm, width, weights: see :class:`ResNetConfig`.

    Example:
        >>> ResNet50(width=8).scale_channels
        (32, 64, 128, 256)
    """

    name = "resnet50"
    block = Bottleneck
    depths = (3, 4, 6, 3)


@hookimpl
def pymtl_register_backbones() -> list[type[Backbone]]:
    return [ResNet18, ResNet34, ResNet50]
